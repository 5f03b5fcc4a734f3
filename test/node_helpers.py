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

"""Helpers of the node tests: a small calibrated synthetic map, image publishers in a process."""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path

MAP_FRAMES = 30
IMAGE_SIZE = (120, 160)


@dataclass(frozen=True)
class TinyMap:
    """A calibrated map of a synthetic route and the map-pass frames it was built from."""

    path: Path
    images: Path          # the source folder: images.csv and map_00000.png, ...
    frames: list[dict]    # name, lat, lon, alt of every map frame


def build_tiny_map(folder: Path, frames: int = MAP_FRAMES) -> TinyMap:
    """Build and calibrate a ``tiny-test`` map of a synthetic route (about 20 s on 2 cores)."""
    from vpr_ros.calibrate import calibrate_map
    from vpr_ros.calibration import CalibrationConfig, store_calibration
    from vpr_ros.localizer import Localizer
    from vpr_ros.mapdb.build import build_map, BuildConfig
    from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source

    route = SynthRoute(SynthConfig(frames=frames, image_size=IMAGE_SIZE))
    passes = list(route.map_pass())
    csv = write_csv_source(iter(passes), folder / 'src')
    path = build_map(csv, folder / 'route.vprmap', BuildConfig(model='tiny-test', device='cpu'),
                     progress=False)
    localizer = Localizer.open(path, device='cpu')
    cal, report = calibrate_map(localizer, CalibrationConfig(pseudo_queries=frames, bins=3,
                                                             min_per_bin=5), progress=False)
    store_calibration(localizer.map, cal, report)
    info = [{'name': f.name, 'lat': f.lat, 'lon': f.lon, 'alt': f.alt} for f in passes]
    (folder / 'frames.json').write_text(json.dumps(info))
    return TinyMap(path, folder / 'src', info)


# Publishes the given PNGs (or hand-made bad frames) on a topic, over and over, each with stamp
# sec = 1000 + its index, until killed. argv: topic, period_s, kind, files...
PUBLISHER = r"""
import sys, time
import cv2, numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, CompressedImage
topic, period, kind, files = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
rclpy.init()
node = rclpy.create_node('test_camera')
msgs = []
for i, f in enumerate(files):
    if f.startswith('bad:') and kind == 'compressed':
        msg = CompressedImage(format='jpeg', data=b'' if f == 'bad:empty' else b'garbage!')
    elif f.startswith('bad:'):
        msg = Image(encoding='rgb8', height=8, width=8, step=24, data=bytes(192))
        what = f[4:]
        if what == 'encoding':
            msg.encoding = '32FC1'
        elif what == 'empty':
            msg.data = b''
        elif what == 'step':
            msg.step = 10
    else:
        rgb = cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB)
        if kind == 'compressed':
            msg = CompressedImage(format='jpeg',
                                  data=cv2.imencode('.jpg', rgb[:, :, ::-1])[1].tobytes())
        else:
            h, w = rgb.shape[:2]
            msg = Image(encoding='rgb8', height=h, width=w, step=3 * w, data=rgb.tobytes())
    msg.header.stamp.sec = 1000 + i
    msg.header.frame_id = 'test_cam'
    msgs.append(msg)
pub = node.create_publisher(CompressedImage if kind == 'compressed' else Image, topic,
                            qos_profile_sensor_data)
print('publisher ready', flush=True)
try:
    while rclpy.ok():
        for msg in msgs:
            pub.publish(msg)
            time.sleep(period)
except KeyboardInterrupt:
    pass
"""
