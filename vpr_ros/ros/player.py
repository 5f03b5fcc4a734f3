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

"""``vpr-ros play``: publish a rosbag2's messages with real rclpy at the recorded pace.

The bag is read with :mod:`vpr_ros.bags` and each message's raw CDR bytes are published as they
are (rclpy publishes serialized bytes without deserialising them). Messages are due at
``(log_time - first log_time) / rate`` seconds after the start; ``--clock`` also publishes
``/clock`` with each message's log time so nodes with ``use_sim_time`` follow the bag;
``--restamp`` instead shifts every ``header.stamp`` to the wall clock of the playback (same
time map for every message, so relative timing is kept), so a node's fixes, stamped with the
image stamp, can be scored for latency against the receive times a recorder logs.
"""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any, Sequence

import rclpy
from rclpy.duration import Duration
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from rosidl_runtime_py.utilities import get_message

from vpr_ros.bags import (has_header, header_stamp_ns, open_reader, playback_offsets_s,
                          PlayConfig, select_connections, shift_header_stamp)
from vpr_ros.errors import DataError
from vpr_ros.ros.compat import in_own_session
from vpr_ros.ros.stop import StopSignals


def _publisher_qos(config: PlayConfig) -> Any:
    if config.qos == 'sensor_data':
        return qos_profile_sensor_data
    return QoSProfile(depth=config.depth, reliability=ReliabilityPolicy.RELIABLE)


def _running(context: Any, stop: StopSignals | None) -> bool:
    return context.ok() and not (stop is not None and stop.requested)


def _sleep_until(deadline: float, context: Any, stop: StopSignals | None = None) -> bool:
    """Sleep until the monotonic ``deadline`` in short steps; False when asked to stop."""
    while _running(context, stop):
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.05))
    return False


def _restamp(raw: bytes, t0: int, wall_start: int, rate: float) -> bytes:
    """Map a header stamp onto the playback's wall clock: stamps at t0 read wall_start."""
    stamp = header_stamp_ns(raw)
    if stamp is None:
        return bytes(raw)
    return shift_header_stamp(raw, wall_start + round((stamp - t0) / rate) - stamp)


def _publish_pass(reader: Any, conns: list[Any], pubs: dict[str, Any], clock_pub: Any,
                  config: PlayConfig, context: Any, bar: Any,
                  stop: StopSignals | None = None) -> tuple[int, bool]:
    """Publish the bag once at its pace; return (messages published, completed)."""
    start = time.monotonic()
    wall_start = time.time_ns()
    t0 = None
    count = 0
    for conn, log_time, raw in reader.messages(connections=conns):
        if t0 is None:
            t0 = log_time
        due = float(playback_offsets_s([t0, log_time], config.rate)[1])
        if not _sleep_until(start + due, context, stop):
            return count, False
        if clock_pub is not None:
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(int(log_time), 1_000_000_000)
            clock_pub.publish(clock)
        if config.restamp and has_header(conn.msgtype):
            raw = _restamp(raw, t0, wall_start, config.rate)
        pubs[conn.topic].publish(bytes(raw))
        count += 1
        if bar is not None:
            bar.update(1)
    return count, True


def _wait_for_subscribers(pubs: dict[str, Any], timeout_s: float, context: Any,
                          node: Any, stop: StopSignals | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while (time.monotonic() < deadline and _running(context, stop)
           and not all(p.get_subscription_count() > 0 for p in pubs.values())):
        time.sleep(0.05)
    lonely = sorted(t for t, p in pubs.items() if p.get_subscription_count() == 0)
    if lonely:
        node.get_logger().warning(f'no subscriber (yet) on {lonely}')


def play(bag: Path, config: PlayConfig, topics: Sequence[str] | None = None, *,
         progress: bool = True, context: Any = None, stop: StopSignals | None = None) -> int:
    """Publish the bag (selected ``topics``, all by default); return the messages published.

    Needs an initialised rclpy ``context`` (the default one when None). Returns early, without
    error, when the context shuts down or ``stop`` is requested (SIGINT/SIGTERM).
    """
    context = context or rclpy.get_default_context()
    reader = open_reader(bag)
    node = rclpy.create_node('vpr_bag_player', context=context)
    published = 0
    bar = None
    try:
        conns = select_connections(reader, topics)
        qos = _publisher_qos(config)
        pubs = {}
        for topic, msgtype in sorted({c.topic: c.msgtype for c in conns}.items()):
            try:
                msg_class = get_message(msgtype)
            except (AttributeError, ModuleNotFoundError, ValueError):
                raise DataError(f'cannot publish {topic}: message type {msgtype} is not '
                                f'installed') from None
            pubs[topic] = node.create_publisher(msg_class, topic, qos)
        clock_pub = node.create_publisher(Clock, '/clock', 10) if config.clock else None
        if config.wait_for_subscribers_s > 0:
            _wait_for_subscribers(pubs, config.wait_for_subscribers_s, context, node, stop)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(c.msgcount for c in conns), unit='msg',
                       desc=f'play {Path(bag).name}')
        while _running(context, stop):
            count, completed = _publish_pass(reader, conns, pubs, clock_pub, config,
                                             context, bar, stop)
            published += count
            if not (completed and config.loop):
                break
            if bar is not None:
                bar.reset()
        if config.qos == 'reliable' and _running(context, stop):
            for pub in pubs.values():  # let reliable readers get the tail before we exit
                pub.wait_for_all_acked(Duration(seconds=5))
    finally:
        if bar is not None:
            bar.close()
        reader.close()
        node.destroy_node()
    return published


def play_session(bag: Path, config: PlayConfig, topics: Sequence[str] | None = None, *,
                 progress: bool = True, stop: StopSignals | None = None) -> int:
    """Play the bag in a ROS session of its own until its end (or a stop); return the count.

    ``stop`` (installed before rclpy is imported, :mod:`vpr_ros.ros.stop`) turns SIGINT and
    SIGTERM into a clean end; a shutdown from outside ends it too.
    """
    stop = stop or StopSignals.install()
    return in_own_session(lambda context: play(bag, config, topics, progress=progress,
                                               context=context, stop=stop), stop, 0)
