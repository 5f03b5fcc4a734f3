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

"""GeoWarp training: random trapezoids, pair mining and the three losses (paper §3.4).

GeoWarp: Berton et al., "Viewpoint Invariant Dense Matching for Visual Geolocalization",
ICCV 2021, arXiv 2109.09827; equation numbers below are the paper's.

L_total = lambda_ss * L_ss + lambda_fw * L_fw + lambda_cons * L_cons (eq. 10). L_ss (eq. 11-13)
needs single unlabelled images, L_cons (eq. 18-19) any pair, L_fw (eq. 14-17) query-positive
pairs mined with positions and global descriptors. Only the regression module is trained; the
encoder that makes the dense features stays frozen.

Convention: the points conventions of :mod:`vpr_ros.models.geowarp` (``(N, 4, 2)``,
normalised ``(x, y)`` in ``[-1, 1]``, TL, TR, BR, BL; predictions ``(N, 8, 2)`` = 4 points on
the first input then 4 on the second). All squared errors are means (``F.mse_loss``), as in the
published code; the paper's sums differ by a constant factor.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from vpr_ros.config import Config, option
from vpr_ros.errors import DataError
from vpr_ros.models.geowarp import (corners_to_homography, GeoWarp, identity_points,
                                    local_features, project_points, warp)


@dataclasses.dataclass(frozen=True)
class GeoWarpLossConfig(Config):
    """How GeoWarp is fitted (§3.4, §4.1 defaults): trapezoids, L_fw pairs, loss weights."""

    k: float = option(0.6, 'warping coefficient of the random trapezoids (eq. 11)',
                      min=0.0, max=1.0)
    t_geo: float = option(25.0, 'L_fw pairs: largest distance between query and positive (m)',
                          min=0.0)
    t_feat: float = option(1.2, 'L_fw pairs: largest squared global-descriptor distance',
                           min=0.0)
    lambda_ss: float = option(1.0, 'weight of the self-supervised loss L_ss', min=0.0)
    lambda_fw: float = option(10.0, 'weight of the features-wise loss L_fw', min=0.0)
    lambda_cons: float = option(0.1, 'weight of the consistency loss L_cons', min=0.0)


#: Corner order after a horizontal flip: TL <-> TR and BR <-> BL, on both quadrilaterals.
_FLIP_ORDER = (1, 0, 3, 2, 5, 4, 7, 6)


def random_trapezoids(batch: int, k: float = 0.6, generator: torch.Generator | None = None,
                      *, device: torch.device | str | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample two trapezoids per image (eq. 11) and the widest trapezoid inside both.

    Each trapezoid has vertical left and right sides at ``x = -1 + U(0, k)`` and
    ``x = 1 - U(0, k)``, and four independent ``y = -/+ (1 - U(0, k))`` (the pixel form
    ``U(0, k) * w / 2`` of eq. 11 in normalised coordinates). ``t_z`` spans the whole overlap
    in ``x`` (its sides are the inner of the two left and right sides) and, on those two
    vertical sides, the whole height of the intersection: the lower of the two top edges and
    the higher of the two bottom edges (y grows downwards). The intersection is convex, so
    ``t_z`` lies inside both ``t_x`` and ``t_y``.

    Returns:
        ``t_x, t_y, t_z``: ``(batch, 4, 2)`` float32 on ``device``, TL, TR, BR, BL.
    """
    if not 0.0 <= k <= 1.0:
        raise DataError(f'k must be within [0, 1], got {k}')
    u = torch.rand((2, batch, 6), generator=generator) * k
    lx, rx = -1.0 + u[..., 0], 1.0 - u[..., 1]
    tl, tr = -1.0 + u[..., 2], -1.0 + u[..., 3]
    br, bl = 1.0 - u[..., 4], 1.0 - u[..., 5]
    traps = torch.stack([torch.stack([lx, tl], -1), torch.stack([rx, tr], -1),
                         torch.stack([rx, br], -1), torch.stack([lx, bl], -1)], dim=-2)

    def edge_y(x: torch.Tensor, y_left: torch.Tensor, y_right: torch.Tensor) -> torch.Tensor:
        return y_left + (x - lx) / (rx - lx) * (y_right - y_left)

    left = lx.max(0).values
    right = rx.min(0).values
    top_l = edge_y(left, tl, tr).max(0).values
    top_r = edge_y(right, tl, tr).max(0).values
    bot_r = edge_y(right, bl, br).min(0).values
    bot_l = edge_y(left, bl, br).min(0).values
    t_z = torch.stack([torch.stack([left, top_l], -1), torch.stack([right, top_r], -1),
                       torch.stack([right, bot_r], -1), torch.stack([left, bot_l], -1)], dim=-2)
    return traps[0].to(device), traps[1].to(device), t_z.to(device)


def self_supervised_pair(source: torch.Tensor, t_x: torch.Tensor, t_y: torch.Tensor,
                         t_z: torch.Tensor, out_size: tuple[int, int] | None = None,
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build the training quadruplet (I_a, I_b, t_a, t_b) of eq. 12 from one source.

    ``source`` ``(N, C, H, W)`` is an image batch (as published) or a dense feature batch;
    ``I_a = proj(source, t_x)``, ``I_b = proj(source, t_y)`` and ``t_a``, ``t_b`` are ``t_z``
    expressed in the frames of ``I_a`` and ``I_b``.
    """
    frame = identity_points(t_x.shape[0], device=t_x.device, dtype=t_x.dtype)
    view_a = warp(source, t_x, out_size)
    view_b = warp(source, t_y, out_size)
    t_a = project_points(corners_to_homography(t_x, frame), t_z)
    t_b = project_points(corners_to_homography(t_y, frame), t_z)
    return view_a, view_b, t_a, t_b


def loss_ss(pred: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
    """L_ss (eq. 13): squared error of W(I_a, I_b) ``(N, 8, 2)`` against ``[t_a, t_b]``."""
    return F.mse_loss(pred, torch.cat([t_a, t_b], dim=1))


def self_supervised_loss(model: GeoWarp, f_a: torch.Tensor, f_b: torch.Tensor,
                         t_a: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
    """L_ss on both input orders: W(a, b) vs [t_a, t_b] and W(b, a) vs [t_b, t_a] (published)."""
    return loss_ss(model.predict(f_a, f_b), t_a, t_b) + loss_ss(model.predict(f_b, f_a), t_b, t_a)


def loss_fw(f_q_warped: torch.Tensor, f_g_warped: torch.Tensor) -> torch.Tensor:
    """L_fw (eq. 17): distance of the warped pair's local features (15x15, L2-normalised).

    Eq. 17 as printed sums squared dot products, which minimising would make the features
    orthogonal, against the stated aim ("as close as possible"); this is the published code's
    mean squared error, which for unit vectors is ``(2 - 2 cos) / C`` per location, i.e. it
    maximises the re-ranking score of eq. 4.
    """
    return F.mse_loss(local_features(f_q_warped), local_features(f_g_warped))


def features_wise_loss(model: GeoWarp, f_q: torch.Tensor, f_g: torch.Tensor, *,
                       images_q: torch.Tensor | None = None,
                       images_g: torch.Tensor | None = None,
                       dense_fn=None) -> torch.Tensor:
    """L_fw for query-positive pairs (eq. 16-17), differentiable w.r.t. the regression.

    ``features`` mode warps ``f_q``/``f_g``; with ``images_q``, ``images_g`` and ``dense_fn``
    (a frozen encoder that lets gradients through to its input) the images are warped and
    their features recomputed, as in the paper.
    """
    pred = model.predict(f_q, f_g)
    if images_q is None:
        return loss_fw(warp(f_q, pred[:, :4]), warp(f_g, pred[:, 4:], tuple(f_q.shape[-2:])))
    if images_g is None or dense_fn is None:
        raise DataError('features_wise_loss on images needs images_q, images_g and dense_fn')
    size = tuple(images_q.shape[-2:])
    n = images_q.shape[0]
    dense = dense_fn(torch.cat([warp(images_q, pred[:, :4]), warp(images_g, pred[:, 4:], size)]))
    return loss_fw(dense[:n], dense[n:])


def flip_points(pred: torch.Tensor) -> torch.Tensor:
    """Map predictions ``(N, 8, 2)`` made on horizontally flipped inputs back (tau^-1)."""
    out = pred[:, list(_FLIP_ORDER)].clone()
    out[..., 0] = -out[..., 0]
    return out


def swap_pair(pred: torch.Tensor) -> torch.Tensor:
    """Reorder a W(b, a) prediction ``(N, 8, 2)`` to the (a, b) order."""
    return torch.cat([pred[:, 4:], pred[:, :4]], dim=1)


def loss_cons(pred_qg: torch.Tensor, pred_gq: torch.Tensor, pred_qg_flip: torch.Tensor,
              pred_gq_flip: torch.Tensor) -> torch.Tensor:
    """L_cons (eq. 18-19) with N = 2 transformations: identity and horizontal flip.

    Args:
        pred_qg: W(q, g); ``pred_gq``: W(g, q); ``pred_qg_flip``: W(flip q, flip g);
            ``pred_gq_flip``: W(flip g, flip q), each ``(N, 8, 2)`` as the module outputs them.

    Returns:
        Mean squared distance of the four predictions (mapped back with tau^-1 and put in
        (q, g) order) to their detached mean, the pseudo-label [t*_q, t*_g].
    """
    preds = torch.stack([pred_qg, swap_pair(pred_gq), flip_points(pred_qg_flip),
                         swap_pair(flip_points(pred_gq_flip))])
    target = preds.mean(0).detach()
    return ((preds - target) ** 2).mean()


def consistency_loss(model: GeoWarp, f_q: torch.Tensor, f_g: torch.Tensor,
                     f_q_flip: torch.Tensor | None = None,
                     f_g_flip: torch.Tensor | None = None) -> torch.Tensor:
    """L_cons of a pair of dense feature maps; flips the maps when no flipped features are given.

    Pass the features of the flipped images (``f_q_flip``, ``f_g_flip``) to follow the paper
    exactly; flipping the feature maps is the ``features``-mode approximation.
    """
    f_q_flip = torch.flip(f_q, dims=(-1,)) if f_q_flip is None else f_q_flip
    f_g_flip = torch.flip(f_g, dims=(-1,)) if f_g_flip is None else f_g_flip
    return loss_cons(model.predict(f_q, f_g), model.predict(f_g, f_q),
                     model.predict(f_q_flip, f_g_flip), model.predict(f_g_flip, f_q_flip))


def total_loss(config: GeoWarpLossConfig, *, l_ss: torch.Tensor | None = None,
               l_fw: torch.Tensor | None = None,
               l_cons: torch.Tensor | None = None) -> torch.Tensor:
    """L_total (eq. 10) with the config's lambdas; absent terms (None) count as zero."""
    terms = [(config.lambda_ss, l_ss), (config.lambda_fw, l_fw), (config.lambda_cons, l_cons)]
    present = [w * loss for w, loss in terms if loss is not None]
    if not present:
        raise DataError('total_loss needs at least one of l_ss, l_fw, l_cons')
    return torch.stack(present).sum()


def mine_pairs(positions_q: torch.Tensor, positions_g: torch.Tensor, desc_q: torch.Tensor,
               desc_g: torch.Tensor, config: GeoWarpLossConfig) -> torch.Tensor:
    """Query-positive pairs for L_fw (eq. 14-15), mined once before training.

    Args:
        positions_q, positions_g: ``(Q, 2)`` / ``(G, 2)`` planar positions in metres
            (local ENU or UTM east/north).
        desc_q, desc_g: global descriptors ``(Q, D)`` / ``(G, D)``.
        config: ``t_geo`` (m) and ``t_feat`` (squared descriptor distance).

    Returns:
        ``(M, 2)`` long indices ``(query, gallery)`` with distance < t_geo and squared
        descriptor distance < t_feat.
    """
    close = torch.cdist(positions_q.double(), positions_g.double()) < config.t_geo
    similar = torch.cdist(desc_q.float(), desc_g.float()) ** 2 < config.t_feat
    return torch.nonzero(close & similar)
