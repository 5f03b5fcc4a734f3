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

"""Geodesy helpers against pyproj and pymap3d directly."""

from __future__ import annotations

import numpy as np
from pyproj import Transformer
import pytest

from vpr_ros.errors import DataError
from vpr_ros.geo import (enu_to_wgs84, haversine_m, parse_utm_zone, route_length_m,
                         utm_to_wgs84, wgs84_to_enu)


class TestUtm:
    def test_zone_parsing(self):
        assert parse_utm_zone('17T') == (17, True)
        assert parse_utm_zone('10S') == (10, True)   # band S is northern (32-40 deg N)
        assert parse_utm_zone('56H') == (56, False)  # Sydney
        assert parse_utm_zone(' 33 n ') == (33, True)

    @pytest.mark.parametrize('zone', ['17', 'T', '61T', '0T', '17I', '17O', '17Y', ''])
    def test_exception(self, zone):
        with pytest.raises(DataError, match='UTM zone'):
            parse_utm_zone(zone)

    @pytest.mark.parametrize('zone,epsg,east,north', [
        ('17T', 32617, 584310.52, 4477349.03),   # Pittsburgh
        ('10S', 32610, 543256.96, 4178906.70),   # San Francisco
        ('56H', 32756, 334000.0, 6250000.0),     # Sydney (southern)
    ])
    def test_feature(self, zone, epsg, east, north):
        lat, lon = utm_to_wgs84(east, north, zone)
        ref_lon, ref_lat = Transformer.from_crs(f'EPSG:{epsg}', 'EPSG:4326',
                                                always_xy=True).transform(east, north)
        assert float(lat) == pytest.approx(ref_lat, abs=1e-12)
        assert float(lon) == pytest.approx(ref_lon, abs=1e-12)
        back = Transformer.from_crs('EPSG:4326', f'EPSG:{epsg}', always_xy=True)
        e2, n2 = back.transform(float(lon), float(lat))
        assert abs(e2 - east) < 0.01 and abs(n2 - north) < 0.01


def test_enu_round_trip():
    origin = (47.3769, 8.5417, 408.0)
    enu = np.array([[0.0, 0.0, 0.0], [100.0, -50.0, 3.0], [-2000.0, 1500.0, -10.0]])
    geo = enu_to_wgs84(enu[:, 0], enu[:, 1], enu[:, 2], origin)
    assert geo.shape == (3, 3)
    assert geo[0] == pytest.approx(origin)
    back = wgs84_to_enu(geo[:, 0], geo[:, 1], geo[:, 2], origin)
    np.testing.assert_allclose(back, enu, atol=1e-6)


def test_distances():
    assert float(haversine_m(0.0, 0.0, 1.0, 0.0)) == pytest.approx(111_195, rel=1e-4)
    assert float(haversine_m(47.0, 8.0, 47.0, 8.0)) == 0.0
    origin = (47.3769, 8.5417, 408.0)
    pts = enu_to_wgs84([0, 30, 30], [0, 0, 40], [0, 0, 0], origin)
    assert route_length_m(pts[:, 0], pts[:, 1]) == pytest.approx(70.0, rel=2e-3)
    assert route_length_m(pts[:1, 0], pts[:1, 1]) == 0.0
