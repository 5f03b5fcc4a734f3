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

"""Pieces of the node that need no running node: messages, stats, worker, parameters, launch."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
import threading
import time

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ORIGIN = (47.3769, 8.5417, 408.0)


def _estimate(status='fix', lat=47.3770, lon=8.5418, alt=410.0, sigma=4.0, cov=None):
    from vpr_ros.localizer import Estimate

    cov = np.diag([sigma ** 2, sigma ** 2, 100.0]) if cov is None else np.asarray(cov)
    return Estimate(lat, lon, alt, cov, status, 0.8, sigma, (), {'score': 0.8})


def _stamp(sec=1234, nanosec=5678):
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


# -- messages ---------------------------------------------------------------------------

def test_navsat_fix_follows_the_rules():
    from sensor_msgs.msg import NavSatFix, NavSatStatus
    from vpr_ros.ros.messages import navsat_fix

    msg = navsat_fix(_estimate(), _stamp(), 'cam')
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1234, 5678)
    assert msg.header.frame_id == 'cam'
    assert msg.status.status == NavSatStatus.STATUS_FIX
    assert msg.status.service == NavSatStatus.SERVICE_UNKNOWN
    assert (msg.latitude, msg.longitude, msg.altitude) == (47.3770, 8.5418, 410.0)
    assert msg.position_covariance_type == NavSatFix.COVARIANCE_TYPE_APPROXIMATED
    np.testing.assert_array_equal(msg.position_covariance,
                                  [16.0, 0, 0, 0, 16.0, 0, 0, 0, 100.0])


def test_no_fix_status_and_covariance_never_zero_nan_or_infinite():
    from sensor_msgs.msg import NavSatStatus
    from vpr_ros.ros.messages import MIN_VARIANCE_M2, navsat_fix, UNKNOWN_VARIANCE

    no_fix = navsat_fix(_estimate(status='no_fix'), _stamp(), 'cam')
    assert no_fix.status.status == NavSatStatus.STATUS_NO_FIX
    zero = navsat_fix(_estimate(cov=np.zeros((3, 3))), _stamp(), 'cam')
    assert list(zero.position_covariance[[0, 4, 8]]) == [MIN_VARIANCE_M2] * 3
    cov = np.diag([4.0, np.inf, 9.0])
    cov[0, 1] = np.nan
    odd = navsat_fix(_estimate(cov=cov, alt=float('nan')), _stamp(), 'cam')
    c = np.asarray(odd.position_covariance).reshape(3, 3)
    assert np.isfinite(c).all() and c[0, 1] == 0.0 and c[1, 1] == UNKNOWN_VARIANCE
    assert odd.altitude == 0.0 and c[2, 2] == UNKNOWN_VARIANCE   # NaN altitude: unknown
    lost = navsat_fix(_estimate(lat=float('nan')), _stamp(), 'cam')
    assert lost.status.status == NavSatStatus.STATUS_NO_FIX


def test_pose_is_enu_from_the_map_origin_with_unknown_orientation():
    from vpr_ros.geo import enu_to_wgs84
    from vpr_ros.ros.messages import pose_with_covariance, UNKNOWN_VARIANCE

    lat, lon, alt = enu_to_wgs84(30.0, -12.0, 2.0, ORIGIN)
    msg = pose_with_covariance(_estimate(lat=lat, lon=lon, alt=alt), ORIGIN, _stamp(), 'map')
    p = msg.pose.pose.position
    assert (p.x, p.y, p.z) == pytest.approx((30.0, -12.0, 2.0), abs=1e-6)
    assert msg.pose.pose.orientation.w == 1.0 and msg.header.frame_id == 'map'
    c = np.asarray(msg.pose.covariance).reshape(6, 6)
    assert c[0, 0] == c[1, 1] == 16.0 and c[2, 2] == 100.0
    assert (np.diag(c)[3:] == UNKNOWN_VARIANCE).all()


def test_diagnostics_level_and_values():
    from diagnostic_msgs.msg import DiagnosticStatus
    from vpr_ros.ros.messages import diagnostic_array, diagnostic_level, diagnostic_status
    from vpr_ros.ros.stats import FrameStats

    now = [0.0]
    stats = FrameStats(window_s=5.0, clock=lambda: now[0])
    assert diagnostic_level(stats.snapshot(), stale_input_s=2)[0] == DiagnosticStatus.WARN
    now[0] = 1.0
    stats.received(dropped=False)
    stats.processed(100.0, 'fix', 0.9, 3.0, published=True)
    assert diagnostic_level(stats.snapshot(), stale_input_s=2) == (DiagnosticStatus.OK,
                                                                   'localizing')
    stats.bad_frame("image encoding '32FC1' is not supported")
    level, text = diagnostic_level(stats.snapshot(), stale_input_s=2)
    assert level == DiagnosticStatus.WARN and '32FC1' in text
    now[0] = 9.0    # bad frame out of the window, and no image for 8 s
    level, text = diagnostic_level(stats.snapshot(), stale_input_s=2)
    assert level == DiagnosticStatus.WARN and text == 'no image for 8.0 s'
    stats.error('RuntimeError: boom')
    assert diagnostic_level(stats.snapshot(), stale_input_s=2)[0] == DiagnosticStatus.ERROR
    status = diagnostic_status('n: localizer', 'cpu', DiagnosticStatus.OK, 'ok',
                               {'latency_p95_ms': 12.345678, 'fixes': 3, 'calibrated': True})
    assert [(kv.key, kv.value) for kv in status.values] == [
        ('latency_p95_ms', '12.35'), ('fixes', '3'), ('calibrated', 'True')]
    array = diagnostic_array(_stamp(), [status])
    assert array.status[0].hardware_id == 'cpu' and array.header.stamp.sec == 1234


# -- stats and worker -------------------------------------------------------------------

def test_frame_stats_rates_latency_and_counters():
    from vpr_ros.ros.stats import FrameStats

    now = [0.0]
    stats = FrameStats(window_s=2.0, clock=lambda: now[0])
    for i in range(40):                      # 20 Hz in, every other frame dropped
        now[0] = 0.05 * (i + 1)
        assert stats.received(dropped=i % 2 == 1) == i + 1
        if i % 2 == 0:
            stats.processed(10.0 * (i // 2 + 1), 'fix' if i % 4 == 0 else 'no_fix', 0.5, 2.0,
                            published=i % 4 == 0, localize_ms=8.0)
    snap = stats.snapshot()
    assert snap['frames_received'] == 40 and snap['frames_dropped'] == 20
    assert snap['frames_processed'] == 20 and snap['fixes'] == 10 and snap['no_fixes'] == 10
    assert snap['input_rate_hz'] == pytest.approx(20.0, rel=0.06)
    assert snap['output_rate_hz'] == pytest.approx(5.0, rel=0.11)
    assert snap['latency_p50_ms'] == pytest.approx(105.0)
    assert snap['latency_p95_ms'] == pytest.approx(np.percentile(np.arange(1, 21) * 10.0, 95))
    assert snap['localize_p50_ms'] == 8.0
    assert snap['last_status'] == 'no_fix' and snap['input_age_s'] == pytest.approx(0.0)
    assert math.isnan(FrameStats().snapshot()['localize_p50_ms'])


def test_latest_slot_keeps_only_the_newest_item():
    from vpr_ros.ros.worker import LatestSlot

    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True          # 1 was never taken: a drop
    assert slot.take(timeout=0.1) == 2
    assert slot.take(timeout=0.05) is None
    slot.put(3)
    slot.close()
    assert slot.take(timeout=0.05) is None and slot.put(4) is False


def test_worker_processes_the_latest_frame_survives_errors_and_joins():
    from vpr_ros.ros.worker import Worker

    done, errors, gate = [], [], threading.Event()

    def process(item):
        if item == 'bad':
            raise ValueError('bad frame')
        gate.wait(5)
        done.append(item)

    worker = Worker(process, errors.append)
    worker.start()
    worker.submit('bad')
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.alive and isinstance(errors[0], ValueError)
    worker.submit(1)                    # taken at once, blocks on the gate
    time.sleep(0.2)
    drops = [worker.submit(i) for i in (2, 3, 4)]
    assert drops == [False, True, True]
    gate.set()
    deadline = time.monotonic() + 5
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == [1, 4]               # 2 and 3 were replaced, never queued
    assert worker.stop(timeout=5) and not worker.alive


def test_pipelined_worker_prepares_the_next_frame_while_processing_and_keeps_no_backlog():
    from vpr_ros.ros.worker import Worker

    done, errors, drops, gate = [], [], [], threading.Event()
    prepared_on = set()

    def prepare(item):
        prepared_on.add(threading.current_thread().name)
        if item == 'bad':
            raise ValueError('bad frame')
        return None if item == 'skip' else f'p{item}'

    def process(item):
        gate.wait(5)
        done.append((item, threading.current_thread().name))

    worker = Worker(process, errors.append, prepare=prepare, on_drop=lambda: drops.append(1))
    worker.start()
    for item in ('bad', 'skip'):
        worker.submit(item)
        time.sleep(0.2)
    assert worker.alive and isinstance(errors[0], ValueError) and not done
    worker.submit(1)                     # prepared, then taken by process: blocks on the gate
    time.sleep(0.3)
    for i in (2, 3, 4):                  # prepared while 1 is processed; each overtakes the last
        worker.submit(i)
        time.sleep(0.2)
    assert len(drops) == 2               # p2 and p3 were prepared, then replaced: no backlog
    gate.set()
    deadline = time.monotonic() + 5
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [d[0] for d in done] == ['p1', 'p4']
    assert prepared_on == {'vpr_worker_prepare'} and {d[1] for d in done} == {'vpr_worker'}
    assert worker.stop(timeout=5) and not worker.alive


# -- parameters -------------------------------------------------------------------------

def test_parameters_mirror_the_config_dataclasses():
    from vpr_ros.localizer import LocalizerConfig
    from vpr_ros.models.geowarp import GeoWarpConfig
    from vpr_ros.ros.params import descriptor, NodeConfig, parameter_specs

    specs = {s.name: s for s in parameter_specs()}
    for f in NodeConfig.field_specs():
        assert f.name in specs
    for f in LocalizerConfig.field_specs():
        if f.name != 'geowarp':
            assert specs['localizer.' + f.name].default == f.default
    assert specs['localizer.geowarp.mode'].default == 'auto'
    # GeoWarp's re-ranking settings, every one of them and nothing else (fitting is not a node
    # parameter).
    assert {n for n in specs if n.startswith('localizer.geowarp.')} == {
        'localizer.geowarp.' + f.name for f in GeoWarpConfig.field_specs()}
    assert 'localizer.geowarp.k' not in specs
    top_k = descriptor(specs['localizer.top_k'])
    assert top_k.read_only and 'candidates' in top_k.description
    assert (top_k.integer_range[0].from_value, top_k.integer_range[0].to_value) == (1, 1000)
    sigma = descriptor(specs['localizer.max_sigma_m'])
    assert not sigma.read_only and not sigma.integer_range
    assert (sigma.floating_point_range[0].from_value,
            sigma.floating_point_range[0].to_value) == (0.0, math.inf)
    estimator = descriptor(specs['localizer.estimator'])
    assert estimator.additional_constraints == 'one of: top1, weighted'
    assert descriptor(specs['map']).read_only and not descriptor(specs['frame_id']).read_only


def test_configs_from_values_validate_and_name_the_parameter():
    from vpr_ros.errors import ConfigError
    from vpr_ros.ros.params import configs_from_values

    node, loc = configs_from_values({'map': 'm.vprmap', 'localizer.top_k': 3,
                                     'localizer.geowarp.mode': 'image'})
    assert (node.map, loc.top_k, loc.geowarp.mode) == ('m.vprmap', 3, 'image')
    with pytest.raises(ConfigError, match=r'localizer\.estimator: .median. is not one of') as exc:
        configs_from_values({'localizer.estimator': 'median'})
    assert exc.value.field == 'localizer.estimator'
    with pytest.raises(ConfigError, match=r'image_reliability') as exc:
        configs_from_values({'image_reliability': 'sometimes'})
    assert exc.value.field == 'image_reliability'
    with pytest.raises(ConfigError) as exc:
        configs_from_values({'localizer.geowarp.num_reranked': 0})
    assert exc.value.field == 'localizer.geowarp.num_reranked'
    assert str(exc.value) == ('invalid parameter localizer.geowarp.num_reranked: 0 is below '
                              'the minimum 1')


def test_config_yaml_is_generated_from_the_dataclasses():
    from vpr_ros.ros.params import parameter_specs, render_yaml

    text = (REPO / 'config' / 'localize.yaml').read_text()
    assert text == render_yaml(), 'run: python -m vpr_ros.ros.params > config/localize.yaml'
    params = yaml.safe_load(text)['/**']['ros__parameters']

    def flat(d, prefix=''):
        for k, v in d.items():
            yield from flat(v, f'{prefix}{k}.') if isinstance(v, dict) else [(prefix + k, v)]
    values = dict(flat(params))
    specs = parameter_specs()
    assert values == {s.name: s.default for s in specs}
    for s in specs:                      # the YAML types are the ROS types (30.0, not 30)
        assert type(values[s.name]) is s.type, s.name
    lines = text.splitlines()
    for i, line in enumerate(lines):     # every parameter has a comment right above it
        if line.strip() and not line.lstrip().startswith('#') and not line.endswith(':'):
            assert lines[i - 1].lstrip().startswith('#'), line


def test_launch_file_declares_the_documented_arguments():
    pytest.importorskip('launch_ros')
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location('localize_launch',
                                                  REPO / 'launch' / 'localize.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = [e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert names == ['map', 'params_file', 'image_topic', 'compressed', 'device', 'namespace',
                     'use_sim_time', 'log_level', 'frame_id', 'lifecycle', 'autostart',
                     'camera_tf', 'base_frame']
