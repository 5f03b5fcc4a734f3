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

"""AS-Geo learnable geometric-enhancement resizer (method part (1) of the paper).

H. Lu, C. Yang, M. Zhu, B. Qi, Y. Qiao, J. Xu, "AS-Geo: Arbitrary-Sized Image Geolocalization
with Learnable Geometric Enhancement Resizer" (2022; no arXiv id). AS-Geo: "it applies bilinear
interpolation to the input image and its feature maps to obtain the initial resized image and
the resized feature maps. Then, SKNet is used to approximate the
best receptive field ... And SENet is used to automatically select the feature maps with strong
contour information ... Finally, the enhanced geometric features are fused with the initial
resized image". The paper gives no layer sizes and no code is public, so the layout follows the
learnable resizer it extends (Talebi & Milanfar, "Learning to Resize Images for Computer Vision
Tasks", ICCV 2021, arXiv 2103.09950; as re-implemented in mmpretrain's ``LearnableResizer``):

    image ──bilinear──────────────────────────────────────────────► (+) ─► output
      └─ conv7x7 3→n ─ LReLU ─ conv1x1 ─ LReLU ─ BN ─ bilinear ─ SK ─ SE ─ conv3x3 ─ BN ─(+skip)
                                                                          └─ fusion conv7x7 n→3 ─┘

The fusion conv (the residual's last layer) is zero-initialised, so an untrained resizer is
exactly the bilinear resizer and a pretrained backbone keeps its accuracy. Aspect handling is
explicit and happens before resizing: ``stretch`` (none), ``pad`` (centre, zero = mean colour
after ImageNet normalisation) or ``crop`` (centre crop) to the output aspect ratio.
``align_corners=False`` everywhere.

Convention: input ``(N, 3, H, W)`` float (normalised), any H, W >= 1; output
``(N, 3, out_h, out_w)``.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812 - the torch convention

ASPECT_MODES = ('stretch', 'pad', 'crop')


def fit_aspect(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Centre-pad or centre-crop ``x`` to the aspect ratio of ``size`` (``stretch``: no-op)."""
    out_h, out_w = size
    h, w = x.shape[-2:]
    if mode == 'stretch' or h * out_w == w * out_h:
        return x
    if mode == 'crop':
        if w * out_h > h * out_w:  # too wide: crop width
            new_w = max(1, round(h * out_w / out_h))
            left = (w - new_w) // 2
            return x[..., :, left:left + new_w]
        new_h = max(1, round(w * out_h / out_w))
        top = (h - new_h) // 2
        return x[..., top:top + new_h, :]
    if mode == 'pad':
        if w * out_h > h * out_w:  # too wide: pad height
            new_h = round(w * out_h / out_w)
            top = (new_h - h) // 2
            return F.pad(x, (0, 0, top, new_h - h - top))
        new_w = round(h * out_w / out_h)
        left = (new_w - w) // 2
        return F.pad(x, (left, new_w - w - left, 0, 0))
    raise ValueError(f'unknown aspect mode {mode!r}; use one of {ASPECT_MODES}')


def bilinear_resize(x: torch.Tensor, size: tuple[int, int], *,
                    antialias: bool = True) -> torch.Tensor:
    """Bilinear resize to ``size`` = (H, W), ``align_corners=False``; no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False,
                         antialias=antialias)


class BilinearResizer(nn.Module):
    """Plain resizer (AS-Geo resizer off): aspect handling then bilinear, no parameters.

    ``size == (0, 0)`` keeps the native resolution (no resize at all).
    """

    def __init__(self, size: tuple[int, int], aspect: str = 'stretch', *,
                 antialias: bool = True) -> None:
        super().__init__()
        self.size = tuple(size)
        self.aspect = aspect
        self.antialias = antialias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Resize ``x`` to the configured size."""
        if self.size == (0, 0):
            return x
        x = fit_aspect(x, self.size, self.aspect)
        return bilinear_resize(x, self.size, antialias=self.antialias)

    def extra_repr(self) -> str:
        """Show size and aspect mode."""
        return f'size={self.size}, aspect={self.aspect!r}'


class SKBlock(nn.Module):
    """Selective-kernel block (Li et al., CVPR 2019): 3x3 and dilated 3x3 (5x5 field) branches.

    Branch outputs are summed, squeezed by global average pooling, and a per-branch softmax
    attention (over the branches, per channel) selects the receptive field.
    """

    def __init__(self, channels: int, reduction: int = 4, min_dim: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_dim)
        self.branches = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False),
                          nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            for d in (1, 2)])
        self.squeeze = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True))
        self.select = nn.Linear(hidden, channels * len(self.branches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the attention-weighted sum of the branches, same shape as ``x``."""
        feats = torch.stack([branch(x) for branch in self.branches], dim=1)  # N,B,C,H,W
        z = self.squeeze(feats.sum(dim=1).mean(dim=(2, 3)))
        weights = self.select(z).view(x.shape[0], len(self.branches), x.shape[1])
        weights = weights.softmax(dim=1)[..., None, None]
        return (feats * weights).sum(dim=1)


class SEBlock(nn.Module):
    """Squeeze-and-excitation gate (Hu et al., CVPR 2018): GAP -> FC -> ReLU -> FC -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each channel of ``x`` by its learned gate."""
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[..., None, None]


class ASGeoResizer(nn.Module):
    """Learnable AS-Geo resizer: bilinear image + zero-initialised geometric residual."""

    def __init__(self, size: tuple[int, int], aspect: str = 'stretch', *, channels: int = 16,
                 antialias: bool = True) -> None:
        super().__init__()
        if tuple(size) == (0, 0) or min(size) < 1:
            raise ValueError(f'the learnable resizer needs an output size, got {size}')
        self.size = tuple(size)
        self.aspect = aspect
        self.antialias = antialias
        n = channels
        self.head = nn.Sequential(
            nn.Conv2d(3, n, 7, padding=3), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(n, n, 1), nn.LeakyReLU(0.2, inplace=True), nn.BatchNorm2d(n))
        self.sk = SKBlock(n)
        self.se = SEBlock(n)
        self.enhance = nn.Sequential(nn.Conv2d(n, n, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(n))
        self.fusion = nn.Conv2d(n, 3, 7, padding=3)
        nn.init.zeros_(self.fusion.weight)
        nn.init.zeros_(self.fusion.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Resize ``x`` to the configured size with geometric enhancement."""
        x = fit_aspect(x, self.size, self.aspect)
        base = bilinear_resize(x, self.size, antialias=self.antialias)
        feats = bilinear_resize(self.head(x), self.size, antialias=self.antialias)
        enhanced = self.enhance(self.se(self.sk(feats))) + feats
        return base + self.fusion(enhanced)

    def extra_repr(self) -> str:
        """Show size and aspect mode."""
        return f'size={self.size}, aspect={self.aspect!r}'
