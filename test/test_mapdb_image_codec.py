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

"""Message <-> RGB conversion, with rosbags-image as the oracle where it is right."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from vpr_ros.errors import DataError
from vpr_ros.image_codec import (compressed_msg_to_rgb, image_msg_to_rgb, msg_to_rgb,
                                 rgb_to_compressed_data, rgb_to_image_fields)


def _rgb(h=6, w=5):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1).view(np.uint8)
    data = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                           step=data.shape[1], data=data.reshape(-1).tobytes())


class TestImageMsgToRgb:
    @pytest.mark.parametrize('pad', [0, 3])
    def test_feature(self, pad):
        rgb = _rgb()
        assert np.array_equal(image_msg_to_rgb(_msg(rgb, 'rgb8', pad)), rgb)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        assert np.array_equal(image_msg_to_rgb(_msg(bgr, 'bgr8', pad)), rgb)
        rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 9, np.uint8)], axis=2)
        assert np.array_equal(image_msg_to_rgb(_msg(rgba, 'rgba8', pad)), rgb)
        bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
        assert np.array_equal(image_msg_to_rgb(_msg(bgra, 'bgra8', pad)), rgb)
        mono = rgb[..., 0].copy()
        out = image_msg_to_rgb(_msg(mono, 'mono8', pad))
        assert out.shape == (6, 5, 3) and np.array_equal(out[..., 1], mono)

    def test_mono16_big_endian(self):
        values = np.arange(30, dtype=np.uint16).reshape(6, 5) * 2000
        out = image_msg_to_rgb(_msg(values.astype('>u2'), 'mono16', bigendian=True))
        assert np.array_equal(out[..., 0], (values >> 8).astype(np.uint8))

    def test_exception(self):
        with pytest.raises(DataError, match='not supported'):
            image_msg_to_rgb(_msg(_rgb(), 'yuv422'))
        short = _msg(_rgb(), 'rgb8')
        short.data = short.data[:20]
        with pytest.raises(DataError, match='not enough'):
            image_msg_to_rgb(short)

    def test_round_trip_and_oracle(self):
        from rosbags.image import message_to_cvimage

        rgb = _rgb(16, 12)
        for encoding in ('rgb8', 'bgr8'):
            fields = rgb_to_image_fields(rgb, encoding)
            msg = SimpleNamespace(**fields)
            assert np.array_equal(msg_to_rgb(msg), rgb)
            oracle = message_to_cvimage(msg, 'rgb8')
            assert np.array_equal(oracle, rgb)


def test_compressed():
    rgb = _rgb(16, 12)
    msg = SimpleNamespace(format='png', data=rgb_to_compressed_data(rgb, 'png'))
    assert np.array_equal(compressed_msg_to_rgb(msg), rgb)
    jpeg = SimpleNamespace(format='jpeg', data=rgb_to_compressed_data(rgb, 'jpeg', 95))
    assert msg_to_rgb(jpeg).shape == rgb.shape
    gray = SimpleNamespace(format='png', data=cv2.imencode('.png', rgb[..., 0])[1].tobytes())
    assert compressed_msg_to_rgb(gray).shape == rgb.shape
    with pytest.raises(DataError, match='cannot decode'):
        compressed_msg_to_rgb(SimpleNamespace(format='jpeg', data=b'not an image'))
