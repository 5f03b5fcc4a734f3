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

"""rosbag2 helpers with real bag files, and record + play with real rclpy processes."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest
from ros_harness import Process
from vpr_ros import bags
from vpr_ros.errors import DataError

T0 = 1_700_000_000 * 1_000_000_000


def _fix(stamp_ns: int, lat: float, lon: float):
    cls = bags.message_class(bags.FIX_TYPE)
    header = bags.message_class('std_msgs/msg/Header')
    stamp = bags.message_class('builtin_interfaces/msg/Time')
    status = bags.message_class('sensor_msgs/msg/NavSatStatus')
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return cls(header=header(stamp=stamp(sec=sec, nanosec=nanosec), frame_id='gnss'),
               status=status(status=0, service=1), latitude=lat, longitude=lon, altitude=10.0,
               position_covariance=np.diag([4.0, 4.0, 9.0]).ravel(),
               position_covariance_type=2)


def _write_bag(path, storage='mcap', n_gnss=20, n_vpr=10):
    """Write /gnss/fix at 20 Hz and /vpr/fix at 10 Hz; log time = stamp + 30 ms."""
    expected = {'/gnss/fix': [], '/vpr/fix': []}
    with bags.BagWriter(path, storage=storage) as writer:
        for i in range(n_gnss):
            stamp = T0 + i * 50_000_000
            writer.write_message('/gnss/fix', stamp + 30_000_000,
                                 _fix(stamp, 45.0 + i * 1e-5, 7.0))
            expected['/gnss/fix'].append(stamp)
            if i % 2 == 0 and i // 2 < n_vpr:
                writer.write_message('/vpr/fix', stamp + 30_000_000,
                                     _fix(stamp, 45.0 + i * 1e-5, 7.0 + 1e-5))
                expected['/vpr/fix'].append(stamp)
    return expected


@pytest.mark.parametrize('storage', bags.STORAGES)
def test_write_read_round_trip(tmp_path, storage):
    expected = _write_bag(tmp_path / 'bag', storage)
    assert bags.bag_topics(tmp_path / 'bag') == {'/gnss/fix': bags.FIX_TYPE,
                                                 '/vpr/fix': bags.FIX_TYPE}
    messages = list(bags.read_messages(tmp_path / 'bag', ['/vpr/fix']))
    assert [m.topic for m in messages] == ['/vpr/fix'] * 10
    assert [bags.header_stamp_ns(m.rawdata) for m in messages] == expected['/vpr/fix']
    assert [m.log_time_ns for m in messages] == [s + 30_000_000 for s in expected['/vpr/fix']]
    msg = bags.deserialize(messages[3].rawdata, bags.FIX_TYPE)
    assert msg.latitude == pytest.approx(45.0 + 6e-5)
    assert list(msg.position_covariance) == [4.0, 0, 0, 0, 4.0, 0, 0, 0, 9.0]
    all_messages = list(bags.read_messages(tmp_path / 'bag'))
    assert len(all_messages) == 30
    assert all(a.log_time_ns <= b.log_time_ns for a, b in zip(all_messages, all_messages[1:]))


def test_writer_refuses_to_overwrite_and_unknown_types(tmp_path):
    _write_bag(tmp_path / 'bag')
    with pytest.raises(DataError, match='exists already, not overwriting'):
        bags.BagWriter(tmp_path / 'bag')
    with pytest.raises(DataError, match='folder .* does not exist'):
        bags.BagWriter(tmp_path / 'missing' / 'bag')
    with bags.BagWriter(tmp_path / 'other', storage='sqlite3') as writer:
        with pytest.raises(DataError, match="unknown message type 'my_msgs/msg/Thing'"):
            writer.add_topic('/thing', 'my_msgs/msg/Thing')


def test_reader_errors(tmp_path):
    with pytest.raises(DataError, match='not a rosbag2 directory'):
        bags.open_reader(tmp_path)
    _write_bag(tmp_path / 'bag')
    with pytest.raises(DataError, match=r"topic\(s\) \['/camera'\] not in the bag"):
        list(bags.read_messages(tmp_path / 'bag', ['/camera']))


def test_header_stamp_and_playback_offsets():
    raw = bags.serialize(_fix(T0 + 123, 45.0, 7.0), bags.FIX_TYPE)
    assert bags.header_stamp_ns(raw) == T0 + 123
    assert bags.header_stamp_ns(b'\x07' * 20) is None
    offsets = bags.playback_offsets_s([T0, T0 + 500_000_000, T0 + 2_000_000_000], rate=2.0)
    np.testing.assert_allclose(offsets, [0.0, 0.25, 1.0])


def _cli(*args):
    return [sys.executable, '-m', 'vpr_ros.cli', *args]


@pytest.mark.ros
@pytest.mark.parametrize('storage, stop_signal', [('mcap', signal.SIGINT),
                                                  ('sqlite3', signal.SIGTERM)])
def test_record_play_round_trip(tmp_path, storage, stop_signal):
    """Every message played (reliable QoS) is in the recorded bag with its header stamp."""
    expected = _write_bag(tmp_path / 'source')
    out = tmp_path / 'recorded'
    with Process(_cli('record', str(out), '--topics', '/gnss/fix', '/vpr/fix',
                      '--storage', storage), tmp_path / 'record.log') as recorder:
        player = subprocess.run(
            _cli('play', str(tmp_path / 'source'), '--rate', '4', '--no-progress',
                 '--wait-for-subscribers', '30'),
            capture_output=True, text=True, timeout=120)
        assert player.returncode == 0, player.stdout + player.stderr
        assert 'played 30 messages' in player.stderr, player.stderr
        assert recorder.wait_for_output('recording: all 2 topic(s) subscribed', 5), \
            recorder.output()
        rc = recorder.stop(stop_signal)
    log = recorder.output()
    assert rc == 0, log
    assert 'recorded 30 messages' in log, log
    assert bags.bag_topics(out) == {'/gnss/fix': bags.FIX_TYPE, '/vpr/fix': bags.FIX_TYPE}
    got = {'/gnss/fix': [], '/vpr/fix': []}
    for msg in bags.read_messages(out):
        got[msg.topic].append(bags.header_stamp_ns(msg.rawdata))
        assert msg.log_time_ns > T0  # receive time on the recorder's clock (now)
    assert got == expected
    fix = bags.deserialize(next(bags.read_messages(out, ['/vpr/fix'])).rawdata, bags.FIX_TYPE)
    assert fix.longitude == pytest.approx(7.0 + 1e-5)


def test_record_refuses_existing_output(tmp_path):
    (tmp_path / 'out').mkdir()
    result = subprocess.run(_cli('record', str(tmp_path / 'out'), '--topics', '/x'),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert 'exists already, not overwriting' in result.stderr
