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

"""eval-bag on a bag written here with known truth and fixes: every metric checked by hand."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pymap3d
import pytest
from vpr_ros import bags
from vpr_ros.cli import main as cli_main
from vpr_ros.errors import DataError
from vpr_ros.evaluation.bag_eval import evaluate_bag
from vpr_ros.evaluation.metrics import EvalConfig

T0 = 1_700_000_000 * 1_000_000_000
ORIGIN = (45.0, 7.0, 100.0)
CONFIG = EvalConfig(max_speed_mps=20.0, jump_margin_m=5.0)

# Truth: 1 Hz for t = 0..20 s, moving north at 10 m/s from the origin; plus a NO_FIX sample.
# Fixes: (t, valid, offset east/north from the truth line (0, 10 t), EN covariance, latency s)
FIXES = [
    (-0.5, True, (3, 0), [[4, 0], [0, 4]], 0.05),     # before the truth: not matched
    (0.5, True, (3, 0), [[4, 0], [0, 4]], 0.05),      # err 3, NEES 9/4 = 2.25
    (1.5, True, (3, 0), [[4, 0], [0, 4]], 0.05),      # err 3, NEES 2.25
    (2.5, True, (3, 0), [[10, 0], [0, 10]], 0.05),    # err 3, NEES 0.9
    (3.5, True, (0, 12), [[25, 0], [0, 25]], 0.05),   # err 12, NEES 5.76
    (4.5, False, None, None, 0.05),                   # NO_FIX
    (5.5, True, (24, 32), [[100, 0], [0, 100]], 0.05),  # err 40, NEES 16
    (6.5, True, (-60, 0), [[4, 0], [0, 4]], 0.05),    # err 60, NEES 900
    (7.5, True, (3, 0), [[4, 2], [2, 4]], 0.05),      # err 3, NEES 9*4/12 = 3
    (8.5, False, None, None, 0.15),                   # NO_FIX
    (9.5, True, (0, -20), [[0, 0], [0, 0]], 0.05),    # err 20, zero covariance: no NEES
    (25.5, True, (3, 0), [[4, 0], [0, 4]], 0.25),     # after the truth: not matched
]
# camera frames: one per fix stamp, plus 10.5 s where the node published nothing
FRAMES = [t for t, *_ in FIXES] + [10.5]


def _ns(t: float) -> int:
    return T0 + int(round(t * 1e9))


def _geodetic(east: float, north: float) -> tuple[float, float, float]:
    lat, lon, alt = pymap3d.enu2geodetic(east, north, 0.0, *ORIGIN)
    return float(lat), float(lon), float(alt)


def _navsatfix(t, status, lat, lon, alt, cov_en=None):
    cls = bags.message_class
    sec, nanosec = divmod(_ns(t), 1_000_000_000)
    cov = np.zeros((3, 3))
    if cov_en is not None:
        cov[:2, :2] = cov_en
        cov[2, 2] = 1e4
    return cls(bags.FIX_TYPE)(
        header=cls('std_msgs/msg/Header')(
            stamp=cls('builtin_interfaces/msg/Time')(sec=sec, nanosec=nanosec),
            frame_id='antenna'),
        status=cls('sensor_msgs/msg/NavSatStatus')(status=status, service=0),
        latitude=lat, longitude=lon, altitude=alt, position_covariance=cov.ravel(),
        position_covariance_type=1)


def _image(t):
    cls = bags.message_class
    sec, nanosec = divmod(_ns(t), 1_000_000_000)
    return cls('sensor_msgs/msg/Image')(
        header=cls('std_msgs/msg/Header')(
            stamp=cls('builtin_interfaces/msg/Time')(sec=sec, nanosec=nanosec),
            frame_id='camera'),
        height=2, width=2, encoding='rgb8', is_bigendian=0, step=6,
        data=np.zeros(12, np.uint8))


def write_eval_bag(path, *, truth_type=bags.FIX_TYPE, truth_shift_s=0.0, storage='mcap'):
    with bags.BagWriter(path, storage=storage) as writer:
        for i in range(21):
            t = i + truth_shift_s
            if truth_type == bags.FIX_TYPE:
                msg = _navsatfix(t, 0, *_geodetic(0.0, 10.0 * i), [[1, 0], [0, 1]])
            else:
                cls = bags.message_class
                msg = cls(truth_type)(
                    header=_image(t).header,
                    point=cls('geometry_msgs/msg/Point')(x=0.0, y=10.0 * i, z=0.0))
            writer.write_message('/gnss/fix', _ns(t) + 10_000_000, msg)
        writer.write_message('/gnss/fix', _ns(20.5), _navsatfix(20.5, -1, 0.0, 0.0, 0.0))
        for t in FRAMES:
            writer.write_message('/camera/image_raw', _ns(t) + 1_000_000, _image(t))
        for t, valid, offset, cov, latency in FIXES:
            if valid:
                msg = _navsatfix(t, 0, *_geodetic(offset[0], 10.0 * t + offset[1]), cov)
            else:
                msg = _navsatfix(t, -1, float('nan'), float('nan'), 0.0, [[1e4, 0], [0, 1e4]])
            writer.write_message('/vpr/fix', _ns(t) + int(round(latency * 1e9)), msg)
    return path


@pytest.fixture(scope='module')
def eval_bag(tmp_path_factory):
    return write_eval_bag(tmp_path_factory.mktemp('eval') / 'drive')


def test_metrics_by_hand(eval_bag):
    m = evaluate_bag(eval_bag, config=CONFIG, progress=False).evaluation.metrics
    assert m['counts'] == {
        'frames': 13, 'fix_messages': 12, 'valid_fixes': 10, 'no_fix_messages': 2,
        'fixes_outside_truth': 2, 'matched_valid_fixes': 8,
        'queries': 11,  # frames from 0.5 to 10.5 s lie in the truth's span
        'truth_samples': 21, 'truth_samples_invalid': 1}
    # errors of the 8 matched valid fixes: 3, 3, 3, 12, 40, 60, 3, 20
    err = m['horizontal_error_m']
    assert err['median'] == pytest.approx(7.5, abs=1e-6)           # (3 + 12) / 2
    assert err['mean'] == pytest.approx(18.0, abs=1e-6)            # 144 / 8
    assert err['p95'] == pytest.approx(53.0, abs=1e-6)             # 40 + 0.65 * (60 - 40)
    assert err['rmse'] == pytest.approx(math.sqrt(5780 / 8), abs=1e-6)
    assert err['max'] == pytest.approx(60.0, abs=1e-6)
    assert m['recall'] == pytest.approx({'10': 4 / 11, '25': 6 / 11, '50': 7 / 11})
    assert m['precision'] == pytest.approx({'10': 4 / 8, '25': 6 / 8, '50': 7 / 8})
    assert m['availability'] == pytest.approx(10 / 13)
    assert m['no_fix_rate'] == pytest.approx(2 / 12)
    # NEES: 2.25, 2.25, 0.9, 5.76, 16, 900, 3.0 (the zero covariance is left out)
    nees = m['nees']
    assert nees['count'] == 7 and nees['invalid_covariance'] == 1
    assert nees['coverage'] == pytest.approx({'1sigma': 1 / 7, '2sigma': 4 / 7,
                                              '3sigma': 5 / 7})
    assert nees['mean'] == pytest.approx(930.16 / 7, abs=1e-5)
    assert nees['ideal_coverage'] == pytest.approx({'1sigma': 0.3935, '2sigma': 0.8647,
                                                    '3sigma': 0.9889}, abs=1e-4)
    # latency (log time - stamp): ten at 50 ms, one at 150 ms, one at 250 ms
    assert m['latency']['p50_ms'] == pytest.approx(50.0, abs=1e-3)
    assert m['latency']['p95_ms'] == pytest.approx(195.0, abs=1e-3)  # 150 + 0.45 * 100
    # jumps at 20 m/s + 5 m: 3.5->5.5 s (46.6 > 45), 5.5->6.5 (86.8 > 25), 6.5->7.5 (63.8)
    assert m['jumps'] == {'count': 3, 'pairs': 9, 'rate': pytest.approx(1 / 3)}
    assert m['origin'] == pytest.approx({'lat': 45.0, 'lon': 7.0, 'alt': 100.0})


def test_along_cross_track_split_and_nees_curve(eval_bag):
    """The truth drives north: along-track = the north offset, cross-track = the east one."""
    m = evaluate_bag(eval_bag, config=CONFIG, progress=False).evaluation.metrics
    track = m['track_error_m']
    assert track['count'] == 8
    # |along| of the 8 matched fixes: 0, 0, 0, 12, 32, 0, 0, 20; |cross|: 3, 3, 3, 0, 24, 60, 3, 0
    assert track['along']['median'] == pytest.approx(0.0, abs=1e-6)
    assert track['along']['max'] == pytest.approx(32.0, abs=1e-6)
    assert track['cross']['median'] == pytest.approx(3.0, abs=1e-6)
    assert track['cross']['max'] == pytest.approx(60.0, abs=1e-6)
    curve = m['nees']['curve']
    k = curve['sigma']
    assert k[0] == 0.25 and k[-1] == 4.0 and len(k) == len(curve['coverage'])
    by_k = dict(zip(k, curve['coverage']))
    # NEES 2.25, 2.25, 0.9, 5.76, 16, 900, 3.0
    assert by_k[1.0] == pytest.approx(1 / 7) and by_k[2.0] == pytest.approx(4 / 7)
    assert by_k[4.0] == pytest.approx(6 / 7)
    assert all(a <= b for a, b in zip(curve['coverage'], curve['coverage'][1:]))
    assert dict(zip(k, curve['ideal']))[2.0] == pytest.approx(0.8647, abs=1e-4)


def test_without_frames_fix_messages_are_the_queries(eval_bag):
    m = evaluate_bag(eval_bag, frames=None, config=CONFIG, progress=False).evaluation.metrics
    assert m['counts']['frames'] is None and m['counts']['queries'] == 10
    assert m['recall'] == pytest.approx({'10': 4 / 10, '25': 6 / 10, '50': 7 / 10})
    assert m['availability'] == pytest.approx(10 / 12)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    assert data[12:16] == b'IHDR'
    return struct.unpack('>II', data[16:24])


def test_cli_writes_report_plots_and_tum(eval_bag, tmp_path, capsys):
    config = tmp_path / 'eval.yaml'
    config.write_text('max_speed_mps: 20.0\njump_margin_m: 5.0\n')
    out = tmp_path / 'report'
    args = ['eval-bag', str(eval_bag), '--fix', '/vpr/fix', '--truth', '/gnss/fix',
            '--out', str(out), '--config', str(config), '--no-progress']
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert 'median 7.50 m' in printed and 'R@25m 54.5%' in printed
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['jumps']['count'] == 3
    assert metrics['inputs']['frames_topic'] == '/camera/image_raw'
    report = (out / 'report.md').read_text()
    for name in ('trajectory.png', 'error_over_time.png', 'error_cdf.png',
                 'sigma_vs_error.png', 'nees_coverage.png'):
        assert _png_size(out / name) == (800, 600)
        assert f']({name})' in report
    assert '| along-track error median / p95 / max | 0.00 / 27.80 / 32.00 m |' in report
    assert '| cross-track error median / p95 / max | 3.00 / 47.40 / 60.00 m |' in report
    assert '| recall@25 m (precision) | 54.5 % (75.0 %) |' in report
    assert '| jump rate | 33.3 % (3 of 9 consecutive pairs) |' in report
    fixes = np.loadtxt(out / 'fixes.tum', comments='#')
    truth = np.loadtxt(out / 'truth.tum', comments='#')
    truth_at = np.loadtxt(out / 'truth_at_fixes.tum', comments='#')
    assert fixes.shape == (10, 8) and truth.shape == (21, 8) and truth_at.shape == (8, 8)
    assert fixes[1, 0] == pytest.approx(1_700_000_000.5)
    np.testing.assert_allclose(fixes[1, 1:4], [3.0, 5.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(truth_at[0, 1:3], [0.0, 5.0], atol=1e-3)
    np.testing.assert_array_equal(fixes[:, 4:], np.tile([0, 0, 0, 1], (10, 1)))
    # a second run does not overwrite without --overwrite
    assert cli_main(args) == 1
    assert 'exists already, not overwriting' in capsys.readouterr().err
    assert cli_main([*args, '--overwrite']) == 0


def test_clear_errors(tmp_path, eval_bag):
    with pytest.raises(DataError, match="truth topic '/gps' is not in the bag"):
        evaluate_bag(eval_bag, truth_topic='/gps', progress=False)
    with pytest.raises(DataError, match="fix topic '/camera/image_raw' has type "
                       'sensor_msgs/msg/Image, expected sensor_msgs/msg/NavSatFix'):
        evaluate_bag(eval_bag, fix_topic='/camera/image_raw', progress=False)
    other = write_eval_bag(tmp_path / 'point', truth_type='geometry_msgs/msg/PointStamped',
                           storage='sqlite3')
    with pytest.raises(DataError, match="truth topic '/gnss/fix' has type "
                       'geometry_msgs/msg/PointStamped'):
        evaluate_bag(other, progress=False)
    late = write_eval_bag(tmp_path / 'late', truth_shift_s=100.0)
    with pytest.raises(DataError, match='no fix stamp lies within the truth'):
        evaluate_bag(late, progress=False)
