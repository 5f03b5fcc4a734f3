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

"""QoS profiles of the localizer node.

Camera input: sensor-data QoS (best effort, keep last 5), which every camera driver offers; a
best-effort reader also takes a reliable writer. ``/vpr/fix``: reliable, keep last 10, which both
reliable and best-effort readers (robot_localization's navsat_transform) accept.
"""

from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)

from vpr_ros.errors import ConfigError

FIX_DEPTH = 10
DIAGNOSTICS_DEPTH = 10


def image_qos(reliability: str = 'best_effort') -> QoSProfile:
    """Return the camera subscription QoS: sensor data, or the same depth but reliable."""
    if reliability == 'best_effort':
        return qos_profile_sensor_data
    if reliability == 'reliable':
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_profile_sensor_data.depth,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    raise ConfigError(f'image reliability {reliability!r} is not best_effort or reliable')


def fix_qos() -> QoSProfile:
    """Return the QoS of ``vpr/fix`` and ``vpr/pose``: reliable, volatile, keep last 10."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=FIX_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def diagnostics_qos() -> QoSProfile:
    """Return the QoS of ``/diagnostics`` (as diagnostic_updater and the aggregator use)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DIAGNOSTICS_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE)
