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

"""Calibration: the sigma fit, NEES coverage, pseudo-queries, vpr-ros calibrate."""

from __future__ import annotations

from mapdb_helpers import textured_map
import numpy as np
import pytest
from vpr_ros.calibrate import calibrate_map
from vpr_ros.calibration import (Calibration, CalibrationConfig, cross_validated_coverage, fit,
                                 IDEAL_COVERAGE, nees_coverage, stored_geowarp_mode)
from vpr_ros.cli import main as cli_main
from vpr_ros.confidence import FEATURES
from vpr_ros.errors import DataError, MapError
from vpr_ros.fix_quality import place_spacing_m
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import MapDB
from vpr_ros.pseudo_queries import pseudo_query


def _heteroscedastic(n: int, seed: int):
    """Features whose first column sets the true sigma; 2-D Gaussian errors with that sigma."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, len(FEATURES)))
    sigma = 2.0 * np.exp(0.8 * feats[:, 0])
    errors = rng.normal(size=(n, 2)) * sigma[:, None]
    return feats, errors, sigma


def test_nees_coverage_by_hand():
    errors = np.array([[1.0, 0.0], [0.0, 3.0], [0.5, 0.5]])
    cover = nees_coverage(errors, np.ones(3))          # NEES 1, 9, 0.5
    assert cover == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    with pytest.raises(DataError):
        nees_coverage(errors, np.ones(2))


def test_fit_recovers_sigma_and_coverage():
    feats, errors, sigma = _heteroscedastic(3000, 0)
    cal = fit(feats, np.linalg.norm(errors, axis=1), CalibrationConfig(bins=8), floor_m=0.5)
    assert abs(cal.weights[0]) > 5 * max(abs(w) for w in cal.weights[1:])
    # On fresh data from the same process the coverage is close to the 2-D Gaussian ideal.
    feats2, errors2, sigma2 = _heteroscedastic(3000, 1)
    got = cal.sigma(feats2)
    cover = nees_coverage(errors2, got)
    assert cover[2] == pytest.approx(IDEAL_COVERAGE[2], abs=0.04)
    assert cover[1] == pytest.approx(IDEAL_COVERAGE[1], abs=0.08)
    assert cover[3] > 0.95
    assert np.corrcoef(np.log(got), np.log(sigma2))[0, 1] > 0.8
    # Monotone: more risk never means a smaller sigma.
    assert list(cal.knots_sigma) == sorted(cal.knots_sigma)


def test_outliers_do_not_inflate_every_sigma():
    feats, errors, _ = _heteroscedastic(1000, 2)
    norms = np.linalg.norm(errors, axis=1)
    norms[:50] = 500.0                                  # 5 % wrong matches, far away
    cal = fit(feats, norms, floor_m=0.5)
    assert np.median(cal.sigma(feats)) < 10.0


def test_wrong_places_at_the_top_of_the_risk_get_a_sigma_of_their_own():
    """The riskiest 5 % of frames are a bin of their own: the wrong places there are covered."""
    feats, errors, _ = _heteroscedastic(400, 4)
    norms = np.linalg.norm(errors, axis=1)
    risky = np.argsort(feats[:, 0])[-20:]              # the 5 % with the largest true sigma
    wrong = risky[::2]                                 # half of them 200 m off
    norms[wrong] = 200.0
    fits = {share: fit(feats, norms, CalibrationConfig(tail_share=share), floor_m=0.5)
            for share in (0.0, 0.05)}
    assert len(fits[0.05].knots_sigma) == len(fits[0.0].knots_sigma) + 1
    tail = fits[0.05].sigma(feats[wrong])
    assert np.all(tail >= 200.0 / 3), tail             # within 3 sigma of the wrong place
    assert np.all(fits[0.0].sigma(feats[wrong]) < 200.0 / 9)   # the sixth-of-frames bin
    # The other 95 % keep the sigma they had.
    rest = np.setdiff1d(np.arange(400), risky)
    ratio = fits[0.05].sigma(feats[rest]) / fits[0.0].sigma(feats[rest])
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    # Too few frames for a tail of 10: the bins stay as they were.
    small = fit(feats[:150], norms[:150], floor_m=0.5)
    assert len(small.knots_sigma) == 6


def test_errors_in_whole_spacings_do_not_make_the_fit_jump():
    """Ties (errors on the map's 1 m lattice) cannot flip sigma on float rounding."""
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(120, len(FEATURES)))
    norms = np.where(np.arange(120) % 10 == 0, 3.0, 1.0)     # 90 % at 1 m, 10 % at 3 m
    norms[::37] = 0.0
    fits = [fit(feats, norms * scale, CalibrationConfig(bins=1), floor_m=1.0)
            for scale in (0.999, 1.0, 1.001)]
    sigmas = [f.knots_sigma[0] for f in fits]
    assert max(sigmas) / min(sigmas) < 1.01, sigmas
    # The 1 m errors sit at the 1-sigma boundary (within their spread: about 39 % of them in),
    # where counted in or out they put sigma well above 1 m or below it.
    assert 0.95 <= sigmas[1] <= 1.05, sigmas


def test_round_trip_and_malformed():
    feats, errors, _ = _heteroscedastic(200, 3)
    cal = fit(feats, np.linalg.norm(errors, axis=1), floor_m=1.0, info={'source': 'test'})
    back = Calibration.from_dict(cal.to_dict())
    assert back == cal
    np.testing.assert_allclose(back.sigma(feats), cal.sigma(feats))
    bad = cal.to_dict()
    bad['features'] = ['score']
    with pytest.raises(MapError, match='calibrate again'):
        Calibration.from_dict(bad)
    with pytest.raises(MapError, match='malformed'):
        Calibration.from_dict({'version': 1, 'features': list(FEATURES)})
    with pytest.raises(DataError, match='at least'):
        fit(feats[:5], np.ones(5))
    with pytest.raises(DataError, match='do not match'):
        fit(feats[:, :2], np.ones(len(feats)))


def test_cross_validated_coverage_is_near_ideal_on_clean_data():
    feats, errors, _ = _heteroscedastic(2000, 4)
    cover = cross_validated_coverage(feats, errors, floor_m=0.5)
    assert 0.80 <= cover[2] <= 0.92


def test_pseudo_query_is_a_deterministic_changed_view():
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    a = pseudo_query(image, np.random.default_rng(1))
    b = pseudo_query(image, np.random.default_rng(1))
    c = pseudo_query(image, np.random.default_rng(2))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a.astype(int) - image).mean() > 5


def test_place_spacing():
    enu = np.stack([np.arange(10) * 3.0, np.zeros(10)], axis=1)
    assert place_spacing_m(enu) == pytest.approx(3.0)


def test_calibrate_cli_stores_a_fit_the_localizer_uses(tmp_path, capsys):
    path = textured_map(tmp_path, 24, name='cal.vprmap')
    assert cli_main(['calibrate', str(path), '--pseudo-queries', '24', '--dry-run',
                     '--no-progress', '--device', 'cpu']) == 0
    assert 'dry run' in capsys.readouterr().out
    assert not MapDB.open(path).manifest['calibration']
    assert cli_main(['calibrate', str(path), '--tail-share', '0.9', '--no-progress']) != 0
    assert 'tail_share' in capsys.readouterr().err
    assert cli_main(['calibrate', str(path), '--max-p', '2', '--no-progress']) != 0
    assert 'max_p' in capsys.readouterr().err
    assert cli_main(['calibrate', str(path), '--pseudo-queries', '24', '--no-progress',
                     '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    assert 'nees_coverage' in out and 'calibration stored' in out
    assert 'GeoWarp fusion (' in out and 'GeoWarp mode: ' in out
    db = MapDB.open(path)                              # checksums still verify
    fusion = db.manifest['rerank_fusion']
    assert fusion['weight'] in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0)
    # geowarp.mode auto: both modes were localised and one was chosen, which the map keeps.
    choice = fusion['mode_choice']
    assert set(choice['right_place_rate_held_out']) == {'features', 'image'}
    assert fusion['geowarp_mode'] == choice['mode'] in ('features', 'image')
    assert stored_geowarp_mode(db.manifest) == fusion['geowarp_mode']
    stored = db.manifest['calibration']
    assert stored['info']['frames'] == 24
    assert stored['info']['source'].startswith('24 pseudo-queries')
    loc = Localizer(db, device='cpu')
    assert loc.calibration == Calibration.from_dict(stored)
    assert loc.geowarp_mode == fusion['geowarp_mode']
    assert cli_main(['map', 'info', str(path)]) == 0
    assert (f'calibration   yes (GeoWarp {fusion["geowarp_mode"]} mode, fusion weight '
            f'{fusion["weight"]:g}, between map frames: off)') in capsys.readouterr().out


def test_choose_geowarp_mode_keeps_image_mode_only_where_it_shows_a_gain():
    from vpr_ros.calibrate import choose_geowarp_mode

    feats = np.zeros(200, bool)
    feats[:100] = True
    better = feats.copy()
    better[100:130] = True                      # 30 more frames right, none lost
    mode, report = choose_geowarp_mode({'features': feats, 'image': better})
    assert mode == 'image' and report['sign_test_p'] < 1e-6
    assert report['right_place_rate_held_out'] == {'features': 0.5, 'image': 0.65}
    # Two frames more in 200 is 1 %, but not a gain the frames show (p = 0.25): the fast mode.
    slight = feats.copy()
    slight[100:102] = True
    assert choose_geowarp_mode({'features': feats, 'image': slight})[0] == 'features'
    # As right as the features, on other frames: no reason to pay for a second pass.
    swapped = np.roll(feats, 50)
    assert choose_geowarp_mode({'features': feats, 'image': swapped})[0] == 'features'
    assert choose_geowarp_mode({'features': better, 'image': feats})[0] == 'features'


def test_calibrate_with_a_set_geowarp_mode_stores_it_for_the_map(tmp_path, capsys):
    # A mode set in the localizer config is the one calibrated with (no choice), and the
    # map then re-ranks in it wherever the localizer is left at geowarp.mode auto.
    path = textured_map(tmp_path, 24, name='image.vprmap')
    cfg = tmp_path / 'image.yaml'
    cfg.write_text('geowarp:\n  mode: image\n')
    assert cli_main(['calibrate', str(path), '--pseudo-queries', '24', '--no-progress',
                     '--device', 'cpu', '--localizer-config', str(cfg)]) == 0
    out = capsys.readouterr().out
    assert 'GeoWarp fusion (image mode)' in out and 'GeoWarp mode: ' not in out
    db = MapDB.open(path)
    assert db.manifest['rerank_fusion']['geowarp_mode'] == 'image'
    assert db.manifest['rerank_fusion']['mode_choice'] is None
    assert db.manifest['calibration']['info']['geowarp_mode'] == 'image'
    loc = Localizer(db, device='cpu')
    assert loc.config.geowarp.mode == 'auto' and loc.geowarp_mode == 'image'
    assert loc.geowarp.config.mode == 'image'

    def scores(mode):
        # Weight 1: every re-ranked candidate is scored (at weight 0 only the top-1 is).
        config = LocalizerConfig(rerank_weight=1.0)
        localizer = Localizer(db, config=config.replace(
            geowarp=config.geowarp.replace(mode=mode)), device='cpu')
        estimate = localizer.localize(db.thumbnails(5))
        return localizer.geowarp_mode, sorted(c.rerank_score for c in estimate.candidates[:5])

    (auto, by_auto), (image, by_image), (feats, by_feats) = map(
        scores, ('auto', 'image', 'features'))
    assert (auto, image, feats) == ('image', 'image', 'features')
    assert by_auto == by_image != by_feats     # the same computation, and not the other
    # A map calibrated before the mode was chosen stored only the weight: features mode.
    db.update_manifest(rerank_fusion={'weight': 0.5})
    assert Localizer(MapDB.open(path), device='cpu').geowarp_mode == 'features'


def test_a_place_labelled_map_calibrates_round_covariances(tmp_path, capsys):
    # Six places seen four times each, every view at its place's coordinate (as a benchmark
    # that labels places, not camera poses): no route direction, so the fixes are round.
    from mapdb_helpers import route, write_csv_source
    from vpr_ros.images import load_image
    from vpr_ros.mapdb import build_map, BuildConfig

    csv = write_csv_source(tmp_path / 'src', 24)
    places = route(6, spacing_m=12.0)
    lines = csv.read_text().splitlines()
    rows = [line.split(',') for line in lines[1:]]
    csv.write_text('\n'.join([lines[0]] + [
        ','.join([r[0]] + [repr(float(v)) for v in places[i // 4]])
        for i, r in enumerate(rows)]) + '\n')
    path = build_map(csv, tmp_path / 'places.vprmap',
                     BuildConfig(model='tiny-test', thumbnail_size=(64, 80)), progress=False)
    assert cli_main(['calibrate', str(path), '--pseudo-queries', '24', '--no-progress',
                     '--device', 'cpu']) == 0
    assert 'place spacing 0.50 m (the floor: most entries share their position' in \
        capsys.readouterr().out
    stored = MapDB.open(path).manifest['calibration']
    assert stored['knots_ratio'] and set(stored['knots_ratio']) == {1.0}
    loc = Localizer(MapDB.open(path), device='cpu')
    assert not np.isfinite(loc.route.direction).any()
    estimate = loc.localize(load_image(tmp_path / 'src' / rows[5][0]))
    cov = np.asarray(estimate.cov_enu)[:2, :2]
    assert cov[0, 0] == pytest.approx(cov[1, 1]) and cov[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_calibrate_makes_pseudo_queries_from_the_map_source(tmp_path, capsys):
    """Pseudo-queries come from the source images (the camera's size), else the thumbnails."""
    from mapdb_helpers import texture
    from vpr_ros.calibrate import pseudo_query_frames
    from vpr_ros.mapdb.sources import source_images
    from vpr_ros.pseudo_queries import PseudoQueries

    path = textured_map(tmp_path, 24, name='src.vprmap')
    db = MapDB.open(path)
    load = source_images(db)
    assert np.array_equal(load(3), texture(3))           # entry 3's source, not its thumbnail
    views, chosen, what = pseudo_query_frames(db, 10, 0, load)
    thumbs, chosen_t, what_t = pseudo_query_frames(db, 10, 0)
    assert np.array_equal(chosen, chosen_t)               # same entries either way
    assert 'source images' in what and 'thumbnails' in what_t
    assert views[0].shape == texture(0).shape != thumbs[0].shape == db.thumbnails(0).shape
    # Made on reading, the same in any order and as a slice.
    assert isinstance(views, PseudoQueries) and len(views) == 10
    backwards = [views[i] for i in reversed(range(10))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(backwards, views[0:10]))
    assert not np.array_equal(views[0], views[1])

    assert cli_main(['calibrate', str(path), '--pseudo-queries', '24', '--no-progress',
                     '--device', 'cpu', '--dry-run']) == 0
    assert "24 pseudo-queries from the map's source images" in capsys.readouterr().out
    # A source given on the command line must hold the map's entries.
    assert cli_main(['calibrate', str(path), '--source', str(tmp_path / 'nowhere.csv'),
                     '--no-progress', '--device', 'cpu', '--dry-run']) == 1
    assert 'nowhere.csv does not exist' in capsys.readouterr().err
    # The recorded source gone: the thumbnails, and the reason.
    (tmp_path / 'src').rename(tmp_path / 'moved')
    assert cli_main(['calibrate', str(path), '--pseudo-queries', '24', '--no-progress',
                     '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    assert 'pseudo-queries from the map thumbnails, not the source images' in out
    assert MapDB.open(path).manifest['calibration']['info']['source'] == \
        '24 pseudo-queries from the map thumbnails'
    assert cli_main(['calibrate', str(path), '--source', str(tmp_path / 'moved' / 'route.csv'),
                     '--pseudo-queries', '24', '--no-progress', '--device', 'cpu']) == 0
    assert MapDB.open(path).manifest['calibration']['info']['source'] == \
        "24 pseudo-queries from the map's source images"


def test_calibrate_does_not_depend_on_an_older_calibration(tmp_path):
    """Re-calibrating a calibrated map gives what calibrating it the first time gives."""
    import shutil

    from vpr_ros.calibration import FUSION_KEY

    first = textured_map(tmp_path, 24, name='a.vprmap')
    second = tmp_path / 'b.vprmap'
    shutil.copytree(first, second)
    config = CalibrationConfig(pseudo_queries=24, min_per_bin=5, fit_rerank_weight=False)
    MapDB.open(second).update_manifest(**{FUSION_KEY: {'weight': 0.0}})   # an older choice
    fits = []
    for path in (first, second):
        cal, report = calibrate_map(Localizer.open(path, device='cpu'), config, progress=False)
        fits.append((cal.knots_sigma, cal.knots_r, report['error_m'], report['subspacing']))
    assert fits[0] == fits[1]


def test_calibrate_map_with_a_query_set(tmp_path):
    from mapdb_helpers import route, texture

    path = textured_map(tmp_path, 24, name='q.vprmap')
    loc = Localizer.open(path, device='cpu')
    images = [texture(i) for i in range(24)]
    truth = route(24)[:, :2]
    cal, report = calibrate_map(loc, CalibrationConfig(min_per_bin=10), queries=(images, truth),
                                progress=False)
    # The map's own images come back at their own place (sub-spacing moves them by a few cm
    # of the 5 m spacing): tiny errors, tiny sigmas.
    assert report['error_m']['median'] < 0.25
    assert report['frames'] == 24
    assert max(cal.knots_sigma) < 0.5
