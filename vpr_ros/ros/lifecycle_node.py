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

"""The localizer as a managed (lifecycle) node: ``localizer --lifecycle [--autostart]``.

Same parameters, topics, messages and diagnostics as :class:`LocalizerNode`, whose parts it
reuses; the work is split over the standard transitions
(https://design.ros2.org/articles/node_lifecycle.html):

- configure: validate the parameters, open the map, load and warm up the model, create the
  publishers (seconds: do it before the robot needs fixes);
- activate: start the worker, subscribe to the camera, publish fixes and ``/diagnostics``;
- deactivate: unsubscribe, finish the frame in progress, stop publishing;
- cleanup: drop the publishers and free the map and the model.

``--autostart`` configures and activates at once (a configuration error then exits 1, as the
plain node does); without it a lifecycle manager or ``ros2 lifecycle set`` drives the node.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image, NavSatFix

from vpr_ros.device import describe_device, resolve_device
from vpr_ros.errors import VprError
from vpr_ros.localizer import Localizer
from vpr_ros.ros.inputs import image_topic
from vpr_ros.ros.localizer_node import check_map_parameter, FIX_TOPIC, LocalizerNode, \
    make_decoder, NODE_NAME, POSE_TOPIC
from vpr_ros.ros.params import configs_from_values, parameter_specs
from vpr_ros.ros.qos import diagnostics_qos, fix_qos, image_qos
from vpr_ros.ros.run import run_node
from vpr_ros.ros.stats import FrameStats
from vpr_ros.ros.stop import StopSignals
from vpr_ros.ros.worker import Worker

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class LifecycleLocalizerNode(LifecycleNode):
    """The localizer node with configure/activate/deactivate/cleanup transitions."""

    # The plain node's parts, shared as they are: one implementation of each.
    _declare_parameters = LocalizerNode._declare_parameters
    _overrides = LocalizerNode._overrides
    _override_value = LocalizerNode._override_value
    _values = LocalizerNode._values
    _check_parameters = LocalizerNode._check_parameters
    _warm_up = LocalizerNode._warm_up
    _on_image = LocalizerNode._on_image
    _process = LocalizerNode._process
    _prepare_frame = LocalizerNode._prepare_frame
    _make_worker = LocalizerNode._make_worker
    _warn_throttled = LocalizerNode._warn_throttled
    _on_worker_error = LocalizerNode._on_worker_error
    _check_input = LocalizerNode._check_input
    diagnostics = LocalizerNode.diagnostics
    _publish_diagnostics = LocalizerNode._publish_diagnostics

    def __init__(self, **kwargs: Any) -> None:
        """Declare the parameters (checked at configure); nothing is loaded yet.

        Raises:
            ConfigError: a parameter override has the wrong type or breaks its range.
        """
        super().__init__(NODE_NAME, **kwargs)
        self._specs = parameter_specs()
        self._names = {s.name for s in self._specs}
        self._declare_parameters()
        self.config, _ = configs_from_values(self._values())
        self.localizer: Localizer | None = None
        self.stats = FrameStats()
        self._warned: dict[str, float] = {}
        self.worker: Worker | None = None
        self.fix_pub = self.pose_pub = self.diag_pub = None
        self.image_sub = self._diag_timer = None
        self.input_problem: str | None = None
        self.error: str | None = None   # why the last configure failed
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.get_logger().info('vpr_ros localizer (lifecycle) unconfigured: configure opens '
                               'the map, activate subscribes')

    def _apply_parameters(self, params: list[Any]) -> None:
        if not any(p.name in self._names for p in params):
            return
        self.config, localizer_config = configs_from_values(self._values())
        if self.localizer is not None:
            self.localizer.set_config(localizer_config)

    # -- transitions ----------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters, open the map, warm up the model, create the publishers."""
        try:
            self.config, localizer_config = configs_from_values(self._values())
            check_map_parameter(self.config.map)
            device = resolve_device(self.config.device)
            self.localizer = Localizer.open(self.config.map, localizer_config,
                                            device=str(device), fast=self.config.fast_load)
            self.device_name = describe_device(self.localizer.device)
            self._decode, self.decoder_name = make_decoder()
            self._warm_up()
        except VprError as exc:
            self.error = str(exc)
            self.localizer = None
            self.get_logger().error(f'configure failed: {exc}')
            return FAILURE
        self.error = None
        self.stats = FrameStats()
        self.fix_pub = self.create_publisher(NavSatFix, FIX_TOPIC, fix_qos())
        self.pose_pub = (self.create_publisher(PoseWithCovarianceStamped, POSE_TOPIC, fix_qos())
                         if self.config.publish_pose else None)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                              diagnostics_qos())
        runtime = self.localizer.runtime
        self.get_logger().info(f'backend {runtime.name} {runtime.precision}: {runtime.reason}')
        self.get_logger().info(f'configured on {self.device_name}: map '
                               f'{Path(self.config.map).name} ({len(self.localizer.map)} '
                               f'places)')
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker, subscribe to the camera, publish diagnostics."""
        self.worker = self._make_worker()
        self.worker.start()
        msg_type = CompressedImage if self.config.compressed else Image
        self.image_sub = self.create_subscription(
            msg_type, image_topic(self.resolve_topic_name('image'), self.config.compressed),
            self._on_image, image_qos(self.config.image_reliability))
        self._diag_timer = self.create_timer(self.config.diagnostics_period_s,
                                             self._publish_diagnostics)
        # The plain node's ready line: scripts and tests wait for it.
        self.get_logger().info(f'vpr_ros localizer started on {self.device_name} (lifecycle: '
                               f'active): {self.image_sub.topic_name} ({msg_type.__name__}, '
                               f'{self.decoder_name}) -> {self.fix_pub.topic_name}')
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker after the frame in progress."""
        self._stop_activity()
        self.get_logger().info('deactivated: not subscribed, not publishing')
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drop the publishers and free the map and the model."""
        self._release()
        self.get_logger().info('cleaned up: map and model freed')
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop whatever runs and free everything, from any state."""
        self._stop_activity()
        self._release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything and go back to unconfigured."""
        return self.on_shutdown(state)

    def _stop_activity(self) -> None:
        if self.image_sub is not None:
            self.destroy_subscription(self.image_sub)
            self.image_sub = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _release(self) -> None:
        for pub in (self.fix_pub, self.pose_pub, self.diag_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self.fix_pub = self.pose_pub = self.diag_pub = None
        if self.localizer is not None:
            cuda = self.localizer.device.type == 'cuda'
            self.localizer = None
            gc.collect()
            if cuda:
                import torch

                torch.cuda.empty_cache()

    @property
    def state_label(self) -> str:
        """The current lifecycle state: unconfigured, inactive, active, finalized."""
        return self._state_machine.current_state[1]


def main(args: list[str] | None = None, stop: StopSignals | None = None,
         autostart: bool = False) -> int:
    """Run the managed node until SIGINT/SIGTERM (exit 0); exit 1 on a configuration error."""
    stop = stop or StopSignals.install()

    def configure_and_activate(node: LifecycleLocalizerNode) -> str | None:
        if node.trigger_configure() != SUCCESS:
            return f'{node.error}'
        if not stop.requested:
            node.trigger_activate()
        return None

    def shut_down(node: LifecycleLocalizerNode) -> None:
        if node.state_label in ('inactive', 'active'):
            node.trigger_shutdown()

    return run_node(LifecycleLocalizerNode, args=args, stop=stop,
                    start=configure_and_activate if autostart else None, close=shut_down)
