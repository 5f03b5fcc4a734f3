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

"""Localizer (issue 6): retrieval + GeoWarp re-ranking + estimate + calibrated sigma.

A small real map is built with the real ``tiny-test`` model (random init, fast); the queries
are the map's own images, so the right answer is known even with an untrained network.
"""

from __future__ import annotations

import json
import math
import shutil

from mapdb_helpers import route, texture, textured_map
import numpy as np
import pytest
import torch
from vpr_ros.calibration import Calibration
from vpr_ros.cli import main as cli_main
from vpr_ros.confidence import FEATURES
from vpr_ros.errors import CheckpointError, DataError, MapError, VprError
from vpr_ros.geo import haversine_m, wgs84_to_enu
from vpr_ros.localizer import calibration_warning, Localizer, LocalizerConfig, NO_FIX
from vpr_ros.mapdb import MapDB
from vpr_ros.models.checkpoints import load_model
from vpr_ros.models.geowarp import GeoWarp, save_geowarp

N = 24


@pytest.fixture(scope='module')
def tiny_map(tmp_path_factory):
    folder = tmp_path_factory.mktemp('locmap')
    return textured_map(folder, N)


@pytest.fixture(scope='module')
def model(tiny_map):
    return MapDB.open(tiny_map).load_model('cpu')


def _localizer(path, model, **changes):
    return Localizer(MapDB.open(path), model, LocalizerConfig().replace(**changes))


def test_map_image_localises_to_itself(tiny_map, model):
    loc = _localizer(tiny_map, model)
    pos = route(N)
    for i in (0, 7, 23):
        est = loc.localize(texture(i))
        assert est.candidates[0].index == i
        # Between map frames: a few cm from its own place at 5 m spacing; snapped: exactly.
        assert haversine_m(est.lat, est.lon, pos[i, 0], pos[i, 1]) < 0.5
        snapped = _localizer(tiny_map, model, subspacing='off').localize(texture(i))
        assert haversine_m(snapped.lat, snapped.lon, pos[i, 0], pos[i, 1]) < 0.01
        assert est.alt == pytest.approx(pos[i, 2], abs=1e-6)
        assert est.cov_enu.shape == (3, 3)
        assert np.all(np.linalg.eigvalsh(est.cov_enu) > 0)
        assert est.sigma_m == loc.config.uncalibrated_sigma_m      # no calibration yet
        assert set(est.features) == set(FEATURES)
        # The map-frame position the consumers use is the published lat/lon.
        east_north = wgs84_to_enu(est.lat, est.lon, 0.0, loc.map.origin)[:2]
        assert est.enu == pytest.approx(tuple(east_north), abs=1e-6)
        assert set(est.timings) == {'decode', 'resize', 'forward', 'search', 'rerank',
                                    'estimate'}
        assert est.ok and not est.reason


def test_a_map_written_at_the_same_path_later_does_not_reach_an_open_localizer(
        tiny_map, model, tmp_path):
    """Before: opened ``fast`` (the node's ``fast_load``), names came from the file at frame 1."""
    path = tmp_path / 'copy.vprmap'
    shutil.copytree(tiny_map, path)
    loc = Localizer(MapDB.open(path, fast=True), model)
    rows = (path / 'entries.csv').read_text().splitlines()
    others = [f'other/{i}.png,' for i in range(N + 3)]         # map append wrote it since
    (path / 'entries.csv').write_text('\n'.join(rows[:1] + others) + '\n')
    est = loc.localize(texture(7))
    assert est.candidates[0].index == 7 and est.candidates[0].name == 'img/0007.png'


def test_rerank_reorders_only_the_first_p(tiny_map, model):
    loc = _localizer(tiny_map, model, top_k=8, rerank_weight=1.0)
    plain = _localizer(tiny_map, model, top_k=8, rerank=False)
    est, base = loc.localize(texture(5)), plain.localize(texture(5))
    p = loc.config.geowarp.num_reranked
    assert {c.index for c in est.candidates[:p]} == {c.index for c in base.candidates[:p]}
    assert [c.index for c in est.candidates[p:]] == [c.index for c in base.candidates[p:]]
    reranked = [c.rerank_score for c in est.candidates[:p]]
    assert reranked == sorted(reranked, reverse=True)
    assert all(0 < r <= 1.0 + 1e-6 for r in reranked)
    assert all(math.isnan(c.rerank_score) for c in est.candidates[p:])
    assert all(math.isnan(c.rerank_score) for c in base.candidates)
    # The same image scores highest against itself: the dense similarity of identical maps.
    assert est.candidates[0].rerank_score == pytest.approx(1.0, abs=1e-4)


def test_image_mode_and_features_mode_agree_on_identical_pairs(tiny_map, model):
    cfg = LocalizerConfig()
    loc = _localizer(tiny_map, model, geowarp=cfg.geowarp.replace(mode='image'))
    est = loc.localize(texture(9))
    assert est.candidates[0].index == 9
    assert est.candidates[0].rerank_score == pytest.approx(1.0, abs=1e-3)


def test_exclude_and_batch(tiny_map, model):
    loc = _localizer(tiny_map, model)
    est = loc.localize(texture(4), exclude=[4])
    assert 4 not in [c.index for c in est.candidates]
    images = [texture(i) for i in (1, 2, 3)]
    batch = loc.localize_batch(images)
    single = [loc.localize(im) for im in images]
    for a, b in zip(batch, single):
        assert [c.index for c in a.candidates] == [c.index for c in b.candidates]
        assert (a.lat, a.lon) == pytest.approx((b.lat, b.lon), abs=1e-9)


def test_frames_described_once_localise_as_localize_batch_in_each_geowarp_mode(
        tiny_map, model):
    # calibrate re-ranks the same frames in both GeoWarp modes on one forward
    images = [np.roll(texture(i), 9, axis=1) for i in (2, 11, 20)]
    exclude = [[2], [], [19, 20]]
    loc = _localizer(tiny_map, model, top_k=6, rerank_weight=1.0)   # all p scored
    described = loc.describe_batch(images)
    assert [d.descriptor.shape for d in described] == [(model.descriptor_dim,)] * 3
    for mode in ('features', 'image'):
        loc.config = loc.config.replace(geowarp=loc.config.geowarp.replace(mode=mode))
        want = loc.localize_batch(images, exclude=exclude)
        got = loc.localize_described(described, exclude=exclude)
        for a, b in zip(got, want):
            assert [c.index for c in a.candidates] == [c.index for c in b.candidates]
            assert [c.rerank_score for c in a.candidates] == pytest.approx(
                [c.rerank_score for c in b.candidates], nan_ok=True)
            assert (a.lat, a.lon, a.sigma_m) == pytest.approx((b.lat, b.lon, b.sigma_m))
        scores = [c.rerank_score for e in got for c in e.candidates[:2]]
        if mode == 'features':
            features_scores = scores
    assert scores != pytest.approx(features_scores)      # the modes differ on these frames
    assert 20 not in [c.index for c in got[2].candidates]
    with pytest.raises(DataError, match='exclude: 1 lists for 3 frames'):
        loc.localize_described(described, exclude=[[1]])


def test_weighted_estimate_lies_among_the_near_candidates(tiny_map, model):
    # Without re-ranking every retrieved candidate has a comparable (global) score.
    loc = _localizer(tiny_map, model, estimator='weighted', cluster_radius_m=12.0,
                     weight_temperature=10.0, top_k=N, rerank=False)
    est = loc.localize(texture(0))      # the route's end: its neighbours are all on one side
    near = [c for c in est.candidates if haversine_m(c.lat, c.lon, est.candidates[0].lat,
                                                     est.candidates[0].lon) <= 12.0]
    assert len(near) >= 2
    lats = [c.lat for c in near]
    assert min(lats) - 1e-9 <= est.lat <= max(lats) + 1e-9
    top1 = est.candidates[0]
    assert haversine_m(est.lat, est.lon, top1.lat, top1.lon) > 0.01   # really averaged


def test_no_fix_threshold_and_runtime_config(tiny_map, model):
    loc = _localizer(tiny_map, model)
    loc.set_config(loc.config.replace(max_sigma_m=5.0))        # runtime field: accepted
    est = loc.localize(texture(3))
    assert est.status == NO_FIX and 'max_sigma_m' in est.reason
    assert np.all(np.isfinite(est.cov_enu))
    with pytest.raises(VprError, match='top_k'):
        loc.set_config(loc.config.replace(top_k=3))


def test_calibration_changes_sigma(tiny_map, model, tmp_path):
    import shutil

    path = tmp_path / 'cal.vprmap'
    shutil.copytree(tiny_map, path)
    feats = np.random.default_rng(0).normal(size=(60, len(FEATURES)))
    errors = np.exp(feats[:, 0]) * 3.0
    from vpr_ros.calibration import fit
    cal = fit(feats, errors, floor_m=1.0)
    MapDB.open(path).update_manifest(calibration=cal.to_dict())
    loc = _localizer(path, model)
    assert isinstance(loc.calibration, Calibration)
    est = loc.localize(texture(2))
    expected = float(cal.sigma(np.array([est.features[f] for f in FEATURES])))
    assert est.sigma_m == pytest.approx(expected)
    assert est.cov_enu[0, 0] == pytest.approx(expected ** 2)
    assert est.cov_enu[1, 1] == pytest.approx(expected ** 2)


def test_bad_inputs(tiny_map, model, tmp_path):
    loc = _localizer(tiny_map, model)
    with pytest.raises(DataError, match='image 0'):
        loc.localize(np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError):
        loc.localize(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(DataError, match='tensor'):
        loc.localize(torch.zeros(2, 8, 8))
    other = load_model('tiny-test-asgeo', 'cpu')
    with pytest.raises(MapError, match='built with model'):
        Localizer(MapDB.open(tiny_map), other)


def test_geowarp_of_another_backbone_is_refused(tiny_map, model, tmp_path):
    import shutil

    path = tmp_path / 'gw.vprmap'
    shutil.copytree(tiny_map, path)
    db = MapDB.open(path)
    db.attach_file('geowarp', '.pt', lambda p: save_geowarp(GeoWarp(), p, backbone='vgg16'),
                   key='geowarp', record={'backbone': 'vgg16'})
    MapDB.open(path)                              # still a valid map (checksums listed)
    with pytest.raises(CheckpointError, match="backbone 'vgg16'"):
        Localizer(MapDB.open(path), model)


def test_map_without_thumbnails_localises_without_rerank(tmp_path, caplog):
    path = textured_map(tmp_path, 6, name='nothumb.vprmap', thumbnail_size=(0, 0))
    loc = Localizer.open(path, device='cpu')
    assert not loc.rerank
    est = loc.localize(texture(2))
    assert est.candidates[0].index == 2
    assert all(math.isnan(c.rerank_score) for c in est.candidates)


def test_localize_cli_json_and_text(tiny_map, tmp_path, capsys):
    import cv2

    files = []
    for i in (0, 6):
        f = tmp_path / f'q{i}.png'
        cv2.imwrite(str(f), cv2.cvtColor(texture(i), cv2.COLOR_RGB2BGR))
        files.append(str(f))
    assert cli_main(['localize', *files, '--map', str(tiny_map), '--json',
                     '--device', 'cpu']) == 0
    out = capsys.readouterr()
    assert 'not calibrated' in out.err and 'GeoWarp does not reorder the candidates' in out.err
    lines = [json.loads(x) for x in out.out.splitlines()]
    pos = route(N)
    for line, i in zip(lines, (0, 6)):
        assert line['status'] == 'fix'
        assert line['candidates'][0]['index'] == i
        assert haversine_m(line['lat'], line['lon'], pos[i, 0], pos[i, 1]) < 0.01
        assert np.asarray(line['cov_enu']).shape == (3, 3)
    assert cli_main(['localize', files[0], '--map', str(tiny_map), '--no-rerank']) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f'{files[0]}: FIX lat ')
    assert 'not calibrated' in out.err and 'reorder' not in out.err      # nothing to reorder
    assert cli_main(['localize', files[0], '--map', str(tmp_path / 'missing.vprmap')]) == 1
    assert 'map not found' in capsys.readouterr().err


def test_python_api_without_ros(tiny_map):
    import vpr_ros

    one = vpr_ros.localize(texture(8), tiny_map, device='cpu')
    assert one.candidates[0].index == 8
    many = vpr_ros.localize([texture(1), texture(2)], tiny_map, device='cpu')
    assert [e.candidates[0].index for e in many] == [1, 2]


def test_fused_order_moves_from_the_global_to_the_geowarp_order():
    from vpr_ros.localizer import fused_order

    glob = np.array([0.9, 0.8, 0.7, 0.6])
    rerank = np.array([0.1, 0.5, 0.3, np.nan])       # the 4th was not re-ranked
    assert list(fused_order(glob, rerank, 0.0)) == [0, 1, 2, 3]
    assert list(fused_order(glob, rerank, 1.0)) == [1, 2, 0, 3]
    # (1 - w) g + w r at w = 0.3: 0.66, 0.71, 0.58 -> 1, 0, 2
    assert list(fused_order(glob, rerank, 0.3)) == [1, 0, 2, 3]


def test_reorder_equals_localizing_with_that_weight(tiny_map, model):
    image = texture(5)
    loc = _localizer(tiny_map, model, rerank_weight=1.0)
    est = loc.localize(image)
    for weight in (0.0, 0.4, 1.0):
        loc.config = loc.config.replace(rerank_weight=weight)
        again = loc.reorder(est)
        fresh = loc.localize(image)
        assert [c.index for c in again.candidates] == [c.index for c in fresh.candidates]
        assert again.features == pytest.approx(fresh.features, abs=1e-6)
        assert (again.lat, again.lon) == pytest.approx((fresh.lat, fresh.lon), abs=1e-9)


@pytest.mark.parametrize('subspacing', ['off', 'geowarp'])
def test_at_weight_0_geowarp_scores_only_the_top1_and_the_estimate_is_unchanged(
        tiny_map, model, subspacing):
    # Between two entries: with sub-spacing the route neighbours' scores move the position.
    image = (texture(9).astype(np.float32) * 0.6 + texture(10) * 0.4).astype(np.uint8)
    loc = _localizer(tiny_map, model, rerank_weight=1.0, subspacing=subspacing)
    every = loc.localize(image)
    assert sum(np.isfinite(c.rerank_score) for c in every.candidates) == 5
    loc.config = loc.config.replace(rerank_weight=0.0)
    full = loc.reorder(every)                   # weight 0 over all five GeoWarp scores
    fast = loc.localize(image)
    scored = [c.rerank_score for c in fast.candidates if np.isfinite(c.rerank_score)]
    assert len(scored) == 1 and fast.candidates[0].rerank_score == pytest.approx(
        full.candidates[0].rerank_score, abs=1e-6)
    assert [c.index for c in fast.candidates] == [c.index for c in full.candidates]
    assert fast.features == pytest.approx(full.features, abs=1e-6)
    assert (fast.lat, fast.lon, fast.sigma_m) == pytest.approx(
        (full.lat, full.lon, full.sigma_m), abs=1e-9)
    assert fast.status == full.status
    if subspacing == 'geowarp':       # the neighbours' scores came from the route-score pass
        assert fast.route_scores and set(fast.route_scores) <= {8, 9, 10, 11}
    # The weighted mean reads every re-ranked candidate's score: all five are scored.
    loc.config = loc.config.replace(estimator='weighted')
    assert sum(np.isfinite(c.rerank_score) for c in loc.localize(image).candidates) == 5


def _estimate_with(loc, ranking):
    """Make an estimate whose candidates are (entry, global score, GeoWarp score), in order."""
    from vpr_ros.localizer import Candidate, Estimate

    cands = tuple(Candidate(j, loc.map.names[j], 0.0, 0.0, 0.0, g, r) for j, g, r in ranking)
    return Estimate(0.0, 0.0, 0.0, np.eye(3), 'fix', 0.0, 1.0, cands, {'score': 0.0})


def test_fusion_weight_is_kept_only_where_geowarp_finds_the_right_place(tiny_map, model):
    from vpr_ros.calibrate import fit_rerank_weight

    loc = _localizer(tiny_map, model)
    pos = route(N)
    truth = pos[:20, :2]
    # GeoWarp right, global wrong: the true entry i is second globally, first by GeoWarp.
    helps = [_estimate_with(loc, [((i + 10) % N, 0.9, 0.2), (i, 0.8, 0.7)]) for i in range(20)]
    weight, report = fit_rerank_weight(loc, helps, truth, right_m=1.0)
    assert weight > 0 and report['right_place_rate']['0'] == 0.0
    assert report['right_place_rate']['1'] == 1.0
    # GeoWarp wrong, global right: the global order is kept (weight 0).
    hurts = [_estimate_with(loc, [(i, 0.9, 0.2), ((i + 10) % N, 0.8, 0.7)]) for i in range(20)]
    weight, report = fit_rerank_weight(loc, hurts, truth, right_m=1.0)
    assert weight == 0.0 and 'global order kept' in report['reason']
    assert loc.config.rerank_weight == -1.0                 # the localizer is left as it was


def test_fusion_weight_needs_a_gain_the_changed_frames_show(tiny_map, model):
    from vpr_ros.calibrate import fit_rerank_weight
    from vpr_ros.significance import sign_test

    loc = _localizer(tiny_map, model)
    pos = route(N)[:, :2]

    def frames(helps, hurts, same):
        """Frames (and truth) where GeoWarp alone, the global order alone, or both are right."""
        out, entries = [], np.arange(helps + hurts + same) % N
        for k, i in enumerate(entries):
            other = (i + 10) % N
            ranking = ([(other, 0.9, 0.2), (i, 0.8, 0.7)] if k < helps else
                       [(i, 0.9, 0.2), (other, 0.8, 0.7)] if k < helps + hurts else
                       [(i, 0.9, 0.7), (other, 0.8, 0.2)])
            out.append(_estimate_with(loc, ranking))
        return out, pos[entries]

    # GeoWarp puts 6 frames right that the global order has wrong and 2 wrong that it has
    # right; the orders agree on 32. A gain of 0.1, but 6 against 2 is p = 0.14.
    few, truth = frames(6, 2, 32)
    # (min_gain -1: the held-out halves of so few frames may pick either way; the test decides.)
    untested, report = fit_rerank_weight(loc, few, truth, right_m=1.0, min_gain=-1.0,
                                         max_p=1.0)
    assert untested > 0
    assert report['right_place_rate']['1'] - report['right_place_rate']['0'] == \
        pytest.approx(4 / 40)
    weight, report = fit_rerank_weight(loc, few, truth, right_m=1.0, min_gain=-1.0)
    assert weight == 0.0 and 'sign test' in report['reason'] and report['sign_test_p'] > 0.05
    assert sign_test(np.arange(8) < 6, np.arange(8) >= 6) == pytest.approx(37 / 256)
    # The same imbalance five times over is evidence: 30 against 10.
    many, truth = frames(30, 10, 32)
    weight, report = fit_rerank_weight(loc, many, truth, right_m=1.0, min_gain=0.0)
    assert weight > 0 and report['sign_test_p'] < 0.05


def test_calibrate_stores_the_fusion_weight_the_localizer_then_uses(tiny_map, tmp_path):
    import shutil

    from vpr_ros.calibrate import calibrate_map
    from vpr_ros.calibration import CalibrationConfig, FUSION_KEY, store_calibration

    path = tmp_path / 'fused.vprmap'
    shutil.copytree(tiny_map, path)
    loc = Localizer.open(path, device='cpu')
    assert loc.rerank_weight == 0.0                   # uncalibrated: the global order
    cal, report = calibrate_map(loc, CalibrationConfig(pseudo_queries=N, min_per_bin=5, bins=2),
                                progress=False)
    fusion = report['rerank_fusion']
    assert set(fusion['right_place_rate']) >= {'0', '1'}
    store_calibration(loc.map, cal, report)
    again = Localizer.open(path, device='cpu')
    assert again.map.manifest[FUSION_KEY]['weight'] == fusion['weight']
    assert again.rerank_weight == fusion['weight']
    assert again.calibration is not None
    forced = Localizer.open(path, LocalizerConfig(rerank_weight=0.5), device='cpu')
    assert forced.rerank_weight == 0.5
    # A localizer held at weight 0 scores only its top-1; calibrating it still sees every
    # candidate's GeoWarp score, so the fit is the same.
    _, report0 = calibrate_map(Localizer.open(path, LocalizerConfig(rerank_weight=0.0),
                                              device='cpu'),
                               CalibrationConfig(pseudo_queries=N, min_per_bin=5, bins=2),
                               progress=False)
    assert report0['rerank_fusion'] == fusion


def test_an_uncalibrated_map_keeps_the_global_order(tiny_map, tmp_path):
    """Without calibration GeoWarp does not reorder; it still scores the top-1."""
    import shutil

    from vpr_ros.calibrate import calibrate_map
    from vpr_ros.calibration import CalibrationConfig, FUSION_KEY, store_calibration

    model = MapDB.open(tiny_map).load_model('cpu')
    queries = [np.roll(texture(i), 9, axis=1) for i in (2, 11, 20)]
    plain = _localizer(tiny_map, model, rerank=False).localize_batch(queries)
    uncal = _localizer(tiny_map, model)
    assert uncal.calibration is None and uncal.rerank_weight == 0.0
    for est, base in zip(uncal.localize_batch(queries), plain):
        assert [c.index for c in est.candidates] == [c.index for c in base.candidates]
        assert np.isfinite(est.candidates[0].rerank_score)
        assert all(np.isnan(c.rerank_score) for c in est.candidates[1:])
    p = uncal.config.geowarp.num_reranked
    geo = _localizer(tiny_map, model, rerank_weight=1.0).localize_batch(queries)
    assert all(np.isfinite(c.rerank_score) for e in geo
               for c in e.candidates[:p]), 'w = 1 scores every re-ranked candidate'
    # A calibration without a fitted weight stores the one it was made with (GeoWarp's
    # order); one from before weights were stored keeps that order too.
    path = tmp_path / 'unfitted.vprmap'
    shutil.copytree(tiny_map, path)
    loc = Localizer.open(path, device='cpu')
    cal, report = calibrate_map(loc, CalibrationConfig(pseudo_queries=N, min_per_bin=5, bins=2,
                                                       fit_rerank_weight=False),
                                progress=False)
    assert report['rerank_fusion']['weight'] == 1.0
    assert 'fit_rerank_weight off' in report['rerank_fusion']['reason']
    store_calibration(loc.map, cal, report)
    assert Localizer.open(path, device='cpu').rerank_weight == 1.0
    fusion = dict(MapDB.open(path).manifest[FUSION_KEY])
    del fusion['weight']
    MapDB.open(path).update_manifest(**{FUSION_KEY: fusion})      # an older calibration
    older = Localizer.open(path, device='cpu')
    assert older.calibration is not None and older.rerank_weight == 1.0


def test_a_calibration_that_no_longer_fits_the_map_is_said_everywhere(tiny_map, tmp_path,
                                                                      capsys):
    """After calibrate: GeoWarp fitted again, descriptors re-projected, re-ranking switched."""
    import shutil

    import cv2
    from vpr_ros.calibrate import calibrate_map
    from vpr_ros.calibration import CalibrationConfig, fitted_with, store_calibration
    from vpr_ros.mapdb.compact import convert_map

    path = tmp_path / 'cal.vprmap'
    shutil.copytree(tiny_map, path)

    def calibrate():
        loc = Localizer.open(path, device='cpu')
        cal, report = calibrate_map(loc, CalibrationConfig(pseudo_queries=N, min_per_bin=5,
                                                           bins=2), progress=False)
        store_calibration(loc.map, cal, report)
        return report

    report = calibrate()
    assert report['fitted_with'] == fitted_with(MapDB.open(path), rerank=True)
    assert report['fitted_with']['geowarp_sha256'] is None            # the identity warp
    assert Localizer.open(path, device='cpu').calibration_problem is None
    assert cli_main(['map', 'verify', str(path)]) == 0
    off = Localizer.open(path, LocalizerConfig(rerank=False), device='cpu')
    assert 'calibrated with GeoWarp re-ranking and this localizer runs without it' in \
        off.calibration_problem and 'rerank: true' in off.calibration_problem
    capsys.readouterr()
    assert cli_main(['fit-geowarp', str(path), '--iterations', '2', '--batch-size', '2',
                     '--device', 'cpu', '--no-progress']) == 0
    assert 'another GeoWarp' in capsys.readouterr().out              # fit-geowarp says it
    stale = Localizer.open(path, device='cpu')
    assert stale.calibration is not None                             # still used, but said
    assert 'another GeoWarp' in stale.calibration_problem
    assert 'run vpr-ros calibrate again' in stale.calibration_problem
    image = tmp_path / 'q.png'
    cv2.imwrite(str(image), cv2.cvtColor(texture(3), cv2.COLOR_RGB2BGR))
    # Localised with the stale calibration (its sigma may make the frame NO_FIX: exit 3).
    assert cli_main(['localize', str(image), '--map', str(path)]) in (0, 3)
    assert f'warning: {path}: {stale.calibration_problem}' in capsys.readouterr().err
    assert calibration_warning(stale, path) == f'{path}: {stale.calibration_problem}'
    assert cli_main(['map', 'verify', str(path)]) == 1
    assert 'files OK, but the calibration no longer fits' in capsys.readouterr().err
    assert cli_main(['map', 'info', str(path)]) == 0
    assert 'another GeoWarp' in capsys.readouterr().out
    calibrate()                                                      # made again: it fits
    assert Localizer.open(path, device='cpu').calibration_problem is None
    assert calibration_warning(Localizer.open(path, device='cpu'), path) is None
    assert cli_main(['map', 'verify', str(path)]) == 0
    # A v2 conversion projects the descriptors onto 16 principal directions: other scores;
    # onto all of them it is a rotation, which keeps every score.
    v2 = convert_map(path, tmp_path / 'v2.vprmap', dim=16)
    assert 'projected differently' in Localizer.open(v2, device='cpu').calibration_problem
    dim = MapDB.open(path).descriptor_dim
    rotated = convert_map(path, tmp_path / 'rotated.vprmap', dim=dim)
    assert MapDB.open(rotated).projection.dim == dim
    assert Localizer.open(rotated, device='cpu').calibration_problem is None
    plain = LocalizerConfig(rerank=False)
    a, b = (Localizer.open(p, plain, device='cpu').localize(texture(7)) for p in (path, rotated))
    np.testing.assert_allclose([c.score for c in b.candidates[:3]],
                               [c.score for c in a.candidates[:3]], atol=2e-3)   # float16
    c = Localizer.open(v2, plain, device='cpu').localize(texture(7))
    # Truncated, every query score rises (the query loses the part outside the kept span
    # before it is normalised): the calibration's score and margin features move.
    sa, sb, sc = (np.array([x.score for x in e.candidates]) for e in (a, b, c))
    assert (sc - sa).mean() > max(1e-3, 3 * np.abs(sb - sa).mean())
