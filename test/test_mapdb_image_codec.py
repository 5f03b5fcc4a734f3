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

    @pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
    def test_bayer_mosaic_of_a_colour_decodes_to_that_colour(self, pattern):
        # Each 2x2 cell of the mosaic holds its pattern's colours (named from the top left).
        colour = np.array([200, 120, 40], np.uint8)                        # R, G, B
        where = {'r': 0, 'g': 1, 'b': 2}
        cell = np.array([[where[pattern[0]], where[pattern[1]]],
                         [where[pattern[2]], where[pattern[3]]]])
        mosaic = colour[np.tile(cell, (4, 5))]                               # 8 x 10
        out = image_msg_to_rgb(_msg(mosaic, f'bayer_{pattern}8', pad=2))
        assert out.shape == (8, 10, 3)
        assert np.abs(out[2:-2, 2:-2].astype(int) - colour).max() <= 1
        wide = (mosaic.astype(np.uint16) << 8) | 0xAB                       # 16-bit sensor
        out16 = image_msg_to_rgb(_msg(wide.astype('>u2'), f'bayer_{pattern}16',
                                      bigendian=True))
        assert np.array_equal(out16, out)

    @pytest.mark.parametrize('encoding,order', [('yuv422', 'uyvy'), ('uyvy', 'uyvy'),
                                                ('yuv422_yuy2', 'yuyv'), ('yuyv', 'yuyv')])
    def test_packed_yuv422_of_a_colour_decodes_to_that_colour(self, encoding, order):
        colour = np.array([[[200, 120, 40]]], np.uint8)
        r, g, b = colour[0, 0] / 255.0          # BT.601 studio swing, as UVC cameras send it
        y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
        u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
        v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
        y, u, v = (int(round(c)) for c in (y, u, v))
        pair = {'uyvy': [u, y, v, y], 'yuyv': [y, u, y, v]}[order]
        packed = np.tile(np.array(pair, np.uint8), (6, 4)).reshape(6, 8, 2)   # 8 pixels wide
        out = image_msg_to_rgb(_msg(packed, encoding, pad=4))
        assert out.shape == (6, 8, 3)
        assert np.abs(out.astype(int) - colour).max() <= 3

    def test_yuv_and_bayer_match_the_rosbags_image_oracle(self):
        from rosbags.image import message_to_cvimage

        raw = np.random.default_rng(1).integers(0, 256, (6, 16), dtype=np.uint8)
        for encoding, pixels in [('yuv422', raw.reshape(6, 8, 2)),
                                 ('yuv422_yuy2', raw.reshape(6, 8, 2)),
                                 ('bayer_rggb8', raw), ('bayer_gbrg8', raw)]:
            msg = _msg(pixels, encoding)
            want = message_to_cvimage(SimpleNamespace(**vars(msg)), 'rgb8')
            got = image_msg_to_rgb(msg)
            assert got.shape == want.shape
            assert np.abs(got.astype(int) - want).max() <= 1, encoding

    def test_rgb16_keeps_the_high_byte(self):
        rgb = _rgb().astype(np.uint16) * 257
        assert np.array_equal(image_msg_to_rgb(_msg(rgb, 'rgb16')), _rgb())
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        assert np.array_equal(image_msg_to_rgb(_msg(bgr, 'bgr16')), _rgb())

    def test_exception(self):
        with pytest.raises(DataError, match='not supported'):
            image_msg_to_rgb(_msg(_rgb(), 'nv21'))
        with pytest.raises(DataError, match='a depth image'):
            image_msg_to_rgb(_msg(np.zeros((4, 4), np.float32), '32FC1'))
        with pytest.raises(DataError, match='even width'):
            image_msg_to_rgb(_msg(np.zeros((4, 5, 2), np.uint8), 'yuv422'))
        with pytest.raises(DataError, match='2x2'):
            image_msg_to_rgb(_msg(np.zeros((1, 6), np.uint8), 'bayer_rggb8'))
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
