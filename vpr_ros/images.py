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

import io
from pathlib import Path
import typing
import warnings

import cv2
import numpy as np

from vpr_ros.errors import DataError

if typing.TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# Larger images are refused from their header, before decoding (a 12000x12000 JPEG costs 10 s
# and 4 GB to decode). 64 MP: an 8000x8000 or 9248x6936 photo still passes.
MAX_IMAGE_PIXELS = 64_000_000


def load_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB; a clear :class:`DataError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'image not found: {path}')
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f'cannot read image {path}: {exc.strerror or exc}') from None
    return decode_image(data, what=f'image {path}', max_pixels=max_pixels,
                        error=f'cannot decode image {path} (not a readable image file)')


def header_size(data: np.ndarray | bytes) -> tuple[int, int] | None:
    """Return ``(width, height)`` read from the header only, None if the format is unknown."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(memoryview(data))) as image:
                return int(image.size[0]), int(image.size[1])
    except Image.DecompressionBombError:
        return 1 << 20, 1 << 20   # beyond Pillow's own limit: certainly beyond ours
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    except Exception:  # noqa: B902 - a header Pillow cannot parse: let OpenCV decide
        return None


def decode_image(data: np.ndarray, *, error: str, what: str = 'image',
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode encoded bytes (jpeg, png, ...) to ``(H, W, 3)`` uint8 RGB; raise ``error`` if not.

    Empty data and images over ``max_pixels`` (read from the header, before decoding) are
    refused with a :class:`DataError` that starts with ``what`` (e.g. ``image <path>``).
    """
    data = np.asarray(data, np.uint8).reshape(-1)
    if data.size == 0:
        raise DataError(f'{what} is empty (0 bytes)')
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise DataError(f'{what} is {size[0]}x{size[1]} pixels, more than the limit of '
                        f'{max_pixels / 1e6:g} MP: shrink it first')
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise DataError(f'{error}: {str(exc).strip().splitlines()[-1]}') from None
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


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 RGB to ``size`` ``(h, w)``: area to shrink, bilinear to enlarge.

    OpenCV's ``INTER_AREA`` repeats pixels when it enlarges (blocky GeoWarp thumbnails of
    small cameras); enlarging uses ``vpr_ros.models.resizer.bilinear_resize``, as the model's
    plain resizer does. Shrinking keeps ``INTER_AREA`` (a box filter, what maps were built
    with): thumbnails at the model's input size then differ from what the network sees by
    the filter (dense features: mean per-location cosine 0.98-0.99 on Corridor and the
    synthetic route).
    """
    if tuple(image.shape[:2]) == tuple(size):
        return image
    h, w = size
    if h * w <= image.shape[0] * image.shape[1]:
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    from vpr_ros.models.resizer import bilinear_resize

    out = bilinear_resize(to_tensor(image)[None], size, antialias=True)[0]
    return (out.clamp_(0.0, 1.0).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
