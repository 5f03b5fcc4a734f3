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

"""ament_python package: installs the library, the CLI, the node, launch and config files."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'vpr_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'bench.*']),
    package_data={package_name: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    python_requires='>=3.10',
    install_requires=['setuptools'],
    # ray: build-map --ray (distributed map building); the robot never needs it.
    extras_require={'test': ['pytest'], 'ray': ['ray>=2.40']},
    zip_safe=False,
    maintainer='vpr_ros maintainers',
    maintainer_email='vpr-ros-maintainers@example.com',
    description='Visual place recognition for ROS 2: camera images in, calibrated NavSatFix out.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'vpr-ros = vpr_ros.cli:main',
            'localizer = vpr_ros.ros.entry:localizer',
        ],
    },
)
