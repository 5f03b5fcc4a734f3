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

"""GeoWarp re-ranking: pairwise homographic warping before dense matching.

Berton et al., "Viewpoint Invariant Dense Matching for Visual Geolocalization", ICCV 2021,
arXiv 2109.09827 (section and equation numbers below are the paper's).
The warping regression module W (§3.3, eq. 5-9) reads the dense features of a query and a
candidate, correlates them (matching layer M, eq. 6) and regresses one quadrilateral on each
image (eq. 8). Both images (``image`` mode, as published) or both dense feature maps
(``features`` mode, no second backbone pass) are warped so that their quadrilaterals fill the
frame, and the candidates are re-ranked by the dense similarity of the warped pair (eq. 4).
The training losses (§3.4) live in :mod:`vpr_ros.models.geowarp_losses`.

Convention:
    - dense features: ``(N, C, h, w)``, any ``h, w >= 2``; images ``(N, 3, H, W)``
    - points: ``(N, 4, 2)`` as ``(x, y)``, corners in the order top-left, top-right,
      bottom-right, bottom-left (TL, TR, BR, BL)
    - coordinates are normalised to ``[-1, 1]`` over the map or image (``align_corners=True``:
      -1 and +1 are the centres of the first and last pixel; ``x`` grows to the right, ``y``
      downwards), so the same points apply to an image and to its dense feature map
    - the identity warp is the full frame ``[[-1, -1], [1, -1], [1, 1], [-1, 1]]``
    - :func:`warp` stretches the quadrilateral ``points`` over the whole output frame

State dict (``GeoWarp``): ``regression.conv.{0,3,6,9,12,15}.{weight,bias}`` (convs),
``regression.conv.{1,4,...,16}.*`` (BatchNorm), ``regression.linear.{weight,bias}``: the
layout of gmberton/geo_warp's ``HomographyRegression`` (trained configuration) under the prefix
``regression.``, so its ``trained_homography_regressions/*.pth`` load after adding the prefix.

Why one module of this size (about 400 lines): the model and its re-ranking scores are one
concept; its training losses are :mod:`vpr_ros.models.geowarp_losses`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Mapping

from kornia.geometry.linalg import transform_points
from kornia.geometry.transform import get_perspective_transform, warp_perspective
import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812 - the usual name
from vpr_ros.config import Config, option
from vpr_ros.errors import DataError
from vpr_ros.models.weights import read_checkpoint, save_payload

#: Side of the grid the dense features are pooled to before matching and scoring (§4.1).
GRID = 15
#: Published regression stack (geo_warp train.py/eval.py): six convs, 15 -> 11 -> 9 -> ... -> 1.
KERNEL_SIZES = (7, 5, 5, 5, 5, 5)
CHANNELS = (GRID * GRID, 128, 128, 64, 64, 64, 64)
PADDING = 1
_EPS = 1e-6

DenseFn = Callable[[torch.Tensor], torch.Tensor]

#: What GeoWarp warps before scoring; ``auto`` is resolved by the localizer from the map.
MODES = ('image', 'features', 'auto')


#: Fitting settings that GeoWarpConfig held before they moved to
#: :class:`vpr_ros.models.geowarp_losses.GeoWarpLossConfig` (``vpr-ros fit-geowarp``).
LOSS_FIELDS = ('k', 't_geo', 't_feat', 'lambda_ss', 'lambda_fw', 'lambda_cons')


@dataclasses.dataclass(frozen=True)
class GeoWarpConfig(Config):
    """How GeoWarp re-ranks (paper §4.1 defaults): the localizer's, mirrored as ROS parameters.

    How it is fitted (trapezoids, pair mining, loss weights) is
    :class:`vpr_ros.models.geowarp_losses.GeoWarpLossConfig`.
    """

    RETIRED: ClassVar[Mapping[str, str]] = {
        name: f"a GeoWarp fitting setting: fit-geowarp's losses.{name} (GeoWarpLossConfig)"
        for name in LOSS_FIELDS}

    mode: str = option('features', 'what is warped: "image" (as published: warp the images '
                       'and recompute dense features), "features" (warp the dense feature '
                       'maps, no extra backbone pass), or "auto" (localizer only): the mode '
                       'vpr-ros calibrate validated on the map, features when it has none',
                       choices=MODES)
    num_reranked: int = option(5, '|P|: retrieved candidates that are re-ranked', min=1)
    symmetric: bool = option(True, 'average the regressions of (q, p) and (p, q), as the '
                             'published code does at test time')
    image_scale: float = option(1.0, 'image mode: size of the warped images relative to the '
                                'query image (below 1 trades accuracy for speed)',
                                min=0.1, max=1.0)


def _check_maps(name: str, x: torch.Tensor, channels: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f'{name}: expected a tensor (N, C, h, w), got {shape}')
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise DataError(f'{name}: spatial size must be at least 2x2, got {tuple(x.shape)}')
    if channels is not None and x.shape[1] != channels:
        raise DataError(f'{name}: expected {channels} channels, got {x.shape[1]}')


def _check_points(name: str, points: torch.Tensor, batch: int | None = None) -> None:
    if points.dim() != 3 or points.shape[1:] != (4, 2):
        raise DataError(f'{name}: expected points (N, 4, 2), got {tuple(points.shape)}')
    if batch is not None and points.shape[0] != batch:
        raise DataError(f'{name}: expected {batch} sets of points, got {points.shape[0]}')


def l2_normalise(features: torch.Tensor) -> torch.Tensor:
    """L2-normalise ``(N, C, h, w)`` features per location (norm ``sqrt(sum x^2 + 1e-6)``)."""
    return features / torch.sqrt((features * features).sum(1, keepdim=True) + _EPS)


def local_features(dense: torch.Tensor, size: int = GRID) -> torch.Tensor:
    """Pool dense features to ``size x size`` and L2-normalise each location (§4.1)."""
    return l2_normalise(F.adaptive_avg_pool2d(dense, (size, size)))


def correlation(f_q: torch.Tensor, f_p: torch.Tensor) -> torch.Tensor:
    """Correlate every location of ``f_q`` with every one of ``f_p`` (matching layer M, eq. 6).

    Both maps are pooled to 15x15 and L2-normalised per location first, so any input size
    works. As in the published code (from CNNGeometric), the result is ReLU'd and
    L2-normalised over its 225 channels.

    Convention:
        - ``f_q``: ``(N or 1, C, h, w)``, ``f_p``: ``(N, C, h', w')``; returns ``(N, 225, 15, 15)``
        - ``out[n, k, i, j] = <f_p[n, :, i, j], f_q[n, :, y, x]>`` with ``k = x * 15 + y``
          (column-major over ``f_q``), the channel order trained geo_warp weights expect
    """
    _check_maps('f_q', f_q)
    _check_maps('f_p', f_p, f_q.shape[1])
    a = local_features(f_q)
    b = local_features(f_p)
    a, b = torch.broadcast_tensors(a, b)
    n, c, h, w = a.shape
    a = a.transpose(2, 3).reshape(n, c, h * w)           # column-major locations of f_q
    b = b.reshape(n, c, h * w).transpose(1, 2)           # (n, hw_p, c)
    corr = torch.bmm(b, a).reshape(n, h, w, h * w).permute(0, 3, 1, 2)
    return l2_normalise(F.relu(corr))


class WarpingRegression(nn.Module):
    """Homography regression R (eq. 8): correlation map -> 4 points on each image.

    Six [Conv -> BatchNorm -> ReLU] blocks (kernels 7, 5, 5, 5, 5, 5, channels 225 -> 128 ->
    128 -> 64 -> 64 -> 64 -> 64, padding 1, spatial 15 -> 1) and a linear layer to 16 values.
    The linear layer starts with zero weights and the frame corners as bias, so an untrained
    module returns the identity warp for every pair (§4.1).

    Convention:
        - input ``(N, 225, 15, 15)`` from :func:`correlation`
        - output ``(N, 8, 2)``: points 0-3 on the first image, 4-7 on the second, each
          TL, TR, BR, BL, normalised ``(x, y)``
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, size in zip(CHANNELS[:-1], CHANNELS[1:], KERNEL_SIZES):
            layers += [nn.Conv2d(c_in, c_out, size, padding=PADDING), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        self.linear = nn.Linear(CHANNELS[-1], 16)
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the linear weights and set its bias to the frame corners (identity warp)."""
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(identity_points(2, device=self.linear.bias.device).flatten())

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        """Regress ``(N, 8, 2)`` points from a ``(N, 225, 15, 15)`` correlation map."""
        _check_maps('correlation', corr, CHANNELS[0])
        x = self.conv(corr).flatten(1)
        return self.linear(x).reshape(-1, 8, 2)


def identity_points(batch: int = 1, *, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return the full frame ``(batch, 4, 2)`` as TL, TR, BR, BL in normalised coordinates."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
                           device=device, dtype=dtype)
    return corners.expand(batch, 4, 2).clone()


def corners_to_homography(src_pts: torch.Tensor, dst_pts: torch.Tensor) -> torch.Tensor:
    """Return the homography ``(N, 3, 3)`` that maps the 4 ``src_pts`` onto the 4 ``dst_pts``.

    Exact 4-point solve (kornia ``get_perspective_transform``), differentiable; the points are
    ``(N, 4, 2)`` in any one coordinate frame (normalised or pixels), ``H @ [x, y, 1]``.
    """
    _check_points('src_pts', src_pts)
    _check_points('dst_pts', dst_pts, src_pts.shape[0])
    return get_perspective_transform(src_pts, dst_pts)


def project_points(homography: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``(N, 3, 3)`` homographies to ``(N, M, 2)`` points (``proj`` of eq. 12)."""
    return transform_points(homography, points)


def normalised_to_pixels(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Map normalised ``(x, y)`` to pixel coordinates of an ``(h, w)`` grid (align_corners)."""
    h, w = size
    scale = points.new_tensor([(w - 1) / 2.0, (h - 1) / 2.0])
    return (points + 1.0) * scale


def warp(images_or_features: torch.Tensor, points: torch.Tensor,
         out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Warp each map so that its quadrilateral ``points`` fills the output (``proj``, eq. 2).

    Args:
        images_or_features: ``(N, C, H, W)`` images or dense feature maps.
        points: ``(N, 4, 2)`` normalised TL, TR, BR, BL on each input; the identity corners
            return the input resampled (unchanged when ``out_size`` is the input size).
        out_size: ``(h, w)`` of the output; the input size when None.

    Returns:
        ``(N, C, h, w)``, bilinear, zeros outside the input.
    """
    _check_maps('images_or_features', images_or_features)
    _check_points('points', points, images_or_features.shape[0])
    in_size = tuple(images_or_features.shape[-2:])
    out_size = in_size if out_size is None else tuple(out_size)
    if min(out_size) < 2:
        raise DataError(f'out_size must be at least 2x2, got {out_size}')
    n = points.shape[0]
    src = normalised_to_pixels(points, in_size)
    dst = normalised_to_pixels(identity_points(n, device=points.device, dtype=points.dtype),
                               out_size)
    src_to_dst = get_perspective_transform(src, dst)
    return warp_perspective(images_or_features, src_to_dst, out_size, align_corners=True)


def dense_similarity(f_q_warped: torch.Tensor, f_p_warped: torch.Tensor) -> torch.Tensor:
    """Re-ranking score d_p (eq. 4): sum over the 15x15 grid of per-location dot products.

    Both maps are pooled to 15x15 and L2-normalised per location, so the score is a sum of
    225 cosines (at most 225; higher is more similar). Shapes ``(N or 1, C, h, w)`` and
    ``(N, C, h', w')``; returns ``(N,)``.
    """
    _check_maps('f_q_warped', f_q_warped)
    _check_maps('f_p_warped', f_p_warped, f_q_warped.shape[1])
    a = local_features(f_q_warped)
    b = local_features(f_p_warped)
    return (a * b).sum(dim=(1, 2, 3))


class GeoWarp(nn.Module):
    """Warping regression module W plus the pairwise warp and re-ranking score (§3.2-3.3).

    ``GeoWarp(config).eval()`` re-ranks with :meth:`rerank_scores`; training uses
    :meth:`regress` and the losses in :mod:`vpr_ros.models.geowarp_losses`. The only
    parameters are those of ``regression`` (:class:`WarpingRegression`); the backbone that
    makes the dense features stays outside and frozen (§3.4).
    """

    def __init__(self, config: GeoWarpConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeoWarpConfig()
        self.regression = WarpingRegression()

    def predict(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        """W(a, b) of eq. 9 in one direction: ``(N, 8, 2)``, points 0-3 on a, 4-7 on b."""
        return self.regression(correlation(f_a, f_b))

    def regress(self, f_q: torch.Tensor, f_p: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Regress the quadrilaterals ``(points_q, points_p)`` of a query and its candidates.

        With ``config.symmetric`` (default) the predictions of (q, p) and (p, q) are averaged,
        as in the published test code; otherwise W(q, p) alone (eq. 1).

        Args:
            f_q: query dense features ``(1 or N, C, h, w)``.
            f_p: candidate dense features ``(N, C, h', w')``.

        Returns:
            ``points_q``, ``points_p``: ``(N, 4, 2)`` normalised TL, TR, BR, BL.
        """
        if not self.config.symmetric:
            qp = self.predict(f_q, f_p)
            return qp[:, :4], qp[:, 4:]
        n = f_p.shape[0]
        both = self.regression(torch.cat([correlation(f_q, f_p), correlation(f_p, f_q)]))
        qp, pq = both[:n], both[n:]
        return (qp[:, :4] + pq[:, 4:]) / 2, (qp[:, 4:] + pq[:, :4]) / 2

    def warp_pair(self, query: torch.Tensor, candidates: torch.Tensor,
                  points_q: torch.Tensor, points_p: torch.Tensor, scale: float = 1.0,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp a query (repeated per candidate) and the candidates onto the query's size."""
        n = candidates.shape[0]
        out_size = tuple(max(2, round(s * scale)) for s in query.shape[-2:])
        query = query.expand(n, *query.shape[1:])
        if query.shape[1:] == candidates.shape[1:]:
            # One batched warp: per-sample, so the same maps, for one call's fixed cost.
            both = warp(torch.cat([query, candidates]), torch.cat([points_q, points_p]),
                        out_size)
            return both[:n], both[n:]
        return warp(query, points_q, out_size), warp(candidates, points_p, out_size)

    def rerank_scores(self, query_dense: torch.Tensor, candidate_dense: torch.Tensor, *,
                      query_image: torch.Tensor | None = None,
                      candidate_images: torch.Tensor | None = None,
                      dense_fn: DenseFn | None = None,
                      mode: Literal['image', 'features'] | None = None) -> torch.Tensor:
        """Score each candidate against the query after the pairwise warp (eq. 4).

        Args:
            query_dense: query dense features ``(1, C, h, w)`` or ``(C, h, w)``.
            candidate_dense: dense features of the |P| candidates ``(P, C, h', w')``.
            query_image: ``image`` mode only, the query image ``(1, 3, H, W)``.
            candidate_images: ``image`` mode only, the candidates ``(P, 3, H', W')``.
            dense_fn: ``image`` mode only, images -> dense features (the same encoder that
                made ``query_dense``, e.g. ``DescriptorModel.dense_features``).
            mode: ``image`` or ``features``; ``config.mode`` when None.

        Returns:
            ``(P,)`` float32 scores, higher is more similar (at most 225).
        """
        mode = mode or self.config.mode
        if query_dense.dim() == 3:
            query_dense = query_dense.unsqueeze(0)
        _check_maps('query_dense', query_dense)
        _check_maps('candidate_dense', candidate_dense, query_dense.shape[1])
        if query_dense.shape[0] != 1:
            raise DataError(f'query_dense: expected one query, got {query_dense.shape[0]}')
        with torch.no_grad():
            points_q, points_p = self.regress(query_dense, candidate_dense)
            if mode == 'features':
                f_q, f_p = self.warp_pair(query_dense, candidate_dense, points_q, points_p)
                return dense_similarity(f_q, f_p)
            if mode == 'auto':
                raise DataError("mode: 'auto' is the localizer's choice from the map "
                                '(Localizer.geowarp_mode); score with image or features')
            if mode != 'image':
                raise DataError(f"mode: {mode!r} is not one of ['image', 'features']")
            if query_image is None or candidate_images is None or dense_fn is None:
                raise DataError('image mode needs query_image, candidate_images and dense_fn')
            if query_image.dim() == 3:
                query_image = query_image.unsqueeze(0)
            _check_maps('query_image', query_image)
            _check_maps('candidate_images', candidate_images, query_image.shape[1])
            if candidate_images.shape[0] != candidate_dense.shape[0]:
                raise DataError(f'candidate_images: {candidate_images.shape[0]} images for '
                                f'{candidate_dense.shape[0]} candidates')
            i_q, i_p = self.warp_pair(query_image, candidate_images, points_q, points_p,
                                      self.config.image_scale)
            n = i_q.shape[0]
            dense = dense_fn(torch.cat([i_q, i_p]))
            return dense_similarity(dense[:n], dense[n:])

    def extra_repr(self) -> str:
        return f'mode={self.config.mode}, num_reranked={self.config.num_reranked}'


#: ``format`` field of a GeoWarp checkpoint written by :func:`save_geowarp`.
GEOWARP_FORMAT = 'vpr_ros.geowarp'


def save_geowarp(geowarp: GeoWarp, path: str | Path, *, backbone: str,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write a GeoWarp checkpoint (config, weights, the backbone it was fitted on) atomically.

    The regression sees correlations only, so its weights would load for any backbone; the
    recorded ``backbone`` makes :func:`load_geowarp` refuse a mismatch instead of silently
    re-ranking with a module fitted on other features.
    """
    payload = {
        'format': GEOWARP_FORMAT,
        'version': 1,
        'backbone': backbone,
        'config': geowarp.config.to_dict(),
        'state_dict': {k: v.detach().cpu() for k, v in geowarp.state_dict().items()},
        'extra': dict(extra or {}),
    }
    return save_payload(payload, path)


def load_geowarp(path: str | Path, *, backbone: str | None = None,
                 config: GeoWarpConfig | None = None) -> tuple[GeoWarp, dict[str, Any]]:
    """Load a :func:`save_geowarp` checkpoint; return ``(geowarp in eval mode, extra)``.

    Args:
        path: the ``.pt`` file.
        backbone: if given, the checkpoint must have been fitted on this backbone.
        config: settings to use instead of the stored ones (e.g. the localizer's mode).
    """
    from vpr_ros.errors import CheckpointError

    obj = read_checkpoint(path)
    if not isinstance(obj, dict) or obj.get('format') != GEOWARP_FORMAT:
        raise CheckpointError(f'{path} is not a vpr_ros GeoWarp checkpoint '
                              f'(no "format": "{GEOWARP_FORMAT}")')
    if backbone is not None and obj.get('backbone') != backbone:
        raise CheckpointError(f'{path}: GeoWarp was fitted on backbone {obj.get("backbone")!r}, '
                              f'the model uses {backbone!r}; fit it again with '
                              f'vpr-ros fit-geowarp')
    # Checkpoints written before the split also hold the fitting settings (LOSS_FIELDS).
    stored = {k: v for k, v in dict(obj.get('config') or {}).items() if k not in LOSS_FIELDS}
    geowarp = GeoWarp(config or GeoWarpConfig.from_dict(stored))
    try:
        geowarp.load_state_dict(obj['state_dict'])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f'{path}: GeoWarp weights do not fit: '
                              f'{str(exc).splitlines()[0]}') from None
    return geowarp.eval(), dict(obj.get('extra', {}))
