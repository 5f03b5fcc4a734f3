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

"""SIGINT and SIGTERM at random moments end the node, play and record with 0, no traceback.

Each run starts the program, waits a random time (during start-up, or once it is busy with a
30 Hz camera or bag) and sends one signal. The seed is printed; ``VPR_ROS_SIGNAL_RUNS`` sets the
runs per signal (default 20 for the node, half that for play and record).
"""

from __future__ import annotations

import os
from pathlib import Path
import random
import re
import shutil
import signal
import sys
import time

from node_helpers import PUBLISHER
import numpy as np
import pytest
from ros_harness import Process

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RUNS = int(os.environ.get('VPR_ROS_SIGNAL_RUNS', '20'))
SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_TIMEOUT_S = 120   # a signal during start-up is answered once the step in progress ends
#: Earliest signal after the process starts (s): before it, the interpreter has not run our
#: first line yet and SIGTERM's default action (terminate) applies, as for any Python program.
EARLIEST_S = 0.3


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1')


def _bad(rc: int, out: str) -> bool:
    return rc != 0 or 'Traceback' in out or 'RCLError' in out


def _run(cmd: list[str], log: Path, sig: int, delay_s: float, ready: str | None = None,
         ready_timeout_s: float = 180.0) -> tuple[int, str, float]:
    """Start ``cmd``, wait (for ``ready`` then) ``delay_s``, send ``sig``; return rc, output."""
    with Process(cmd, log, env=_env()) as proc:
        start = time.monotonic()
        if ready is not None:
            assert proc.wait_for_output(ready, ready_timeout_s), proc.output()
        ready_s = time.monotonic() - start
        time.sleep(delay_s)
        rc = proc.stop(sig, timeout=STOP_TIMEOUT_S)
    return rc, proc.output(), ready_s


def _report(name: str, seed: int, results: list[tuple]) -> list[tuple]:
    bad = [r for r in results if r[-1]]
    print(f'{name}: seed {seed}, {len(results)} runs, {len(bad)} bad exits')
    return bad


def test_node_exits_0_on_signals_at_random_moments(tiny_map, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    localizer = shutil.which('localizer')
    if localizer is None:
        pytest.skip('localizer not on PATH (run through scripts/env.sh)')
    cmd = [localizer, '--ros-args', '-p', f'map:={tiny_map.path}', '-p', 'device:=cpu',
           '-r', 'image:=/signal_cam']
    frame = str(tiny_map.images / tiny_map.frames[4]['name'])
    results = []
    with Process([sys.executable, '-c', PUBLISHER, '/signal_cam', str(1 / 30), 'raw', frame],
                 tmp_path / 'camera.log', env=_env()):
        # The first run measures how long start-up takes; start-up signals fall inside it.
        _, out, startup_s = _run(cmd, tmp_path / 'first.log', signal.SIGINT, 1.0,
                                 ready='localizer started on')
        assert not _bad(0, out), out
        for i in range(RUNS * len(SIGNALS)):
            sig = SIGNALS[i % 2]
            busy = i % 4 >= 2
            delay = rng.uniform(0.0, 2.0) if busy else rng.uniform(EARLIEST_S, startup_s)
            # Busy: from the first camera image on (discovery can outlast a short delay).
            rc, out, _ = _run(cmd, tmp_path / f'node{i}.log', sig, delay,
                              ready='first image received on' if busy else None)
            received = re.search(r'(\d+) frames received', out)
            worked = not busy or (received is not None and int(received.group(1)) > 0)
            results.append((sig.name, 'busy' if busy else 'start-up', round(delay, 2), rc,
                            out[-2000:] if _bad(rc, out) or not worked else '',
                            _bad(rc, out) or not worked))
    bad = _report(f'localizer (start-up {startup_s:.1f} s)', seed, results)
    assert not bad, bad


def _fix_bag(path: Path, n: int = 90) -> None:
    from vpr_ros import bags

    cls = bags.message_class(bags.FIX_TYPE)
    header = bags.message_class('std_msgs/msg/Header')
    stamp = bags.message_class('builtin_interfaces/msg/Time')
    status = bags.message_class('sensor_msgs/msg/NavSatStatus')
    with bags.BagWriter(path) as writer:
        for i in range(n):
            t = 1_700_000_000 * 10 ** 9 + i * 33_333_333
            sec, nanosec = divmod(t, 10 ** 9)
            msg = cls(header=header(stamp=stamp(sec=sec, nanosec=nanosec), frame_id='gnss'),
                      status=status(status=0, service=1), latitude=45.0, longitude=7.0,
                      altitude=1.0, position_covariance=np.eye(3).ravel(),
                      position_covariance_type=2)
            writer.write_message('/signal_fix', t, msg)


def _cli(*args) -> list[str]:
    return [sys.executable, '-m', 'vpr_ros.cli', *map(str, args)]


def test_play_and_record_exit_0_on_signals_at_random_moments(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    runs = max(1, RUNS // 2)
    _fix_bag(tmp_path / 'bag')
    results = {'play': [], 'record': []}
    for i in range(runs * len(SIGNALS)):
        sig = SIGNALS[i % 2]
        delay = rng.uniform(EARLIEST_S, 4.0)
        rc, out, _ = _run(_cli('play', tmp_path / 'bag', '--loop', '--no-progress'),
                          tmp_path / f'play{i}.log', sig, delay)
        results['play'].append((sig.name, round(delay, 2), rc, out[-2000:],
                                _bad(rc, out) or 'played' not in out))
    # The recorder records the player's 30 Hz loop.
    with Process(_cli('play', tmp_path / 'bag', '--loop', '--no-progress'),
                 tmp_path / 'source.log', env=_env()) as source:
        for i in range(runs * len(SIGNALS)):
            sig = SIGNALS[i % 2]
            delay = rng.uniform(EARLIEST_S, 4.0)
            out_bag = tmp_path / f'rec{i}'
            rc, out, _ = _run(_cli('record', out_bag, '--topics', '/signal_fix'),
                              tmp_path / f'record{i}.log', sig, delay)
            results['record'].append((sig.name, round(delay, 2), rc, out[-2000:],
                                      _bad(rc, out) or 'recorded' not in out))
        assert source.stop(signal.SIGINT) == 0, source.output()
    bad = _report('play', seed, results['play']) + _report('record', seed, results['record'])
    assert not bad, bad
