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

"""Fault matrix, the node: the worker survives any exception, fatal conditions end the process.

In-process tests run the real node (rclpy, torch, the tiny map) and feed frames straight to its
subscription callback; the faults that no real input triggers reliably (out of memory, a broken
device) are injected by replacing ``Localizer.localize`` on that one node.
"""

from __future__ import annotations

import signal
import time

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.ros]


def image_msg(rgb: np.ndarray, sec: int = 0):
    """Return a raw rgb8 ``sensor_msgs/Image`` of ``rgb``."""
    from sensor_msgs.msg import Image

    h, w = rgb.shape[:2]
    msg = Image(encoding='rgb8', height=h, width=w, step=3 * w, data=rgb.tobytes())
    msg.header.stamp.sec = sec
    return msg


def map_frame(tiny_map, index: int) -> np.ndarray:
    """Return the RGB pixels of one map frame of the tiny map."""
    bgr = cv2.imread(str(tiny_map.images / tiny_map.frames[index]['name']))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


#: These tests send one good frame after the faults: let it pass the sequence check unchecked
#: (the first frame of a drive otherwise waits for a second that agrees).
FIRST_FRAME_PASSES = {'localizer.sequence_confirm_first': False}


@pytest.fixture
def make_node(tiny_map, rclpy_context):
    """Create localizer nodes in this process (real rclpy); closed after the test."""
    from rclpy.parameter import Parameter
    from vpr_ros.ros.localizer_node import LocalizerNode

    nodes = []

    def make(**params):
        overrides = [Parameter('map', value=str(tiny_map.path)),
                     Parameter('device', value='cpu')]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        node = LocalizerNode(context=rclpy_context, parameter_overrides=overrides)
        nodes.append(node)
        return node
    yield make
    for node in nodes:
        node.close()
        node.destroy_node()


def wait_for(predicate, timeout: float = 60.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` s passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def spin_until(node, predicate, timeout: float = 30.0) -> None:
    """Spin ``node`` (its timers and subscriptions) until ``predicate()`` or the timeout."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
        executor.shutdown()


def inject(node, fault):
    """Make ``node``'s localizer raise ``fault(rgb)`` when it returns an exception, else run.

    The node localises prepared frames (``Localizer.prepare`` then ``localize_prepared``);
    ``fault`` sees the frame as an ``(H, W, 3)`` view.
    """
    real = node.localizer.localize_prepared

    def localize_prepared(prepared, *args, **kwargs):
        exc = fault(prepared[0].permute(1, 2, 0))
        if exc is not None:
            raise exc
        return real(prepared, *args, **kwargs)
    node.localizer.localize_prepared = localize_prepared


def test_worker_survives_an_error_after_a_warning(make_node, tiny_map):
    """Issue 15 row 1: bad encoding (warning), then out of memory (error): the worker lived."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import NavSatFix
    from vpr_ros.ros import messages

    node = make_node(**FIRST_FRAME_PASSES)
    inject(node, lambda rgb: MemoryError('injected: out of memory')
           if rgb.shape[:2] == (16, 16) else None)
    fixes = []
    node.create_subscription(NavSatFix, 'vpr/fix', fixes.append, 10)
    bad = image_msg(np.zeros((8, 8, 3), np.uint8))
    bad.encoding = '32FC1'
    node._on_image(bad)
    assert wait_for(lambda: node.stats.snapshot()['bad_frames'] == 1)
    for _ in range(2):  # the same error twice: the second reuses the throttled call site
        count = node.stats.snapshot()['errors']
        node._on_image(image_msg(np.zeros((16, 16, 3), np.uint8)))
        assert wait_for(lambda: node.stats.snapshot()['errors'] == count + 1)
    node._on_image(image_msg(map_frame(tiny_map, 7), sec=1007))
    spin_until(node, lambda: bool(fixes))
    assert node.worker.alive
    assert [f.header.stamp.sec for f in fixes] == [1007]
    values, snap = node.diagnostics()
    assert values['errors'] == 2 and values['worker_alive'] is True
    assert values['last_error'] == 'MemoryError: injected: out of memory'
    level, text = messages.diagnostic_level(snap, stale_input_s=10.0)
    assert level == DiagnosticStatus.ERROR and 'MemoryError' in text


def test_errors_in_a_row_end_the_node_with_exit_1(make_node, tiny_map):
    node = make_node(max_consecutive_errors=3)
    inject(node, lambda rgb: RuntimeError('injected: CUDA error: device lost'))
    frame = image_msg(map_frame(tiny_map, 3))
    for i in range(3):
        node._on_image(frame)
        assert wait_for(lambda: node.stats.snapshot()['errors'] == i + 1)
    assert node.fatal and 'failed on 3 frames in a row' in node.fatal
    assert 'RuntimeError: injected: CUDA error: device lost' in node.fatal
    with pytest.raises(SystemExit) as stopped:
        spin_until(node, lambda: False, timeout=10)
    assert stopped.value.code == 1


def test_a_good_frame_resets_the_errors_in_a_row(make_node, tiny_map):
    node = make_node(max_consecutive_errors=2)
    inject(node, lambda rgb: RuntimeError('injected') if rgb.shape[:2] == (16, 16) else None)
    for i, rgb in enumerate([np.zeros((16, 16, 3), np.uint8), map_frame(tiny_map, 3),
                             np.zeros((16, 16, 3), np.uint8)]):
        node._on_image(image_msg(rgb))
        assert wait_for(lambda: node.stats.snapshot()['errors']
                        + node.stats.snapshot()['frames_processed'] == i + 1)
    spin_until(node, lambda: False, timeout=1.5)   # the watchdog runs: nothing is fatal
    assert node.fatal is None and node.worker.alive


@pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning')
def test_a_dead_worker_ends_the_node_with_exit_1(make_node, tiny_map):
    node = make_node()
    inject(node, lambda rgb: SystemExit('injected: the thread ends'))
    node._on_image(image_msg(map_frame(tiny_map, 3)))
    assert wait_for(lambda: not node.worker.alive)
    with pytest.raises(SystemExit) as stopped:
        spin_until(node, lambda: False, timeout=10)
    assert stopped.value.code == 1
    assert node.fatal == 'the worker thread ended unexpectedly'


@pytest.mark.slow
def test_compressed_garbage_then_empty_data_then_a_good_frame(tiny_map, rclpy_context,
                                                              tmp_path):
    """Issue 15 rows 1 and 5 end to end: the node keeps localising after both bad frames."""
    import rclpy
    from sensor_msgs.msg import NavSatFix
    from test_ros_node import collect, start_camera, start_node

    with start_node(tiny_map, tmp_path / 'node.log', 'compressed:=true') as node_proc, \
            start_camera(tiny_map, tmp_path / 'camera.log', ['bad:garbage', 'bad:empty', 18],
                         topic='/image/compressed', period_s=0.4, kind='compressed'):
        node = rclpy.create_node('test_fault_listener', context=rclpy_context)
        fixes = collect(node, NavSatFix, '/vpr/fix',
                        lambda got: sum(m.header.stamp.sec == 1002 for m in got) >= 2,
                        timeout=120)
        node.destroy_node()
        alive = node_proc.popen.poll() is None
        assert node_proc.stop(signal.SIGINT) == 0
    out = node_proc.output()
    assert alive, out
    assert sum(m.header.stamp.sec == 1002 for m in fixes) >= 2, out
    assert "cannot decode compressed image (format 'jpeg', 8 bytes)" in out
    assert "compressed image (format 'jpeg') is empty (0 bytes)" in out
    assert 'Traceback' not in out and 'Logger severity' not in out


@pytest.mark.parametrize('kept, rate, lost', [
    (list(range(40)), 20.0, 0),                                  # nothing lost
    ([i for i in range(40) if i % 3 != 2], 20.0, 13),            # every third frame lost
    ([i for i in range(60) if i % 5 in (0, 1)], 20.0, 33),       # 60 % lost, in runs of 3
    ([0, 1, 2, 3, 200, 201, 202], 20.0, 0),                      # a 10 s pause is no loss
])
def test_transport_loss_from_header_stamps(kept, rate, lost):
    """Row 12: what never reached the node is estimated from the stamps of what did."""
    from vpr_ros.ros.stats import FrameStats

    stats = FrameStats(window_s=1e9)
    for i in kept:
        stats.received(False, 10**12 + i * 50_000_000)
    snap = stats.snapshot()
    assert snap['camera_rate_hz'] == pytest.approx(rate)
    assert snap['frames_lost_transport'] == lost
    assert snap['transport_loss_pct'] == pytest.approx(100 * lost / (lost + len(kept)))


def test_unstamped_or_restarting_stamps_count_no_loss():
    import math

    from vpr_ros.ros.stats import FrameStats

    stats = FrameStats()
    for _ in range(5):
        stats.received(False, 0)              # a driver that leaves header.stamp at zero
    assert math.isnan(stats.snapshot()['camera_rate_hz'])
    for i in [0, 1, 2, 0, 1, 2]:              # a bag played in a loop
        stats.received(False, 10**12 + i * 100_000_000)
    assert stats.snapshot()['frames_lost_transport'] == 0


def test_diagnostics_show_frames_lost_in_transport(make_node, tiny_map):
    """Row 12 in the node. Before: 61 % of the frames lost at 20 Hz, /diagnostics silent."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from vpr_ros.ros import messages

    node = make_node()
    frame = map_frame(tiny_map, 3)
    for i in [i for i in range(30) if i % 5 in (0, 1)]:   # 60 % lost on the way
        msg = image_msg(frame)
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + i // 20, (i % 20) * 50_000_000
        node._on_image(msg)
    values, snap = node.diagnostics()
    assert values['camera_rate_hz'] == pytest.approx(20.0)
    assert values['frames_lost_transport'] == 15
    assert values['transport_loss_pct'] == pytest.approx(100 * 15 / 27)
    level, text = messages.diagnostic_level(snap, stale_input_s=10.0)
    assert level == DiagnosticStatus.WARN
    assert text.startswith('56 % of the camera frames lost in transport (camera 20.0 Hz)')


def test_node_survives_every_malformed_raw_frame(make_node, tiny_map):
    """Already handled before issue 15 (kept as a regression test): each is a counted bad frame."""
    from sensor_msgs.msg import NavSatFix

    node = make_node(**FIRST_FRAME_PASSES)
    fixes = []
    node.create_subscription(NavSatFix, 'vpr/fix', fixes.append, 10)
    malformed = []
    for change in ({'encoding': '32FC1'}, {'encoding': ''}, {'data': b''}, {'step': 10},
                   {'height': 0}, {'width': 100000}, {'height': 30000, 'width': 30000},
                   {'encoding': 'mono16', 'step': 8}, {'data': bytes(7)}):
        msg = image_msg(np.zeros((8, 8, 3), np.uint8))
        for key, value in change.items():
            setattr(msg, key, value)
        malformed.append(msg)
    for i, msg in enumerate(malformed):
        node._on_image(msg)
        assert wait_for(lambda: node.stats.snapshot()['bad_frames']
                        + node.stats.snapshot()['frames_processed'] == i + 1), msg
    assert node.stats.snapshot()['bad_frames'] == len(malformed)
    assert node.stats.snapshot()['errors'] == 0
    node._on_image(image_msg(map_frame(tiny_map, 7), sec=1007))
    spin_until(node, lambda: bool(fixes))
    assert node.worker.alive and [f.header.stamp.sec for f in fixes] == [1007]


def test_node_localises_usb_camera_yuv_and_raw_bayer_frames(make_node, tiny_map):
    """A UVC camera's 4:2:2 YUV (usb_cam) and a raw Bayer mosaic give the rgb8 frame's fix."""
    from sensor_msgs.msg import Image, NavSatFix

    node = make_node(**{'localizer.sequence_check': False})
    fixes = []
    node.create_subscription(NavSatFix, 'vpr/fix', fixes.append, 10)
    rgb = map_frame(tiny_map, 7)
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float64) / 255.0            # BT.601 studio swing, as UVC cameras send
    y = 16 + x @ np.array([65.481, 128.553, 24.966])
    u = 128 + x @ np.array([-37.797, -74.203, 112.0])
    v = 128 + x @ np.array([112.0, -93.786, -18.214])
    uyvy = np.empty((h, w, 2))
    uyvy[:, 0::2, 0] = (u[:, 0::2] + u[:, 1::2]) / 2
    uyvy[:, 1::2, 0] = (v[:, 0::2] + v[:, 1::2]) / 2
    uyvy[..., 1] = y
    uyvy = np.clip(np.round(uyvy), 0, 255).astype(np.uint8)
    bayer = rgb[..., 1].copy()                     # green everywhere but the R and B sites
    bayer[0::2, 0::2], bayer[1::2, 1::2] = rgb[0::2, 0::2, 0], rgb[1::2, 1::2, 2]
    sent = [image_msg(rgb, sec=1007),
            Image(encoding='yuv422', height=h, width=w, step=2 * w, data=uyvy.tobytes()),
            Image(encoding='bayer_rggb8', height=h, width=w, step=w, data=bayer.tobytes())]
    for i, msg in enumerate(sent):
        msg.header.stamp.sec = 1007 + i
        node._on_image(msg)
        spin_until(node, lambda: len(fixes) == i + 1)
    assert node.stats.snapshot()['bad_frames'] == 0
    assert [f.header.stamp.sec for f in fixes] == [1007, 1008, 1009]
    want = tiny_map.frames[7]
    for fix in fixes:      # the same place: within a tenth of the 2 m map spacing
        assert abs(fix.latitude - fixes[0].latitude) * 111e3 < 0.2
        assert abs(fix.longitude - fixes[0].longitude) * 111e3 < 0.2
    assert abs(fixes[0].latitude - want['lat']) * 111e3 < 2.0


def test_the_first_fix_waits_for_a_second_frame_that_agrees(make_node, tiny_map):
    """The node's first frame is NO_FIX (published with publish_no_fix), the next one a fix."""
    from sensor_msgs.msg import NavSatFix, NavSatStatus

    node = make_node(publish_no_fix=True)
    fixes = []
    node.create_subscription(NavSatFix, 'vpr/fix', fixes.append, 10)
    for i, index in enumerate((7, 8, 9)):
        node._on_image(image_msg(map_frame(tiny_map, index), sec=1007 + i))
        spin_until(node, lambda: len(fixes) == i + 1)
    assert [f.header.stamp.sec for f in fixes] == [1007, 1008, 1009]
    assert [f.status.status for f in fixes] == [NavSatStatus.STATUS_NO_FIX,
                                                NavSatStatus.STATUS_FIX, NavSatStatus.STATUS_FIX]
    want = tiny_map.frames[8]
    assert abs(fixes[1].latitude - want['lat']) * 111e3 < 2.0
    assert node.stats.snapshot()['frames_processed'] == 3


@pytest.mark.slow
def test_node_refuses_a_hostile_manifest_with_exit_1(tiny_map, tmp_path):
    """Row 10 in the node. Before: a deeply nested manifest gave a RecursionError traceback."""
    import json
    import shutil
    import subprocess

    from test_ros_node import _env, _exe, STARTUP_S

    bad = tmp_path / 'deep.vprmap'
    shutil.copytree(tiny_map.path, bad)
    manifest = json.loads((bad / 'manifest.json').read_text())
    manifest['calibration'] = '@'
    (bad / 'manifest.json').write_text(json.dumps(manifest).replace('"@"', '[' * 50000
                                                                    + ']' * 50000))
    out = subprocess.run([_exe('localizer'), '--ros-args', '-p', f'map:={bad}', '-p',
                          'device:=cpu'], capture_output=True, text=True, timeout=STARTUP_S,
                         env=_env())
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'manifest.json is nested more than 32 levels deep' in out.stderr
    assert 'Traceback' not in out.stderr + out.stdout


def test_unknown_parameters_are_named_with_the_name_they_likely_meant(make_node, capfd):
    """A localizer option without its prefix is ignored, and the warning gives the real name."""
    capfd.readouterr()
    node = make_node(sequence_check=False, **{'localizer.top_kk': 7, 'zzz_unrelated': 1})
    err = capfd.readouterr().err
    assert 'ignoring unknown parameters' in err
    assert 'sequence_check (did you mean localizer.sequence_check?)' in err
    assert 'localizer.top_kk (did you mean localizer.top_k?)' in err
    assert 'zzz_unrelated;' in err and 'zzz_unrelated (' not in err
    assert node.localizer.config.sequence_check                # ignored: the default stays


def test_the_unknown_parameter_hint():
    from vpr_ros.ros.params import parameter_specs, unknown_parameter_hint

    known = [spec.name for spec in parameter_specs()]
    assert unknown_parameter_hint('sequence_check', known) == 'localizer.sequence_check'
    assert unknown_parameter_hint('localizer.sequnce_check', known) == \
        'localizer.sequence_check'
    assert unknown_parameter_hint('publish_nofix', known) == 'publish_no_fix'
    assert unknown_parameter_hint('completely_else', known) == ''
    # A leaf two sections share: both are named.
    assert unknown_parameter_hint('x.a', ['p.a', 'q.a']) == 'p.a or q.a'


def test_node_says_when_the_calibration_does_not_fit_its_scores(make_node, tiny_map, capfd):
    """The tiny map was calibrated with re-ranking; a node without it warns and says why."""
    node = make_node()
    assert node.diagnostics()[0]['calibration_problem'] == 'none'
    capfd.readouterr()
    off = make_node(**{'localizer.rerank': False})
    problem = off.diagnostics()[0]['calibration_problem']
    assert 'calibrated with GeoWarp re-ranking and this localizer runs without it' in problem
    assert problem in capfd.readouterr().err                 # logged at start-up (rclpy)
    assert off.localizer.calibration is not None             # still used
