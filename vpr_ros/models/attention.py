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

"""Triplet attention (Misra et al., WACV 2021), placed as in AS-Geo (method part (2)).

AS-Geo (Lu et al., "AS-Geo: Arbitrary-Sized Image Geolocalization with Learnable Geometric
Enhancement Resizer", 2022) adds triplet attention "after the first convolutional layer of the
backbone network to optimize the utilization of geometric elements extracted by the first
convolutional layer".
The module follows the official implementation (LandskapeAI/triplet-attention): three gates
``cw``, ``hc``, ``hw``; each applies Z-pool (concat of **max then mean** over the first
non-batch dimension of a permuted tensor), a 7x7 conv 2->1 without bias, BatchNorm (eps 1e-5,
momentum 0.01) and a sigmoid, then multiplies; the three outputs are averaged. The state_dict
keys (``{cw,hc,hw}.conv.conv.weight``, ``{...}.conv.bn.*``) match the official code, so its
weights load.

Convention: input and output ``(N, C, H, W)``; the output has the input's shape.
"""

from __future__ import annotations

import torch
from torch import nn


def z_pool(x: torch.Tensor) -> torch.Tensor:
    """Concatenate max and mean over dim 1: ``(N, C, H, W) -> (N, 2, H, W)``."""
    return torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)


class BasicConv(nn.Module):
    """Conv (no bias) + BatchNorm, no activation: the official ``BasicConv(relu=False)``."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv then BN."""
        return self.bn(self.conv(x))


class AttentionGate(nn.Module):
    """One branch of triplet attention: ``x * sigmoid(bn(conv(zpool(x))))``."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = BasicConv(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` by the attention map computed from its pooled channels."""
        return x * torch.sigmoid(self.conv(z_pool(x)))


class TripletAttention(nn.Module):
    """Cross-dimension attention over (C, W), (H, C) and (H, W), averaged."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.cw = AttentionGate(kernel_size)
        self.hc = AttentionGate(kernel_size)
        self.hw = AttentionGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the triplet-attended features, same shape as ``x``."""
        out_cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        out_hc = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        out_hw = self.hw(x)
        return (out_cw + out_hc + out_hw) / 3.0
