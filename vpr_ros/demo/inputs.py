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

"""The demo's data: the rendered map pass (a CSV source), the query bag, or a user's bag.

The synthetic route is :mod:`vpr_ros.synth`; bags are written and read with :mod:`vpr_ros.bags`.
"""

from __future__ import annotations

from pathlib import Path
import shutil
from typing import Any

from vpr_ros.demo.config import DemoConfig
from vpr_ros.errors import DataError


def render_map_pass(route: Any, folder: Path, progress: bool = True) -> Path:
    """Render the map pass into ``folder`` (PNGs + images.csv); return the CSV."""
    from tqdm import tqdm
    from vpr_ros.synth import write_csv_source

    if folder.exists():
        shutil.rmtree(folder)
    frames = tqdm(route.map_pass(), total=route.config.frames, unit='frame',
                  desc='render map pass', disable=not progress)
    return write_csv_source(frames, folder)


def write_query_bag(route: Any, path: Path, config: DemoConfig, progress: bool = True) -> dict:
    """Render the query pass into a rosbag2 (mcap): camera images and the truth NavSatFix.

    Log time = header stamp. The truth starts one frame period before the first image (GNSS
    runs before the camera), which also gives a recorder time to subscribe to the camera.
    """
    import numpy as np
    from tqdm import tqdm
    from vpr_ros.bags import BagWriter, message_class
    from vpr_ros.image_codec import rgb_to_image_fields

    header_cls, time_cls = message_class('std_msgs/msg/Header'), message_class(
        'builtin_interfaces/msg/Time')
    image_cls = message_class('sensor_msgs/msg/Image')
    fix_cls = message_class('sensor_msgs/msg/NavSatFix')
    status_cls = message_class('sensor_msgs/msg/NavSatStatus')

    def header(stamp: int, frame_id: str) -> Any:
        return header_cls(stamp=time_cls(sec=stamp // 10**9, nanosec=stamp % 10**9),
                          frame_id=frame_id)

    def truth(stamp: int, lat: float, lon: float, alt: float) -> Any:
        return fix_cls(header=header(stamp, 'gnss'), status=status_cls(status=0, service=1),
                       latitude=lat, longitude=lon, altitude=alt,
                       position_covariance=np.diag([0.01, 0.01, 0.04]).reshape(-1),
                       position_covariance_type=2)   # diagonal known: a precise reference

    if path.exists():
        shutil.rmtree(path)
    n = 0
    first = last = None
    with BagWriter(path, storage='mcap') as writer:
        frames = tqdm(route.query_pass(), total=route.config.frames, unit='frame',
                      desc='render query pass', disable=not progress)
        for frame in frames:
            if first is None:
                period = int(0.5e9)
                lat, lon, alt = route.position(max(frame.s_m - route.config.spacing_m, 0.0))
                writer.write_message(config.truth_topic, frame.stamp_ns - period,
                                     truth(frame.stamp_ns - period, lat, lon, alt))
                first = frame.stamp_ns
            image = image_cls(header=header(frame.stamp_ns, 'camera'),
                              **rgb_to_image_fields(frame.image, 'rgb8'))
            writer.write_message(config.image_topic, frame.stamp_ns, image)
            writer.write_message(config.truth_topic, frame.stamp_ns,
                                 truth(frame.stamp_ns, frame.lat, frame.lon, frame.alt))
            last = frame.stamp_ns
            n += 1
    return {'frames': n, 'duration_s': (last - first) / 1e9 if n else 0.0}


def bag_info(path: Path, config: DemoConfig) -> dict[str, Any]:
    """Frames, duration and image kind of a user's bag; clear errors for missing topics."""
    from vpr_ros.bags import FIX_TYPE, IMAGE_TYPES, open_reader

    reader = open_reader(path)
    try:
        conns = {c.topic: c for c in reader.connections}
        for topic, kinds in ((config.image_topic, IMAGE_TYPES), (config.truth_topic,
                                                                 (FIX_TYPE,))):
            if topic not in conns or conns[topic].msgtype not in kinds:
                raise DataError(f'{path}: needs {topic} of type {" or ".join(kinds)}; its '
                                f'topics: { {t: c.msgtype for t, c in sorted(conns.items())} }')
        image = conns[config.image_topic]
        duration = (reader.end_time - reader.start_time) / 1e9
    finally:
        reader.close()
    return {'frames': int(image.msgcount), 'duration_s': duration,
            'compressed': image.msgtype.endswith('CompressedImage')}
