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

"""Real rclpy across processes: an Image published by another process arrives intact."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from ros_harness import Process, python_process, wait_for_message

pytestmark = pytest.mark.ros

PUBLISHER = """
import sys
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vpr_ros.ros.compat import ros_session

rng = np.random.default_rng(7)
pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
try:
    with ros_session(rclpy_signals=True):
        node = rclpy.create_node('test_image_publisher')
        pub = node.create_publisher(Image, 'camera/image_raw',
                                    QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        msg = Image(height=48, width=64, encoding='rgb8', is_bigendian=0, step=64 * 3)
        msg.header.frame_id = 'camera'
        msg.header.stamp.sec = 1700000000
        msg.header.stamp.nanosec = 123456789
        msg.data = pixels.tobytes()
        node.create_timer(0.1, lambda: pub.publish(msg))
        print('publishing', flush=True)
        rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
"""


def test_image_crosses_processes_intact(tmp_path, rclpy_context):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    import rclpy

    expected = np.random.default_rng(7).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    with python_process(PUBLISHER, tmp_path / 'publisher.log') as publisher:
        assert publisher.wait_for_output('publishing', timeout=30), publisher.output()
        node = rclpy.create_node('test_image_listener', context=rclpy_context)
        try:
            msg = wait_for_message(node, Image, 'camera/image_raw', timeout=30,
                                   qos=QoSProfile(depth=10,
                                                  reliability=ReliabilityPolicy.RELIABLE))
        finally:
            node.destroy_node()
        rc = publisher.stop()
    assert rc == 0, publisher.output()
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('rgb8', 48, 64, 192)
    assert msg.header.frame_id == 'camera'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1700000000, 123456789)
    received = np.frombuffer(msg.data, np.uint8).reshape(48, 64, 3)
    np.testing.assert_array_equal(received, expected)


def test_wait_for_message_times_out(rclpy_context):
    from std_msgs.msg import String
    import rclpy

    node = rclpy.create_node('test_silent_listener', context=rclpy_context)
    try:
        with pytest.raises(TimeoutError, match='no String on nobody_publishes_here'):
            wait_for_message(node, String, 'nobody_publishes_here', timeout=0.5)
    finally:
        node.destroy_node()


def test_a_child_stops_on_sigint_even_when_the_test_process_ignores_it(tmp_path):
    # An ignored SIGINT survives exec: a `ros2 launch` started by a test process that ignores
    # it (a background job of a non-interactive shell) would never stop on SIGINT.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = Process(['sleep', '60'], tmp_path / 'sleep.log')
    finally:
        signal.signal(signal.SIGINT, previous)
    assert child.stop(signal.SIGINT, timeout=10) == -signal.SIGINT
