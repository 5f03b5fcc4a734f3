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

"""vpr-ros demo: the whole chain through the real node, and its pieces."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from vpr_ros.bags import has_header, header_stamp_ns, message_class, serialize, \
    shift_header_stamp
from vpr_ros.demo.config import DemoConfig
from vpr_ros.demo.processes import Child
from vpr_ros.demo.run import run_demo
from vpr_ros.demo.summary import summary_table
from vpr_ros.errors import ConfigError, DataError
from vpr_ros.synth import SynthConfig

# A reduced demo: 36 frames per pass (72 m of route), a short GeoWarp fit and calibration.
FRAMES = 36
SPACING_M = 2.0


def _small_config(**changes) -> DemoConfig:
    config = DemoConfig(synth=SynthConfig(seed=1, frames=FRAMES, spacing_m=SPACING_M),
                        device='cpu', geowarp_iterations=4, geowarp_batch_size=4,
                        pseudo_queries=FRAMES)
    return config.replace(**changes) if changes else config


def _check_metrics(metrics: dict, frames: int) -> None:
    """Check the bounds the issue states, plus what a working chain must show."""
    counts = metrics['counts']
    assert counts['frames'] == frames            # the recorder saw every camera frame
    assert metrics['horizontal_error_m']['median'] < 2 * SPACING_M
    assert metrics['availability'] > 0.8
    assert metrics['recall']['25'] >= 0.85
    # Calibrated sigmas: at least the 3-sigma share near the ideal 98.9 %.
    assert metrics['nees']['coverage']['3sigma'] >= 0.8
    # Restamped playback: latency is receive time - image stamp on one clock (ms, not years).
    assert 0 < metrics['latency']['p50_ms'] < 10_000


@pytest.mark.slow
@pytest.mark.ros
def test_reduced_demo_end_to_end_through_the_node(tmp_path):
    launcher = 'launch' if shutil.which('ros2') else 'direct'
    out = tmp_path / 'demo'
    stream = io.StringIO()
    summary = run_demo(out, _small_config(launcher=launcher), progress=False, stream=stream)
    text = stream.getvalue()

    assert summary['run']['launcher'] == launcher
    assert summary['run']['node_rc'] == 0 and summary['run']['recorder_rc'] == 0
    # Best-effort image QoS (what camera drivers offer) may lose a few frames on a busy machine;
    # every frame that arrived must have been localised (none dropped by the worker).
    received = re.search(r'(\d+) frames received, (\d+) processed, 0 dropped',
                         summary['run']['node_summary'])
    assert received, summary['run']['node_summary']
    assert int(received[1]) == int(received[2]) >= 0.8 * FRAMES
    _check_metrics(summary['metrics'], FRAMES)
    report = out / 'report'
    assert summary['report'] == str(report / 'report.md')
    for name in ('report.md', 'metrics.json', 'trajectory.png', 'error_cdf.png'):
        assert (report / name).is_file(), name
    on_disk = json.loads((out / 'demo.json').read_text())
    assert on_disk['metrics']['counts']['frames'] == FRAMES
    # Progress: every step numbered, timed, and the last line is the report path.
    for i in range(1, 10):
        assert f'[{i}/9] done in' in text, text
    assert text.strip().splitlines()[-1] == f'report: {report / "report.md"}'
    assert set(summary['timings_s']) == {'render_map', 'build_map', 'fit_geowarp', 'calibrate',
                                         'query_bag', 'node_start', 'play', 'stop', 'eval'}
    manifest = json.loads((out / 'route.vprmap' / 'manifest.json').read_text())
    assert manifest['geowarp']['iterations'] == 4 and manifest['calibration']

    # The same pipeline on "your own data": the map and bag just made, the node run directly.
    again = run_demo(tmp_path / 'own', _small_config(launcher='direct'),
                     map_path=out / 'route.vprmap', bag=out / 'query_bag', progress=False,
                     stream=io.StringIO())
    assert again['run']['launcher'] == 'direct'
    assert set(again['timings_s']) == {'node_start', 'play', 'stop', 'eval'}
    _check_metrics(again['metrics'], FRAMES)


def test_bag_needs_a_map_and_inputs_must_exist(tmp_path):
    with pytest.raises(ConfigError, match='--bag needs --map'):
        run_demo(tmp_path, _small_config(), bag=tmp_path / 'drive')
    with pytest.raises(DataError, match='does not exist'):
        run_demo(tmp_path, _small_config(), map_path=tmp_path / 'nope.vprmap')


def test_shift_header_stamp_moves_only_the_stamp():
    fix_cls = message_class('sensor_msgs/msg/NavSatFix')
    header = message_class('std_msgs/msg/Header')
    stamp = message_class('builtin_interfaces/msg/Time')
    msg = fix_cls(header=header(stamp=stamp(sec=10, nanosec=900_000_000), frame_id='gnss'),
                  status=message_class('sensor_msgs/msg/NavSatStatus')(status=0, service=1),
                  latitude=47.0, longitude=8.0, altitude=400.0,
                  position_covariance=np.zeros(9), position_covariance_type=0)
    raw = serialize(msg, 'sensor_msgs/msg/NavSatFix')
    moved = shift_header_stamp(raw, 1_250_000_000)
    assert header_stamp_ns(moved) == 12_150_000_000
    assert len(moved) == len(raw) and moved[12:] == raw[12:]
    assert has_header('sensor_msgs/msg/Image') and has_header('sensor_msgs/msg/NavSatFix')
    assert not has_header('rosgraph_msgs/msg/Clock') and not has_header('no/msg/Such')


def test_summary_table_lists_the_headline_numbers():
    metrics = {
        'counts': {'frames': 10, 'valid_fixes': 9},
        'horizontal_error_m': {'median': 1.234, 'p95': 5.0},
        'recall': {'10': 0.9, '25': 1.0, '50': 1.0},
        'availability': 0.9,
        'nees': {'coverage': {'1sigma': 0.4, '2sigma': 0.8, '3sigma': 1.0},
                 'ideal_coverage': {'1sigma': 0.393, '2sigma': 0.865, '3sigma': 0.989}},
        'latency': {'p50_ms': 120.0, 'p95_ms': None},
        'jumps': {'count': 0, 'pairs': 8},
    }
    table = summary_table(metrics)
    assert '| median / p95 error        | 1.23 m / 5.00 m |' in table
    assert 'recall@50' not in table and '| recall@25 m' in table
    assert '40.0 % / 80.0 % / 100.0 % (ideal 39.3 / 86.5 / 98.9)' in table
    assert '120.00 ms / -' in table


def test_child_escalates_when_sigint_is_ignored(tmp_path):
    code = ('import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); '
            'print("ready", flush=True); time.sleep(60)')
    child = Child('stubborn', [sys.executable, '-c', code], tmp_path / 'c.log', env=None)
    child.wait_for_output('ready', 30)
    start = time.monotonic()
    rc = child.stop(timeout_s=1.0)
    assert rc == -signal.SIGTERM
    assert time.monotonic() - start < 5


def test_child_stops_on_sigint_even_when_the_parent_ignores_it(tmp_path):
    # A demo started with `&` from a script inherits SIGINT ignored; its children must not.
    code = f"""
import signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.SIG_IGN)
from vpr_ros.demo.processes import Child
child = Child('sleeper', [sys.executable, '-c',
              'import time; print("ready", flush=True); time.sleep(60)'],
              Path({str(tmp_path / 'c.log')!r}))
child.wait_for_output('ready', 30)
print(child.stop(timeout_s=5.0))
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == str(-signal.SIGINT), out.stdout + out.stderr


def test_demo_map_calibrated_on_pseudo_queries_from_the_source_images(tmp_path):
    from vpr_ros.demo.mapping import build_demo_map
    from vpr_ros.demo.steps import Steps
    from vpr_ros.mapdb import MapDB
    from vpr_ros.synth import SynthRoute, write_csv_source

    route = SynthRoute(SynthConfig(seed=1, frames=30, image_size=(60, 80)))
    csv = write_csv_source(route.map_pass(), tmp_path / 'src')
    config = DemoConfig(model='tiny-test', device='cpu', geowarp_iterations=2,
                        geowarp_batch_size=2, calibrate_on='pseudo', pseudo_queries=24)
    out = io.StringIO()
    info = build_demo_map(csv, tmp_path / 'route.vprmap', config, Steps(3, out),
                          progress=False, route=route)
    source = "24 pseudo-queries from the map's source images"
    assert info['calibration']['source'] == source
    assert info['calibration']['frames'] == 24
    assert f'calibrate the covariance ({source})' in out.getvalue()
    chosen = info['calibration']['rerank_fusion']['geowarp_mode']
    assert f'GeoWarp mode: {chosen} mode kept' in out.getvalue()
    stored = MapDB.open(tmp_path / 'route.vprmap').manifest
    assert stored['calibration']['info']['source'] == source
