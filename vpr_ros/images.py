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

"""Image I/O and conversion shared by the map builder, the localizer and training.

Convention: images in memory are ``numpy.ndarray`` of shape ``(H, W, 3)``, ``uint8``, **RGB**;
tensors for the models are ``float32`` ``(3, H, W)`` (or ``(N, 3, H, W)``) with values in [0, 1].
Normalisation (ImageNet mean/std) and resizing belong to the model, not to callers.
"""

from __future__ import annotations

from pathlib import Path
import typing

import cv2
import numpy as np

from vpr_ros.errors import DataError

if typing.TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB; a clear :class:`DataError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'image not found: {path}')
    return decode_image(np.fromfile(path, dtype=np.uint8),
                        error=f'cannot decode image {path} (not a readable image file)')


def decode_image(data: np.ndarray, *, error: str) -> np.ndarray:
    """Decode encoded bytes (jpeg, png, ...) to ``(H, W, 3)`` uint8 RGB; raise ``error`` if not."""
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(error)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_rgb(image: np.ndarray, *, where: str = 'image') -> np.ndarray:
    """Validate an in-memory image: ``(H, W, 3)`` uint8, at least 8x8 pixels."""
    if not isinstance(image, np.ndarray):
        raise DataError(f'{where}: expected a numpy array, got {type(image).__name__}')
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f'{where}: expected shape (H, W, 3) RGB, got {image.shape}')
    if image.dtype != np.uint8:
        raise DataError(f'{where}: expected dtype uint8, got {image.dtype}')
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise DataError(f'{where}: image of {image.shape[1]}x{image.shape[0]} is too small')
    return image


def to_tensor(image: np.ndarray) -> 'torch.Tensor':
    """Convert ``(H, W, 3)`` uint8 RGB to a ``(3, H, W)`` float32 tensor in [0, 1]."""
    import torch

    check_rgb(image)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def thumbnail(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so that the longer side is at most ``max_side`` (never enlarges)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
