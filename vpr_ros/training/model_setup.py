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

"""The model as training sees it: the DDP forward, frozen parts, BatchNorm, NetVLAD init."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from vpr_ros.models.backbones import final_stage
from vpr_ros.models.checkpoints import YAML_SUFFIXES
from vpr_ros.models.descriptor import DescriptorModel, ModelConfig, PRESETS
from vpr_ros.models.heads import init_netvlad, l2n, sample_local_features
from vpr_ros.training.data import resize_to, Split

log = logging.getLogger(__name__)


class TrainForward(nn.Module):
    """The module DDP wraps: descriptors and, for HAF, the per-scale parts, in one forward."""

    def __init__(self, model: DescriptorModel, haf_parts: bool) -> None:
        super().__init__()
        self.model = model
        self.haf_parts = haf_parts

    def forward(self, images: torch.Tensor):
        """Return ``(descriptors, parts, scores)``; parts and scores are None unless HAF."""
        if not self.haf_parts:
            return self.model(images), None, None
        x = self.model._prepare(images)  # normalise + resizer, as DescriptorModel.forward
        parts, scores = self.model.aggregation.parts(self.model.backbone.forward_stages(x))
        return l2n(self.model.aggregation.fuse(parts)), parts, scores


def set_train_mode(model: DescriptorModel, freeze_bn: bool, last_only: bool = False) -> None:
    """Training mode, with the backbone's BatchNorm layers kept in eval mode if asked.

    ``last_only`` (:func:`freeze_all_but_last`): only the final stage and the head train; the
    frozen rest stays in eval mode, as fixed as its weights (no stochastic depth, no BatchNorm
    statistics updated), so its outputs for an image do not change and can be cached.
    """
    if last_only:
        model.eval()
        modules, _ = final_stage(model.backbone)
        for module in [*modules, model.aggregation]:
            module.train()
    else:
        model.train()
    if freeze_bn:
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def freeze_all_but_last(model: DescriptorModel) -> int:
    """Train only the last backbone stage and the head; return the trainable parameter count."""
    modules, _ = final_stage(model.backbone)
    for p in model.parameters():
        p.requires_grad_(False)
    for module in [*modules, model.aggregation]:
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def is_checkpoint(spec: str) -> bool:
    """Return True when ``spec`` names trained weights (not a preset or a config alone)."""
    if spec in PRESETS:
        return False
    path = Path(spec)
    if path.suffix.lower() in YAML_SUFFIXES:
        return bool(ModelConfig.from_yaml(path).checkpoint)
    return True


@torch.no_grad()
def init_netvlad_from_data(model: DescriptorModel, split: Split, images: int,
                           rng: np.random.Generator) -> float:
    """FAISS k-means init of a NetVLAD/CRN head from training features (Gambino et al. §3.3)."""
    db = split.database
    chosen = np.sort(rng.choice(len(db), size=min(images, len(db)), replace=False))
    device = next(model.parameters()).device
    model.eval()
    descs = []
    for n, i in enumerate(chosen):
        x = resize_to(db.image(i), db.image(i).shape[:2]).unsqueeze(0).to(device)
        descs.append(sample_local_features(model.dense_features(x), seed=n))
    alpha = init_netvlad(model.aggregation, np.concatenate(descs))
    log.info('NetVLAD centroids initialised by k-means on %d local features of %d training '
             'images (alpha %.1f)', sum(len(d) for d in descs), len(chosen), alpha)
    return alpha
