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

"""The camera topic, named as image_transport names it, and why no image may be arriving.

image_transport publishes ``<base>`` (``sensor_msgs/Image``) and ``<base>/compressed``
(``CompressedImage``); the node is remapped to the base (``image:=/camera/image_raw``) and adds
``/compressed`` itself when ``compressed`` is true. DDS matches nothing when the types differ,
silently; :func:`input_problem` turns the ROS graph into a sentence for the logs and
``/diagnostics``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

COMPRESSED_SUFFIX = '/compressed'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'


def image_topic(base: str, compressed: bool) -> str:
    """Return the topic to subscribe: ``base``, or ``base/compressed`` for CompressedImage.

    A base already ending in ``/compressed`` is kept, so older configurations that named the
    compressed topic directly keep working.
    """
    if compressed and not base.endswith(COMPRESSED_SUFFIX):
        return base.rstrip('/') + COMPRESSED_SUFFIX
    return base


def sibling_topic(topic: str, compressed: bool) -> str:
    """Return the topic the other transport would use (raw <-> compressed)."""
    if compressed:
        return topic[:-len(COMPRESSED_SUFFIX)] if topic.endswith(COMPRESSED_SUFFIX) else topic
    return topic.rstrip('/') + COMPRESSED_SUFFIX


def input_problem(topic: str, compressed: bool,
                  publisher_types: Mapping[str, Sequence[str]]) -> str | None:
    """Explain why ``topic`` delivers no image, or None when nothing is wrong (as far as seen).

    ``publisher_types`` maps a topic to the message types of its publishers (ROS graph).
    """
    expected = COMPRESSED_TYPE if compressed else IMAGE_TYPE
    flag = 'compressed:=true' if not compressed else 'compressed:=false'
    wrong = sorted({t for t in publisher_types.get(topic, ()) if t != expected})
    if wrong:
        hint = f' (set {flag})' if set(wrong) & {IMAGE_TYPE, COMPRESSED_TYPE} else ''
        return (f'wrong message type on {topic}: published as {", ".join(wrong)}, the node '
                f'subscribes {expected}{hint}')
    other = sibling_topic(topic, compressed)
    if other != topic and not publisher_types.get(topic):
        offered = sorted(publisher_types.get(other, ()))
        if offered:
            return (f'no publisher on {topic}, but {other} publishes {", ".join(offered)}: '
                    f'set {flag} (image_transport names: <image>, <image>/compressed)')
    return None
