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

"""Camera topic names (image_transport) and the input diagnosis from the ROS graph."""

from __future__ import annotations

import pytest
from vpr_ros.ros.inputs import (COMPRESSED_TYPE, image_topic, IMAGE_TYPE, input_problem,
                                sibling_topic)


@pytest.mark.parametrize('base, compressed, topic', [
    ('/camera/image_raw', False, '/camera/image_raw'),
    ('/camera/image_raw', True, '/camera/image_raw/compressed'),
    ('/camera/image_raw/compressed', True, '/camera/image_raw/compressed'),  # older configs
    ('/robot1/image', True, '/robot1/image/compressed'),
])
def test_image_topic_follows_image_transport(base, compressed, topic):
    assert image_topic(base, compressed) == topic


def test_sibling_topic():
    assert sibling_topic('/cam/image_raw', False) == '/cam/image_raw/compressed'
    assert sibling_topic('/cam/image_raw/compressed', True) == '/cam/image_raw'


def test_input_problem_names_the_type_and_the_fix():
    assert input_problem('/cam', False, {'/cam': [IMAGE_TYPE]}) is None
    assert input_problem('/cam', False, {}) is None   # no camera yet: 'waiting for images'
    assert input_problem('/cam', False, {'/cam': [COMPRESSED_TYPE]}) == (
        'wrong message type on /cam: published as sensor_msgs/msg/CompressedImage, the node '
        'subscribes sensor_msgs/msg/Image (set compressed:=true)')
    assert input_problem('/cam/compressed', True, {'/cam/compressed': [IMAGE_TYPE]}).endswith(
        '(set compressed:=false)')
    odd = input_problem('/cam', False, {'/cam': ['std_msgs/msg/String']})
    assert 'std_msgs/msg/String' in odd and 'set compressed' not in odd


def test_input_problem_points_at_the_other_transport():
    text = input_problem('/cam/compressed', True, {'/cam': [IMAGE_TYPE]})
    assert text.startswith('no publisher on /cam/compressed, but /cam publishes '
                           'sensor_msgs/msg/Image: set compressed:=false')
    text = input_problem('/cam', False, {'/cam/compressed': [COMPRESSED_TYPE]})
    assert 'set compressed:=true' in text
