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

"""``vpr-ros record``: subscribe to topics for real and write them into a rosbag2.

Subscriptions are generic (type found by discovery, ``raw=True``), so messages are written as
the CDR bytes that arrived, stamped with the node clock at reception (the bag log time that
``eval-bag`` uses for latency). Topics that appear later are picked up by a periodic discovery
check. On SIGINT or SIGTERM the bag is closed cleanly: everything received is in it.

The reliability is adapted to the publishers (``qos: auto``): a reliable subscription would not
match a best-effort publisher, so any best-effort publisher makes the subscription best effort.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosidl_runtime_py.utilities import get_message

from vpr_ros.bags import BagWriter, message_class, RecordConfig
from vpr_ros.errors import DataError
from vpr_ros.ros.compat import in_own_session, spin_until_stopped
from vpr_ros.ros.stop import StopSignals

IGNORED_TOPICS = ('/rosout', '/parameter_events')


class Recorder(Node):
    """Subscribe to the requested topics (all when none) and write every message received."""

    def __init__(self, writer: BagWriter, topics: Sequence[str] | None, config: RecordConfig,
                 *, context: Any = None, log: Callable[[str], None] = print) -> None:
        super().__init__('vpr_bag_recorder', context=context)
        self.writer = writer
        self.config = config
        self.wanted = [t if t.startswith('/') else '/' + t for t in (topics or [])]
        self._log = log
        self._recorded: dict[str, Any] = {}
        self._announced_ready = False
        self.create_timer(config.discovery_period_s, self._discover)
        self._discover()

    @property
    def ready(self) -> bool:
        """True once every requested topic has a subscription."""
        return bool(self.wanted) and all(t in self._recorded for t in self.wanted)

    def _qos(self, topic: str) -> QoSProfile:
        reliability = ReliabilityPolicy.RELIABLE
        if self.config.qos == 'best_effort':
            reliability = ReliabilityPolicy.BEST_EFFORT
        elif self.config.qos == 'auto':
            infos = self.get_publishers_info_by_topic(topic)
            if any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos):
                reliability = ReliabilityPolicy.BEST_EFFORT
        return QoSProfile(depth=self.config.depth, reliability=reliability)

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self._recorded or topic in IGNORED_TOPICS:
                continue
            if self.wanted and topic not in self.wanted:
                continue
            if not self.get_publishers_info_by_topic(topic):
                continue  # only subscribers so far: wait for a publisher to learn its QoS
            msgtype = types[0]
            try:
                message_class(msgtype)
                msg_class = get_message(msgtype)
            except (DataError, AttributeError, ModuleNotFoundError, ValueError) as exc:
                self.get_logger().error(f'not recording {topic}: {exc}')
                self._recorded[topic] = None
                continue
            self.writer.add_topic(topic, msgtype)
            qos = self._qos(topic)
            self._recorded[topic] = self.create_subscription(
                msg_class, topic, self._callback(topic), qos, raw=True)
            self._log(f'subscribed to {topic} [{msgtype}] '
                      f'({qos.reliability.name.lower()})')
        if self.ready and not self._announced_ready:
            self._announced_ready = True
            self._log(f'recording: all {len(self.wanted)} topic(s) subscribed')

    def _callback(self, topic: str) -> Callable[[bytes], None]:
        def on_message(raw: bytes) -> None:
            self.writer.write(topic, self.get_clock().now().nanoseconds, raw)
        return on_message


def record(out: Path, topics: Sequence[str] | None, config: RecordConfig, *,
           context: Any = None, log: Callable[[str], None] = print,
           stop: StopSignals | None = None) -> dict[str, int]:
    """Record until ``stop`` is requested or the context shuts down; return counts per topic.

    The output bag must not exist. It is closed (readable) whatever ends the recording.
    """
    context = context or rclpy.get_default_context()
    writer = BagWriter(out, storage=config.storage)
    try:
        node = Recorder(writer, topics, config, context=context, log=log)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            if stop is None:
                executor.spin()
            else:
                spin_until_stopped(executor, stop, context)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown()
            node.destroy_node()
    finally:
        writer.close()
    return dict(writer.counts)


def record_session(out: Path, topics: Sequence[str] | None, config: RecordConfig, *,
                   log: Callable[[str], None] = print,
                   stop: StopSignals | None = None) -> dict[str, int]:
    """Record in a ROS session of its own until SIGINT/SIGTERM; return messages per topic."""
    stop = stop or StopSignals.install()
    return in_own_session(lambda context: record(out, topics, config, log=log, context=context,
                                                 stop=stop), stop, {})
