# Copyright 2026 vpr_ros maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Aggregation heads: feature map(s) -> one L2-normalised global descriptor.

Papers followed (each class says which section):

- the heads report: M. Gambino, M. Pierro, F. Grillo, "Visual Geo-Localization" (student
  project report comparing base, GeM, NetVLAD, CRN and CRN2 heads on ResNet-18; no arXiv id);
- CRN: H. J. Kim, E. Dunn, J.-M. Frahm, "Learned Contextual Feature Reweighting for Image
  Geo-Localization", CVPR 2017;
- HAF: L. Yan, Y. Cui, Y. Chen, D. Liu, "Hierarchical Attention Fusion for Geo-Localization",
  ICASSP 2021, arXiv 2102.09186.

Heads:

- ``avg``: base head of the heads report (§3.1): L2 over channels, average pool.
- ``gem``: GeM (Radenović et al.; heads report §3.2, eq. 1), benchmark layout ``Seq(L2Norm, GeM,
  Flatten)`` (``l2='before_pool'``, key ``aggregation.1.p``) or ``Seq(GeM, L2Norm, Flatten)``
  (``after_pool``) / ``Seq(GeM, Flatten)`` (``none``), key ``aggregation.0.p``.
- ``gem_fc``: GeM + FC whitening (heads report §3.2), CosPlace layout
  ``Seq(L2Norm, GeM, Flatten, Linear, L2Norm)`` (keys ``aggregation.1.p``, ``aggregation.3.*``).
- ``netvlad``: NetVLAD (heads report §3.3, eqs. 2-4), keys ``centroids`` and ``conv.weight`` (no
  bias), computed with one batched matmul instead of the reference per-cluster loop.
- ``crn``: Contextual Reweighting Network (CRN; heads report §3.4): average pool 3x3/2 ->
  3x3 (32), 5x5 (32), 7x7 (20) context filters -> concat -> 1x1 accumulation (weight fixed to
  1, bias learnable as in the original Caffe net) -> ReLU -> bilinear upsampling to exactly the
  feature size -> mask that multiplies the NetVLAD soft-assignment. Keys as the benchmark
  (``crn.filter_3_3``, ``crn.filter_5_5``, ``crn.filter_7_7``, ``crn.acc_w``).
- ``crn2``: CRN2 (heads report §3.5): the 5x5 and 7x7 filters replaced by 2 and 3 stacked 3x3,
  all dilated by 2 instead of pooling + upsampling, mask computed at the feature resolution.
- ``haf``: Hierarchical Attention Fusion (HAF): three backbone scales, each 1x1-reduced,
  an attention (detection score) map per scale, attention-weighted pooling, and learned fusion
  weights ``w`` (softmax, so they sum to 1 as in HAF's Table 2); the descriptor is
  ``concat_s(sqrt(w_s) * K_s)``, whose squared distance is ``sum_s w_s ||K_q^s - K_r^s||^2``.

Every head works on any feature size down to 1x1 (the benchmark's CRN crashes on odd sizes)
and returns ``(N, out_dim)`` unit vectors. Convention: input ``(N, C, H, W)``; HAF takes the list
of the backbone's three stage maps.

Why one module of this size: eight heads of 20-80 lines each that share the pooling and
NetVLAD pieces and one registry (:data:`HEADS`); a head is added here.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812 - the torch convention
from vpr_ros.errors import ConfigError
from vpr_ros.faiss_config import configure_faiss
from vpr_ros.vectors import unit_rows


# ---------------------------------------------------------------- pure functions

def l2n(x: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise along ``dim``."""
    return F.normalize(x, p=2.0, dim=dim, eps=eps)


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean over H x W: ``(mean(clamp(x, eps)^p))^(1/p)``, ``(N,C,H,W)->(N,C,1,1)``."""
    return F.avg_pool2d(x.clamp(min=eps).pow(p), (x.size(-2), x.size(-1))).pow(1.0 / p)


def netvlad_aggregate(x: torch.Tensor, soft_assign: torch.Tensor,
                      centroids: torch.Tensor) -> torch.Tensor:
    """VLAD core (heads report, eq. 3) as one batched matmul, then intra- and global L2.

    ``V[n, k] = sum_i a[n, k, i] (x[n, :, i] - c_k) = (A X^T)[n, k] - c_k sum_i a[n, k, i]``.
    Args: x ``(N, C, HW)`` (already L2-normalised per location), soft_assign ``(N, K, HW)``,
    centroids ``(K, C)``. Returns ``(N, K*C)``.
    """
    vlad = torch.bmm(soft_assign, x.transpose(1, 2))
    vlad = vlad - centroids.unsqueeze(0) * soft_assign.sum(dim=2, keepdim=True)
    vlad = l2n(vlad, dim=2)
    return l2n(vlad.flatten(1), dim=1)


def netvlad_aggregate_loop(x: torch.Tensor, soft_assign: torch.Tensor,
                           centroids: torch.Tensor) -> torch.Tensor:
    """Compute NetVLAD with the benchmark/Nanne per-cluster loop (reference for tests; slow)."""
    n, c, _ = x.shape
    k = centroids.shape[0]
    vlad = torch.zeros(n, k, c, dtype=x.dtype, device=x.device)
    for cluster in range(k):
        residual = x.unsqueeze(0).permute(1, 0, 2, 3) - \
            centroids[cluster:cluster + 1, :].expand(x.size(-1), -1, -1).permute(1, 2, 0) \
            .unsqueeze(0)
        residual = residual * soft_assign[:, cluster:cluster + 1, :].unsqueeze(2)
        vlad[:, cluster:cluster + 1, :] = residual.sum(dim=-1)
    vlad = l2n(vlad, dim=2)
    return l2n(vlad.view(n, -1), dim=1)


# ---------------------------------------------------------------- small modules

class L2Norm(nn.Module):
    """L2-normalise along ``dim`` (no parameters)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``."""
        return l2n(x, dim=self.dim)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent ``p`` (shape (1,), init 3; benchmark layout)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``(N, C, H, W)`` to ``(N, C, 1, 1)``."""
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        """Show the current ``p``."""
        return f'p={self.p.data.tolist()[0]:.4f}, eps={self.eps}'


class AvgPool(nn.Module):
    """Global average pooling ``(N, C, H, W) -> (N, C, 1, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average over H x W."""
        return x.mean(dim=(2, 3), keepdim=True)


class Flatten(nn.Module):
    """``(N, C, 1, 1) -> (N, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop the two singleton spatial dimensions."""
        return x.flatten(1)


# ---------------------------------------------------------------- heads

class AvgHead(nn.Sequential):
    """Base head (heads report §3.1): L2 over channels, average pool, flatten, L2."""

    multiscale = False

    def __init__(self, channels: int) -> None:
        super().__init__(L2Norm(), AvgPool(), Flatten(), L2Norm())
        self.out_dim = channels

    @classmethod
    def build(cls, channels: int, stage_channels: Sequence[int], cfg: Any) -> 'AvgHead':
        """Build from the backbone channels and the model config."""
        return cls(channels)


class GeMHead(nn.Sequential):
    """GeM head (heads report §3.2) in the benchmark's layout for its three ``l2`` modes."""

    multiscale = False

    def __init__(self, channels: int, p: float = 3.0, l2: str = 'before_pool') -> None:
        if l2 == 'before_pool':
            layers = [L2Norm(), GeM(p), Flatten(), L2Norm()]
        elif l2 == 'after_pool':
            layers = [GeM(p), L2Norm(), Flatten()]
        elif l2 == 'none':
            layers = [GeM(p), Flatten(), L2Norm()]  # benchmark 'none' is unnormalised
        else:
            raise ConfigError(f'unknown GeM l2 mode {l2!r}')
        super().__init__(*layers)
        self.out_dim = channels

    @classmethod
    def build(cls, channels: int, stage_channels: Sequence[int], cfg: Any) -> 'GeMHead':
        """Build from the backbone channels and the model config."""
        return cls(channels, cfg.gem_p, cfg.gem_l2)


class GeMFCHead(nn.Sequential):
    """GeM + FC whitening (heads report §3.2), CosPlace layout (``aggregation.1.p``, ``3.*``)."""

    multiscale = False

    def __init__(self, channels: int, out_dim: int, p: float = 3.0) -> None:
        super().__init__(L2Norm(), GeM(p), Flatten(), nn.Linear(channels, out_dim), L2Norm())
        self.out_dim = out_dim

    @classmethod
    def build(cls, channels: int, stage_channels: Sequence[int], cfg: Any) -> 'GeMFCHead':
        """Build from the backbone channels and the model config."""
        return cls(channels, cfg.descriptor_dim or channels, cfg.gem_p)


class NetVLAD(nn.Module):
    """NetVLAD (heads report §3.3): soft-assignment 1x1 conv (no bias) + batched VLAD core."""

    multiscale = False

    def __init__(self, channels: int, clusters: int = 64, alpha: float = 100.0) -> None:
        super().__init__()
        self.clusters = clusters
        self.channels = channels
        self.alpha = alpha  # plain attribute, baked into conv.weight by init_netvlad
        self.conv = nn.Conv2d(channels, clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(clusters, channels))
        self.out_dim = clusters * channels

    def soft_assign(self, x: torch.Tensor) -> torch.Tensor:
        """Soft-assignment ``(N, K, HW)`` of L2-normalised features (eq. 2)."""
        return F.softmax(self.conv(x).flatten(2), dim=1)

    def weight_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """Context mask ``(N, 1, HW)`` multiplying the soft-assignment (None: no mask)."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Aggregate ``(N, C, H, W)`` into ``(N, K*C)`` unit vectors."""
        x = l2n(x, dim=1)
        assign = self.soft_assign(x)
        mask = self.weight_mask(x)
        if mask is not None:
            assign = assign * mask
        return netvlad_aggregate(x.flatten(2), assign, self.centroids)

    @classmethod
    def build(cls, channels: int, stage_channels: Sequence[int], cfg: Any) -> 'NetVLAD':
        """Build from the backbone channels and the model config."""
        return cls(channels, cfg.netvlad_clusters)


class CRNModule(nn.Module):
    """CRN context network (Kim et al.): pool -> 3/5/7 context filters -> 1x1 -> upsample."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # padding=1 + count_include_pad=False keeps 1x1 maps alive (the benchmark's pad 0 fails).
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                       count_include_pad=False)
        self.filter_3_3 = nn.Conv2d(channels, 32, 3, padding=1)
        self.filter_5_5 = nn.Conv2d(channels, 32, 5, padding=2)
        self.filter_7_7 = nn.Conv2d(channels, 20, 7, padding=3)
        self.acc_w = nn.Conv2d(84, 1, 1)
        for conv in (self.filter_3_3, self.filter_5_5, self.filter_7_7):
            nn.init.xavier_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.ones_(self.acc_w.weight)
        nn.init.zeros_(self.acc_w.bias)
        self.acc_w.weight.requires_grad_(False)  # original: weight lr 0, bias learnable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the reweighting mask ``(N, 1, H, W)`` at exactly the input size."""
        y = self.downsample(x)
        y = torch.cat([self.filter_3_3(y), self.filter_5_5(y), self.filter_7_7(y)], dim=1)
        y = F.relu(self.acc_w(F.relu(y)))
        return F.interpolate(y, size=x.shape[-2:], mode='bilinear', align_corners=False)


class CRN2Module(nn.Module):
    """CRN2 context network (heads report §3.5): stacked dilated 3x3 filters, no pool/upsample.

    Branch 1: 3x3 C->32; branch 2: two 3x3 (C->32->32) for a 5x5 field; branch 3: three 3x3
    (C->32->32->20) for a 7x7 field; all dilated by 2 so the field matches CRN's (which works
    on a map pooled by 2). About 245k mask parameters for C=256 vs 529k for CRN (heads report
    §4.2).
    """

    def __init__(self, channels: int, dilation: int = 2) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Conv2d:
            layer = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
            return layer

        self.filter_3_3 = conv(channels, 32)
        self.filter_5_5 = nn.Sequential(conv(channels, 32), nn.ReLU(inplace=True), conv(32, 32))
        self.filter_7_7 = nn.Sequential(conv(channels, 32), nn.ReLU(inplace=True), conv(32, 32),
                                        nn.ReLU(inplace=True), conv(32, 20))
        self.acc_w = nn.Conv2d(84, 1, 1)
        nn.init.ones_(self.acc_w.weight)
        nn.init.zeros_(self.acc_w.bias)
        self.acc_w.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the reweighting mask ``(N, 1, H, W)``."""
        y = torch.cat([self.filter_3_3(x), self.filter_5_5(x), self.filter_7_7(x)], dim=1)
        return F.relu(self.acc_w(F.relu(y)))


class CRN(NetVLAD):
    """CRN + NetVLAD (Kim et al.): the context mask reweights the soft-assignment."""

    def __init__(self, channels: int, clusters: int = 64, alpha: float = 100.0) -> None:
        super().__init__(channels, clusters, alpha)
        self.crn = CRNModule(channels)

    def weight_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Context mask from the L2-normalised features (benchmark input convention)."""
        return self.crn(x).flatten(2)

    def mask_parameters(self) -> int:
        """Count the parameters of the mask network (the report's comparison)."""
        return sum(p.numel() for p in self.crn.parameters())


class CRN2(CRN):
    """CRN2 + NetVLAD (heads report §3.5)."""

    def __init__(self, channels: int, clusters: int = 64, alpha: float = 100.0) -> None:
        NetVLAD.__init__(self, channels, clusters, alpha)
        self.crn = CRN2Module(channels)


class HAF(nn.Module):
    """Hierarchical attention fusion (HAF, Yan et al.) over the backbone's three scales."""

    multiscale = True

    def __init__(self, stage_channels: Sequence[int], dim: int = 128) -> None:
        super().__init__()
        self.reduce = nn.ModuleList([nn.Conv2d(c, dim, 1) for c in stage_channels])
        self.attention = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True),
                          nn.Conv2d(dim, 1, 1), nn.Softplus()) for _ in stage_channels])
        # Fusion logits; softmax gives the adaptive weights w_1..w_S (HAF, Table 2).
        self.fusion = nn.Parameter(torch.zeros(len(stage_channels)))
        self.out_dim = dim * len(stage_channels)

    def fusion_weights(self) -> torch.Tensor:
        """Return the fusion weights ``w`` (sum to 1)."""
        return self.fusion.softmax(dim=0)

    def parts(self, stages: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-scale unit descriptors ``K`` (N, S, dim) and mean detection scores ``s`` (N, S).

        These are the ``K^c`` and ``s^c`` of HAF's detection term (training/losses.py).
        """
        descs, scores = [], []
        for i, x in enumerate(stages):
            f = l2n(self.reduce[i](x), dim=1)
            score = self.attention[i](f) + 1e-6  # detection score s (HAF), > 0
            pooled = (f * score).sum(dim=(2, 3)) / score.sum(dim=(2, 3))
            descs.append(l2n(pooled, dim=1))
            scores.append(score.mean(dim=(1, 2, 3)))
        return torch.stack(descs, dim=1), torch.stack(scores, dim=1)

    def fuse(self, descs: torch.Tensor) -> torch.Tensor:
        """Concatenate ``sqrt(w_s) * K_s`` of (N, S, dim) per-scale parts into unit vectors."""
        weights = self.fusion_weights().sqrt().view(1, -1, 1)
        return l2n((descs * weights).flatten(1), dim=1)

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fuse the per-scale attention-pooled descriptors into one unit vector."""
        return self.fuse(self.parts(stages)[0])

    @classmethod
    def build(cls, channels: int, stage_channels: Sequence[int], cfg: Any) -> 'HAF':
        """Build from the backbone stage channels and the model config."""
        return cls(stage_channels, cfg.haf_dim)


class GeMStagesHead(nn.Module):
    """GeM over the last two backbone stages, each L2-normalised, concatenated.

    Mid-level features transfer better than the last, most ImageNet-specific stage to instance
    retrieval (Razavian et al., "Visual Instance Retrieval with Deep Convolutional Networks",
    ITE Trans. MTA 2016; Yue-Hei Ng et al., "Exploiting Local Features from Deep Networks for
    Image Retrieval", CVPR Workshops 2015), while the last stage carries the most context. The
    stride-16 stage is cheap to add: it is computed anyway, and pooling it costs nothing next
    to the forward. Each stage is pooled as the ``gem`` head does (L2 over channels, GeM with
    its own learnable p, L2), so each has the same weight in the cosine.
    """

    multiscale = True

    def __init__(self, stage_channels: Sequence[int], p: float = 3.0) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in stage_channels[-2:])
        self.pools = nn.ModuleList([GeM(p) for _ in self.channels])
        self.out_dim = sum(self.channels)

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pool the last two stage maps and concatenate the unit vectors."""
        parts = [l2n(pool(l2n(x, dim=1)).flatten(1), dim=1)
                 for pool, x in zip(self.pools, stages[-2:])]
        return l2n(torch.cat(parts, dim=1), dim=1)

    @classmethod
    def build(cls, channels: int, stage_channels: Sequence[int], cfg: Any) -> 'GeMStagesHead':
        """Build from the backbone stage channels and the model config."""
        return cls(stage_channels, cfg.gem_p)


HEADS: dict[str, Any] = {
    'avg': AvgHead,
    'gem': GeMHead,
    'gem_stages': GeMStagesHead,
    'gem_fc': GeMFCHead,
    'netvlad': NetVLAD,
    'crn': CRN,
    'crn2': CRN2,
    'haf': HAF,
}


def build_head(name: str, channels: int, stage_channels: Sequence[int], cfg: Any) -> nn.Module:
    """Build head ``name`` for a backbone with ``channels`` output channels."""
    if name not in HEADS:
        raise ConfigError(f'unknown head {name!r}; choose one of {list(HEADS)}')
    return HEADS[name].build(channels, stage_channels, cfg)


# ---------------------------------------------------------------- NetVLAD k-means init

def sample_local_features(features: torch.Tensor, per_image: int = 100,
                          seed: int = 0) -> np.ndarray:
    """Sample ``per_image`` L2-normalised local descriptors per feature map ``(N, C, H, W)``."""
    gen = torch.Generator().manual_seed(seed)
    x = l2n(features.detach().float().cpu(), dim=1).flatten(2).transpose(1, 2)  # N,HW,C
    rows = []
    for image in x:
        take = min(per_image, image.shape[0])
        rows.append(image[torch.randperm(image.shape[0], generator=gen)[:take]])
    return torch.cat(rows).numpy().astype(np.float32)


def init_netvlad(head: NetVLAD, data: torch.Tensor | np.ndarray, *, niter: int = 100,
                 seed: int = 0) -> float:
    """Initialise a NetVLAD/CRN head from local features with FAISS k-means (heads report §3.3).

    ``data`` is either ``(M, C)`` local descriptors or ``(N, C, H, W)`` backbone feature maps
    (100 random locations per map are used). Following the benchmark and Nanne's vladv1:
    ``centroids`` = k-means centres, ``conv.weight = alpha * c / ||c||`` with
    ``alpha = -ln(0.01) / mean(top1 - top2 dot product to the normalised centres)``.
    Returns ``alpha``.
    """
    import faiss

    if isinstance(data, torch.Tensor) and data.dim() == 4:
        descs = sample_local_features(data, seed=seed)
    else:
        descs = unit_rows(data.cpu().numpy() if isinstance(data, torch.Tensor) else data)
    if descs.ndim != 2 or descs.shape[1] != head.channels:
        raise ConfigError(f'init_netvlad: expected (M, {head.channels}) descriptors, got '
                          f'{descs.shape}')
    if descs.shape[0] < head.clusters:
        raise ConfigError(f'init_netvlad: need at least {head.clusters} descriptors, got '
                          f'{descs.shape[0]}')
    descs = np.ascontiguousarray(descs)
    configure_faiss()
    kmeans = faiss.Kmeans(head.channels, head.clusters, niter=niter, verbose=False, seed=seed)
    kmeans.train(descs)
    centroids = kmeans.centroids.astype(np.float32)
    normed = unit_rows(centroids)
    dots = descs @ normed.T
    top2 = -np.sort(-dots, axis=1)[:, :2]
    gap = float(np.mean(top2[:, 0] - top2[:, 1])) if head.clusters > 1 else 1.0
    alpha = -math.log(0.01) / max(gap, 1e-12)
    with torch.no_grad():
        head.centroids.copy_(torch.from_numpy(centroids))
        head.conv.weight.copy_(torch.from_numpy(alpha * normed)[:, :, None, None])
    head.alpha = alpha
    return alpha
