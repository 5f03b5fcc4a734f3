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

"""The package as ROS sees it: ros2 run, ros2 launch, parameters, colcon build and test."""

from __future__ import annotations

import os
from pathlib import Path
import re
import shutil
import signal
import subprocess
import sys
import time

from node_helpers import PUBLISHER
import pytest
from ros_harness import Process, wait_for_message

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ros


def _require(exe: str) -> str:
    path = shutil.which(exe)
    if path is None:
        pytest.skip(f'{exe} not installed (ROS 2 CLI from ../shared/vendor or a ROS distro)')
    return path


def test_package_is_in_the_ament_index():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory('vpr_ros'))
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'localize.launch.py').is_file()
    assert (share / 'config' / 'localize.yaml').is_file()


@pytest.mark.parametrize('launcher, sig', [
    (('ros2', 'run', 'vpr_ros', 'localizer'), signal.SIGINT),  # as `ros2 run` users stop it
    (('localizer',), signal.SIGTERM),                          # as process managers stop it
])
def test_node_starts_and_stops_cleanly(tmp_path, tiny_map, launcher, sig):
    exe = _require(launcher[0])
    cmd = [exe, *launcher[1:], '--ros-args', '-p', 'device:=cpu', '-p', f'map:={tiny_map.path}']
    with Process(cmd, tmp_path / 'node.log') as proc:
        assert proc.wait_for_output('localizer started on cpu', timeout=180), proc.output()
        rc = proc.stop(sig)
    assert rc == 0, proc.output()
    assert 'Traceback' not in proc.output()


def test_node_rejects_a_bad_device(tmp_path):
    exe = _require('localizer')
    out = subprocess.run([exe, '--ros-args', '-p', 'device:=tpu'], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "unknown device 'tpu'" in out.stderr


def test_ros2_launch_localizes_an_injected_image_and_stops_on_sigint(
        tmp_path, tiny_map, rclpy_context):
    import rclpy
    from sensor_msgs.msg import NavSatFix

    ros2 = _require('ros2')
    cmd = [ros2, 'launch', 'vpr_ros', 'localize.launch.py', f'map:={tiny_map.path}',
           'device:=cpu', 'image_topic:=/test_cam/image_raw', 'namespace:=robot1']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    with Process(cmd, tmp_path / 'launch.log', env=env) as launch:
        assert launch.wait_for_output('localizer started on cpu', timeout=180), launch.output()
        param = subprocess.run(
            [ros2, 'param', 'get', '--no-daemon', '--spin-time', '5',
             '/robot1/vpr_localizer', 'localizer.top_k'], capture_output=True, text=True,
            timeout=60)
        info = subprocess.run(
            [ros2, 'topic', 'info', '--no-daemon', '--spin-time', '5', '/test_cam/image_raw'],
            capture_output=True, text=True, timeout=60)
        image = str(tiny_map.images / tiny_map.frames[9]['name'])
        with Process([sys.executable, '-c', PUBLISHER, '/test_cam/image_raw', '0.5', 'raw',
                      image], tmp_path / 'camera.log', env=env):
            node = rclpy.create_node('test_launch_listener', context=rclpy_context)
            fix = wait_for_message(node, NavSatFix, '/robot1/vpr/fix', timeout=120)
            node.destroy_node()
        start = time.monotonic()
        rc = launch.stop(signal.SIGINT, timeout=30)
        took = time.monotonic() - start
    assert param.returncode == 0, param.stderr
    assert param.stdout.strip() == 'Integer value is: 10'
    assert 'Subscription count: 1' in info.stdout, info.stdout + info.stderr
    assert fix.header.stamp.sec == 1000 and fix.header.frame_id == 'vpr_camera'
    assert rc == 0, launch.output()
    assert took < 5.0, f'SIGINT took {took:.1f} s'
    assert 'Traceback' not in launch.output()


def test_ros2_launch_exits_non_zero_when_the_node_fails(tmp_path):
    ros2 = _require('ros2')
    out = subprocess.run([ros2, 'launch', 'vpr_ros', 'localize.launch.py',
                          'map:=/nonexistent/route.vprmap', 'device:=cpu'],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert '/nonexistent/route.vprmap does not exist' in text
    assert 'the vpr_ros localizer (localizer-1) exited with code 1' in text


def _launch_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location('localize_launch',
                                                  REPO / 'launch' / 'localize.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launched(**arguments):
    """Run the launch file's logic with ``arguments``; return {executable: its arguments}."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import TextSubstitution

    context = LaunchContext()
    context.launch_configurations.update(arguments)
    actions = []
    for entity in _launch_module().generate_launch_description().entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)   # sets the defaults of the arguments not given
        elif isinstance(entity, OpaqueFunction):
            actions += entity.execute(context)
    nodes = {}
    for action in actions:
        if hasattr(action, 'node_executable'):
            cmd = action.process_description.cmd[1:]
            nodes[f'{action.node_package}/{action.node_executable}'] = [
                ''.join(s.text for s in part) for part in cmd
                if all(isinstance(s, TextSubstitution) for s in part)]
    return nodes


def test_launch_arguments_lifecycle_and_camera_tf(tmp_path):
    pytest.importorskip('launch_ros')
    plain = _launched(map='/m.vprmap')
    assert list(plain) == ['vpr_ros/localizer']
    assert '--lifecycle' not in plain['vpr_ros/localizer']
    managed = _launched(map='/m.vprmap', lifecycle='true', autostart='true')
    assert managed['vpr_ros/localizer'][:2] == ['--lifecycle', '--autostart']
    assert _launched(lifecycle='true')['vpr_ros/localizer'][:2] == ['--lifecycle', '--ros-args']
    # camera_tf: base_link -> the fixes' frame_id, from the argument, the params file or the
    # node default, in that order.
    tf = 'tf2_ros/static_transform_publisher'
    nodes = _launched(camera_tf='0.1 0 0.5 1.5708 0 0')
    assert nodes[tf][:16] == ['--x', '0.1', '--y', '0.0', '--z', '0.5', '--yaw', '1.5708',
                              '--pitch', '0.0', '--roll', '0.0', '--frame-id', 'base_link',
                              '--child-frame-id', 'vpr_camera']
    params = tmp_path / 'p.yaml'
    params.write_text('/**:\n  ros__parameters:\n    frame_id: "front_cam"\n')
    nodes = _launched(camera_tf='0 0 1 0 0 0', params_file=str(params), base_frame='chassis')
    assert nodes[tf][12:16] == ['--frame-id', 'chassis', '--child-frame-id', 'front_cam']
    nodes = _launched(camera_tf='0 0 1 0 0 0', params_file=str(params), frame_id='cam2')
    assert nodes[tf][15] == 'cam2'
    with pytest.raises(ValueError, match='6 numbers'):
        _launched(camera_tf='0 0 1')


@pytest.mark.slow
def test_colcon_build_and_test_in_a_scratch_workspace(tmp_path):
    colcon = _require('colcon')
    src = tmp_path / 'ws' / 'src' / 'vpr_ros'
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    if not files:
        pytest.skip('not a git checkout')
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    ws = tmp_path / 'ws'
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    build = subprocess.run([colcon, 'build', '--base-paths', 'src'], cwd=ws, env=env,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    install = ws / 'install' / 'vpr_ros'
    for exe in ('localizer', 'vpr-ros'):
        assert os.access(install / 'lib' / 'vpr_ros' / exe, os.X_OK), exe
    for name in ('package.xml', 'launch/localize.launch.py', 'config/localize.yaml'):
        assert (install / 'share' / 'vpr_ros' / name).is_file(), name
    assert (install / 'share' / 'ament_index' / 'resource_index' / 'packages'
            / 'vpr_ros').is_file()
    # The README's distro recipe: source the workspace, the CLI through `ros2 run`.
    if shutil.which('ros2'):
        doctor = subprocess.run(
            ['bash', '-c', 'source install/setup.bash && ros2 run vpr_ros vpr-ros doctor && '
             'ros2 run vpr_ros localizer --ros-args -p device:=tpu'],
            cwd=ws, env=env, capture_output=True, text=True, timeout=300)
        assert re.match(r'vpr_ros +0\.1\.0\n', doctor.stdout), doctor.stdout + doctor.stderr
        assert str(ws / 'install' / 'vpr_ros') in doctor.stdout   # AMENT_PREFIX_PATH
        assert doctor.returncode == 1 and "unknown device 'tpu'" in doctor.stderr
    test = subprocess.run([colcon, 'test', '--base-paths', 'src', '--pytest-args',
                           'test/test_config.py', 'test/test_linters.py'],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert test.returncode == 0, test.stdout + test.stderr
    result = subprocess.run([colcon, 'test-result', '--all', '--verbose'], cwd=ws, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '0 errors, 0 failures' in result.stdout, result.stdout
