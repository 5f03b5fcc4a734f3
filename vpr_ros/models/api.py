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

"""``vpr_ros.describe``: global descriptors of images given as paths, arrays or tensors.

Convention: arrays are ``(H, W, 3)`` uint8 RGB (``vpr_ros.images``), tensors ``(3, H, W)`` or
``(N, 3, H, W)`` float in [0, 1]. One image in gives ``(D,)``, a sequence (or a 4-D tensor)
gives ``(N, D)``; float32, L2-normalised.
"""

from __future__ import annotations

from pathlib import Path
import threading
from typing import Any, Sequence

import numpy as np
import torch
from vpr_ros.device import forward_batch
from vpr_ros.errors import DataError
from vpr_ros.images import load_image, to_tensor
from vpr_ros.models import DEFAULT_MODEL
from vpr_ros.models.checkpoints import load_model
from vpr_ros.models.descriptor import DescriptorModel, ModelConfig

_CACHE: dict[tuple[str, str], DescriptorModel] = {}
_LOCK = threading.Lock()


def get_model(model: str | Path | ModelConfig | DescriptorModel = DEFAULT_MODEL,
              device: str = 'auto') -> DescriptorModel:
    """Return a model; names and paths are loaded once per process and reused."""
    if isinstance(model, DescriptorModel):
        return model
    if isinstance(model, ModelConfig):
        return load_model(model, device)
    key = (str(model), device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_model(model, device)
        return _CACHE[key]


def _as_tensor(image: Any, index: int) -> torch.Tensor:
    if isinstance(image, (str, Path)):
        return to_tensor(load_image(image))
    if isinstance(image, np.ndarray):
        try:
            return to_tensor(image)
        except DataError as exc:
            raise DataError(f'image {index}: {exc}') from None
    if isinstance(image, torch.Tensor):
        if image.dim() != 3:
            raise DataError(f'image {index}: expected a (3, H, W) tensor, got '
                            f'{tuple(image.shape)}')
        return image
    raise DataError(f'image {index}: expected a path, a (H, W, 3) uint8 array or a tensor, '
                    f'got {type(image).__name__}')


def describe(images: Any, model: str | Path | ModelConfig | DescriptorModel = DEFAULT_MODEL,
             *, device: str = 'auto', batch_size: int = 0) -> np.ndarray:
    """Describe one image or a sequence of images; see the module docstring for shapes."""
    net = get_model(model, device)
    batch_size = forward_batch(net.device, batch_size, net)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return np.concatenate([net.describe(images[i:i + batch_size])
                               for i in range(0, len(images), batch_size)])
    single = isinstance(images, (str, Path, np.ndarray, torch.Tensor))
    items: Sequence[Any] = [images] if single else list(images)
    if not items:
        raise DataError('describe: no images given')
    tensors = [_as_tensor(image, i) for i, image in enumerate(items)]
    out = np.empty((len(tensors), net.descriptor_dim), dtype=np.float32)
    # Same-size images are batched together; different sizes go through separately.
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        by_size.setdefault(tuple(t.shape), []).append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            out[chunk] = net.describe(torch.stack([tensors[i] for i in chunk]))
    return out[0] if single else out
