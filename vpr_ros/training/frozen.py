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

"""The frozen part's outputs for the database images, computed once per training run.

When only the final backbone stage and the head train (``train_layers: last``, what
``vpr-ros adapt --finetune`` does on a CPU), the rest of the network is fixed and in eval mode
(:func:`vpr_ros.training.model_setup.set_train_mode`). A database image that is not augmented
(``augment.apply_to: queries``) and is seen at its native size (``size_scale`` 1) then maps to the
same tensors through that part all run long. Computing them once saves, for every tuple, the
frozen pass of the positive and the negatives (the augmented query still takes the whole pass),
and at every mining refresh the frozen pass over the whole database: the frozen part is about
nine tenths of an EfficientNet-Lite0 forward. The descriptors, losses and gradients are those
of the uncached pass.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import math
import os
from typing import Any, Sequence

import numpy as np
import torch
from vpr_ros.training.data import ImageSet, resize_to, Split

log = logging.getLogger(__name__)


@dataclass
class FrozenMaps:
    """Per scale, the ``(N, C, h, w)`` maps the final stage starts from, one row per image."""

    maps: list[torch.Tensor]

    def descriptors(self, model: Any, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Return descriptors of images ``ids``: the final stage and head on their maps."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        return model.embed_frozen([m[ids] for m in self.maps])

    def with_queries(self, model: Any, queries: torch.Tensor,
                     ids: torch.Tensor) -> torch.Tensor:
        """Return tuples' descriptors: per row of ``ids`` ``(B, K)``, the query, then ``ids``.

        ``queries`` ``(B, 3, H, W)`` are the (augmented) query images, passed through the
        frozen part here; the order is :class:`vpr_ros.training.batches.TupleBatches`'.
        """
        with torch.no_grad():
            q_maps = model.frozen_features(queries)
        b, k = ids.shape
        rows = ids.reshape(-1).long()
        maps = [torch.cat([q.unsqueeze(1), m[rows].reshape(b, k, *m.shape[1:])], dim=1)
                .reshape(b * (k + 1), *m.shape[1:]) for q, m in zip(q_maps, self.maps)]
        return model.embed_frozen(maps)


def frozen_maps_refusal(config: Any, model: Any, split: Split, world_size: int) -> str:
    """Return why the frozen part's outputs cannot be cached for this run ('': they can).

    A batch is drawn at its first query's size, so every query and database image must
    share one size for the cached maps to be the ones the batch would compute.
    """
    augment = config.augment
    if config.train_layers != 'last':
        return 'every layer trains'
    if config.frozen_cache_mb <= 0:
        return 'frozen_cache_mb is 0'
    if augment.apply_to == 'all':
        return 'the database images are augmented (augment.apply_to: all)'
    if augment.apply_to != 'none' and tuple(augment.size_scale) != (1.0, 1.0):
        return f'batches are drawn at random sizes (augment.size_scale {augment.size_scale})'
    if getattr(model.aggregation, 'multiscale', False):
        return 'the head pools several backbone stages'
    if world_size > 1:
        return 'training runs in several processes'
    sets = [split.database] if split.same else [split.database, split.queries]
    shapes = {images.image(i).shape for images in sets for i in range(len(images))}
    if len(shapes) > 1:
        return f'the training images have {len(shapes)} sizes'
    return ''


@torch.no_grad()
def compute_frozen_maps(model: Any, images: ImageSet, max_mb: float, *, batch_size: int = 8,
                        progress: bool = True) -> FrozenMaps | None:
    """Return the frozen part's maps of every image; None (logged) above ``max_mb``.

    Leaves ``model`` in eval mode: the maps are those of the frozen part as training runs it.
    """
    from tqdm import tqdm

    model.eval()
    device = next(model.parameters()).device
    first = [m.cpu() for m in model.frozen_features(
        resize_to(images.image(0), images.image(0).shape[:2]).unsqueeze(0).to(device))]
    need_mb = len(images) * sum(m.numel() * m.element_size() for m in first) / 2 ** 20
    room_mb = memory_mb(device) / 2
    if need_mb > min(max_mb, room_mb):
        log.info('the frozen layers run for every image: their outputs for %d images need '
                 '%.0f MiB, more than %s', len(images), need_mb,
                 f'frozen_cache_mb {max_mb:g}' if max_mb <= room_mb else
                 f'half the memory of {device} ({room_mb:.0f} MiB)')
        return None
    maps = [torch.empty((len(images), *m.shape[1:]), dtype=m.dtype, device=device)
            for m in first]
    for start in tqdm(range(0, len(images), batch_size), desc='frozen layers', unit='batch',
                      disable=not progress, leave=False):
        ids = range(start, min(start + batch_size, len(images)))
        batch = torch.stack([resize_to(images.image(i), images.image(i).shape[:2])
                             for i in ids]).to(device)
        for out, m in zip(maps, model.frozen_features(batch)):
            out[ids.start:ids.stop] = m
    log.info('frozen layers: outputs of %d images cached (%.0f MiB); the final stage and the '
             'head run on them', len(images), need_mb)
    return FrozenMaps(maps)


def memory_mb(device: torch.device) -> float:
    """Return the memory of ``device`` (MiB): the GPU's, or this machine's; inf if unknown."""
    try:
        if device.type == 'cuda':
            return torch.cuda.mem_get_info(device)[1] / 2 ** 20
        return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except (OSError, ValueError, RuntimeError):
        return math.inf


def cached_describe(frozen: FrozenMaps, model: Any, indices: Sequence[int],
                    batch_size: int) -> np.ndarray:
    """Return eval-mode descriptors of images ``indices`` from their frozen maps (mining)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            rows = [frozen.descriptors(model, list(indices[s:s + batch_size])).float().cpu()
                    for s in range(0, len(indices), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(rows).numpy() if rows else np.zeros((0, model.descriptor_dim), np.float32)
