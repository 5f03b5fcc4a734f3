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

"""Read recorded fixes, ground truth and camera frame stamps from a rosbag2 and score them.

One pass over the bag (with a tqdm bar) collects the fix topic (``NavSatFix``, with each
message's log time for latency), the truth topic (``NavSatFix``) and, when the bag has the
camera topic, the header stamps of its frames (read from the CDR bytes, images are never
decoded). :func:`vpr_ros.evaluation.metrics.compute_metrics` does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import math
from pathlib import Path

import numpy as np

from vpr_ros.bags import deserialize, FIX_TYPE, header_stamp_ns, IMAGE_TYPES, open_reader
from vpr_ros.errors import DataError
from vpr_ros.evaluation.metrics import compute_metrics, EvalConfig, Evaluation, FixSeries
from vpr_ros.evaluation.metrics import TruthSeries

log = logging.getLogger(__name__)

STATUS_FIX = 0
AUTO = 'auto'


@dataclass
class BagEvaluation:
    """An evaluation together with where its inputs came from."""

    evaluation: Evaluation
    bag: Path
    fix_topic: str
    truth_topic: str
    frames_topic: str | None


def _check_topic(types: dict[str, str], topic: str, allowed: tuple[str, ...],
                 what: str) -> None:
    if topic not in types:
        raise DataError(f'{what} topic {topic!r} is not in the bag; its topics: '
                        f'{ {t: types[t] for t in sorted(types)} }')
    if types[topic] not in allowed:
        raise DataError(f'{what} topic {topic!r} has type {types[topic]}, expected '
                        f'{" or ".join(allowed)}')


def resolve_frames_topic(types: dict[str, str], frames: str | None) -> str | None:
    """Pick the camera topic whose frames count: given, ``auto`` (the only image topic), None."""
    if frames is None or frames == '' or frames == 'none':
        return None
    if frames == AUTO:
        images = sorted(t for t, ty in types.items() if ty in IMAGE_TYPES)
        if len(images) == 1:
            return images[0]
        if images:
            log.warning('bag has image topics %s; availability uses fix messages (choose '
                        'one with --frames)', images)
        return None
    _check_topic(types, frames, IMAGE_TYPES, 'frames')
    return frames


def _fix_row(msg) -> tuple:
    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    valid = (int(msg.status.status) >= STATUS_FIX and math.isfinite(msg.latitude)
             and math.isfinite(msg.longitude))
    return (stamp, msg.latitude, msg.longitude, msg.altitude, valid,
            np.asarray(msg.position_covariance, np.float64))


def evaluate_bag(bag: Path, *, fix_topic: str = '/vpr/fix', truth_topic: str = '/gnss/fix',
                 frames: str | None = AUTO, config: EvalConfig | None = None,
                 progress: bool = True) -> BagEvaluation:
    """Score the fixes recorded on ``fix_topic`` against ``truth_topic`` in one bag.

    Args:
        bag: rosbag2 directory (mcap or sqlite3).
        fix_topic: NavSatFix topic of the localizer's output.
        truth_topic: NavSatFix topic of the ground truth (GNSS/INS).
        frames: camera topic whose frames are the queries; ``auto`` takes the bag's only
            image topic, None counts fix messages instead.
        config: metric thresholds (EvalConfig defaults when None).
        progress: show a tqdm bar over the bag's messages.

    Raises:
        DataError: a missing topic, a topic of the wrong type, no valid truth, or no overlap
            in time between fixes and truth.
    """
    bag = Path(bag)
    reader = open_reader(bag)
    try:
        types = {c.topic: c.msgtype for c in reader.connections}
        _check_topic(types, fix_topic, (FIX_TYPE,), 'fix')
        _check_topic(types, truth_topic, (FIX_TYPE,), 'truth')
        frames_topic = resolve_frames_topic(types, frames)
        wanted = {fix_topic, truth_topic} | ({frames_topic} if frames_topic else set())
        conns = [c for c in reader.connections if c.topic in wanted]
        iterator = reader.messages(connections=conns)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=sum(c.msgcount for c in conns), unit='msg',
                            desc=f'eval {bag.name}')
        fix_rows, fix_log, truth_rows, frame_stamps = [], [], [], []
        for conn, log_time, raw in iterator:
            if conn.topic == frames_topic:
                stamp = header_stamp_ns(raw)
                if stamp is None:
                    msg = deserialize(raw, conn.msgtype)
                    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                frame_stamps.append(stamp)
                continue
            row = _fix_row(deserialize(raw, conn.msgtype))
            if conn.topic == fix_topic:
                fix_rows.append(row)
                fix_log.append(int(log_time))
            if conn.topic == truth_topic:
                truth_rows.append(row)
    finally:
        reader.close()
    if not truth_rows:
        raise DataError(f'truth topic {truth_topic!r} has no messages in {bag}')
    if not fix_rows:
        raise DataError(f'fix topic {fix_topic!r} has no messages in {bag}')
    fixes = FixSeries(stamp_ns=[r[0] for r in fix_rows], lat=[r[1] for r in fix_rows],
                      lon=[r[2] for r in fix_rows], alt=[r[3] for r in fix_rows],
                      valid=[r[4] for r in fix_rows],
                      cov_enu=np.array([r[5] for r in fix_rows]).reshape(-1, 3, 3),
                      receive_ns=fix_log)
    truth = TruthSeries(stamp_ns=[r[0] for r in truth_rows], lat=[r[1] for r in truth_rows],
                        lon=[r[2] for r in truth_rows], alt=[r[3] for r in truth_rows],
                        valid=[r[4] for r in truth_rows])
    evaluation = compute_metrics(fixes, truth, config,
                                 frame_stamp_ns=frame_stamps if frames_topic else None)
    return BagEvaluation(evaluation, bag, fix_topic, truth_topic, frames_topic)
