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

import cv2
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


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm 32x24 grey thumbnail: a descriptor blind to gain and offset."""
    grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (32, 24),
                      interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    grey -= grey.mean()
    return grey / np.linalg.norm(grey)


def _top1_errors(db: np.ndarray, db_s: np.ndarray, q: np.ndarray, q_s: np.ndarray,
                 leave_one_out: bool = False) -> np.ndarray:
    """Distance along the route (m) from each query to its most similar database frame."""
    sim = q @ db.T
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
    return np.abs(db_s[sim.argmax(axis=1)] - q_s)


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

    def test_query_drives_differ_and_carry_the_lateral_offset(self, passes):
        route, _, query_frames = passes
        second = list(route.query_pass(drive=1))
        assert len(second) == len(query_frames)
        assert _diff(second[0].image, query_frames[0].image) > 1
        assert [f.s_m for f in second] != [f.s_m for f in query_frames]
        origin = route.config.origin
        offsets = []
        for f in query_frames:
            on_route = pymap3d.geodetic2enu(*route.position(f.s_m), *origin)[:2]
            here = pymap3d.geodetic2enu(f.lat, f.lon, f.alt, *origin)[:2]
            offsets.append(np.hypot(*(np.subtract(here, on_route))))
        # The camera's lateral offset (up to query_lateral_m) is in the truth.
        assert 0.05 < max(offsets) <= route.config.query_lateral_m + 1e-6
        with pytest.raises(ConfigError):
            next(route.query_pass(drive=-1))

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

    def test_places_are_found_again_by_a_thumbnail(self, passes):
        # Even a 32x24 grey thumbnail finds the right place for most queries: places differ.
        _, map_frames, query_frames = passes
        db = np.stack([_thumbnail(f.image) for f in map_frames])
        q = np.stack([_thumbnail(f.image) for f in query_frames])
        errors = _top1_errors(db, np.array([f.s_m for f in map_frames]),
                              q, np.array([f.s_m for f in query_frames]))
        assert np.mean(errors <= 2 * 2.0) >= 0.75

    def test_skyline_and_haze(self, passes):
        route, map_frames, _ = passes
        # Roof heights differ between buildings (40-100 % of wall_height_m) ...
        roofs = np.unique(np.concatenate(route._roofs))
        assert len(roofs) > 5
        assert roofs.min() >= 0.4 * route.config.wall_height_m - 0.05
        assert roofs.max() <= route.config.wall_height_m + 1e-6
        # ... and without fog the far walls keep more contrast than with it.
        clear = SynthRoute(route.config.replace(fog_m=0.0)).render(10.0)
        hazy = route.render(10.0)
        centre = (slice(30, 66), slice(48, 80))  # the far end of the street
        assert clear[centre].std() > hazy[centre].std()

    def test_queries_are_harder_than_the_map(self, passes):
        _, map_frames, query_frames = passes
        # A query differs from the map frame of its place more than the map's own neighbour.
        q_vs_map = np.mean([_diff(q.image, m.image) for q, m in zip(query_frames, map_frames)])
        map_vs_map = np.mean([_diff(map_frames[i].image, map_frames[i + 1].image)
                              for i in range(23)])
        assert q_vs_map > map_vs_map
        offsets = [abs(q.s_m - m.s_m) for q, m in zip(query_frames, map_frames)]
        assert max(offsets) <= 0.5 * 2.0 + 1e-9 and max(offsets) > 0.1
        # Other light: darker (gain 0.85-0.95, gamma 1.05-1.15).
        map_mean = np.mean([m.image.mean() for m in map_frames])
        query_mean = np.mean([q.image.mean() for q in query_frames])
        assert 0.55 * map_mean < query_mean < 0.95 * map_mean

    def test_query_noise_and_blur(self):
        config = SynthConfig(frames=4, image_size=(96, 128), seed=3, query_lateral_m=0.0,
                             query_yaw_deg=0.0, query_gain=(1.0, 1.0), query_gamma=(1.0, 1.0),
                             query_cast=0.0, query_blur=(0.0, 0.0), map_noise=0.0)
        sharp = SynthRoute(config.replace(query_noise=0.0))
        noisy = SynthRoute(config.replace(query_noise=6.0))
        blurred = SynthRoute(config.replace(query_noise=0.0, query_blur=(1.5, 1.5)))
        clean = next(sharp.query_pass())
        # Same positions (same draws), so the images differ by the noise or the blur only.
        residual = (next(noisy.query_pass()).image.astype(np.float32)
                    - clean.image.astype(np.float32))
        assert 4.0 < residual.std() < 7.0
        blur = next(blurred.query_pass()).image
        assert cv2.Laplacian(blur, cv2.CV_32F).var() < 0.5 * cv2.Laplacian(
            clean.image, cv2.CV_32F).var()
        np.testing.assert_allclose(clean.image, sharp.render(clean.s_m), atol=1)  # no light change

    def test_exception(self):
        with pytest.raises(ConfigError, match='too small'):
            SynthConfig(image_size=(8, 8))
        with pytest.raises(ConfigError, match='frames: 1 is below the minimum 2'):
            SynthConfig(frames=1)
        with pytest.raises(ConfigError, match=r'query_gain: \(0.9, 0.8\) is not a \(low, high\)'):
            SynthConfig(query_gain=(0.9, 0.8))

    def test_csv_source(self, passes, tmp_path):
        _, map_frames, _ = passes
        csv = write_csv_source(iter(map_frames[:3]), tmp_path / 'src')
        lines = csv.read_text().splitlines()
        assert lines[0] == 'image,lat,lon,alt'
        name, lat, lon, _ = lines[1].split(',')
        assert (tmp_path / 'src' / name).is_file()
        assert float(lat) == pytest.approx(map_frames[0].lat, abs=1e-8)
        assert float(lon) == pytest.approx(map_frames[0].lon, abs=1e-8)


@pytest.mark.slow
def test_default_model_localises_the_query_pass():
    """The demo's default model (ImageNet weights, no VPR training) localises most queries.

    bench/synth_retrieval.py measures the same on the demo's full route.
    """
    from vpr_ros.models.api import describe
    route = SynthRoute(SynthConfig(frames=50, seed=5))
    map_frames, query_frames = list(route.map_pass()), list(route.query_pass())
    db = describe([f.image for f in map_frames], device='cpu')
    q = describe([f.image for f in query_frames], device='cpu')
    db_s = np.array([f.s_m for f in map_frames])
    errors = _top1_errors(db, db_s, q, np.array([f.s_m for f in query_frames]))
    assert np.mean(errors <= 2 * 2.0) >= 0.8
    assert np.median(errors) <= 2.0
    # Sanity: each map frame's best other map frame is a neighbour.
    self_errors = _top1_errors(db, db_s, db, db_s, leave_one_out=True)
    assert np.mean(self_errors <= 2 * 2.0) >= 0.9
