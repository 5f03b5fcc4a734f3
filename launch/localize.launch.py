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

"""Start the vpr_ros localizer: ``ros2 launch vpr_ros localize.launch.py map:=route.vprmap``.

Parameters come from ``params_file`` (default: the installed ``config/localize.yaml``); the
arguments ``map``, ``device``, ``compressed`` and ``frame_id`` override it only when given, so a
value set in your own params file is not silently replaced by a launch default.
``lifecycle:=true`` runs the managed node (``autostart:=true`` configures and activates it);
``camera_tf:='x y z yaw pitch roll'`` also publishes the static TF ``base_frame`` -> the fixes'
``frame_id`` (tf2_ros static_transform_publisher), which navsat_transform needs. The launch
exits non-zero when the node fails.
"""

import os


from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
import yaml

TRUE = ('true', '1', 'yes', 'on')
DEFAULT_FRAME_ID = 'vpr_camera'   # NodeConfig.frame_id


def static_tf_arguments(camera_tf, base_frame, frame_id):
    """Return static_transform_publisher's arguments for 'x y z yaw pitch roll' (m, rad)."""
    values = camera_tf.replace(',', ' ').split()
    if len(values) != 6:
        raise ValueError(f"camera_tf: expected 'x y z yaw pitch roll' (6 numbers), got "
                         f'{camera_tf!r}')
    numbers = [str(float(v)) for v in values]
    names = ('--x', '--y', '--z', '--yaw', '--pitch', '--roll')
    args = [item for pair in zip(names, numbers) for item in pair]
    return args + ['--frame-id', base_frame, '--child-frame-id', frame_id]


def params_file_value(path, name):
    """Return parameter ``name`` from a ROS params file (any node section), or None."""
    try:
        with open(path) as stream:
            data = yaml.safe_load(stream) or {}
    except OSError:
        return None
    for section in data.values():
        params = (section or {}).get('ros__parameters', {}) if isinstance(section, dict) else {}
        if name in params:
            return params[name]
    return None


def _node(context, *args, **kwargs):
    """Build the node (and the camera TF) once the arguments are known."""
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {'use_sim_time': arg('use_sim_time').lower() in TRUE}
    for name in ('map', 'device', 'frame_id'):
        if arg(name):
            overrides[name] = arg(name)   # a str, even when it looks like a number
    if arg('compressed'):
        overrides['compressed'] = arg('compressed').lower() in TRUE
    lifecycle = []
    if arg('lifecycle').lower() in TRUE:
        lifecycle = ['--lifecycle'] + (['--autostart'] if arg('autostart').lower() in TRUE
                                       else [])
    node = Node(
        package='vpr_ros',
        executable='localizer',
        name='vpr_localizer',
        namespace=arg('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[arg('params_file'), overrides],   # later entries win
        # The node subscribes to `image` (the image_transport base; `image/compressed` with
        # compressed:=true), so one remap serves both transports.
        remappings=[('image', arg('image_topic'))],
        arguments=lifecycle + ['--ros-args', '--log-level', arg('log_level')],
    )
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_exit))]
    if arg('camera_tf'):
        frame_id = (arg('frame_id') or params_file_value(arg('params_file'), 'frame_id')
                    or DEFAULT_FRAME_ID)
        actions.append(Node(
            package='tf2_ros', executable='static_transform_publisher',
            name='vpr_camera_tf', namespace=arg('namespace'), output='screen',
            arguments=static_tf_arguments(arg('camera_tf'), arg('base_frame'), frame_id)))
    return actions


def _on_exit(event, context):
    """End the launch with the node; a failed node makes `ros2 launch` exit non-zero."""
    if event.returncode != 0:
        # launch logs the message and returns 1 for an exception raised in a handler.
        raise RuntimeError(f'the vpr_ros localizer ({event.action.name}) exited with code '
                           f'{event.returncode}; see its error above')
    return [Shutdown(reason='the vpr_ros localizer exited')]


def generate_launch_description():
    """Declare the arguments and the one localizer node."""
    default_params = os.path.join(
        get_package_share_directory('vpr_ros'), 'config', 'localize.yaml')
    args = [
        DeclareLaunchArgument('map', default_value='',
                              description='path of the .vprmap directory (required here or in '
                                          'params_file)'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='YAML file with the node parameters'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw',
                              description='camera topic, as image_transport names it: the '
                                          'node subscribes <image_topic> (Image), or '
                                          '<image_topic>/compressed with compressed:=true'),
        DeclareLaunchArgument('compressed', default_value='',
                              description='true: subscribe to sensor_msgs/CompressedImage '
                                          '(default: the params file value, false)'),
        DeclareLaunchArgument('device', default_value='',
                              description='compute device: auto, cpu, cuda, cuda:N (default: '
                                          'the params file value, auto)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node; fixes go to '
                                          '<namespace>/vpr/fix'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (rosbag playback with --clock)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='logging level of the node (debug logs every fix)'),
        DeclareLaunchArgument('frame_id', default_value='',
                              description='header.frame_id of the fixes, the camera frame '
                                          '(default: the params file value, vpr_camera)'),
        DeclareLaunchArgument('lifecycle', default_value='false',
                              description='true: run the managed (lifecycle) node'),
        DeclareLaunchArgument('autostart', default_value='false',
                              description='with lifecycle:=true, configure and activate at '
                                          'once (else a lifecycle manager drives it)'),
        DeclareLaunchArgument('camera_tf', default_value='',
                              description="'x y z yaw pitch roll' (m, rad) of the camera in "
                                          'base_frame: also publish that static TF'),
        DeclareLaunchArgument('base_frame', default_value='base_link',
                              description='parent frame of camera_tf (the robot body)'),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
