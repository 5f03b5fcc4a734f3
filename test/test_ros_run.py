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

"""run_node: the one start/spin/teardown path of both localizer executables, with real rclpy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

SCRIPT = r"""
import json, sys
from rclpy.node import Node
from vpr_ros.errors import ConfigError
from vpr_ros.ros.run import run_node
from vpr_ros.ros.stop import StopSignals

events = []


class Probe(Node):
    def __init__(self):
        super().__init__('run_node_probe')
        events.append('built')

    def destroy_node(self):
        events.append('destroyed')
        return super().destroy_node()


def close(node):
    events.append('closed')


def bad_map():
    raise ConfigError('parameter map is not set')


def stop_after_three_ticks(node):
    # a stop request that a timer of the node makes on its third tick
    stop = StopSignals()
    ticks = []

    def tick():
        ticks.append(1)
        events.append('tick')
        if len(ticks) == 3:
            stop.request()

    node.create_timer(0.01, tick)
    return stop


class Later:
    # the stop request of the node once it is built (before that: none)

    stop = None

    @property
    def requested(self):
        return self.stop is not None and self.stop.requested


def probe_that_stops(later):
    def make():
        node = Probe()
        later.stop = stop_after_three_ticks(node)
        return node
    return make


name = sys.argv[1]
kwargs = {'stop': StopSignals()}
if name == 'stop_before_build':
    kwargs['stop'].request()
    kwargs['make_node'] = Probe
elif name == 'build_fails':
    kwargs['make_node'] = bad_map
elif name == 'start_fails':
    kwargs.update(make_node=Probe, start=lambda node: 'configure failed')
else:
    kwargs['stop'] = Later()
    kwargs.update(make_node=probe_that_stops(kwargs['stop']), start=lambda node: None)
code = run_node(args=[], close=close, **kwargs)
print(json.dumps({'code': code, 'events': events}), flush=True)
"""


@pytest.mark.parametrize('case, code, events, error', [
    ('stop_before_build', 0, [], None),
    ('build_fails', 1, [], 'parameter map is not set'),
    ('start_fails', 1, ['built', 'closed', 'destroyed'], 'configure failed'),
    ('spins_until_stopped', 0, ['built', 'tick', 'tick', 'tick', 'closed', 'destroyed'], None),
])
def test_run_node_starts_spins_and_tears_down_in_order(case, code, events, error):
    """Each case in a process of its own: rclpy's default context is initialised once."""
    out = subprocess.run([sys.executable, '-c', SCRIPT, case], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {'code': code, 'events': events}
    if error:
        assert f'vpr_ros localizer: error: {error}' in out.stderr
    else:
        assert 'error' not in out.stderr


def test_end_process_flushes_output_and_skips_the_interpreter_teardown():
    # The localizer executable ends this way once stopped: the exit code and everything printed
    # must survive (stdout is a pipe here, so block-buffered), the interpreter teardown (atexit,
    # module and extension destructors: 1.3 s with torch and DDS loaded) must not run.
    code = ('import atexit\n'
            'from vpr_ros.ros.compat import ros_session\n'
            'from vpr_ros.ros.entry import end_process\n'
            "atexit.register(lambda: print('interpreter teardown ran', flush=True))\n"
            'with ros_session([]):\n'
            '    pass\n'
            "print('stopped', end='')\n"
            'end_process(3)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3, out.stderr
    assert out.stdout == 'stopped'
    assert 'Traceback' not in out.stderr
