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

"""The managed node driven through its lifecycle services, as a lifecycle manager does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from node_helpers import PUBLISHER
import pytest
from ros_harness import Process

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = '/vpr_localizer'
STARTUP_S = 180


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1')


def _exe() -> str:
    path = shutil.which('localizer')
    if path is None:
        pytest.skip('localizer not on PATH (run through scripts/env.sh)')
    return path


class Lifecycle:
    """Client of a node's lifecycle services (get_state, change_state)."""

    def __init__(self, node, target: str) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self.node = node
        self.get = node.create_client(GetState, f'{target}/get_state')
        self.change = node.create_client(ChangeState, f'{target}/change_state')
        assert self.get.wait_for_service(timeout_sec=STARTUP_S), 'no get_state service'

    def _call(self, client, request, timeout: float = STARTUP_S):
        from rclpy.executors import SingleThreadedExecutor

        future = client.call_async(request)
        executor = SingleThreadedExecutor(context=self.node.context)
        executor.add_node(self.node)
        try:
            executor.spin_until_future_complete(future, timeout_sec=timeout)
        finally:
            executor.remove_node(self.node)
            executor.shutdown()
        assert future.done(), f'{client.srv_name} timed out'
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self._call(self.change, request).success


def _subscribers(node, topic: str) -> int:
    time.sleep(1.0)   # let discovery catch up with a (dis)appearing subscription
    return node.count_subscribers(topic)


def test_configure_activate_deactivate_cleanup_through_the_services(
        tiny_map, rclpy_context, tmp_path):
    import rclpy
    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import NavSatFix
    from test_ros_node import collect

    cmd = [_exe(), '--lifecycle', '--ros-args', '-p', f'map:={tiny_map.path}',
           '-p', 'device:=cpu', '-r', 'image:=/lc_cam']
    frame = str(tiny_map.images / tiny_map.frames[11]['name'])
    with Process(cmd, tmp_path / 'node.log', env=_env()) as proc, \
            Process([sys.executable, '-c', PUBLISHER, '/lc_cam', '0.3', 'raw', frame],
                    tmp_path / 'camera.log', env=_env()):
        node = rclpy.create_node('test_lifecycle_manager', context=rclpy_context)
        lc = Lifecycle(node, NODE)
        assert lc.state() == 'unconfigured'
        assert 'configure opens the map' in proc.output()
        assert _subscribers(node, '/lc_cam') == 0

        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == 'inactive'
        assert 'map route.vprmap (30 places)' in proc.output()
        assert _subscribers(node, '/lc_cam') == 0      # configured, not yet subscribed

        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        assert lc.state() == 'active'
        fixes = collect(node, NavSatFix, '/vpr/fix', bool, timeout=120)
        assert fixes and fixes[0].header.stamp.sec == 1000, proc.output()
        assert _subscribers(node, '/lc_cam') == 1

        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.state() == 'inactive'
        assert _subscribers(node, '/lc_cam') == 0
        late = collect(node, NavSatFix, '/vpr/fix', lambda got: False, timeout=3)
        assert late == []                              # deactivated: no fix any more

        assert lc.transition(Transition.TRANSITION_CLEANUP)
        assert lc.state() == 'unconfigured'
        assert 'cleaned up: map and model freed' in proc.output()
        # Configure again after cleanup: the map is opened anew.
        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == 'inactive'
        node.destroy_node()
        rc = proc.stop(signal.SIGTERM)
    assert rc == 0, proc.output()
    assert 'Traceback' not in proc.output()


def test_configure_fails_cleanly_on_a_missing_map(rclpy_context, tmp_path):
    import rclpy
    from lifecycle_msgs.msg import Transition

    cmd = [_exe(), '--lifecycle', '--ros-args', '-p', 'map:=/nonexistent/route.vprmap']
    with Process(cmd, tmp_path / 'node.log', env=_env()) as proc:
        node = rclpy.create_node('test_lifecycle_manager2', context=rclpy_context)
        lc = Lifecycle(node, NODE)
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == 'unconfigured'
        node.destroy_node()
        assert proc.stop(signal.SIGINT) == 0
    assert 'configure failed: parameter map: /nonexistent/route.vprmap does not exist' in \
        proc.output()


def test_autostart_runs_at_once_and_exits_1_on_a_bad_map(tiny_map, tmp_path):
    bad = subprocess.run([_exe(), '--lifecycle', '--autostart', '--ros-args', '-p',
                          'map:=/nonexistent/route.vprmap'], capture_output=True, text=True,
                         timeout=STARTUP_S, env=_env())
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'vpr_ros localizer: error: parameter map: /nonexistent' in bad.stderr
    cmd = [_exe(), '--lifecycle', '--autostart', '--ros-args', '-p', f'map:={tiny_map.path}',
           '-p', 'device:=cpu']
    with Process(cmd, tmp_path / 'node.log', env=_env()) as proc:
        assert proc.wait_for_output('localizer started on cpu', STARTUP_S), proc.output()
        assert '(lifecycle: active)' in proc.output()
        rc = proc.stop(signal.SIGINT)
    assert rc == 0, proc.output()
    assert 'Traceback' not in proc.output()
