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

"""The ``localizer`` node: camera images in, ``/vpr/fix`` NavSatFix out.

A thin shell over :class:`vpr_ros.localizer.Localizer`: parameters are declared from the config
dataclasses (:mod:`vpr_ros.ros.params`), frames go to a worker thread that keeps only the newest
one (:mod:`vpr_ros.ros.worker`), estimates become messages in :mod:`vpr_ros.ros.messages`, and
``/diagnostics`` reports health once a period. Topics (relative, so namespaces and remapping
work): subscribes ``image`` (``image/compressed`` with ``compressed``, as image_transport names
it); publishes ``vpr/fix``, ``vpr/pose`` (optional), ``/diagnostics``. README.md ("Running the
node") documents them with the parameters.
"""

from __future__ import annotations

import math
from pathlib import Path
import sys
import time
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
import rclpy.logging
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, NavSatFix

from vpr_ros.device import describe_device, resolve_device
from vpr_ros.errors import ConfigError, DataError
from vpr_ros.image_codec import msg_to_rgb
from vpr_ros.localizer import calibration_warning, Localizer
from vpr_ros.ros import messages
from vpr_ros.ros.inputs import image_topic, input_problem, sibling_topic
from vpr_ros.ros.params import (configs_from_values, descriptor, parameter_specs,
                                unknown_parameter_hint)
from vpr_ros.ros.qos import diagnostics_qos, fix_qos, image_qos
from vpr_ros.ros.run import run_node
from vpr_ros.ros.stats import FrameStats
from vpr_ros.ros.stop import StopSignals
from vpr_ros.ros.worker import Worker

NODE_NAME = 'vpr_localizer'
FIX_TOPIC = 'vpr/fix'
POSE_TOPIC = 'vpr/pose'
WARN_EVERY_S = 5.0
WATCHDOG_PERIOD_S = 0.5


def check_map_parameter(map_path: str) -> None:
    """Raise a :class:`ConfigError` unless the ``map`` parameter names a map directory."""
    if not map_path:
        raise ConfigError('parameter map is not set: give the map to localise against '
                          '(map:=route.vprmap, built by vpr-ros build-map)')
    if not Path(map_path).is_dir():
        raise ConfigError(f'parameter map: {map_path} does not exist or is not a .vprmap '
                          f'directory')


def make_decoder() -> tuple[Callable[[Any], np.ndarray], str]:
    """Return ``(decode(msg) -> RGB array, name)``: ROS 2 cv_bridge when installed, else ours.

    Every failure is a :class:`DataError` naming the encoding, so the node drops the frame.
    """
    try:
        from cv_bridge import CvBridge
        # Only the ROS 2 cv_bridge has this compiled module; the PyPI `cv-bridge` (a ROS 1
        # port, broken with numpy 2) has not.
        import cv_bridge.boost.cv_bridge_boost  # noqa: F401
    except ImportError:
        return msg_to_rgb, 'vpr_ros.image_codec'
    bridge = CvBridge()

    def decode(msg: Any) -> np.ndarray:
        kind = getattr(msg, 'encoding', None) or getattr(msg, 'format', '?')
        try:
            if hasattr(msg, 'encoding'):
                return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8'))
            return np.ascontiguousarray(
                bridge.compressed_imgmsg_to_cv2(msg, desired_encoding='rgb8'))
        except Exception as exc:  # noqa: B902 - CvBridgeError, TypeError, cv2.error, ...
            raise DataError(f'cv_bridge cannot convert a {kind!r} image: {exc}') from None
    return decode, 'cv_bridge'


class LocalizerNode(Node):
    """Localise every camera frame it can keep up with; publish fixes and diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        """Declare and validate the parameters, open the map, then start subscribing.

        Raises:
            VprError: a parameter is invalid, or the map or device cannot be used.
        """
        super().__init__(NODE_NAME, **kwargs)
        self._specs = parameter_specs()
        self._names = {s.name for s in self._specs}
        self._declare_parameters()
        self.config, localizer_config = configs_from_values(self._values())
        device = resolve_device(self.config.device)
        check_map_parameter(self.config.map)
        self.localizer = Localizer.open(self.config.map, localizer_config, device=str(device),
                                        fast=self.config.fast_load)
        self.device_name = describe_device(self.localizer.device)
        self._decode, self.decoder_name = make_decoder()
        self._warm_up()
        self.stats = FrameStats()
        self._warned: dict[str, float] = {}
        self._consecutive_errors = 0
        self.fatal: str | None = None   # set by the worker: the watchdog ends the node
        self.worker = self._make_worker()
        self.fix_pub = self.create_publisher(NavSatFix, FIX_TOPIC, fix_qos())
        self.pose_pub = (self.create_publisher(PoseWithCovarianceStamped, POSE_TOPIC, fix_qos())
                         if self.config.publish_pose else None)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                              diagnostics_qos())
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        msg_type = CompressedImage if self.config.compressed else Image
        self.image_sub = self.create_subscription(
            msg_type, image_topic(self.resolve_topic_name('image'), self.config.compressed),
            self._on_image, image_qos(self.config.image_reliability))
        self.input_problem: str | None = None
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)
        self.create_timer(WATCHDOG_PERIOD_S, self._watchdog)
        self.worker.start()
        log = self.get_logger()
        if self.localizer.device.type == 'cpu' and self.config.device == 'auto':
            log.warning('no CUDA device: localising on the CPU')
        runtime = self.localizer.runtime
        self.backend_name = f'{runtime.name} {runtime.precision}'
        if runtime.name == 'torch' and self.localizer.map.manifest.get('onnx'):
            log.warning(f'backend {runtime.reason}')     # an export it could not use
        else:
            log.info(f'backend {self.backend_name}: {runtime.reason}')
        if self.localizer.rerank:
            log.info(f'GeoWarp re-ranks the top {localizer_config.geowarp.num_reranked} in '
                     f'{self.localizer.geowarp_mode} mode, fusion weight '
                     f'{self.localizer.rerank_weight:g}')
        warning = calibration_warning(self.localizer, self.config.map)
        if warning:
            log.warning(warning)
        # Logged last: scripts and tests take this line as "ready".
        log.info(f'vpr_ros localizer started on {self.device_name} ({self.backend_name}): '
                 f'map {Path(self.config.map).name} ({len(self.localizer.map)} places), '
                 f'{self.image_sub.topic_name} ({msg_type.__name__}, {self.decoder_name}) -> '
                 f'{self.fix_pub.topic_name}')

    # -- parameters ---------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        for spec in self._specs:
            try:
                self.declare_parameter(spec.name, spec.default, descriptor(spec))
            except InvalidParameterTypeException:
                given = self._override_value(spec.name)
                hint = ' (write it with a decimal point, e.g. 30.0)' \
                    if spec.type is float and isinstance(given, int) else ''
                raise ConfigError(f'parameter {spec.name}: expected a {spec.type.__name__}, '
                                  f'got {given!r}{hint}') from None
            except InvalidParameterValueException:
                rules = descriptor(spec).additional_constraints
                raise ConfigError(f'parameter {spec.name}: {self._override_value(spec.name)!r} '
                                  f'is not allowed ({rules})') from None
        known = self._names | {'use_sim_time'}
        unknown = sorted(n for n in self._overrides() if n not in known
                         and not n.startswith('qos_overrides.'))
        if unknown:
            hints = [f'{name} (did you mean {hint}?)' if (hint := unknown_parameter_hint(
                name, self._names)) else name for name in unknown]
            self.get_logger().warning(f'ignoring unknown parameters: {", ".join(hints)}; see '
                                      f'config/localize.yaml for the valid names')

    def _overrides(self) -> dict[str, Any]:
        # rclpy keeps the --ros-args / params-file values here; there is no public accessor.
        return getattr(self, '_parameter_overrides', {}) or {}

    def _override_value(self, name: str) -> Any:
        param = self._overrides().get(name)
        return None if param is None else param.value

    def _values(self) -> dict[str, Any]:
        return {s.name: self.get_parameter(s.name).value for s in self._specs}

    def _check_parameters(self, params: list[Any]) -> SetParametersResult:
        """Validate a change with the dataclasses; never change state here."""
        changes = {p.name: p.value for p in params if p.name in self._names}
        if changes:
            try:
                configs_from_values({**self._values(), **changes})
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Any]) -> None:
        """Apply an accepted change (only runtime fields get here: the others are read-only)."""
        changed = [p.name for p in params if p.name in self._names]
        if not changed:
            return
        node_config, localizer_config = configs_from_values(self._values())
        self.localizer.set_config(localizer_config)
        self.config = node_config
        self.get_logger().info(f'parameters changed: {", ".join(sorted(changed))}')

    # -- frames -------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """Run one frame first, so the first camera frame is not slowed by lazy set-up."""
        size = getattr(getattr(self.localizer.model, 'config', None), 'input_size', None)
        h, w = size if size else (240, 320)
        self.localizer.localize(np.full((h, w, 3), 127, np.uint8))

    def _on_image(self, msg: Image | CompressedImage) -> None:
        dropped = self.worker.submit((msg, time.monotonic()))
        stamp = msg.header.stamp
        if self.stats.received(dropped, stamp.sec * 1_000_000_000 + stamp.nanosec) == 1:
            # Says the camera is connected: a silent node otherwise looks the same either way.
            self.get_logger().info(f'first image received on {self.image_sub.topic_name}')

    def _make_worker(self) -> Worker:
        """Return the frame worker: with ``pipeline``, decoding overlaps the previous inference."""
        if self.config.pipeline:
            return Worker(self._process, self._on_worker_error, prepare=self._prepare_frame,
                          on_drop=self.stats.dropped)
        return Worker(self._process, self._on_worker_error)

    def _prepare_frame(self, item: tuple[Any, float]) -> tuple[Any, float, Any] | None:
        """Decode a message and shrink it for the localizer; None (counted) for a bad frame."""
        msg, received = item
        try:
            rgb = self._decode(msg)
            if not rgb.flags.writeable:   # a view of the message buffer: torch wants to own it
                rgb = rgb.copy()
            return msg, received, self.localizer.prepare(rgb)
        except DataError as exc:
            self.stats.bad_frame(str(exc))
            self._warn_throttled(f'frame dropped: {exc}')
            return None

    def _process(self, item: tuple[Any, ...]) -> None:
        if len(item) == 2:                 # no pipeline: decode here
            item = self._prepare_frame(item)
            if item is None:
                return
        msg, received, prepared = item
        try:
            start = time.monotonic()
            stamp = msg.header.stamp
            estimate = self.localizer.localize_prepared(
                prepared, stamp_ns=stamp.sec * 1_000_000_000 + stamp.nanosec)
            localize_ms = (time.monotonic() - start) * 1e3
        except DataError as exc:
            self.stats.bad_frame(str(exc))
            self._warn_throttled(f'frame dropped: {exc}')
            return
        config = self.config
        publish = estimate.ok or config.publish_no_fix
        if publish:
            self.fix_pub.publish(messages.navsat_fix(estimate, msg.header.stamp,
                                                     config.frame_id))
        if self.pose_pub is not None and estimate.ok:
            self.pose_pub.publish(messages.pose_with_covariance(
                estimate, self.localizer.map.origin, msg.header.stamp, config.pose_frame_id))
        self._consecutive_errors = 0
        latency_ms = (time.monotonic() - received) * 1e3
        self.stats.processed(latency_ms, estimate.status, estimate.score, estimate.sigma_m,
                             publish, localize_ms)
        self.get_logger().debug(
            f'{estimate.status} {estimate.lat:.7f} {estimate.lon:.7f} sigma '
            f'{estimate.sigma_m:.1f} m score {estimate.score:.3f} in {latency_ms:.0f} ms'
            + (f' ({estimate.reason})' if estimate.reason else ''))

    def _warn_throttled(self, text: str, *, error: bool = False) -> None:
        """Log at most every WARN_EVERY_S per distinct text, so one problem hides no other."""
        now = time.monotonic()
        if now - self._warned.get(text, -math.inf) < WARN_EVERY_S:
            return
        if len(self._warned) > 64:
            self._warned.clear()
        self._warned[text] = now
        # One call site per severity: rclpy refuses a call site whose severity changes
        # ("Logger severity cannot be changed between calls").
        if error:
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    def _on_worker_error(self, exc: BaseException) -> None:
        """Count and log a frame the localizer raised on; too many in a row is fatal."""
        if not self.context.ok():  # shutting down: the publisher is gone
            return
        reason = f'{type(exc).__name__}: {exc}'
        self.stats.error(reason)
        self._consecutive_errors += 1
        self._warn_throttled(f'localizer failed on a frame: {reason}', error=True)
        limit = self.config.max_consecutive_errors
        if limit and self._consecutive_errors >= limit and self.fatal is None:
            self.fatal = (f'the localizer failed on {self._consecutive_errors} frames in a row '
                          f'(last: {reason}); stopping so that a supervisor can restart the '
                          f'node')

    def _watchdog(self) -> None:
        """End the process (exit 1, clear message) when it could only idle: never a zombie."""
        if self.fatal is None and not self.worker.alive and not self.worker.slot.closed:
            self.fatal = 'the worker thread ended unexpectedly'
        if self.fatal is not None:
            self.get_logger().fatal(f'vpr_ros localizer: fatal: {self.fatal}')
            raise SystemExit(1)

    # -- diagnostics --------------------------------------------------------------------

    def diagnostics(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return the diagnostics key/values (device, map, rates, latency, counters) and stats."""
        snap = self.stats.snapshot()
        keys = ('input_rate_hz', 'output_rate_hz', 'latency_p50_ms', 'latency_p95_ms',
                'localize_p50_ms',
                'frames_received', 'frames_processed', 'frames_dropped', 'fixes', 'no_fixes',
                'published', 'bad_frames', 'errors', 'camera_rate_hz',
                'frames_lost_transport', 'transport_loss_pct', 'last_status', 'last_score',
                'last_sigma_m', 'last_bad_frame', 'last_error')
        runtime = self.localizer.runtime
        return {'device': self.device_name, 'backend': runtime.name,
                'precision': runtime.precision,
                'geowarp_regression': self.localizer.regression_backend,
                'geowarp_mode': self.localizer.geowarp_mode if self.localizer.rerank else 'off',
                'rerank_weight': self.localizer.rerank_weight,
                'map': Path(self.config.map).name,
                'map_places': len(self.localizer.map),
                'calibrated': self.localizer.calibration is not None,
                'calibration_problem': self.localizer.calibration_problem or 'none',
                'decoder': self.decoder_name, 'worker_alive': self.worker.alive,
                'consecutive_errors': self._consecutive_errors,
                **{k: snap[k] for k in keys}}, snap

    def _publish_diagnostics(self) -> None:
        values, snap = self.diagnostics()
        level, message = messages.diagnostic_level(snap,
                                                   stale_input_s=self.config.stale_input_s)
        if self._check_input():
            level, message = DiagnosticStatus.ERROR, self.input_problem
            values['input_problem'] = self.input_problem
        status = messages.diagnostic_status(f'{self.get_fully_qualified_name()}: localizer',
                                            self.device_name, level, message, values)
        self.diag_pub.publish(messages.diagnostic_array(self.get_clock().now().to_msg(),
                                                        [status]))

    def _check_input(self) -> str | None:
        """Look at the publishers of the image topic (and its sibling); log what is wrong."""
        topic = self.image_sub.topic_name
        types = {t: [i.topic_type for i in self.get_publishers_info_by_topic(t)]
                 for t in (topic, sibling_topic(topic, self.config.compressed))}
        self.input_problem = input_problem(topic, self.config.compressed, types)
        if self.input_problem:
            self._warn_throttled(self.input_problem, error=True)
        return self.input_problem

    # -- shutdown -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker (after the frame in progress) and log what the node did."""
        joined = self.worker.stop()
        s = self.stats.snapshot()
        # After SIGINT/SIGTERM the context is down and the node logger's /rosout copy would fail.
        log = self.get_logger() if self.context.ok() else rclpy.logging.get_logger('vpr_ros')
        log.info(
            f'vpr_ros localizer stopped ({"worker joined" if joined else "worker still busy"}):'
            f' {s["frames_received"]} frames received, {s["frames_processed"]} processed, '
            f'{s["frames_dropped"]} dropped, {s["fixes"]} fixes, {s["bad_frames"]} bad')


def main(args: list[str] | None = None, stop: StopSignals | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0); exit 1 on a configuration error.

    ``stop`` comes from :func:`vpr_ros.ros.entry.localizer`, which installs it before the heavy
    imports; a signal at any moment is answered at the next safe point (after the step of the
    start-up in progress, or within one spin slice).
    """
    return run_node(LocalizerNode, args=args, stop=stop or StopSignals.install(),
                    close=LocalizerNode.close)


if __name__ == '__main__':
    sys.exit(main())
