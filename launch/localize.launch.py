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
arguments ``map``, ``device`` and ``compressed`` override it only when given, so a value set in
your own params file is not silently replaced by a launch default.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

TRUE = ('true', '1', 'yes', 'on')


def _node(context, *args, **kwargs):
    """Build the node once the arguments are known (overrides only for the given ones)."""
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {'use_sim_time': arg('use_sim_time').lower() in TRUE}
    for name in ('map', 'device'):
        if arg(name):
            overrides[name] = arg(name)   # a str, even when it looks like a number
    if arg('compressed'):
        overrides['compressed'] = arg('compressed').lower() in TRUE
    return [Node(
        package='vpr_ros',
        executable='localizer',
        name='vpr_localizer',
        namespace=arg('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[arg('params_file'), overrides],   # later entries win
        # The node subscribes to `image`; with compressed:=true give the CompressedImage topic.
        remappings=[('image', arg('image_topic'))],
        arguments=['--ros-args', '--log-level', arg('log_level')],
    )]


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
                              description='camera topic (raw Image, or CompressedImage with '
                                          'compressed:=true, e.g. /camera/image_raw/compressed)'),
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
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
