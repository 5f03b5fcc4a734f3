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

"""Geodesy helpers: WGS84 <-> local ENU, UTM -> WGS84, distances and route length.

Convention:
    - geodetic positions are WGS84 latitude / longitude in degrees and altitude in metres
      above the WGS84 **ellipsoid** (what ``sensor_msgs/NavSatFix`` carries);
    - local positions are ENU metres (east, north, up) in the tangent plane of a geodetic
      ``origin = (lat, lon, alt)`` (pymap3d);
    - UTM coordinates are WGS84 UTM easting / northing in metres; a zone is written as its
      number plus its MGRS **latitude band** letter, e.g. ``'17T'`` (Pittsburgh) or ``'10S'``
      (San Francisco): bands ``C``-``M`` are southern, ``N``-``X`` northern. ``'S'`` is band S
      (32-40 deg north), *not* "south". ``'33N'``/``'33M'`` work as usual.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Sequence

import numpy as np
import pymap3d

from vpr_ros.errors import DataError

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), for haversine distances

_ZONE_RE = re.compile(r'^\s*(\d{1,2})\s*([C-HJ-NP-Xc-hj-np-x])\s*$')


def parse_utm_zone(zone: str) -> tuple[int, bool]:
    """Parse a UTM zone like ``'17T'`` into ``(17, northern)``; :class:`DataError` otherwise."""
    match = _ZONE_RE.match(str(zone))
    if not match:
        raise DataError(
            f'UTM zone {zone!r} is not a zone number (1-60) plus a latitude band letter '
            f'(C-X, no I/O), e.g. 17T or 10S')
    number, band = int(match.group(1)), match.group(2).upper()
    if not 1 <= number <= 60:
        raise DataError(f'UTM zone {zone!r}: zone number must be 1-60')
    return number, band >= 'N'


@functools.lru_cache(maxsize=64)
def _utm_transformer(number: int, northern: bool):
    from pyproj import Transformer

    epsg = (32600 if northern else 32700) + number
    return Transformer.from_crs(f'EPSG:{epsg}', 'EPSG:4326', always_xy=True)


def utm_to_wgs84(easting: float | np.ndarray, northing: float | np.ndarray,
                 zone: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert WGS84 UTM easting/northing (m) in ``zone`` (e.g. ``'17T'``) to lat/lon (deg)."""
    number, northern = parse_utm_zone(zone)
    lon, lat = _utm_transformer(number, northern).transform(
        np.asarray(easting, np.float64), np.asarray(northing, np.float64))
    return np.asarray(lat, np.float64), np.asarray(lon, np.float64)


def wgs84_to_enu(lat, lon, alt, origin: Sequence[float]) -> np.ndarray:
    """Convert geodetic positions to local ENU metres around ``origin``; shape ``(..., 3)``."""
    e, n, u = pymap3d.geodetic2enu(np.asarray(lat, np.float64), np.asarray(lon, np.float64),
                                   np.asarray(alt, np.float64), *origin)
    return np.stack([np.asarray(e), np.asarray(n), np.asarray(u)], axis=-1)


def enu_to_wgs84(east, north, up, origin: Sequence[float]) -> np.ndarray:
    """Convert local ENU metres around ``origin`` to ``(..., 3)`` lat/lon (deg), alt (m)."""
    lat, lon, alt = pymap3d.enu2geodetic(np.asarray(east, np.float64),
                                         np.asarray(north, np.float64),
                                         np.asarray(up, np.float64), *origin)
    return np.stack([np.asarray(lat), np.asarray(lon), np.asarray(alt)], axis=-1)


def haversine_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in metres (spherical Earth, < 0.5 % error; fine for gating)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, np.float64) - np.asarray(lon1, np.float64))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def route_length_m(lat: np.ndarray, lon: np.ndarray) -> float:
    """Sum of the great-circle distances between consecutive positions (m)."""
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    if lat.size < 2:
        return 0.0
    return float(haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:]).sum())


def check_lat_lon(lat: float, lon: float, *, where: str) -> None:
    """Raise :class:`DataError` unless ``lat``/``lon`` are finite WGS84 degrees in range."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise DataError(f'{where}: latitude/longitude must be finite, got {lat}, {lon}')
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise DataError(f'{where}: latitude/longitude out of range: {lat}, {lon}')
