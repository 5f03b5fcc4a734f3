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

"""Convert ``sensor_msgs/Image`` and ``CompressedImage`` messages to RGB arrays and back.

Pure numpy + OpenCV, no ROS import: the functions read the message *fields* of any object
(rclpy messages, rosbags messages, a namespace), so the map builder and the node share them.
Unlike PyPI ``cv-bridge`` and ``rosbags-image`` this honours ``step`` (padded rows).

Convention:
    - output images are ``(H, W, 3)`` uint8 **RGB** (see :mod:`vpr_ros.images`);
    - supported raw encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``, their
      16-bit forms (scaled to 8 bit by ``>> 8``), the packed 4:2:2 YUV of USB cameras
      (``yuv422``: UYVY; ``yuv422_yuy2``: YUYV) and raw Bayer mosaics (``bayer_rggb8`` and the
      other three patterns, 8 and 16 bit; demosaiced by OpenCV, named by their top-left 2x2);
      compressed: whatever ``cv2.imdecode`` reads (jpeg, png).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from vpr_ros.errors import DataError
from vpr_ros.images import decode_image, MAX_IMAGE_PIXELS

# encoding -> (channels, dtype, cv2 conversion to RGB or None)
RAW_ENCODINGS: dict[str, tuple[int, str, int | None]] = {
    'rgb8': (3, 'u1', None),
    'bgr8': (3, 'u1', cv2.COLOR_BGR2RGB),
    'rgba8': (4, 'u1', cv2.COLOR_RGBA2RGB),
    'bgra8': (4, 'u1', cv2.COLOR_BGRA2RGB),
    'mono8': (1, 'u1', cv2.COLOR_GRAY2RGB),
    'mono16': (1, 'u2', cv2.COLOR_GRAY2RGB),
    'rgb16': (3, 'u2', None),
    'bgr16': (3, 'u2', cv2.COLOR_BGR2RGB),
    'rgba16': (4, 'u2', cv2.COLOR_RGBA2RGB),
    'bgra16': (4, 'u2', cv2.COLOR_BGRA2RGB),
    # usb_cam and other V4L2 drivers publish the camera's packed 4:2:2 YUV as it comes.
    'yuv422': (2, 'u1', cv2.COLOR_YUV2RGB_UYVY),
    'uyvy': (2, 'u1', cv2.COLOR_YUV2RGB_UYVY),
    'yuv422_yuy2': (2, 'u1', cv2.COLOR_YUV2RGB_YUY2),
    'yuyv': (2, 'u1', cv2.COLOR_YUV2RGB_YUY2),
    **{f'bayer_{pattern}{bits}': (1, 'u1' if bits == 8 else 'u2',
                                  getattr(cv2, f'COLOR_Bayer{pattern.upper()}2RGB'))
       for pattern in ('rggb', 'bggr', 'gbrg', 'grbg') for bits in (8, 16)},
}


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """Decode a raw ``sensor_msgs/Image`` (any object with its fields) to ``(H, W, 3)`` RGB."""
    encoding = str(msg.encoding).lower()
    if encoding not in RAW_ENCODINGS:
        depth = encoding in ('16uc1', '32fc1')
        raise DataError(f'image encoding {msg.encoding!r} is not supported'
                        + (" (a depth image: give the colour camera's topic)" if depth else '')
                        + f'; supported: {sorted(RAW_ENCODINGS)}')
    channels, kind, conversion = RAW_ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(kind).newbyteorder('>' if msg.is_bigendian else '<')
    row_bytes = w * channels * dtype.itemsize
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data,
                         np.uint8)
    if h * w > MAX_IMAGE_PIXELS:
        raise DataError(f'image message of {w}x{h} pixels is over the limit of '
                        f'{MAX_IMAGE_PIXELS / 1e6:g} MP')
    if h < 1 or w < 1 or step < row_bytes or data.size < step * (h - 1) + row_bytes:
        raise DataError(f'image message of {w}x{h} {encoding} with step {step} has '
                        f'{data.size} bytes of data, not enough')
    if channels == 2 and w % 2:
        raise DataError(f'image message of {w}x{h} {encoding}: 4:2:2 YUV needs an even width')
    if encoding.startswith('bayer_') and (w < 2 or h < 2):
        raise DataError(f'image message of {w}x{h} {encoding}: a Bayer mosaic needs 2x2 pixels')
    if data.size < step * h:  # the last row may be unpadded
        data = np.concatenate([data, np.zeros(step * h - data.size, np.uint8)])
    rows = data[:step * h].reshape(h, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)
    if dtype.itemsize == 2:
        pixels = (pixels.astype(np.uint16) >> 8).astype(np.uint8)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg, png, ...) to ``(H, W, 3)`` RGB."""
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data,
                         np.uint8)
    return decode_image(data, what=f'compressed image (format {msg.format!r})',
                        error=f'cannot decode compressed image (format {msg.format!r}, '
                              f'{data.size} bytes)')


def msg_to_rgb(msg: Any) -> np.ndarray:
    """Decode either message kind: ``CompressedImage`` has ``format``, ``Image`` ``encoding``."""
    if hasattr(msg, 'encoding'):
        return image_msg_to_rgb(msg)
    if hasattr(msg, 'format'):
        return compressed_msg_to_rgb(msg)
    raise DataError(f'{type(msg).__name__} is neither an Image nor a CompressedImage')


def rgb_to_image_fields(image: np.ndarray, encoding: str = 'rgb8') -> dict[str, Any]:
    """Encode ``(H, W, 3)`` RGB as ``sensor_msgs/Image`` fields (height, width, ..., data)."""
    if encoding not in ('rgb8', 'bgr8', 'mono8'):
        raise DataError(f'cannot encode to {encoding!r}; use rgb8, bgr8 or mono8')
    if encoding == 'bgr8':
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif encoding == 'mono8':
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return {'height': h, 'width': w, 'encoding': encoding, 'is_bigendian': 0,
            'step': image.strides[0], 'data': image.reshape(-1)}


def rgb_to_compressed_data(image: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> bytes:
    """Encode ``(H, W, 3)`` RGB as the ``data`` of a ``CompressedImage`` (jpeg or png)."""
    ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt)
    if ext is None:
        raise DataError(f'cannot compress to {fmt!r}; use jpeg or png')
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DataError(f'OpenCV could not encode the image as {fmt}')
    return buf.tobytes()
