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

"""The ``localizer`` node (``ros2 run vpr_ros localizer``).

Foundation stage: the node starts, declares its parameters, resolves the compute device and
counts the images it receives. Localisation is wired in by the Localizer and node issues.
"""

from __future__ import annotations

import sys

from rcl_interfaces.msg import ParameterDescriptor
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from vpr_ros.device import describe_device, resolve_device
from vpr_ros.errors import VprError


class LocalizerNode(Node):
    """Subscribe to camera images; publish NavSatFix fixes (wired in by later stages)."""

    def __init__(self) -> None:
        super().__init__('vpr_localizer')
        self.declare_parameter('map', '', ParameterDescriptor(
            description='path of the .vprmap directory to localise against', read_only=True))
        self.declare_parameter('compressed', False, ParameterDescriptor(
            description='subscribe to sensor_msgs/CompressedImage instead of Image',
            read_only=True))
        self.declare_parameter('device', 'auto', ParameterDescriptor(
            description='compute device: auto (CUDA when present), cpu, cuda, cuda:N',
            read_only=True))
        self.frames_received = 0
        device = resolve_device(self.get_parameter('device').value)
        if not self.get_parameter('map').value:
            self.get_logger().warning('no map given (parameter "map"): not localising')
        msg_type = CompressedImage if self.get_parameter('compressed').value else Image
        self.create_subscription(msg_type, 'image', self._on_image, qos_profile_sensor_data)
        # Logged last: scripts and tests take this line as "ready".
        self.get_logger().info(f'vpr_ros localizer started on {describe_device(device)}')

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.frames_received += 1


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; exit non-zero on a configuration error."""
    try:
        with rclpy.init(args=args):
            try:
                node = LocalizerNode()
            except VprError as exc:
                print(f'vpr_ros localizer: error: {exc}', file=sys.stderr)
                return 1
            except Exception:
                if not rclpy.ok():  # SIGINT/SIGTERM arrived while starting: a clean stop
                    return 0
                raise
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
