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

"""The synthetic route: deterministic, geotagged, places distinguishable, queries harder."""

from __future__ import annotations

import numpy as np
import pymap3d
import pytest

from vpr_ros.errors import ConfigError
from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source


@pytest.fixture(scope='module')
def passes():
    route = SynthRoute(SynthConfig(frames=24, image_size=(96, 128), seed=3))
    return route, list(route.map_pass()), list(route.query_pass())


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


class TestSynthRoute:
    def test_cardinality(self, passes):
        _, map_frames, query_frames = passes
        assert len(map_frames) == len(query_frames) == 24
        assert map_frames[0].image.shape == (96, 128, 3)
        assert map_frames[0].image.dtype == np.uint8

    def test_deterministic_by_seed(self, passes):
        _, map_frames, query_frames = passes
        again = SynthRoute(SynthConfig(frames=24, image_size=(96, 128), seed=3))
        np.testing.assert_array_equal(next(again.map_pass()).image, map_frames[0].image)
        np.testing.assert_array_equal(next(again.query_pass()).image, query_frames[0].image)
        other = SynthRoute(SynthConfig(frames=24, image_size=(96, 128), seed=4))
        assert _diff(next(other.map_pass()).image, map_frames[0].image) > 10

    def test_positions_follow_the_spacing(self, passes):
        route, map_frames, _ = passes
        origin = route.config.origin
        enu = np.array([pymap3d.geodetic2enu(f.lat, f.lon, f.alt, *origin)
                        for f in map_frames])
        steps = np.linalg.norm(np.diff(enu[:, :2], axis=0), axis=1)
        np.testing.assert_allclose(steps, route.config.spacing_m, rtol=1e-3)
        assert np.all(np.abs(enu[:, 2]) < 0.01)
        stamps = [f.stamp_ns for f in map_frames]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

    def test_places_are_distinguishable(self, passes):
        _, map_frames, _ = passes
        near = np.mean([_diff(map_frames[i].image, map_frames[i + 1].image)
                        for i in range(0, 20, 4)])
        far = np.mean([_diff(map_frames[i].image, map_frames[i + 10].image)
                       for i in range(0, 12, 4)])
        assert far > near * 1.2

    def test_queries_are_harder_than_the_map(self, passes):
        _, map_frames, query_frames = passes
        # A query differs from the map frame of its place more than the map's own neighbour.
        q_vs_map = np.mean([_diff(q.image, m.image) for q, m in zip(query_frames, map_frames)])
        map_vs_map = np.mean([_diff(map_frames[i].image, map_frames[i + 1].image)
                              for i in range(23)])
        assert q_vs_map > map_vs_map
        offsets = [abs(q.s_m - m.s_m) for q, m in zip(query_frames, map_frames)]
        assert max(offsets) <= 0.5 * 2.0 + 1e-9 and max(offsets) > 0.1

    def test_exception(self):
        with pytest.raises(ConfigError, match='too small'):
            SynthConfig(image_size=(8, 8))
        with pytest.raises(ConfigError, match='frames: 1 is below the minimum 2'):
            SynthConfig(frames=1)

    def test_csv_source(self, passes, tmp_path):
        _, map_frames, _ = passes
        csv = write_csv_source(iter(map_frames[:3]), tmp_path / 'src')
        lines = csv.read_text().splitlines()
        assert lines[0] == 'image,lat,lon,alt'
        name, lat, lon, _ = lines[1].split(',')
        assert (tmp_path / 'src' / name).is_file()
        assert float(lat) == pytest.approx(map_frames[0].lat, abs=1e-8)
        assert float(lon) == pytest.approx(map_frames[0].lon, abs=1e-8)
