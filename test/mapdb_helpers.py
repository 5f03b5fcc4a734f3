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

"""Shared helpers of the map database tests: tiny images, CSV/VG/bag sources, a model."""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pymap3d

ORIGIN = (47.3769, 8.5417, 408.0)


def texture(seed: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """Return a random blocky RGB texture, different for every seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    big = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    noise = rng.integers(0, 40, (*size, 3), dtype=np.uint8)
    return np.clip(big.astype(int) + noise, 0, 255).astype(np.uint8)


def route(n: int, spacing_m: float = 5.0) -> np.ndarray:
    """(n, 3) lat/lon/alt of a straight route north-east of ORIGIN."""
    e = np.arange(n) * spacing_m * 0.6
    north = np.arange(n) * spacing_m * 0.8
    lat, lon, alt = pymap3d.enu2geodetic(e, north, np.zeros(n), *ORIGIN)
    return np.stack([lat, lon, alt], axis=1)


def write_csv_source(folder: Path, n: int, *, alt: bool = True) -> Path:
    """Write n textured images and a CSV image,lat,lon[,alt]; return the CSV path."""
    (folder / 'img').mkdir(parents=True, exist_ok=True)
    pos = route(n)
    lines = ['image,lat,lon' + (',alt' if alt else '')]
    for i in range(n):
        name = f'img/{i:04d}.png'
        cv2.imwrite(str(folder / name), cv2.cvtColor(texture(i), cv2.COLOR_RGB2BGR))
        row = f'{name},{float(pos[i, 0])!r},{float(pos[i, 1])!r}'
        lines.append(row + (f',{float(pos[i, 2])!r}' if alt else ''))
    path = folder / 'route.csv'
    path.write_text('\n'.join(lines) + '\n')
    return path


def textured_map(folder: Path, n: int, *, name: str = 'route.vprmap', **build) -> Path:
    """Build ``folder/name``: a real ``tiny-test`` map of ``n`` textured images on :func:`route`.

    Entry ``i`` is :func:`texture` ``(i)`` at ``route(n)[i]``; ``build`` overrides BuildConfig.
    The thumbnails default to tiny-test's input size (64x80), as the default model's do to
    its own: small and quick, and the query's GeoWarp features come from its forward.
    """
    from vpr_ros.mapdb import build_map, BuildConfig

    csv = write_csv_source(folder / 'src', n)
    build = {'model': 'tiny-test', 'thumbnail_size': (64, 80), **build}
    return build_map(csv, folder / name, BuildConfig(**build),
                     progress=False)


@dataclass(frozen=True)
class _TinyConfig:
    width: int = 16

    def to_dict(self):
        return {'name': 'stand-in', 'width': self.width}


def make_model(seed: int = 0):
    """Return a small DescriptorModel stand-in (same methods) with a fixed random init."""
    import torch
    from torch import nn

    class StandIn(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.config = _TinyConfig()
            self.conv = nn.Conv2d(3, 16, 5, stride=2)
            self.fc = nn.Linear(16 * 4, 32)
            self.descriptor_dim = 32

        def dense_features(self, x):
            return torch.relu(self.conv(x - 0.5))

        def forward(self, x):
            f = nn.functional.adaptive_avg_pool2d(self.dense_features(x), 2).flatten(1)
            return nn.functional.normalize(self.fc(f), dim=1)

        def describe(self, x):
            with torch.inference_mode():
                return self(x).cpu().numpy().astype(np.float32)

        def fingerprint(self):
            digest = hashlib.sha256()
            for k, v in sorted(self.state_dict().items()):
                digest.update(k.encode())
                digest.update(v.cpu().numpy().tobytes())
            return digest.hexdigest()[:16]

    return StandIn().eval()


def have_real_models() -> bool:
    """Tell whether vpr_ros.models.checkpoints exists yet."""
    try:
        import vpr_ros.models.checkpoints  # noqa: F401
    except ImportError:
        return False
    return True


def write_bag(path: Path, frames, fixes, *, storage: str = 'sqlite3', compressed: bool = False,
              image_topic: str = '/cam/image', fix_topic: str = '/gps/fix',
              empty_frames: tuple[int, ...] = ()) -> Path:
    """Write a rosbag2 with rosbags; log time = header stamp + 1 ms.

    ``frames`` = [(stamp_ns, rgb)], ``fixes`` = [(stamp_ns, lat, lon, alt, status)]; the
    frames whose index is in ``empty_frames`` get no data (a broken camera driver).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores

    from vpr_ros.image_codec import rgb_to_compressed_data, rgb_to_image_fields

    ts = get_typestore(Stores.ROS2_KILTED)
    Header, Time = ts.types['std_msgs/msg/Header'], ts.types['builtin_interfaces/msg/Time']
    Image = ts.types['sensor_msgs/msg/Image']
    CompressedImage = ts.types['sensor_msgs/msg/CompressedImage']
    NavSatFix = ts.types['sensor_msgs/msg/NavSatFix']
    NavSatStatus = ts.types['sensor_msgs/msg/NavSatStatus']

    def header(stamp):
        return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id='cam')

    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        itype = CompressedImage if compressed else Image
        iconn = writer.add_connection(image_topic, itype.__msgtype__, typestore=ts)
        fconn = writer.add_connection(fix_topic, NavSatFix.__msgtype__, typestore=ts)
        msgs = []
        for i, (stamp, image) in enumerate(frames):
            if i in empty_frames:
                msg = (CompressedImage(header=header(stamp), format='png',
                                       data=np.zeros(0, np.uint8)) if compressed
                       else Image(header=header(stamp), height=0, width=0, encoding='bgr8',
                                  is_bigendian=0, step=0, data=np.zeros(0, np.uint8)))
            elif compressed:
                msg = CompressedImage(header=header(stamp), format='png', data=np.frombuffer(
                    rgb_to_compressed_data(image, 'png'), np.uint8))
            else:
                msg = Image(header=header(stamp), **rgb_to_image_fields(image, 'bgr8'))
            msgs.append((stamp + 1_000_000, iconn, ts.serialize_cdr(msg, itype.__msgtype__)))
        for stamp, lat, lon, alt, status in fixes:
            msg = NavSatFix(header=header(stamp), status=NavSatStatus(status=status, service=1),
                            latitude=lat, longitude=lon, altitude=alt,
                            position_covariance=np.zeros(9), position_covariance_type=0)
            msgs.append((stamp + 1_000_000, fconn, ts.serialize_cdr(msg, NavSatFix.__msgtype__)))
        for log_time, conn, raw in sorted(msgs, key=lambda m: (m[0], m[1].id)):
            writer.write(conn, log_time, raw)
    return path


def test_model(monkeypatch):
    """Return the model the map tests use: the real 'tiny-test' preset once it exists.

    Until ``vpr_ros.models`` lands, a stand-in with the same methods is used and the map
    builder stores its state_dict with torch.save instead of ``save_checkpoint``.
    """
    if have_real_models():
        from vpr_ros.models.checkpoints import load_model
        return load_model('tiny-test', device='cpu')
    import torch

    import vpr_ros.mapdb.build as build
    monkeypatch.setattr(build, '_save_model', lambda m, p: torch.save(m.state_dict(), p))
    return make_model()


def describe_files(model, paths):
    """Describe image files one by one (as a query would be)."""
    from vpr_ros.images import load_image, to_tensor
    return np.concatenate([model.describe(to_tensor(load_image(p))[None]) for p in paths])


test_model.__test__ = False
