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

"""The robot_localization recipe: /vpr/fix as navsat_transform reads it, and its config file.

navsat_transform_node (cra-ros-pkg/robot_localization, src/navsat_transform.cpp,
``gpsFixCallback``) reads ``header.frame_id`` (looked up in TF from base_link), ``header.stamp``,
``status.status`` (a fix unless STATUS_NO_FIX), latitude/longitude/altitude (all non-NaN, else
the fix is dropped silently) and ``position_covariance`` (ENU, row-major, used as it is: zero
means perfect to the EKF). :func:`navsat_transform_accepts` restates that check.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _estimate(status='fix', lat=47.3770, lon=8.5418, alt=410.0, sigma=4.0):
    from vpr_ros.localizer import Estimate

    return Estimate(lat, lon, alt, np.diag([sigma ** 2, sigma ** 2, 1e4]), status, 0.8, sigma,
                    (), {'score': 0.8})


def navsat_transform_accepts(msg) -> bool:
    """Return True when navsat_transform uses the fix (its gpsFixCallback condition)."""
    from sensor_msgs.msg import NavSatStatus

    return (msg.status.status != NavSatStatus.STATUS_NO_FIX and not math.isnan(msg.altitude)
            and not math.isnan(msg.latitude) and not math.isnan(msg.longitude))


def test_every_field_navsat_transform_reads_is_set():
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import NavSatStatus
    from vpr_ros.ros.messages import navsat_fix
    from vpr_ros.ros.params import NodeConfig

    frame = NodeConfig().frame_id
    stamp = Time(sec=1700000000, nanosec=250_000_000)
    msg = navsat_fix(_estimate(), stamp, frame)
    assert navsat_transform_accepts(msg)
    assert msg.header.frame_id == 'vpr_camera' != ''     # TF: base_link -> vpr_camera
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1700000000, 250_000_000)
    assert msg.status.status == NavSatStatus.STATUS_FIX  # never the default STATUS_UNKNOWN
    cov = np.asarray(msg.position_covariance).reshape(3, 3)
    assert np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0)
    np.testing.assert_allclose(cov, cov.T)
    assert cov[0, 0] == cov[1, 1] == 16.0                 # east, north: sigma 4 m
    # No altitude in the map: still a finite altitude (with a huge vertical variance), so
    # navsat_transform keeps the fix.
    no_alt = navsat_fix(_estimate(alt=float('nan')), stamp, frame)
    assert navsat_transform_accepts(no_alt) and no_alt.position_covariance[8] >= 1e4
    # A rejected frame (publish_no_fix: true) is one navsat_transform ignores.
    rejected = navsat_fix(_estimate(status='no_fix', lat=float('nan'), lon=float('nan')),
                          stamp, frame)
    assert not navsat_transform_accepts(rejected)


def test_fix_qos_matches_navsat_transforms_sensor_data_subscription():
    from rclpy.qos import qos_profile_sensor_data, ReliabilityPolicy
    from vpr_ros.ros.qos import fix_qos

    # A reliable writer serves a best-effort reader (navsat_transform's SensorDataQoS).
    assert fix_qos().reliability == ReliabilityPolicy.RELIABLE
    assert qos_profile_sensor_data.reliability == ReliabilityPolicy.BEST_EFFORT


@pytest.fixture(scope='module')
def recipe() -> dict:
    return yaml.safe_load((REPO / 'config' / 'navsat_transform.yaml').read_text())


def test_navsat_transform_config(recipe):
    navsat = recipe['navsat_transform']['ros__parameters']
    assert navsat['zero_altitude'] is True             # 2D: map altitudes are rough
    assert navsat['use_odometry_yaw'] is False          # heading from the IMU, VPR has none
    assert isinstance(navsat['yaw_offset'], float)
    assert isinstance(navsat['magnetic_declination_radians'], float)
    assert isinstance(navsat['frequency'], float) and navsat['frequency'] > 0


def test_map_ekf_fuses_vpr_xy_absolutely_behind_a_mahalanobis_gate(recipe):
    ekf = recipe['ekf_filter_node_map']['ros__parameters']
    assert ekf['world_frame'] == ekf['map_frame'] == 'map'
    assert ekf['two_d_mode'] is True
    assert ekf['odom1'] == 'odometry/gps'
    config = ekf['odom1_config']
    assert len(config) == 15 and config[:2] == [True, True] and not any(config[2:])
    assert ekf['odom1_differential'] is False
    assert 0 < ekf['odom1_rejection_threshold'] < 100
    # The node's own ENU frame for vpr/pose must not be confused with the robot's map frame.
    from vpr_ros.ros.params import NodeConfig

    assert NodeConfig().pose_frame_id == 'vpr_map' != ekf['map_frame']
    for section in recipe.values():
        for value in section['ros__parameters'].values():
            assert value != 'vpr_map'


def test_launch_default_camera_frame_is_the_node_default():
    import importlib.util

    spec = importlib.util.spec_from_file_location('localize_launch',
                                                  REPO / 'launch' / 'localize.launch.py')
    module = importlib.util.module_from_spec(spec)
    pytest.importorskip('launch_ros')
    spec.loader.exec_module(module)
    from vpr_ros.ros.params import NodeConfig

    assert module.DEFAULT_FRAME_ID == NodeConfig().frame_id
