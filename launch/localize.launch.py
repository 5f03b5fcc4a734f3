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

"""Start the vpr_ros localizer: ``ros2 launch vpr_ros localize.launch.py map:=route.vprmap``."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    """Declare the arguments and the one localizer node."""
    default_params = os.path.join(
        get_package_share_directory('vpr_ros'), 'config', 'localize.yaml')
    args = [
        DeclareLaunchArgument('map', default_value='',
                              description='path of the .vprmap directory'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='YAML file with the node parameters'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw',
                              description='camera topic (raw Image or CompressedImage)'),
        DeclareLaunchArgument('compressed', default_value='false',
                              description='subscribe to sensor_msgs/CompressedImage'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='compute device: auto, cpu, cuda, cuda:N'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (rosbag playback with --clock)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='logging level of the node'),
    ]

    node = Node(
        package='vpr_ros',
        executable='localizer',
        name='vpr_localizer',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[
            LaunchConfiguration('params_file'),
            {
                'map': LaunchConfiguration('map'),
                'device': LaunchConfiguration('device'),
                'compressed': LaunchConfiguration('compressed'),
                'use_sim_time': LaunchConfiguration('use_sim_time'),
            },
        ],
        # The node subscribes to `image`; with compressed:=true give the CompressedImage topic.
        remappings=[('image', LaunchConfiguration('image_topic'))],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
    )
    return LaunchDescription(args + [node])
