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

"""The localizer node in its own process, fed by a camera process, checked over DDS.

Images are map frames of a small calibrated synthetic map (``tiny_map``), so the truth of every
fix is known from the frame's stamp (sec = 1000 + index in the publisher's list).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

from node_helpers import PUBLISHER
import numpy as np
import pytest
from ros_harness import Process

pytestmark = [pytest.mark.ros, pytest.mark.slow]

STARTUP_S = 180          # torch import + map + warm-up, on a busy 2-core machine
NODE = '/vpr_localizer'


def _exe(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f'{name} not on PATH (run through scripts/env.sh)')
    return path


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1')


def start_node(tiny_map, log: Path, *params: str) -> Process:
    """Start the localizer on the tiny map (CPU) and wait for its 'started' line."""
    cmd = [_exe('localizer'), '--ros-args', '-p', f'map:={tiny_map.path}', '-p', 'device:=cpu']
    for p in params:
        cmd += ['-p', p]
    proc = Process(cmd, log, env=_env())
    if not proc.wait_for_output('localizer started on', timeout=STARTUP_S):
        proc.stop(signal.SIGKILL)
        pytest.fail(f'node did not start:\n{proc.output()}')
    return proc


def start_camera(tiny_map, log: Path, frames: list, *, topic: str = '/image',
                 period_s: float = 0.5, kind: str = 'raw') -> Process:
    """Publish map frames (indices) or bad frames ('bad:encoding', ...) in a loop."""
    files = [f if isinstance(f, str) else str(tiny_map.images / tiny_map.frames[f]['name'])
             for f in frames]
    return Process([sys.executable, '-c', PUBLISHER, topic, str(period_s), kind, *files], log,
                   env=_env())


def collect(node, msg_type, topic: str, until, *, timeout: float, qos=10) -> list:
    """Spin ``node`` and keep every message on ``topic`` until ``until(messages)`` is true."""
    from rclpy.executors import SingleThreadedExecutor

    got = []
    sub = node.create_subscription(msg_type, topic, got.append, qos)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while not until(got) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(node)
        executor.shutdown()
        node.destroy_subscription(sub)
    return got


def diagnostics_values(msg) -> dict[str, str]:
    """Key/values of the localizer's status in a DiagnosticArray ({} if it is not there)."""
    for status in msg.status:
        if status.name.startswith(NODE):
            return {kv.key: kv.value for kv in status.values} | {
                '_level': status.level, '_message': status.message}
    return {}


def set_parameters(node, target: str, **values):
    """Set parameters of ``target`` through its set_parameters service; return the results."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    client = node.create_client(SetParameters, f'{target}/set_parameters')
    try:
        assert client.wait_for_service(timeout_sec=30), 'no set_parameters service'
        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
        future = client.call_async(request)
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        try:
            executor.spin_until_future_complete(future, timeout_sec=30)
        finally:
            executor.remove_node(node)
            executor.shutdown()
        assert future.done(), 'set_parameters timed out'
        return future.result().results
    finally:
        node.destroy_client(client)


def test_fixes_carry_stamp_frame_status_and_calibrated_covariance(
        tiny_map, rclpy_context, tmp_path):
    import rclpy
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import NavSatFix, NavSatStatus
    from vpr_ros.geo import haversine_m, wgs84_to_enu
    from vpr_ros.mapdb.database import MapDB

    frames = [3, 14, 25]   # places 22 m apart every 0.6 s: no sequence check (it refuses)
    with start_node(tiny_map, tmp_path / 'node.log', 'frame_id:=test_antenna',
                    'publish_pose:=true', 'publish_no_fix:=true',
                    'localizer.sequence_check:=false') as node_proc, \
            start_camera(tiny_map, tmp_path / 'camera.log', frames, period_s=0.6):
        node = rclpy.create_node('test_fix_listener', context=rclpy_context)
        poses = []
        node.create_subscription(PoseWithCovarianceStamped, '/vpr/pose', poses.append, 10)
        fixes = collect(node, NavSatFix, '/vpr/fix',
                        lambda got: {m.header.stamp.sec for m in got} >= {1000, 1001, 1002},
                        timeout=120)
        assert {m.header.stamp.sec for m in fixes} >= {1000, 1001, 1002}, node_proc.output()
        for fix in fixes:
            truth = tiny_map.frames[frames[fix.header.stamp.sec - 1000]]
            assert fix.header.stamp.nanosec == 0
            assert fix.header.frame_id == 'test_antenna'
            assert fix.status.status == NavSatStatus.STATUS_FIX
            assert fix.status.service == NavSatStatus.SERVICE_UNKNOWN
            assert fix.position_covariance_type == NavSatFix.COVARIANCE_TYPE_APPROXIMATED
            cov = [float(c) for c in fix.position_covariance]
            assert all(math.isfinite(c) for c in cov)
            assert min(cov[0], cov[4], cov[8]) > 0.0
            assert cov[1] == cov[3]                         # symmetric, positive definite
            assert cov[0] * cov[4] - cov[1] * cov[3] > 0
            assert math.isfinite(fix.altitude)
            error = float(haversine_m(fix.latitude, fix.longitude, truth['lat'], truth['lon']))
            largest = float(np.linalg.eigvalsh(np.array(cov).reshape(3, 3)[:2, :2])[-1])
            assert error <= 3.0 * math.sqrt(largest), (error, cov)
        # The optional pose: ENU metres from the map origin, same covariance.
        origin = MapDB.open(tiny_map.path, fast=True).origin
        collect(node, NavSatFix, '/vpr/fix', lambda got: bool(poses), timeout=30)
        assert poses, 'no PoseWithCovarianceStamped on /vpr/pose'
        pose = poses[-1]
        truth = tiny_map.frames[frames[pose.header.stamp.sec - 1000]]
        east, north, _ = wgs84_to_enu(truth['lat'], truth['lon'], truth['alt'], origin)
        sigma = math.sqrt(pose.pose.covariance[0])
        assert math.hypot(pose.pose.pose.position.x - east,
                          pose.pose.pose.position.y - north) <= 3 * sigma
        assert pose.header.frame_id == 'vpr_map'

        # Runtime parameters: thresholds change, fixed ones and invalid values are refused.
        results = set_parameters(node, NODE, **{'localizer.top_k': 3})
        assert not results[0].successful and 'read-only' in results[0].reason
        results = set_parameters(node, NODE, **{'localizer.estimator': 'median'})
        assert not results[0].successful and 'estimator' in results[0].reason
        results = set_parameters(node, NODE, **{'localizer.max_sigma_m': -1.0})
        assert not results[0].successful
        results = set_parameters(node, NODE, **{'localizer.max_sigma_m': 0.001})
        assert results[0].successful, results[0].reason
        no_fix = collect(node, NavSatFix, '/vpr/fix', lambda got: any(
            m.status.status == NavSatStatus.STATUS_NO_FIX for m in got), timeout=60)
        assert any(m.status.status == NavSatStatus.STATUS_NO_FIX for m in no_fix)
        bad = [m for m in no_fix if m.status.status == NavSatStatus.STATUS_NO_FIX][-1]
        assert min(bad.position_covariance[0], bad.position_covariance[4]) > 0
        node.destroy_node()
        assert node_proc.stop(signal.SIGINT) == 0, node_proc.output()
    assert 'parameters changed: localizer.max_sigma_m' in node_proc.output()
    assert 'Traceback' not in node_proc.output()


def test_bad_frames_do_not_stop_the_node_and_show_in_diagnostics(
        tiny_map, rclpy_context, tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import NavSatFix
    from vpr_ros.mapdb import MapDB

    frames = ['bad:encoding', 'bad:empty', 'bad:step', 7]
    with start_node(tiny_map, tmp_path / 'node.log') as node_proc, \
            start_camera(tiny_map, tmp_path / 'camera.log', frames, period_s=0.3):
        node = rclpy.create_node('test_diag_listener', context=rclpy_context)
        fixes = collect(node, NavSatFix, '/vpr/fix',
                        lambda got: any(m.header.stamp.sec == 1003 for m in got), timeout=120)
        assert any(m.header.stamp.sec == 1003 for m in fixes), node_proc.output()

        def enough(got):
            values = [diagnostics_values(m) for m in got]
            return any(v and int(v['bad_frames']) >= 3 for v in values)
        diags = collect(node, DiagnosticArray, '/diagnostics', enough, timeout=30)
        values = [v for v in map(diagnostics_values, diags) if v]
        assert values, 'no localizer status on /diagnostics'
        last = values[-1]
        assert int(last['bad_frames']) >= 3, last
        assert last['_level'] == DiagnosticStatus.WARN and 'bad frames' in last['_message']
        assert last['device'].startswith('cpu') and last['map'] == 'route.vprmap'
        assert (last['backend'], last['precision']) == ('torch', 'fp32')   # no export: torch
        assert last['geowarp_regression'] == 'torch'
        fusion = MapDB.open(tiny_map.path).manifest['rerank_fusion']   # what calibrate chose
        assert last['geowarp_mode'] == fusion['geowarp_mode'] in ('features', 'image')
        assert float(last['rerank_weight']) == fusion['weight']
        assert int(last['map_places']) == len(tiny_map.frames)
        assert last['calibrated'] == 'True'
        for key in ('input_rate_hz', 'output_rate_hz', 'latency_p50_ms', 'latency_p95_ms',
                    'frames_dropped', 'last_score'):
            assert key in last
        assert float(last['input_rate_hz']) > 0
        node.destroy_node()
        assert node_proc.popen.poll() is None, 'the node died'
        assert node_proc.stop(signal.SIGINT) == 0
    out = node_proc.output()
    assert "image encoding '32FC1' is not supported" in out  # the warning names the encoding
    assert 'Traceback' not in out


def test_latest_frame_wins_and_sigterm_joins_the_worker(tiny_map, rclpy_context, tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    # 50 Hz into a node that manages a few frames per second: most frames must be dropped,
    # none queued. Every received frame is processed, dropped, or in flight; with the default
    # pipeline at most 4 are: waiting, being decoded, decoded and waiting, being localised
    # (vpr_ros.ros.worker.Worker).
    with start_node(tiny_map, tmp_path / 'node.log') as node_proc, \
            start_camera(tiny_map, tmp_path / 'camera.log', [5], period_s=0.02):
        node = rclpy.create_node('test_drop_listener', context=rclpy_context)

        def enough(got):
            values = [diagnostics_values(m) for m in got]
            return any(v and int(v['frames_processed']) >= 3 and int(v['frames_dropped']) >= 10
                       for v in values)
        diags = collect(node, DiagnosticArray, '/diagnostics', enough, timeout=120)
        values = [v for v in map(diagnostics_values, diags) if v]
        assert values and enough(diags), values[-1:] or node_proc.output()
        v = values[-1]
        received, processed, dropped = (int(v[k]) for k in (
            'frames_received', 'frames_processed', 'frames_dropped'))
        assert processed + dropped <= received <= processed + dropped + 4, v
        node.destroy_node()
        start = time.monotonic()
        rc = node_proc.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - start
    out = node_proc.output()
    assert rc == 0, out
    assert 'worker joined' in out and 'Traceback' not in out
    assert took < 10, took


def test_compressed_images(tiny_map, rclpy_context, tmp_path):
    import rclpy
    from sensor_msgs.msg import NavSatFix
    from vpr_ros.geo import haversine_m

    # image_transport naming: the node remapped to `image` subscribes `image/compressed`.
    with start_node(tiny_map, tmp_path / 'node.log', 'compressed:=true') as node_proc, \
            start_camera(tiny_map, tmp_path / 'camera.log', [18], topic='/image/compressed',
                         period_s=0.5, kind='compressed'):
        node = rclpy.create_node('test_jpeg_listener', context=rclpy_context)
        fixes = collect(node, NavSatFix, '/vpr/fix', bool, timeout=120)
        node.destroy_node()
        assert node_proc.stop(signal.SIGINT) == 0
    assert fixes, node_proc.output()
    assert '/image/compressed (CompressedImage, ' in node_proc.output()
    assert node_proc.output().count('first image received on /image/compressed') == 1
    truth = tiny_map.frames[18]
    error = float(haversine_m(fixes[0].latitude, fixes[0].longitude, truth['lat'],
                              truth['lon']))
    assert error <= 3.0 * math.sqrt(fixes[0].position_covariance[0])


def test_a_wrong_image_type_is_an_error_in_diagnostics_and_logs(
        tiny_map, rclpy_context, tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    # A JPEG camera on the raw topic: DDS matches nothing; the node must say so.
    with start_node(tiny_map, tmp_path / 'node.log') as node_proc, \
            start_camera(tiny_map, tmp_path / 'camera.log', [2], topic='/image',
                         period_s=0.2, kind='compressed'):
        node = rclpy.create_node('test_type_listener', context=rclpy_context)

        def flagged(got):
            return any(diagnostics_values(m).get('_level') == DiagnosticStatus.ERROR
                       for m in got)
        diags = collect(node, DiagnosticArray, '/diagnostics', flagged, timeout=60)
        node.destroy_node()
        assert node_proc.stop(signal.SIGINT) == 0
    values = [v for v in map(diagnostics_values, diags) if v]
    assert values and flagged(diags), node_proc.output()
    last = [v for v in values if v['_level'] == DiagnosticStatus.ERROR][-1]
    assert last['_message'] == (
        'wrong message type on /image: published as sensor_msgs/msg/CompressedImage, the node '
        'subscribes sensor_msgs/msg/Image (set compressed:=true)')
    assert last['input_problem'] == last['_message']
    assert int(last['frames_received']) == 0
    assert 'wrong message type on /image' in node_proc.output()


@pytest.mark.parametrize('params, message', [
    ((), 'parameter map is not set'),
    (('map:=/nonexistent/route.vprmap',), '/nonexistent/route.vprmap does not exist'),
    (('localizer.top_k:=-1',), 'parameter localizer.top_k: -1 is not allowed'),
    (('localizer.estimator:=median',), "'median' is not one of ['top1', 'weighted']"),
    (('localizer.max_sigma_m:=30',), 'write it with a decimal point'),
    (('localizer.backend:=tensorrt',), 'backend tensorrt needs an NVIDIA GPU'),
    (('localizer.backend:=onnxruntime',), 'has no ONNX fp32 export: run vpr-ros export'),
])
def test_invalid_parameters_exit_non_zero_with_a_clear_message(tiny_map, params, message):
    cmd = [_exe('localizer'), '--ros-args', '-p', 'device:=cpu']
    if not any(p.startswith('map:=') for p in params) and params:
        cmd += ['-p', f'map:={tiny_map.path}']
    for p in params:
        cmd += ['-p', p]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=STARTUP_S, env=_env())
    assert out.returncode == 1, out.stdout + out.stderr
    assert message in out.stderr, out.stderr
    assert 'Traceback' not in out.stderr
