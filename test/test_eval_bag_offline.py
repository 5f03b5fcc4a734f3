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

"""eval-bag offline: the localizer runs on a bag whose frames are the map's own images.

The map is built with the real ``tiny-test`` model from the same frames, so each frame's
estimate is its own map position; the truth is written in the bag, so the errors are known.
"""

from __future__ import annotations

import json

from mapdb_helpers import ORIGIN, route, texture, textured_map, write_bag
import numpy as np
import pymap3d
import pytest
from vpr_ros import bags
from vpr_ros.cli import main as cli_main
from vpr_ros.errors import DataError
from vpr_ros.evaluation.bag_eval import evaluate_bag_offline
from vpr_ros.image_codec import rgb_to_compressed_data
from vpr_ros.localizer import Localizer, LocalizerConfig

N = 12
T0 = 1_700_000_000 * 1_000_000_000
SEC = 1_000_000_000
POS = route(N)            # 3 m east, 4 m north per frame


@pytest.fixture(scope='module')
def tiny_map(tmp_path_factory):
    folder = tmp_path_factory.mktemp('offmap')
    return textured_map(folder, N)


def _frames():
    return [(T0 + i * SEC, texture(i)) for i in range(N)]


def _truth(shift_s: float = 0.0, east_m: float = 0.0, n: int = N):
    """Truth at the frame positions moved ``east_m`` east, stamped ``shift_s`` later."""
    rows = []
    for i in range(n):
        e, nn, u = pymap3d.geodetic2enu(*POS[i], *ORIGIN)
        lat, lon, alt = pymap3d.enu2geodetic(e + east_m, nn, u, *ORIGIN)
        rows.append((T0 + i * SEC + int(shift_s * SEC), float(lat), float(lon), float(alt), 0))
    return rows


@pytest.fixture(scope='module')
def raw_bag(tmp_path_factory):
    return write_bag(tmp_path_factory.mktemp('offbag') / 'drive', _frames(), _truth(),
                     image_topic='/camera/image_raw', fix_topic='/gnss/fix')


def _run(bag, tiny_map, out, *extra):
    return cli_main(['eval-bag', str(bag), '--map', str(tiny_map), '--images',
                     '/camera/image_raw', '--truth', '/gnss/fix', '--out', str(out),
                     '--device', 'cpu', '--no-progress', *extra])


def test_map_images_localise_with_zero_error(raw_bag, tiny_map, tmp_path, capsys):
    out = tmp_path / 'report'
    # Snapped to the map frame: placing between frames would move a map image off its own
    # place by a few cm (the random textures' scores are not a smooth peak).
    # Every frame published: the first too (by default it waits for a second that agrees).
    config = tmp_path / 'localizer.yaml'
    config.write_text('subspacing: "off"\n'    # quoted: YAML reads a bare off as false
                      'sequence_confirm_first: false\n')
    assert _run(raw_bag, tiny_map, out, '--batch-size', '5', '--localizer-config',
                str(config)) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert f'{N} valid of {N} fixes; median 0.00 m' in printed
    # The sigmas scored here are the fixed ones of an uncalibrated map: said, and recorded.
    assert f'warning: {tiny_map.name} is not calibrated: every fix has the fixed sigma 15 m ' \
        'and GeoWarp does not reorder the candidates' in captured.err
    assert 'processing time per frame' in printed and 'not the live latency' in printed
    m = json.loads((out / 'metrics.json').read_text())
    assert m['counts'] == {
        'frames': N, 'fix_messages': N, 'valid_fixes': N, 'no_fix_messages': 0,
        'fixes_outside_truth': 0, 'matched_valid_fixes': N, 'queries': N,
        'truth_samples': N, 'truth_samples_invalid': 0}
    assert m['horizontal_error_m']['max'] < 0.01
    assert m['recall'] == {'10': 1.0, '25': 1.0, '50': 1.0}
    assert m['availability'] == 1.0 and m['no_fix_rate'] == 0.0
    # uncalibrated map: sigma 15 m for every fix, errors ~0 -> NEES ~0, all inside 1 sigma
    assert m['nees']['coverage'] == {'1sigma': 1.0, '2sigma': 1.0, '3sigma': 1.0}
    assert m['nees']['mean'] < 1e-6
    assert m['jumps']['count'] == 0 and m['jumps']['pairs'] == N - 1
    lat = m['latency']
    assert lat['kind'] == 'processing' and lat['count'] == N
    assert 0 < lat['p50_ms'] <= lat['p95_ms']
    off = m['offline']
    assert off['frames_localized'] == N and off['frames_undecodable'] == 0
    assert off['batch_size'] == 5 and off['device'] == 'cpu'
    # An uncalibrated map re-ranks in features mode and keeps the global order (weight 0).
    assert (off['geowarp_mode'], off['rerank_weight']) == ('features', 0.0)
    assert set(off['processing_stage_mean_ms']) == {'decode', 'resize', 'forward', 'search',
                                                    'rerank', 'estimate'}
    assert m['inputs']['images_topic'] == '/camera/image_raw'
    assert m['inputs']['map'] == str(tiny_map.resolve())
    assert m['inputs']['calibration'] == off['calibration']
    assert off['calibration'].startswith(f'{tiny_map.name} is not calibrated')
    report = (out / 'report.md').read_text()
    assert 'localizer processing time per frame p50 / p95 (offline, not latency)' in report
    assert 'bag receive time' not in report
    for name in ('trajectory.png', 'error_over_time.png', 'error_cdf.png',
                 'sigma_vs_error.png', 'fixes.tum', 'truth.tum', 'truth_at_fixes.tum'):
        assert (out / name).stat().st_size > 0
        assert f']({name})' in report
    fixes = np.loadtxt(out / 'fixes.tum', comments='#')
    assert fixes.shape == (N, 8)
    np.testing.assert_allclose(fixes[:, 0], (T0 + np.arange(N) * SEC) / 1e9)
    np.testing.assert_allclose(np.diff(fixes[:, 1:3], axis=0), np.tile([3.0, 4.0], (N - 1, 1)),
                               atol=1e-3)
    # The default: the first frame of the drive waits for the second to agree.
    config.write_text('subspacing: "off"\n')
    assert _run(raw_bag, tiny_map, tmp_path / 'first', '--localizer-config', str(config)) == 0
    assert f'{N - 1} valid of {N} fixes; median 0.00 m' in capsys.readouterr().out
    m = json.loads((tmp_path / 'first' / 'metrics.json').read_text())
    assert m['counts']['no_fix_messages'] == 1 and m['availability'] == (N - 1) / N


def test_compressed_frames_against_interpolated_offset_truth(tiny_map, tmp_path):
    # Truth 3 m east of the map, stamped 0.5 s after each frame: at a frame's stamp it is
    # interpolated halfway back along the route step (3, 4) m, so the truth is the frame's
    # map position + (1.5, -2) m: error 2.5 m. Frame 0 precedes the truth.
    bag = write_bag(tmp_path / 'comp', _frames(), _truth(shift_s=0.5, east_m=3.0),
                    storage='mcap', compressed=True, image_topic='/camera/image_raw',
                    fix_topic='/gnss/fix')
    # Map images: exactly at their map frame; every frame published (the first one too).
    snap = LocalizerConfig(subspacing='off', sequence_confirm_first=False)
    ev = evaluate_bag_offline(bag, lambda: Localizer.open(tiny_map, snap, device='cpu'),
                              progress=False).evaluation
    m = ev.metrics
    assert m['counts']['fixes_outside_truth'] == 1 and m['counts']['queries'] == N - 1
    assert m['horizontal_error_m']['median'] == pytest.approx(2.5, abs=1e-3)
    assert m['horizontal_error_m']['max'] == pytest.approx(2.5, abs=1e-3)
    assert m['recall'] == {'10': 1.0, '25': 1.0, '50': 1.0}
    assert m['availability'] == 1.0
    assert np.isnan(ev.error_m[0]) and not ev.matched[0]


def test_no_fix_from_localizer_config_and_undecodable_frame(tiny_map, tmp_path, capsys):
    # max_sigma_m below the uncalibrated 15 m sigma: every estimate is NO_FIX
    bag = tmp_path / 'junk'
    cls = bags.message_class
    with bags.BagWriter(bag) as writer:
        for i, (stamp, image) in enumerate(_frames()):
            data = b'not an image' if i == 3 else rgb_to_compressed_data(image, 'png')
            sec, nanosec = divmod(stamp, SEC)
            header = cls('std_msgs/msg/Header')(
                stamp=cls('builtin_interfaces/msg/Time')(sec=sec, nanosec=nanosec),
                frame_id='camera')
            writer.write_message('/camera/image_raw', stamp, cls(bags.IMAGE_TYPES[1])(
                header=header, format='png', data=np.frombuffer(data, np.uint8)))
    truth_only = write_bag(tmp_path / 'truth', [], _truth(), fix_topic='/gnss/fix')
    with bags.BagWriter(tmp_path / 'merged') as writer:
        for msg in (*bags.read_messages(bag), *bags.read_messages(truth_only, ['/gnss/fix'])):
            writer.add_topic(msg.topic, msg.msgtype)
            writer.write(msg.topic, msg.log_time_ns, msg.rawdata)
    config = tmp_path / 'loc.yaml'
    config.write_text('max_sigma_m: 10.0\n')
    out = tmp_path / 'nofix'
    assert _run(tmp_path / 'merged', tiny_map, out, '--localizer-config', str(config)) == 0
    m = json.loads((out / 'metrics.json').read_text())
    assert m['counts']['frames'] == N and m['counts']['fix_messages'] == N - 1
    assert m['counts']['valid_fixes'] == 0 and m['counts']['no_fix_messages'] == N - 1
    assert m['availability'] == 0.0 and m['no_fix_rate'] == 1.0
    assert m['recall'] == {'10': 0.0, '25': 0.0, '50': 0.0}
    assert m['horizontal_error_m']['median'] is None
    assert m['offline']['frames_undecodable'] == 1
    assert m['inputs']['localizer_config'] == str(config.resolve())
    assert (out / 'report.md').is_file()


def _never():
    raise AssertionError('the localizer must not be opened for a bag that fails its checks')


def test_clear_errors_before_the_model_loads(raw_bag, tiny_map, tmp_path, capsys):
    with pytest.raises(DataError, match="image topic '/cam/image' is not in the bag"):
        evaluate_bag_offline(raw_bag, _never, image_topic='/cam/image', progress=False)
    with pytest.raises(DataError, match="image topic '/gnss/fix' has type "
                       'sensor_msgs/msg/NavSatFix, expected sensor_msgs/msg/Image or '
                       'sensor_msgs/msg/CompressedImage'):
        evaluate_bag_offline(raw_bag, _never, image_topic='/gnss/fix', progress=False)
    with pytest.raises(DataError, match="truth topic '/camera/image_raw' has type"):
        evaluate_bag_offline(raw_bag, _never, truth_topic='/camera/image_raw',
                             progress=False)
    no_images = tmp_path / 'gnss_only'
    with bags.BagWriter(no_images) as writer:
        for msg in bags.read_messages(raw_bag, ['/gnss/fix']):
            writer.add_topic(msg.topic, msg.msgtype)
            writer.write(msg.topic, msg.log_time_ns, msg.rawdata)
    with pytest.raises(DataError, match=r'the bag has 0 image topics \[\]; choose one with '
                       '--images'):
        evaluate_bag_offline(no_images, _never, progress=False)
    late = write_bag(tmp_path / 'late', _frames(), _truth(shift_s=100.0),
                     image_topic='/camera/image_raw', fix_topic='/gnss/fix')
    with pytest.raises(DataError, match="no image stamp of '/camera/image_raw' lies within "
                       "the truth '/gnss/fix'"):
        evaluate_bag_offline(late, _never, progress=False)
    empty = write_bag(tmp_path / 'empty', [], _truth(), image_topic='/camera/image_raw',
                      fix_topic='/gnss/fix')
    with pytest.raises(DataError, match="image topic '/camera/image_raw' has no messages"):
        evaluate_bag_offline(empty, _never, progress=False)
    # through the CLI: the same messages, exit status 1; option clashes
    assert _run(late, tiny_map, tmp_path / 'late.eval') == 1
    assert 'no image stamp' in capsys.readouterr().err
    assert not (tmp_path / 'late.eval').exists()
    with pytest.raises(SystemExit):
        cli_main(['eval-bag', str(raw_bag), '--fix', '/vpr/fix', '--map', str(tiny_map)])
    assert 'not allowed with argument' in capsys.readouterr().err
    assert cli_main(['eval-bag', str(raw_bag), '--images', '/camera/image_raw']) == 1
    assert '--images only apply to the offline mode (--map)' in capsys.readouterr().err
    assert cli_main(['eval-bag', str(raw_bag), '--map', str(tiny_map), '--frames',
                     'none']) == 1
    assert '--frames is for the live mode' in capsys.readouterr().err
    assert cli_main(['eval-bag', str(raw_bag), '--map', str(tmp_path / 'no.vprmap')]) == 1
    assert 'no such map' in capsys.readouterr().err


def test_the_report_says_whether_the_calibration_fits(raw_bag, tiny_map, tmp_path, capsys):
    """A calibrated map evaluates without a warning; run off what it was fitted on, it warns."""
    import shutil

    from vpr_ros.calibrate import calibrate_map
    from vpr_ros.calibration import CalibrationConfig, store_calibration

    path = tmp_path / 'cal.vprmap'
    shutil.copytree(tiny_map, path)
    loc = Localizer.open(path, device='cpu')
    cal, report = calibrate_map(loc, CalibrationConfig(pseudo_queries=N, min_per_bin=5, bins=2),
                                progress=False)
    store_calibration(loc.map, cal, report)
    capsys.readouterr()
    assert _run(raw_bag, path, tmp_path / 'fits') == 0
    assert 'warning' not in capsys.readouterr().err
    m = json.loads((tmp_path / 'fits' / 'metrics.json').read_text())
    assert m['inputs']['calibration'] == m['offline']['calibration'] == 'fits the map'
    assert '- calibration: `fits the map`' in (tmp_path / 'fits' / 'report.md').read_text()
    config = tmp_path / 'no_rerank.yaml'
    config.write_text('rerank: false\n')
    assert _run(raw_bag, path, tmp_path / 'off', '--localizer-config', str(config)) == 0
    err = capsys.readouterr().err
    m = json.loads((tmp_path / 'off' / 'metrics.json').read_text())
    problem = m['inputs']['calibration']
    assert problem.startswith('cal.vprmap: ') and 'runs without it' in problem
    assert f'warning: {problem}' in err
