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

"""Fix quality (issue 17): route geometry, sub-spacing, anisotropic covariance, sequence check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from vpr_ros.calibration import (Calibration, covariance_en, fit, IDEAL_COVERAGE,
                                 nees_coverage, track_errors)
from vpr_ros.confidence import FEATURES
from vpr_ros.errors import MapError
from vpr_ros.fix_quality import RouteGeometry, subspacing_along, subspacing_offset
from vpr_ros.sequence import SequenceCheck


def _arc(n: int, spacing: float = 2.0, turn_deg_per_100m: float = 20.0,
         heading_deg: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``spacing`` m along a gentle arc and the unit tangent at each one."""
    s = np.arange(n) * spacing
    h = math.radians(heading_deg) + math.radians(turn_deg_per_100m) / 100.0 * s
    k = math.radians(turn_deg_per_100m) / 100.0
    h0 = math.radians(heading_deg)
    east = (np.cos(h0) - np.cos(h)) / k
    north = (np.sin(h) - np.sin(h0)) / k
    tangent = np.stack([np.sin(h), np.cos(h)], axis=1)   # heading from north, clockwise
    # d/ds of (east, north) = (sin h, cos h)
    return np.stack([east, north], axis=1), tangent


def test_route_geometry_neighbours_and_direction():
    pts, tangent = _arc(40)
    route = RouteGeometry(pts)
    assert route.spacing_m == pytest.approx(2.0, abs=1e-3)
    for j in range(1, 39):
        assert route.prev[j] == j - 1 and route.next[j] == j + 1
        # The direction is the tangent, pointing the way the map was driven.
        assert route.direction[j] @ tangent[j] == pytest.approx(1.0, abs=1e-3)
        assert route.along(j, j + 1) == pytest.approx(2.0, abs=1e-2)
    assert route.prev[0] == -1 and route.next[0] == 1
    assert route.next[39] == -1 and route.prev[39] == 38


def test_route_geometry_does_not_bridge_gaps_or_revisits():
    pts, _ = _arc(20)
    # A gap of 10 m after entry 9, and a second drive over entries 0-4 (same places).
    pts = np.concatenate([pts[:10], pts[10:] + pts[10] - pts[9] + (pts[10] - pts[9]) * 4,
                          pts[:5] + 0.05])
    route = RouteGeometry(pts)
    assert route.next[9] == -1 and route.prev[10] == -1
    # The revisit at the same place is no neighbour; the true route neighbours are.
    assert route.next[2] in (3, 23) and route.prev[2] in (1, 21)
    single = RouteGeometry(pts[:1])
    assert single.prev[0] == -1 and not np.isfinite(single.direction[0]).any()


def test_places_seen_many_times_at_one_position_have_no_direction():
    # A place-labelled map (every view of a place at its coordinate, places 12 m apart) has
    # no route to point along: its covariance is round, not along an arbitrary axis.
    places = np.repeat(np.stack([np.arange(6) * 12.0, np.zeros(6)], axis=1), 16, axis=0)
    route = RouteGeometry(places)
    assert not np.isfinite(route.direction).any()
    assert (route.prev == -1).all() and (route.next == -1).all()
    # A route with a stop (the same fix five times) keeps its direction there.
    pts, tangent = _arc(20)
    stop = np.concatenate([pts[:10], np.repeat(pts[10:11], 5, axis=0), pts[11:]])
    route = RouteGeometry(stop)
    for j in range(1, len(stop) - 1):
        k = j if j < 10 else 10 if j < 15 else j - 4
        assert route.direction[j] @ tangent[k] == pytest.approx(1.0, abs=1e-2)


def test_subspacing_offset_finds_the_score_peak():
    for peak in (-0.9, -0.3, 0.0, 0.4, 0.8):
        score = lambda x: 1.0 - 0.1 * (x - peak) ** 2   # noqa: E731
        got = subspacing_offset(-2.0, score(-2.0), score(0.0), 2.0, score(2.0))
        assert got == pytest.approx(peak, abs=1e-9)
    # Unequal offsets of the neighbours.
    score = lambda x: -(x - 0.5) ** 2   # noqa: E731
    assert subspacing_offset(-1.0, score(-1.0), score(0.0), 3.0, score(3.0)) == \
        pytest.approx(0.5)
    # Beyond half-way the neighbour would be the top-1: clipped.
    score = lambda x: -(x - 1.8) ** 2   # noqa: E731
    assert subspacing_offset(-2.0, score(-2.0), score(0.0), 2.0, score(2.0)) == 1.0
    # No peak at the top-1: half-way towards the better neighbour; one side only: no offset.
    assert subspacing_offset(-2.0, 0.5, 0.4, 2.0, 0.3) == -1.0
    assert subspacing_offset(None, math.nan, 1.0, 2.0, 0.9) == 0.0


def test_subspacing_along_uses_only_scored_route_neighbours():
    pts, _ = _arc(10)
    route = RouteGeometry(pts)
    score = lambda x: 1.0 - 0.05 * (x - 0.6) ** 2   # noqa: E731
    idx = np.array([4, 5, 3, 8])
    scores = np.array([score(0.0), score(2.0), score(-2.0), 0.1])
    assert subspacing_along(route, idx, scores) == pytest.approx(0.6, abs=1e-2)
    # A neighbour without a score (not re-ranked, not retrieved): the top-1 itself.
    assert subspacing_along(route, idx, np.array([scores[0], np.nan, scores[2], 0.1])) == 0.0
    assert subspacing_along(route, np.array([4, 8]), np.array([1.0, 0.5])) == 0.0


def test_covariance_is_symmetric_positive_definite():
    rng = np.random.default_rng(0)
    for _ in range(500):
        sigma = float(np.exp(rng.uniform(-3, 5)))
        ratio = float(np.exp(rng.uniform(-3, 3)))
        track = rng.normal(size=2) if rng.random() < 0.8 else np.array([np.nan, 1.0])
        if rng.random() < 0.1:
            track = np.zeros(2)
        cov = covariance_en(sigma, ratio, track, 0.1)
        np.testing.assert_array_equal(cov, cov.T)
        vals = np.linalg.eigvalsh(cov)
        assert vals.min() >= 0.1 ** 2 * (1 - 1e-9)
        if not np.isfinite(track).all() or not track.any():
            ratio = 1.0   # no direction: round
        assert math.sqrt(vals.prod()) == pytest.approx(
            max(sigma * math.sqrt(ratio), 0.1) * max(sigma / math.sqrt(ratio), 0.1), rel=1e-6)
    # The long axis lies along the track.
    cov = covariance_en(2.0, 4.0, (0.6, 0.8))
    vals, vecs = np.linalg.eigh(cov)
    assert abs(vecs[:, -1] @ np.array([0.6, 0.8])) == pytest.approx(1.0)
    assert np.sqrt(vals) == pytest.approx([1.0, 4.0])


def _anisotropic(n: int, seed: int):
    """Features that predict the size, errors 4x larger along a random track than across."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, len(FEATURES)))
    scale = np.exp(0.6 * feats[:, 0])
    along = rng.normal(size=n) * 2.0 * scale
    cross = rng.normal(size=n) * 0.5 * scale
    angle = rng.uniform(0, 2 * np.pi, n)
    tracks = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    left = np.stack([-tracks[:, 1], tracks[:, 0]], axis=1)
    errors_en = along[:, None] * tracks + cross[:, None] * left
    return feats, errors_en, tracks


def test_anisotropic_fit_recovers_the_shape_and_the_coverage():
    feats, err, tracks = _anisotropic(3000, 1)
    split = track_errors(err, tracks)
    np.testing.assert_allclose(np.linalg.norm(split, axis=1), np.linalg.norm(err, axis=1))
    cal = fit(feats, np.linalg.norm(err, axis=1), floor_m=0.5, errors_track=split)
    assert np.median(cal.knots_ratio) == pytest.approx(4.0, rel=0.25)
    test_feats, test_err, test_tracks = _anisotropic(3000, 2)
    covs = np.stack([cal.covariance_en(f, t) for f, t in zip(test_feats, test_tracks)])
    cover = nees_coverage(test_err, covs)
    for k in (1, 2, 3):
        assert abs(cover[k] - IDEAL_COVERAGE[k]) <= 0.05, cover
    # A round fit of the same errors covers the cross-track errors far too generously at 1
    # sigma and too little along: the anisotropic one is closer to the ideal everywhere.
    round_cal = fit(feats, np.linalg.norm(err, axis=1), floor_m=0.5)
    round_cover = nees_coverage(test_err, round_cal.sigma(test_feats))
    assert abs(cover[1] - IDEAL_COVERAGE[1]) < abs(round_cover[1] - IDEAL_COVERAGE[1])
    # Round trip through the manifest form; version 1 (round) still reads.
    again = Calibration.from_dict(cal.to_dict())
    assert again.knots_ratio == cal.knots_ratio
    old = dict(round_cal.to_dict(), version=1)
    old.pop('knots_ratio')
    assert Calibration.from_dict(old).ratio(test_feats[0]) == 1.0
    with pytest.raises(MapError, match='malformed|inconsistent'):
        Calibration.from_dict(dict(cal.to_dict(), knots_ratio=[1.0]))


def test_sequence_check_rejects_isolated_wrong_places():
    """A drive at 4 m/s, 2 Hz, with wrong places injected: only those are refused."""
    check = SequenceCheck(frames=5, support=2, max_speed_mps=15.0, margin_m=10.0)
    n = 60
    truth = np.stack([np.arange(n) * 2.0, np.zeros(n)], axis=1)
    wrong = {10: 300.0, 11: 300.0, 25: -150.0, 40: 80.0}
    supported = []
    for i in range(n):
        pos = truth[i] + (np.array([wrong[i], 0.0]) if i in wrong else 0.0)
        cands = np.stack([pos, pos + [2.0, 0.0], pos - [2.0, 0.0]])
        supported.append(check.step(1_000_000_000 * 10 + i * 500_000_000, pos, cands).supported)
    refused = {i for i, ok in enumerate(supported) if not ok}
    # Two wrong frames in a row at the same place support each other only once the second
    # sees the first; with support 2 both are still refused. The first frame waits for a
    # second one to agree.
    assert refused == set(wrong) | {0}
    # A run of frames at a new place (a real jump) is accepted once it supports itself.
    verdicts = [check.step(1_000_000_000 * 100 + i * 500_000_000, np.array([5000.0, 0.0]),
                           np.array([[5000.0, 0.0]])) for i in range(4)]
    # The old frames expired (window 5 s): the first has nothing to check against, and it
    # is the next frame, agreeing, that is supported.
    assert [v.supported for v in verdicts] == [False, True, True, True]
    assert verdicts[0].first and verdicts[0].required == 1 and verdicts[0].support == 0
    assert not verdicts[1].first and verdicts[1].required == 1 and verdicts[2].support == 2
    # confirm_first off: the first frame passes unchecked (nothing required).
    unchecked = SequenceCheck(confirm_first=False)
    verdict = unchecked.step(0, np.array([0.0, 0.0]), np.array([[0.0, 0.0]]))
    assert verdict.first and verdict.supported and verdict.required == 0


def test_frames_without_a_candidate_do_not_count_against_the_next():
    """Remembered frames that had no finite candidate can neither support nor refuse."""
    check = SequenceCheck(frames=5, support=2, confirm_first=False)
    for i in range(3):
        verdict = check.step(i * 500_000_000, np.array([0.0, 0.0]), np.full((2, 2), np.nan))
        assert verdict.first and verdict.supported and verdict.required == 0
    # One frame with evidence among the empty ones: it alone is required, and it supports.
    check.step(1_500_000_000, np.array([0.0, 0.0]), np.array([[0.0, 0.0]]))
    verdict = check.step(2_000_000_000, np.array([2.0, 0.0]), np.array([[2.0, 0.0]]))
    assert not verdict.first and verdict.supported
    assert (verdict.support, verdict.required) == (1, 1)
    # ... and refuses a place out of its reach (15 m/s * 0.5 s + 10 m).
    far = check.step(2_500_000_000, np.array([500.0, 0.0]), np.array([[500.0, 0.0]]))
    assert not far.supported and (far.support, far.required) == (0, 2)
    # With confirm_first, empty frames leave the next frame unconfirmed, as the first is.
    strict = SequenceCheck()
    strict.step(0, np.array([0.0, 0.0]), np.zeros((0, 2)))
    verdict = strict.step(500_000_000, np.array([0.0, 0.0]), np.array([[0.0, 0.0]]))
    assert verdict.first and not verdict.supported and verdict.required == 1


def test_sequence_check_recovers_after_a_jump_within_the_window():
    check = SequenceCheck(frames=5, support=2, max_speed_mps=10.0, margin_m=5.0, window_s=10.0)
    t = 0
    for i in range(5):
        check.step(t, np.array([2.0 * i, 0.0]), np.array([[2.0 * i, 0.0]]))
        t += 500_000_000
    ok = []
    for i in range(6):
        ok.append(check.step(t, np.array([1000.0, 0.0]), np.array([[1000.0, 0.0]])).supported)
        t += 500_000_000
    assert ok == [False, False, True, True, True, True]
    # Time going backwards (a bag played again) starts afresh.
    assert check.step(0, np.array([0.0, 0.0]), np.zeros((0, 2))).first
    assert len(check) == 1


def test_motion_check_finds_a_fix_off_the_track():
    """4 m/s at 2 Hz: a fix 6 m ahead of the track is flagged, on-track fixes are not."""
    check = SequenceCheck(window_s=5.0)
    cov = np.diag([0.5 ** 2, 0.3 ** 2])
    t0 = 10**18
    for i in range(2):                                   # fewer than 3 fixes: nothing to say
        assert check.motion_offset(t0 + i * 500_000_000, [2.0 * i, 0.0], cov, 3.0) is None
        check.remember_fix(t0 + i * 500_000_000, [2.0 * i, 0.0])
    check.remember_fix(t0 + 1_000_000_000, [4.0, 0.05])
    t = t0 + 1_500_000_000
    assert check.motion_offset(t, [6.2, 0.0], cov, 3.0) is None    # on the track (+- noise)
    offset = check.motion_offset(t, [12.0, 0.0], cov, 3.0)         # a place 3 entries ahead
    assert offset is not None
    np.testing.assert_allclose(offset, [6.0, 0.0], atol=0.1)
    assert check.motion_offset(t, [12.0, 0.0], cov, 0.0) is None   # gate 0: off
    assert check.motion_offset(t, [12.0, 0.0], cov * 100, 3.0) is None   # sigma 5 m: within
    # The track's own scatter counts: a jittery track tolerates more.
    jittery = SequenceCheck(window_s=5.0)
    for i, y in enumerate([0.0, 3.0, -3.0, 3.0]):
        jittery.remember_fix(t0 + i * 500_000_000, [2.0 * i, y])
    assert jittery.motion_offset(t0 + 2_000_000_000, [12.0, 0.0], cov, 3.0) is None
    # Old fixes expire, time going backwards forgets the track.
    assert check.motion_offset(t + 6_000_000_000, [99.0, 0.0], cov, 3.0) is None
    check.remember_fix(t0, [0.0, 0.0])
    assert check.motion_offset(t0 - 1, [99.0, 0.0], cov, 3.0) is None


@pytest.fixture(scope='module')
def textured(tmp_path_factory):
    from mapdb_helpers import textured_map

    return textured_map(tmp_path_factory.mktemp('fq'), 24)


def test_localizer_sequence_check_on_a_drive_with_injected_wrong_places(textured):
    """The map's own images in drive order (5 m apart, 2 Hz) with far places injected."""
    from mapdb_helpers import texture
    from vpr_ros.localizer import FIX, Localizer, LocalizerConfig, NO_FIX
    from vpr_ros.mapdb import MapDB

    drive = [0, 1, 2, 3, 4, 20, 5, 6, 7, 22, 8, 9, 10]
    wrong = {5, 9}                                   # positions in the drive
    images = [texture(i) for i in drive]
    stamps = [10**18 + k * 500_000_000 for k in range(len(drive))]
    db = MapDB.open(textured)
    model = db.load_model('cpu')
    off = Localizer(db, model, LocalizerConfig(sequence_check=False)).localize_batch(
        images, stamps_ns=stamps)
    assert [e.candidates[0].index for e in off] == drive
    assert all(e.status == FIX for e in off)
    loc = Localizer(db, model, LocalizerConfig())
    on = loc.localize_batch(images, stamps_ns=stamps)
    # The wrong places, and the first frame: nothing confirmed it yet.
    assert {k for k, e in enumerate(on) if e.status == NO_FIX} == wrong | {0}
    assert all('sequence' in on[k].reason for k in wrong)
    assert on[0].reason.startswith('sequence: first frame')
    for k, (a, b) in enumerate(zip(off, on)):   # the other frames are untouched
        if k not in wrong:
            assert (a.lat, a.lon, a.sigma_m) == (b.lat, b.lon, b.sigma_m)
    unconfirmed = Localizer(db, model, LocalizerConfig(sequence_confirm_first=False))
    assert {k for k, e in enumerate(unconfirmed.localize_batch(images, stamps_ns=stamps))
            if e.status == NO_FIX} == wrong
    # A drive that starts on a wrong place: it is not published, and the right frames after
    # it get their fixes once two of them agree. Nothing wrong is ever published.
    start = [20, 0, 1, 2, 3, 4]
    fixes = Localizer(db, model, LocalizerConfig()).localize_batch(
        [texture(i) for i in start], stamps_ns=stamps[:len(start)])
    assert [e.status for e in fixes] == [NO_FIX, NO_FIX, NO_FIX, FIX, FIX, FIX]
    assert [e.candidates[0].index for e in fixes] == start
    # Without the rule the wrong first place was published, and still cost the next two.
    fixes = unconfirmed.localize_batch([texture(i) for i in start],
                                       stamps_ns=stamps[:len(start)])
    assert [e.status for e in fixes] == [FIX, NO_FIX, NO_FIX, FIX, FIX, FIX]
    # Frame by frame (the node): the same, with the memory across calls; unstamped frames
    # are not checked and not remembered.
    loc = Localizer(db, model, LocalizerConfig())
    single = [loc.localize(img, stamp_ns=t).status for img, t in zip(images, stamps)]
    assert single == [e.status for e in on]
    assert loc.localize(images[5]).status == FIX
    # inflate: the wrong place stays, with a sigma at least its jump (tens of metres).
    loc = Localizer(db, model, LocalizerConfig(sequence_action='inflate', max_sigma_m=1e4))
    inflated = loc.localize_batch(images, stamps_ns=stamps)
    for k in wrong:
        assert inflated[k].status == FIX and inflated[k].sigma_m >= 50.0
        cov = inflated[k].cov_enu[:2, :2]
        np.testing.assert_allclose(cov, cov.T)
        assert np.linalg.eigvalsh(cov).min() > 0
    with pytest.raises(Exception, match='stamps'):
        loc.localize_batch(images, stamps_ns=stamps[:-1])


def test_localizer_motion_check_widens_a_neighbouring_place(textured):
    """A confusion with a place two entries ahead passes the coarse check, not the track."""
    from mapdb_helpers import texture
    from vpr_ros.calibration import nees
    from vpr_ros.localizer import FIX, Localizer, LocalizerConfig
    from vpr_ros.mapdb import MapDB

    drive = [0, 1, 2, 3, 4, 5, 8, 7, 8, 9]         # frame 6 shows entry 8 (10 m ahead of 6)
    images = [texture(i) for i in drive]
    stamps = [10**18 + k * 500_000_000 for k in range(len(drive))]   # 5 m apart, 2 Hz
    db = MapDB.open(textured)
    model = db.load_model('cpu')
    # A tight calibrated-like sigma (0.5 m), so that a 10 m confusion is a 20-sigma fix;
    # every frame published (the first too), so the two runs compare frame by frame.
    config = LocalizerConfig(uncalibrated_sigma_m=0.5, sequence_confirm_first=False)
    plain = Localizer(db, model, config.replace(motion_gate=0.0)).localize_batch(
        images, stamps_ns=stamps)
    checked = Localizer(db, model, config).localize_batch(images, stamps_ns=stamps)
    assert all(e.status == FIX for e in plain + checked)
    assert [e.candidates[0].index for e in checked] == drive
    truth = db.positions_enu(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
    errors = np.array([e.enu for e in checked]) - truth
    assert np.linalg.norm(errors[6]) > 9.0
    before = nees(errors[6:7], np.array(plain[6].cov_enu)[None, :2, :2])[0]
    after = nees(errors[6:7], np.array(checked[6].cov_enu)[None, :2, :2])[0]
    assert before > 100 and after < 1.0                 # inside one sigma once widened
    assert 'motion' in checked[6].reason and checked[6].sigma_m > 9.0
    cov = np.array(checked[6].cov_enu)[:2, :2]
    np.testing.assert_allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0
    for k in range(6):                                   # before it: untouched
        assert checked[k].sigma_m == plain[k].sigma_m, k
    for a, b in zip(plain, checked):                     # widening never narrows
        diff = np.array(b.cov_enu)[:2, :2] - np.array(a.cov_enu)[:2, :2]
        assert np.linalg.eigvalsh(diff).min() >= -1e-9


def test_subspacing_describes_the_query_once_per_frame(textured):
    """Route neighbours are scored with the query features the re-ranking already made."""
    from mapdb_helpers import texture
    from vpr_ros.localizer import Localizer, LocalizerConfig
    from vpr_ros.mapdb import MapDB

    db = MapDB.open(textured)
    loc = Localizer(db, db.load_model('cpu'),
                    LocalizerConfig(subspacing='geowarp', sequence_check=False))
    loc.local_from_forward = False     # the query's own pass (test_map_features: the forward's)
    calls = []
    dense = loc.runtime.local_features
    loc.runtime.local_features = lambda x: calls.append(len(x)) or dense(x)
    estimate = loc.localize(texture(7))
    assert estimate.route_scores, 'the route neighbours were scored'
    assert calls == [1]                              # one query pass, not one per call
    from vpr_ros.images import resize_to

    small = resize_to(texture(7), loc.thumb_size)
    need = np.array(sorted(estimate.route_scores))
    fresh = loc._rerank_scores(small, need) / 225.0   # a fresh pass gives the same scores
    np.testing.assert_allclose(fresh, [estimate.route_scores[int(j)] for j in need],
                               rtol=1e-5)


def test_subspacing_auto_snaps_unless_calibrate_shows_a_gain(textured, tmp_path):
    """Frames exactly at map frames cannot show a sub-spacing gain: calibrate keeps snapping."""
    import shutil

    from mapdb_helpers import texture
    from vpr_ros.calibrate import calibrate_map, fit_subspacing
    from vpr_ros.calibration import CalibrationConfig, store_calibration, SUBSPACING_KEY
    from vpr_ros.localizer import Localizer, LocalizerConfig
    from vpr_ros.mapdb import MapDB

    path = tmp_path / 'copy.vprmap'
    shutil.copytree(textured, path)
    db = MapDB.open(path)
    model = db.load_model('cpu')
    loc = Localizer(db, model, LocalizerConfig())
    assert loc.config.subspacing == 'auto' and loc.subspacing == 'off'   # nothing validated
    truth = db.positions(np.arange(len(db)))[:, :2]
    # Localised with GeoWarp sub-spacing (route neighbours scored), then every mode tried.
    loc.config = loc.config.replace(subspacing='geowarp')
    estimates = loc.localize_batch([texture(i) for i in range(len(db))])
    mode, report = fit_subspacing(loc, estimates, truth, 5.0)
    assert mode == 'off', report
    assert report['median_error_m']['off'] < 0.01        # each frame is at its own entry
    assert report['median_error_m']['off'] <= report['median_error_m']['geowarp']
    assert 'snapping kept' in report['reason']
    # calibrate (pseudo-queries, the entry left out) stores the choice with the calibration.
    loc = Localizer(db, model, LocalizerConfig())
    cal, report = calibrate_map(loc, CalibrationConfig(pseudo_queries=24, min_per_bin=5),
                                progress=False)
    assert report['subspacing']['mode'] == 'off'
    assert loc.config == LocalizerConfig()          # calibrate leaves the localizer as it was
    store_calibration(db, cal, report)
    db = MapDB.open(path)
    assert db.manifest[SUBSPACING_KEY]['mode'] == 'off'
    assert Localizer(db, model, LocalizerConfig()).subspacing == 'off'
    # A validated mode in the manifest is what auto uses; an explicit config wins.
    db.update_manifest(**{SUBSPACING_KEY: {'mode': 'geowarp'}})
    db = MapDB.open(path)
    assert Localizer(db, model, LocalizerConfig()).subspacing == 'geowarp'
    assert Localizer(db, model, LocalizerConfig(subspacing='off')).subspacing == 'off'
    db.update_manifest(**{SUBSPACING_KEY: {'mode': 'nonsense'}})
    assert Localizer(MapDB.open(path), model, LocalizerConfig()).subspacing == 'off'


@pytest.mark.slow
@pytest.mark.timeout(2400)   # builds a map, localises 200 frames with the default model
def test_synthetic_route_bags_calibrate_queries_and_coverage_window(tmp_path):
    """The demo's chain, small, through the CLI and bags: default model, two rendered drives.

    Drive 1 is a bag given to ``calibrate --queries`` (which validates sub-spacing on it),
    drive 0 a bag given to ``eval-bag --map``. bench/fix_quality.py runs the same chain on
    the demo's routes (seeds 0-4, 200 frames) with a GeoWarp fit; here GeoWarp is unfitted
    (plain dense re-ranking).
    """
    import json

    from mapdb_helpers import write_bag
    from vpr_ros.cli import main as cli_main
    from vpr_ros.mapdb import build_map, BuildConfig, MapDB
    from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source

    route = SynthRoute(SynthConfig(seed=1, frames=100))
    csv = write_csv_source(route.map_pass(), tmp_path / 'src')
    path = build_map(csv, tmp_path / 'route.vprmap',
                     BuildConfig(model='effnet-lite0-gem', device='cpu'), progress=False)

    def bag(k):
        frames = list(route.query_pass(drive=k))
        return write_bag(tmp_path / f'drive{k}', [(f.stamp_ns, f.image) for f in frames],
                         [(f.stamp_ns, f.lat, f.lon, f.alt, 0) for f in frames],
                         image_topic='/camera/image_raw', fix_topic='/gnss/fix')

    assert cli_main(['calibrate', str(path), '--queries', str(bag(1)), '--device', 'cpu',
                     '--no-progress']) == 0
    chosen = MapDB.open(path).manifest['subspacing']
    print('calibrate', chosen)
    assert chosen['mode'] == 'geowarp'
    medians = chosen['median_error_m']
    assert medians['geowarp'] < medians['off'] - 0.05 * 2.0
    out = tmp_path / 'report'
    assert cli_main(['eval-bag', str(bag(0)), '--map', str(path), '--images',
                     '/camera/image_raw', '--truth', '/gnss/fix', '--out', str(out),
                     '--device', 'cpu', '--no-progress']) == 0
    m = json.loads((out / 'metrics.json').read_text())
    print('drive 0', m['track_error_m'], m['nees'])
    # Along the route (what the choice of map frame decides), at 2 m spacing.
    assert m['track_error_m']['along']['median'] <= 0.15 * 2.0
    assert m['availability'] >= 0.9
    for k, value in m['nees']['coverage'].items():
        ideal = m['nees']['ideal_coverage'][k]
        assert abs(value - ideal) <= 0.10, m['nees']
