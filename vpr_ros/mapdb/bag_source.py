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

"""Map entries from a rosbag2 (sqlite3 or mcap): camera frames geotagged by a NavSatFix topic.

Each image (``sensor_msgs/Image`` or ``CompressedImage``) gets the position of the GNSS fixes
around its **header stamp**, linearly interpolated in time:

    - the fixes used are the last one at or before the image stamp and the first one at or
      after it, each only if it lies within ``fix_tolerance_s`` of the image stamp; with both,
      the position is interpolated, with one it is taken as is;
    - no fix within the tolerance: the image is skipped (counted as ``no_gnss_in_tolerance``);
    - a fix used has ``status.status < STATUS_FIX`` (NO_FIX, or the Kilted default UNKNOWN):
      the image is skipped (counted as ``gnss_no_fix``); a NaN latitude/longitude counts the
      same way. A NaN altitude is kept as NaN ("unknown").

Images are read lazily: a :class:`BagImage` loader re-reads one message by its log time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
import math
from pathlib import Path
from typing import Any

import numpy as np

from vpr_ros.bags import header_stamp_ns, open_reader
from vpr_ros.errors import DataError
from vpr_ros.image_codec import msg_to_rgb
from vpr_ros.mapdb.entry import Entry, SourceConfig, SourceReport

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
FIX_TYPE = 'sensor_msgs/msg/NavSatFix'
STATUS_FIX = 0

_READERS: dict[str, Any] = {}  # bag path -> open AnyReader, one per process (see BagImage)


def _shared_reader(path: str) -> Any:
    reader = _READERS.get(path)
    if reader is None:
        reader = _READERS[path] = open_reader(Path(path))
    return reader


@dataclass(frozen=True)
class BagImage:
    """Picklable loader of one image message, found by topic, log time and header stamp."""

    bag: str
    topic: str
    log_time_ns: int
    stamp_ns: int

    def __call__(self) -> np.ndarray:
        reader = _shared_reader(self.bag)
        conns = [c for c in reader.connections if c.topic == self.topic]
        for conn, _, raw in reader.messages(connections=conns, start=self.log_time_ns,
                                            stop=self.log_time_ns + 1):
            if header_stamp_ns(raw) in (None, self.stamp_ns):
                return msg_to_rgb(reader.deserialize(raw, conn.msgtype))
        raise DataError(f'{self.bag}: no {self.topic} message at log time {self.log_time_ns}')


def _pick_topic(reader: Any, wanted: str, types: tuple[str, ...], what: str) -> str:
    topics = sorted({c.topic for c in reader.connections if c.msgtype in types})
    if wanted:
        if wanted not in topics:
            raise DataError(f'{what} topic {wanted!r} not in the bag; {what} topics: {topics}')
        return wanted
    if len(topics) != 1:
        raise DataError(f'bag has {len(topics)} {what} topics {topics}; choose one with '
                        f'--{what}-topic')
    return topics[0]


def _read_fixes(reader: Any, topic: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return fix stamps (ns, sorted), positions (n, 3) and validity flags."""
    conns = [c for c in reader.connections if c.topic == topic]
    rows = []
    for conn, _, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        valid = (int(msg.status.status) >= STATUS_FIX and math.isfinite(msg.latitude)
                 and math.isfinite(msg.longitude))
        rows.append((stamp, msg.latitude, msg.longitude, msg.altitude, valid))
    rows.sort(key=lambda r: r[0])
    stamps = np.array([r[0] for r in rows], np.int64)
    pos = np.array([r[1:4] for r in rows], np.float64).reshape(-1, 3)
    valid = np.array([r[4] for r in rows], bool)
    return stamps, pos, valid


def locate(stamp_ns: int, fix_stamps: np.ndarray, fix_pos: np.ndarray, fix_valid: np.ndarray,
           tolerance_ns: int) -> tuple[np.ndarray | None, str]:
    """Position of an image stamp from the fixes around it, or ``(None, skip reason)``."""
    after = bisect.bisect_left(fix_stamps, stamp_ns)
    used = []
    if after > 0 and stamp_ns - fix_stamps[after - 1] <= tolerance_ns:
        used.append(after - 1)
    if after < len(fix_stamps) and fix_stamps[after] - stamp_ns <= tolerance_ns:
        used.append(after)
    if not used:
        return None, 'no_gnss_in_tolerance'
    if not all(fix_valid[i] for i in used):
        return None, 'gnss_no_fix'
    if len(used) == 1 or fix_stamps[used[1]] == fix_stamps[used[0]]:
        return fix_pos[used[0]].copy(), ''
    i, j = used
    w = (stamp_ns - fix_stamps[i]) / (fix_stamps[j] - fix_stamps[i])
    a, b = fix_pos[i], fix_pos[j]
    dlon = (b[1] - a[1] + 180.0) % 360.0 - 180.0  # across the antimeridian too
    lon = (a[1] + w * dlon + 180.0) % 360.0 - 180.0
    return np.array([a[0] + w * (b[0] - a[0]), lon, a[2] + w * (b[2] - a[2])]), ''


def bag_source(path: Path, config: SourceConfig) -> SourceReport:
    """Geotag the frames of a rosbag2's image topic with its NavSatFix topic."""
    bag = path.parent if path.is_file() else path
    reader = open_reader(bag)
    try:
        image_topic = _pick_topic(reader, config.image_topic, IMAGE_TYPES, 'image')
        fix_topic = _pick_topic(reader, config.fix_topic, (FIX_TYPE,), 'fix')
        fix_stamps, fix_pos, fix_valid = _read_fixes(reader, fix_topic)
        conns = [c for c in reader.connections if c.topic == image_topic]
        tolerance_ns = int(round(config.fix_tolerance_s * 1e9))
        entries, skipped = [], {'no_gnss_in_tolerance': 0, 'gnss_no_fix': 0}
        for conn, log_time, raw in reader.messages(connections=conns):
            stamp = header_stamp_ns(raw)
            if stamp is None:
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            pos, reason = locate(stamp, fix_stamps, fix_pos, fix_valid, tolerance_ns)
            if pos is None:
                skipped[reason] += 1
                continue
            name = f'{image_topic}@{stamp}'
            entries.append(Entry(name, float(pos[0]), float(pos[1]), float(pos[2]),
                                 BagImage(str(bag), image_topic, log_time, stamp),
                                 stamp_ns=stamp))
    finally:
        reader.close()
    return SourceReport('bag', str(bag), entries, {k: v for k, v in skipped.items() if v})
