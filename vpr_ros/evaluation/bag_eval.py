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

Live mode (:func:`evaluate_bag`): one pass over the bag (with a tqdm bar) collects the fix topic
(``NavSatFix``, with each message's log time for latency), the truth topic (``NavSatFix``) and,
when the bag has the camera topic, the header stamps of its frames (read from the CDR bytes,
images are never decoded).

Offline mode (:func:`evaluate_bag_offline`): the localizer runs on the bag's images instead of
reading a recorded fix topic. A first pass reads the truth and the frame stamps (so a wrong
topic or a bag without overlap fails before the model loads), a second decodes the frames and
localizes them in batches. Each estimate becomes the fix the node would have published for
that frame (stamp = the image's ``header.stamp``, NO_FIX for ``status`` no_fix, covariance =
``cov_enu``), with the stamps passed on so the localizer's sequence check runs as in the node;
the latency is replaced by the localizer's processing time per frame.

Both modes end in :func:`vpr_ros.evaluation.metrics.compute_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
import math
from pathlib import Path
from typing import Any, Callable, TYPE_CHECKING

import numpy as np

from vpr_ros.bags import deserialize, FIX_TYPE, header_stamp_ns, IMAGE_TYPES, open_reader
from vpr_ros.device import forward_batch, read_step
from vpr_ros.errors import DataError
from vpr_ros.evaluation.metrics import compute_metrics, EvalConfig, Evaluation, FixSeries
from vpr_ros.evaluation.metrics import truth_coverage, TruthSeries
from vpr_ros.image_codec import msg_to_rgb

if TYPE_CHECKING:
    from vpr_ros.localizer import Estimate, Localizer

log = logging.getLogger(__name__)

STATUS_FIX = 0
AUTO = 'auto'


@dataclass
class BagEvaluation:
    """An evaluation together with where its inputs came from."""

    evaluation: Evaluation
    bag: Path
    fix_topic: str | None        # None in offline mode
    truth_topic: str
    frames_topic: str | None
    offline: dict[str, Any] = field(default_factory=dict)  # offline mode: how it ran


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


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _raw_stamp(raw: bytes, msgtype: str) -> int:
    stamp = header_stamp_ns(raw)
    return _stamp(deserialize(raw, msgtype)) if stamp is None else stamp


def _fix_row(msg) -> tuple:
    stamp = _stamp(msg)
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
                frame_stamps.append(_raw_stamp(raw, conn.msgtype))
                continue
            row = _fix_row(deserialize(raw, conn.msgtype))
            if conn.topic == fix_topic:
                fix_rows.append(row)
                fix_log.append(int(log_time))
            if conn.topic == truth_topic:
                truth_rows.append(row)
    finally:
        reader.close()
    truth = _truth_series(truth_rows, truth_topic, bag)
    if not fix_rows:
        raise DataError(f'fix topic {fix_topic!r} has no messages in {bag}')
    fixes = FixSeries(stamp_ns=[r[0] for r in fix_rows], lat=[r[1] for r in fix_rows],
                      lon=[r[2] for r in fix_rows], alt=[r[3] for r in fix_rows],
                      valid=[r[4] for r in fix_rows],
                      cov_enu=np.array([r[5] for r in fix_rows]).reshape(-1, 3, 3),
                      receive_ns=fix_log)
    evaluation = compute_metrics(fixes, truth, config,
                                 frame_stamp_ns=frame_stamps if frames_topic else None)
    return BagEvaluation(evaluation, bag, fix_topic, truth_topic, frames_topic)


def _truth_series(rows: list[tuple], topic: str, bag: Path) -> TruthSeries:
    if not rows:
        raise DataError(f'truth topic {topic!r} has no messages in {bag}')
    return TruthSeries(stamp_ns=[r[0] for r in rows], lat=[r[1] for r in rows],
                       lon=[r[2] for r in rows], alt=[r[3] for r in rows],
                       valid=[r[4] for r in rows])


def resolve_image_topic(types: dict[str, str], images: str | None) -> str:
    """Pick the camera topic to localize: given, or ``auto``/None (the bag's only one)."""
    if images in (None, '', AUTO):
        found = sorted(t for t, ty in types.items() if ty in IMAGE_TYPES)
        if len(found) != 1:
            raise DataError(f'the bag has {len(found)} image topics {found}; choose one with '
                            f'--images')
        return found[0]
    _check_topic(types, images, IMAGE_TYPES, 'image')
    return images


def estimates_to_fixes(stamp_ns: Any, estimates: list['Estimate']) -> FixSeries:
    """Turn localizer estimates into the fix series a recorded ``/vpr/fix`` would give.

    Stamps are the frames' header stamps; the latency slot holds each frame's processing time
    (the sum of the localizer's stage timings).
    """
    from vpr_ros.localizer import FIX

    return FixSeries(
        stamp_ns=stamp_ns, lat=[e.lat for e in estimates], lon=[e.lon for e in estimates],
        alt=[e.alt for e in estimates], valid=[e.status == FIX for e in estimates],
        cov_enu=np.array([np.asarray(e.cov_enu, np.float64) for e in estimates]
                         ).reshape(-1, 3, 3),
        processing_ms=[float(sum(e.timings.values())) for e in estimates])


def _bar(iterator: Any, progress: bool, **kwargs: Any) -> Any:
    if not progress:
        return iterator
    from tqdm import tqdm

    return tqdm(iterator, **kwargs)


def evaluate_bag_offline(bag: Path, localizer: 'Localizer | Callable[[], Localizer]', *,
                         image_topic: str | None = AUTO, truth_topic: str = '/gnss/fix',
                         config: EvalConfig | None = None, batch_size: int = 0,
                         progress: bool = True) -> BagEvaluation:
    """Run the localizer on a bag's camera frames and score its estimates against the truth.

    Args:
        bag: rosbag2 directory (mcap or sqlite3).
        localizer: a :class:`~vpr_ros.localizer.Localizer`, or a function returning one
            (called only once the bag's topics and time overlap are checked).
        image_topic: ``sensor_msgs/Image`` or ``CompressedImage`` topic; ``auto`` takes the
            bag's only image topic.
        truth_topic: NavSatFix topic of the ground truth.
        config: metric thresholds (EvalConfig defaults when None).
        batch_size: images per forward pass (0: the fastest for the localizer's device,
            :func:`vpr_ros.device.forward_batch`).
        progress: tqdm bars over the bag.

    Raises:
        DataError: a missing topic, a topic of the wrong type, no frames, no valid truth, no
            frame stamp in the truth's coverage, or no frame that decodes.
    """
    if batch_size < 0:
        raise DataError(f'batch_size must be 0 (auto) or more, got {batch_size}')
    bag = Path(bag)
    config = config or EvalConfig()
    reader = open_reader(bag)
    try:
        types = {c.topic: c.msgtype for c in reader.connections}
        image_topic = resolve_image_topic(types, image_topic)
        _check_topic(types, truth_topic, (FIX_TYPE,), 'truth')
        image_conns = [c for c in reader.connections if c.topic == image_topic]
        conns = image_conns + [c for c in reader.connections if c.topic == truth_topic]
        truth_rows, frame_stamps = [], []
        for conn, _, raw in _bar(reader.messages(connections=conns), progress,
                                 total=sum(c.msgcount for c in conns), unit='msg',
                                 desc=f'scan {bag.name}'):
            if conn.topic == image_topic:
                frame_stamps.append(_raw_stamp(raw, conn.msgtype))
            else:
                truth_rows.append(_fix_row(deserialize(raw, conn.msgtype)))
        truth = _truth_series(truth_rows, truth_topic, bag)
        if not frame_stamps:
            raise DataError(f'image topic {image_topic!r} has no messages in {bag}')
        stamps = np.array(frame_stamps, np.int64)
        if not truth_coverage(stamps, truth, config).any():
            t = np.sort(truth.stamp_ns[truth.valid])
            raise DataError(
                f'no image stamp of {image_topic!r} lies within the truth {truth_topic!r}: '
                f'images {stamps.min() / 1e9:.3f} - {stamps.max() / 1e9:.3f} s, truth '
                f'{t[0] / 1e9:.3f} - {t[-1] / 1e9:.3f} s (gaps over '
                f'{config.truth_max_gap_s} s not bridged)')
        if not hasattr(localizer, 'localize_batch'):
            localizer = localizer()
        batch_size = forward_batch(localizer.device, batch_size, localizer.model)
        step = read_step(batch_size)
        done_stamps, estimates, pending, failed = [], [], [], []
        bar = _bar(None, progress, total=len(frame_stamps), unit='frame',
                   desc=f'localize {image_topic}')

        def flush() -> None:
            estimates.extend(localizer.localize_batch([image for _, image in pending],
                                                      batch_size=batch_size,
                                                      stamps_ns=[t for t, _ in pending]))
            done_stamps.extend(stamp for stamp, _ in pending)
            if bar is not None:
                bar.update(len(pending))
            pending.clear()

        try:
            for conn, _, raw in reader.messages(connections=image_conns):
                msg = reader.deserialize(raw, conn.msgtype)
                try:
                    pending.append((_stamp(msg), msg_to_rgb(msg)))
                except DataError as exc:
                    if not failed:
                        log.warning('%s: frame at %d ns does not decode (%s); counted as a '
                                    'frame without a fix', image_topic, _stamp(msg), exc)
                    failed.append(str(exc))
                    if bar is not None:
                        bar.update(1)
                    continue
                if len(pending) >= step:
                    flush()
            if pending:
                flush()
        finally:
            if bar is not None:
                bar.close()
    finally:
        reader.close()
    if not estimates:
        raise DataError(f'none of the {len(frame_stamps)} frames of {image_topic!r} decodes: '
                        f'{failed[0]}')
    fixes = estimates_to_fixes(done_stamps, estimates)
    evaluation = compute_metrics(fixes, truth, config, frame_stamp_ns=stamps)
    from vpr_ros.localizer import calibration_record

    stages = sorted({k for e in estimates for k in e.timings})
    offline = {
        'frames_localized': len(estimates), 'frames_undecodable': len(failed),
        'batch_size': batch_size, 'device': str(getattr(localizer, 'device', '')),
        **({'backend': localizer.runtime.name, 'precision': localizer.runtime.precision}
           if hasattr(localizer, 'runtime') else {}),
        # What re-ranked (the map's calibrated choice under geowarp.mode auto), and whether
        # the sigmas scored here come from a calibration that fits the map.
        **({'geowarp_mode': localizer.geowarp_mode if localizer.rerank else 'off',
            'rerank_weight': localizer.rerank_weight,
            'calibration': calibration_record(localizer, localizer.map.path.name)}
           if hasattr(localizer, 'geowarp_mode') else {}),
        'processing_stage_mean_ms': {k: float(np.mean([e.timings.get(k, 0.0)
                                                       for e in estimates]))
                                     for k in stages},
    }
    evaluation.metrics['offline'] = offline
    return BagEvaluation(evaluation, bag, None, truth_topic, image_topic, offline)
