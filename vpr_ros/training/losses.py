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

"""Training losses: the triplet margin loss and HAF's detection term.

Papers: the triplet margin loss as in M. Gambino, M. Pierro, F. Grillo, "Visual Geo-Localization"
(student project report on ResNet-18 heads), eq. 5; HAF: L. Yan, Y. Cui, Y. Chen, D. Liu,
"Hierarchical Attention Fusion for Geo-Localization", ICASSP 2021, arXiv 2102.09186.

Batch layout: ``B`` tuples of ``2 + K`` images, ``(query, best positive, K negatives)``, so a
batch's descriptors are ``(B * (2 + K), D)`` rows and ``view(B, 2 + K, D)`` separates them.
Within-batch negatives (from CRN: Kim, Dunn, Frahm, "Learned Contextual Feature Reweighting for
Image Geo-Localization", CVPR 2017) are extra ``(query, positive, row)`` terms whose row is any
image of the batch (``-1``: none).

- Triplet: ``max(||q - p|| - ||q - n_i|| + m, 0)`` per negative, averaged over the valid
  terms (the benchmark sums and divides by batch x negatives).
- HAF ("Training Objective"): ``dD(q, r) = sum_c (s_q^c s_r^c / sum_c' s_q^c' s_r^c')
  ||K_q^c - K_r^c||_2`` over the hierarchy levels ``c`` (per-scale descriptors ``K^c`` and mean
  detection scores ``s^c`` of :meth:`vpr_ros.models.heads.HAF.parts`), then the same ranking
  loss ``max(M + dD(q, p) - dD(q, n), 0)``. The weights come from the network's own
  detection scores, not from labels: the self-supervised part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from vpr_ros.config import Config, option


@dataclass(frozen=True)
class LossConfig(Config):
    """Margins and weights of the training losses."""

    margin: float = option(0.1, 'triplet margin m (Gambino et al. eq. 5; benchmark 0.1)', min=0.0)
    haf_weight: float = option(1.0, 'weight of HAF detection-term loss (Yan et al.) when the '
                                    'head is haf; 0: off', min=0.0)
    haf_margin: float = option(0.1, 'margin M of the HAF detection-term loss', min=0.0)


def triplet_terms(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                  margin: float) -> torch.Tensor:
    """Return ``max(||q - p|| - ||q - n|| + margin, 0)``: q, p (B, D), n (B, K, D) -> (B, K)."""
    d_pos = (q - p).norm(dim=-1, keepdim=True)
    d_neg = (q.unsqueeze(1) - n).norm(dim=-1)
    return F.relu(d_pos - d_neg + margin)


def detection_distance(k_q: torch.Tensor, s_q: torch.Tensor, k_r: torch.Tensor,
                       s_r: torch.Tensor) -> torch.Tensor:
    """Return HAF's ``dD(I_q, I_r)``: the detection-weighted sum of per-level distances.

    ``k_*`` (..., C, dim) per-level descriptors, ``s_*`` (..., C) positive detection scores;
    returns (...).
    """
    weight = s_q * s_r
    weight = weight / weight.sum(dim=-1, keepdim=True)
    return (weight * (k_q - k_r).norm(dim=-1)).sum(dim=-1)


def _gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return x[rows.clamp(min=0)]


def batch_loss(desc: torch.Tensor, negatives: int, config: LossConfig, *,
               batch_negatives: torch.Tensor | None = None,
               haf: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Loss of one batch of tuples; returns ``{'loss', 'triplet', 'haf'}`` (scalars).

    ``desc`` (B * (2 + K), D) in the batch layout; ``batch_negatives`` (B, k) row indices of
    within-batch negatives (-1: none); ``haf`` = (parts (rows, C, dim), scores (rows, C)).
    """
    group = 2 + negatives
    b = desc.shape[0] // group
    rows = torch.arange(b * group, device=desc.device).view(b, group)
    q_rows, p_rows, n_rows = rows[:, 0], rows[:, 1], rows[:, 2:]
    valid = torch.ones_like(n_rows, dtype=torch.bool)
    if batch_negatives is not None and batch_negatives.numel():
        n_rows = torch.cat([n_rows, batch_negatives.to(desc.device)], dim=1)
        valid = torch.cat([valid, batch_negatives.to(desc.device) >= 0], dim=1)
    weight = valid.float() / valid.float().sum().clamp(min=1.0)
    terms = triplet_terms(desc[q_rows], desc[p_rows], _gather_rows(desc, n_rows),
                          config.margin)
    triplet = (terms * weight).sum()
    out = {'triplet': triplet, 'haf': torch.zeros((), device=desc.device)}
    if haf is not None and config.haf_weight > 0:
        parts, scores = haf
        k_q, s_q = parts[q_rows], scores[q_rows]
        d_pos = detection_distance(k_q, s_q, parts[p_rows], scores[p_rows])        # (B,)
        d_neg = detection_distance(k_q.unsqueeze(1), s_q.unsqueeze(1),
                                   _gather_rows(parts, n_rows),
                                   _gather_rows(scores, n_rows))                   # (B, k)
        haf_terms = F.relu(config.haf_margin + d_pos.unsqueeze(1) - d_neg)
        out['haf'] = (haf_terms * weight).sum()
    out['loss'] = out['triplet'] + config.haf_weight * out['haf']
    return out
