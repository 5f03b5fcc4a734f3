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

"""GeoWarp's warping regression with its first convolution folded: same result, less work.

The correlation map (:func:`vpr_ros.models.geowarp.correlation`) has one channel per cell of
the query's dense features pooled to 15x15. When the query's features are smaller than 15 cells
on a side (6x8 for 96x128 thumbnails), adaptive average pooling up to 15x15 repeats cells: of
the 225 channels only 135 differ (9 distinct row windows of 15). At thumbnails of the model's
input size (240x320, 15x20 features) every channel differs and the fold changes nothing.
Repeated channels are equal, so the first convolution (225 -> 128 channels, 7x7, three
quarters of the regression's work) can sum the weights of each group of equal channels and
read one channel per group:
``conv(corr) == conv_folded(corr[:, keep])`` up to float rounding. Only valid when every
correlation comes from dense maps of the size it was folded for, as in the localizer.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812 - the usual name

from vpr_ros.models.geowarp import GRID, WarpingRegression


def _windows(size: int, grid: int = GRID) -> list[tuple[int, int]]:
    """Input windows of ``adaptive_avg_pool2d`` from ``size`` to ``grid`` cells."""
    return [(math.floor(i * size / grid), math.ceil((i + 1) * size / grid))
            for i in range(grid)]


def channel_groups(height: int, width: int) -> tuple[list[int], list[int]]:
    """Return ``(keep, group)`` of the correlation channels of ``height x width`` maps.

    ``keep`` holds one channel per group of equal channels, ``group`` the group of each of the
    225 channels. Channel ``k = x * 15 + y`` holds query cell (row y, column x) (column-major, as
    :func:`correlation` orders them); two channels are equal when both windows are.
    """
    rows, cols = _windows(height), _windows(width)
    ids: dict[tuple, int] = {}
    group = [ids.setdefault((cols[x], rows[y]), len(ids)) for x in range(GRID)
             for y in range(GRID)]
    keep = [group.index(g) for g in range(len(ids))]
    return keep, group


class FoldedRegression(WarpingRegression):
    """Drop-in for ``WarpingRegression`` on correlations of ``dense_size`` maps.

    Shares the parameters of the module it folds (same ``state_dict``); the folded first
    convolution is a non-persistent buffer.
    """

    def __init__(self, regression: WarpingRegression, dense_size: tuple[int, int]) -> None:
        nn.Module.__init__(self)
        self.conv = regression.conv
        self.linear = regression.linear
        keep, group = channel_groups(*dense_size)
        weight = self.conv[0].weight.detach()
        folded = weight.new_zeros(weight.shape[0], len(keep), *weight.shape[2:])
        folded.index_add_(1, torch.tensor(group, device=weight.device), weight)
        self.register_buffer('keep', torch.tensor(keep, device=weight.device), persistent=False)
        self.register_buffer('folded', folded, persistent=False)
        self.dense_size = tuple(dense_size)

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        """Regress ``(N, 8, 2)`` points from ``(N, 225, 15, 15)`` correlations."""
        first = self.conv[0]
        x = F.conv2d(corr.index_select(1, self.keep), self.folded, first.bias,
                     padding=first.padding)
        x = self.conv[1:](x).flatten(1)
        return self.linear(x).reshape(-1, 8, 2)

    def extra_repr(self) -> str:
        return f'dense_size={self.dense_size}, channels={len(self.keep)} of {GRID * GRID}'
