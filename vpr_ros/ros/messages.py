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

"""ROS messages from a localizer :class:`~vpr_ros.localizer.Estimate`.

Pure functions, no node needed. ``NavSatFix`` rules (from the ``sensor_msgs/NavSatFix``
definition and robot_localization's ``navsat_transform.cpp``, which consumes it): the stamp is
the image's stamp; ``status`` is set explicitly (never the default STATUS_UNKNOWN); the altitude
is finite (navsat_transform drops fixes with a NaN altitude); the covariance is ENU, row-major,
m^2, ``COVARIANCE_TYPE_APPROXIMATED`` (model-derived) and never zero (an EKF reads zero as
"perfect"); non-finite entries become a huge variance.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from sensor_msgs.msg import NavSatFix, NavSatStatus

from vpr_ros.geo import wgs84_to_enu
from vpr_ros.localizer import Estimate, FIX

#: Smallest variance ever published (m^2): 1 cm standard deviation, never zero.
MIN_VARIANCE_M2 = 1e-4
#: Variance standing in for "unknown" (m^2, rad^2): non-finite inputs, the unobserved rotation.
UNKNOWN_VARIANCE = 1e12
TRANSPORT_LOSS_WARN_PCT = 20.0


def covariance_enu(cov: Any) -> np.ndarray:
    """Return a publishable 3x3 ENU covariance: symmetric, finite, diagonal >= the floor."""
    c = np.array(cov, dtype=np.float64).reshape(3, 3)
    c = (c + c.T) / 2.0
    bad = ~np.isfinite(c)
    c[bad] = 0.0
    diag = np.diag(c).copy()
    diag[np.diag(bad)] = UNKNOWN_VARIANCE
    diag = np.clip(diag, MIN_VARIANCE_M2, None)
    np.fill_diagonal(c, diag)
    return c


def _finite_alt(alt: float, fallback: float, cov: np.ndarray) -> float:
    """Return ``alt``, or ``fallback`` with an unknown vertical variance when it is not finite."""
    if math.isfinite(alt):
        return float(alt)
    cov[2, :] = 0.0
    cov[:, 2] = 0.0
    cov[2, 2] = UNKNOWN_VARIANCE
    return float(fallback)


def navsat_fix(estimate: Estimate, stamp: Time, frame_id: str) -> NavSatFix:
    """Return the ``NavSatFix`` of one estimate, stamped with the image's ``stamp``."""
    msg = NavSatFix()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    located = math.isfinite(estimate.lat) and math.isfinite(estimate.lon)
    msg.status.status = (NavSatStatus.STATUS_FIX if estimate.status == FIX and located
                         else NavSatStatus.STATUS_NO_FIX)
    msg.status.service = NavSatStatus.SERVICE_UNKNOWN
    cov = covariance_enu(estimate.cov_enu)
    msg.latitude = float(estimate.lat) if located else float('nan')
    msg.longitude = float(estimate.lon) if located else float('nan')
    msg.altitude = _finite_alt(estimate.alt, 0.0, cov)
    msg.position_covariance = cov.reshape(-1)
    msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_APPROXIMATED
    return msg


def pose_with_covariance(estimate: Estimate, origin: Sequence[float], stamp: Time,
                         frame_id: str) -> PoseWithCovarianceStamped:
    """Return the estimate as a pose in the ENU frame at ``origin`` (lat, lon, alt).

    VPR observes no heading: the orientation is the identity with an unknown (huge) variance.
    """
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    cov3 = covariance_enu(estimate.cov_enu)
    alt = _finite_alt(estimate.alt, origin[2], cov3)
    east, north, up = wgs84_to_enu(estimate.lat, estimate.lon, alt, origin).reshape(-1)[:3]
    msg.pose.pose.position.x = float(east)
    msg.pose.pose.position.y = float(north)
    msg.pose.pose.position.z = float(up)
    msg.pose.pose.orientation.w = 1.0
    cov6 = np.zeros((6, 6))
    cov6[:3, :3] = cov3
    cov6[3:, 3:] = np.eye(3) * UNKNOWN_VARIANCE
    msg.pose.covariance = cov6.reshape(-1)
    return msg


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.4g}' if math.isfinite(value) else str(value)
    return str(value)


def diagnostic_status(name: str, hardware_id: str, level: bytes, message: str,
                      values: Mapping[str, Any]) -> DiagnosticStatus:
    """Return one ``DiagnosticStatus``; ``values`` become its key/value pairs (as text)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=_text(v)) for k, v in values.items()]
    return status


def diagnostic_array(stamp: Time, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    """Wrap statuses in the ``DiagnosticArray`` published on ``/diagnostics``."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = list(statuses)
    return msg


def diagnostic_level(stats: Mapping[str, Any], *, stale_input_s: float) -> tuple[bytes, str]:
    """Level and one-line summary of the node's health from a :class:`FrameStats` snapshot.

    ERROR: frames failed inside the localizer lately; WARN: no image for ``stale_input_s``,
    bad frames lately, over ``TRANSPORT_LOSS_WARN_PCT`` of the camera's frames lost in
    transport lately, or no fix among the recent frames; OK otherwise.
    """
    if stats['recent_errors']:
        return DiagnosticStatus.ERROR, f'localizer failed: {stats["last_error"]}'
    if stats['frames_received'] == 0:
        return DiagnosticStatus.WARN, 'waiting for images'
    if stats['input_age_s'] > stale_input_s:
        return DiagnosticStatus.WARN, f'no image for {stats["input_age_s"]:.1f} s'
    if stats['recent_bad_frames']:
        return DiagnosticStatus.WARN, f'bad frames: {stats["last_bad_frame"]}'
    loss = stats.get('transport_loss_pct', math.nan)
    if loss > TRANSPORT_LOSS_WARN_PCT:
        return DiagnosticStatus.WARN, (
            f'{loss:.0f} % of the camera frames lost in transport (camera '
            f'{stats["camera_rate_hz"]:.1f} Hz); try image_reliability: reliable')
    if stats['frames_processed'] and not stats['recent_fixes']:
        return DiagnosticStatus.WARN, 'no fix lately'
    return DiagnosticStatus.OK, 'localizing'
