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

"""Map-side descriptor adaptation: the projections, the held-out gate, storage and use."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from mapdb_helpers import textured_map
import numpy as np
import pytest
from vpr_ros.errors import DataError, MapError
from vpr_ros.mapdb import MapDB
from vpr_ros.mapdb.adaptation import (adapt_map, AdaptConfig, choose_adaptation, fit_lw,
                                      fit_pcaw, matching_pairs, spatial_folds)


def _anisotropic(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * np.geomspace(10.0, 0.1, d)).astype(np.float32)


def test_pcaw_whitens_the_map_descriptors():
    x = _anisotropic(600, 24)
    p = fit_pcaw(x, 12, shrinkage=0.0)
    y = (x - p.mean) @ p.matrix.T
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(12), atol=2e-3)
    assert p.apply(x).shape == (600, 12)
    np.testing.assert_allclose(np.linalg.norm(p.apply(x), axis=1), 1.0, atol=1e-5)
    # Truncation keeps the leading (largest-variance) rows.
    np.testing.assert_array_equal(p.truncate(4).matrix, p.matrix[:4])


def test_lw_whitens_the_differences_of_matching_pairs():
    x = _anisotropic(400, 16, seed=1)
    pairs = np.stack([np.arange(0, 398, 2), np.arange(1, 399, 2)], axis=1)
    p = fit_lw(x, pairs, 16, shrinkage=0.0)
    diff = (x[pairs[:, 0]] - x[pairs[:, 1]]).astype(np.float64)
    cov_s = diff.T @ diff / len(diff)
    np.testing.assert_allclose(p.matrix @ cov_s @ p.matrix.T, np.eye(16), atol=1e-3)
    # Rows are ordered by decreasing variance of the whitened map descriptors.
    var = ((x - p.mean) @ p.matrix.T).var(axis=0)
    assert np.all(np.diff(var) <= 1e-6 * var.max())
    with pytest.raises(DataError, match='matching pairs'):
        fit_lw(x, np.zeros((0, 2)), 4)


def test_moments_of_map_parts_add_up_to_the_fit_on_their_union():
    # The held-out check fits each fold's candidates from summed moments of the other folds.
    from vpr_ros.mapdb.adaptation import _lw, _pcaw, Moments, PairMoments

    x = _anisotropic(300, 16, seed=2)
    labels = np.arange(300) % 3
    parts = Moments.by_label(x, labels, 3, x.mean(axis=0, dtype=np.float64))
    train = parts[0] + parts[2]
    rows = x[labels != 1]
    assert train.count == len(rows)
    np.testing.assert_allclose(train.mean(), rows.mean(axis=0, dtype=np.float64), atol=1e-5)
    np.testing.assert_allclose(train.covariance(rows.mean(axis=0)),
                               np.cov(rows.T.astype(np.float64), bias=True), atol=1e-3)
    # The same projections (rows equal up to sign) as fitted on the rows themselves.
    direct, summed = fit_pcaw(rows, 8), _pcaw(train, 8, 0.1)
    np.testing.assert_allclose(np.abs(direct.matrix @ np.linalg.pinv(summed.matrix)),
                               np.eye(8), atol=1e-3)
    pairs = np.stack([np.arange(0, 298, 2), np.arange(1, 299, 2)], axis=1)
    keep = (labels[pairs] != 1).all(axis=1)
    pair_parts = PairMoments.by_label(x, pairs[keep], np.zeros(keep.sum(), np.int64), 1)
    remap = np.cumsum(labels != 1) - 1
    direct = fit_lw(rows, remap[pairs[keep]], 8)
    summed = _lw(train, pair_parts[0], 8, 0.1)
    np.testing.assert_allclose(np.abs(direct.matrix @ np.linalg.pinv(summed.matrix)),
                               np.eye(8), atol=1e-3)


def test_matching_pairs_are_the_entries_within_the_radius():
    enu = np.stack([np.arange(20.0), np.zeros(20)], axis=1)
    pairs = matching_pairs(enu, 2.0)
    assert {tuple(p) for p in pairs} == {(i, j) for i in range(20) for j in range(i + 1, 20)
                                         if j - i <= 2}
    assert len(matching_pairs(enu, 2.0, limit=10)) == 10


def test_spatial_folds_hold_out_places_not_frames():
    enu = np.stack([np.arange(90.0), np.zeros(90)], axis=1)
    fold = spatial_folds(enu, 3)
    assert sorted(set(fold)) == [0, 1, 2]
    assert min(np.bincount(fold)) >= 15
    # Contiguous stretches of the route share a fold: few changes along it.
    assert int((np.diff(fold) != 0).sum()) <= 11


def _places(n_places: int = 240, d: int = 48, nuisance: float = 6.0, seed: int = 0,
            jitter: float = 1.0, noise: float = 0.3):
    """Descriptors = smooth place code + large per-image nuisance in a few directions."""
    rng = np.random.default_rng(seed)
    code = np.cumsum(rng.normal(size=(n_places, d)), axis=0) * 0.35
    code += jitter * rng.normal(size=(n_places, d))
    basis = np.linalg.qr(rng.normal(size=(d, 4)))[0].T      # 4 nuisance directions

    def view(rows):
        return (code[rows] + nuisance * rng.normal(size=(len(rows), 4)) @ basis
                + noise * rng.normal(size=(len(rows), d))).astype(np.float32)

    enu = np.stack([np.arange(n_places, dtype=np.float64), np.zeros(n_places)], axis=1)
    return view, enu


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_gate_keeps_a_whitening_that_helps_on_held_out_places():
    view, enu = _places()
    rows = np.arange(len(enu))
    database = _unit(view(rows))
    sources = np.random.default_rng(1).choice(len(enu), 120, replace=False)
    queries = _unit(view(sources))
    config = AdaptConfig(dims=(8, 16, 32), positive_radius_m=2.0, validation_queries=120)
    choice = choose_adaptation(database, enu, queries, sources, config)
    table = {(r['method'], r['dim']): r['recall@1'] for r in choice.table}
    assert choice.method in ('pcaw', 'lw') and choice.projection is not None
    assert table[(choice.method, choice.dim)] >= table[('none', 48)] + config.min_gain
    # ... and it helps fresh queries of every place too (not only the validation ones).
    fresh_src = np.arange(len(enu))
    fresh = _unit(view(fresh_src))

    def r1(q, db):
        return float(np.mean(np.abs(np.argmax(q @ db.T, axis=1) - fresh_src) <= 3))

    p = choice.projection
    assert r1(p.apply(fresh), p.apply(database)) > r1(fresh, database) + 0.05


def test_sign_test_and_the_gate_refuse_a_gain_the_changed_queries_do_not_show():
    from vpr_ros.significance import sign_test

    plain = np.zeros(200, bool)
    two = plain.copy()
    two[:2] = True                                        # 2 of 200 more right, none lost
    assert sign_test(two, plain) == pytest.approx(0.25)
    assert sign_test(plain, plain) == 1.0
    many = plain.copy()
    many[:12] = True
    many_lost = plain.copy()
    many_lost[12:14] = True                               # 12 gained, 2 lost
    assert sign_test(many, many_lost) == pytest.approx(sum(
        math.comb(14, k) for k in range(12, 15)) / 2 ** 14)   # 0.0065
    # The same held-out data that keeps a whitening (previous test) at max_p 0.05 keeps
    # the plain descriptors when no p can pass.
    view, enu = _places()
    database = _unit(view(np.arange(len(enu))))
    sources = np.random.default_rng(1).choice(len(enu), 120, replace=False)
    queries = _unit(view(sources))
    config = AdaptConfig(dims=(8, 16, 32), positive_radius_m=2.0, validation_queries=120)
    kept = choose_adaptation(database, enu, queries, sources, config)
    assert kept.method != 'none' and kept.report['sign_test_p'] <= 0.05
    # The best of 6 candidates (2 methods x 3 dims) is tested at 0.05 / 6 (Bonferroni): a p
    # that passes max_p alone but not max_p / 6 keeps the plain descriptors.
    assert kept.report['candidates'] == 6
    assert kept.report['sign_test_threshold'] == pytest.approx(0.05 / 6)
    assert kept.report['sign_test_p'] <= 0.05 / 6
    between = config.replace(max_p=min(1.0, 3 * kept.report['sign_test_p']))
    refused = choose_adaptation(database, enu, queries, sources, between)
    assert refused.method == 'none' and '6 candidates' in refused.report['reason']
    strict = choose_adaptation(database, enu, queries, sources, config.replace(max_p=0.0))
    assert strict.method == 'none' and 'sign test' in strict.report['reason']


def test_a_second_drive_decides_the_projection():
    view, enu = _places()
    database = _unit(view(np.arange(len(enu))))
    frames = np.arange(0, len(enu), 2)
    drive = (_unit(view(frames)), enu[frames])      # another pass: fresh views, own positions
    config = AdaptConfig(dims=(8, 16, 32), positive_radius_m=2.0)
    choice = choose_adaptation(database, enu, None, None, config, drive=drive)
    assert choice.method in ('pcaw', 'lw') and choice.report['decided_by'] == 'second-drive'
    assert choice.report['drive_frames'] == len(frames) and 'on the second drive' in \
        choice.report['reason']
    table = {(r['method'], r['dim']): r for r in choice.table}
    assert table[('none', 48)]['queries'] == len(frames)
    assert table[(choice.method, choice.dim)]['recall@1'] >= \
        table[('none', 48)]['recall@1'] + config.min_gain
    assert choice.report['sign_test_p'] <= choice.report['sign_test_threshold']
    # A drive the plain descriptors already get right: nothing to gain, plain kept.
    view, enu = _places(150, 32, nuisance=0.0, seed=2, jitter=0.02, noise=0.02)
    database = _unit(view(np.arange(150)))
    easy = (_unit(view(np.arange(150))), enu)
    plain = choose_adaptation(database, enu, None, None, config, drive=easy)
    assert plain.method == 'none' and plain.projection is None
    assert 'on the second drive' in plain.report['reason']


def test_gate_keeps_plain_descriptors_when_nothing_helps():
    # No nuisance: the plain descriptors already find every place; nothing can gain.
    view, enu = _places(150, 32, nuisance=0.0, seed=2, jitter=0.02, noise=0.02)
    database = _unit(view(np.arange(150)))
    sources = np.random.default_rng(2).choice(150, 60, replace=False)
    queries = _unit(view(sources))
    choice = choose_adaptation(database, enu, queries, sources, AdaptConfig(dims=(8, 16)))
    plain = next(r for r in choice.table if r['method'] == 'none')
    assert plain['recall@1'] > 0.95
    assert choice.method == 'none' and choice.projection is None
    assert 'plain' in choice.report['reason'] or 'no candidate' in choice.report['reason']
    forced = choose_adaptation(database, enu, queries, sources,
                               AdaptConfig(method='pcaw', dims=(8, 16)))
    assert forced.method == 'pcaw' and 'forced' in forced.report['reason']


def test_build_map_validates_on_pseudo_queries_from_its_source_images(tmp_path):
    forced = AdaptConfig(method='pcaw', dims=(8,), validation_queries=24, folds=2)
    path = textured_map(tmp_path, 48, adapt=forced)
    db = MapDB.open(path)
    record = db.manifest['adaptation']
    assert record['method'] == 'pcaw' and record['dim'] == 8       # forced, so kept
    assert record['report']['pseudo_queries_from'] == 'source images'
    assert record['report']['pseudo_queries'] == 24
    assert {(r['method'], r['dim']) for r in record['validation']} == {
        ('none', db.descriptor_dim), ('pcaw', 8)}


def test_build_map_lets_a_second_drive_decide_the_adaptation(tmp_path):
    from mapdb_helpers import write_csv_source

    source = write_csv_source(tmp_path / 'src', 48)
    drive = write_csv_source(tmp_path / 'drive', 30)      # the route's first 30 places again
    config = tmp_path / 'build.yaml'
    # 40 dimensions: more than a fold of the 48 entries trains on (32), fewer than the whole
    # map, which a second drive's projection is fitted on.
    config.write_text('model: tiny-test\nthumbnail_size: [64, 80]\n'
                      'adapt: {method: pcaw, dims: [40]}\n')
    out = tmp_path / 'm.vprmap'
    _vpr_ros('build-map', source, '--out', out, '--config', config, '--queries', drive,
             '--no-progress')
    record = MapDB.open(out).manifest['adaptation']
    assert record['method'] == 'pcaw' and record['dim'] == 40      # forced, so kept
    assert record['report']['decided_by'] == 'second-drive'
    assert record['report']['drive_frames'] == 30
    assert 'pseudo_queries_from' not in record['report']
    assert {r['queries'] for r in record['validation']} == {30}
    # A drive that cannot be read fails before any image is described; none is refused.
    bad = _vpr_ros('build-map', source, '--out', tmp_path / 'x.vprmap', '--config', config,
                   '--queries', tmp_path / 'missing.csv', '--no-progress', check=False)
    assert bad.returncode != 0 and 'missing.csv' in bad.stderr
    assert not (tmp_path / 'x.vprmap').exists()
    # The map's thinning is the map's: the drive's 30 frames (5 m apart) all decide.
    config.write_text('model: tiny-test\nthumbnail_size: [64, 80]\n'
                      'adapt: {method: pcaw, dims: [8]}\nsource: {min_spacing_m: 9.0}\n')
    _vpr_ros('build-map', source, '--out', tmp_path / 'thin.vprmap', '--config', config,
             '--queries', drive, '--no-progress')
    thinned = MapDB.open(tmp_path / 'thin.vprmap')
    assert len(thinned) == 24
    assert thinned.manifest['adaptation']['report']['drive_frames'] == 30
    off = _vpr_ros('build-map', source, '--out', tmp_path / 'y.vprmap', '--model', 'tiny-test',
                   '--adapt', 'none', '--queries', drive, '--no-progress', check=False)
    assert off.returncode != 0 and 'adapt method none' in off.stderr


def test_too_small_or_unplaced_maps_are_clear_errors():
    rng = np.random.default_rng(3)
    x = _unit(rng.normal(size=(20, 64)).astype(np.float32))
    enu = np.stack([np.arange(20.0), np.zeros(20)], axis=1)
    with pytest.raises(DataError, match='too small'):
        choose_adaptation(x, enu, x[:5], np.arange(5), AdaptConfig(dims=(32, 64)))
    enu[3] = np.nan
    with pytest.raises(DataError, match='position'):
        choose_adaptation(x, enu, x[:5], np.arange(5), AdaptConfig(dims=(4,)))


@pytest.fixture(scope='module')
def plain_map(tmp_path_factory):
    folder = tmp_path_factory.mktemp('adapt')
    return textured_map(folder, 48, adapt=AdaptConfig(method='none'))


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def _vpr_ros(*args, check=True):
    proc = subprocess.run([sys.executable, '-m', 'vpr_ros.cli', *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_pseudo_queries_are_described_in_the_device_batches(plain_map):
    from vpr_ros.device import forward_batch
    from vpr_ros.mapdb.adaptation import describe_pseudo_queries

    db = MapDB.open(plain_map)
    model = db.load_model('cpu')
    seen = []
    hook = model.aggregation.register_forward_pre_hook(
        lambda _, inputs: seen.append(len(inputs[0])))
    try:
        auto, sources = describe_pseudo_queries(db, model, 24, seed=3)
    finally:
        hook.remove()
    batch = forward_batch('cpu', 0, model)
    assert seen == [min(batch, 24 - start) for start in range(0, 24, batch)]
    one, same = describe_pseudo_queries(db, model, 24, seed=3, batch_size=1)
    np.testing.assert_array_equal(sources, same)
    np.testing.assert_allclose(auto, one, atol=1e-5)


def test_adapt_is_stored_and_applied_by_every_search(plain_map, tmp_path):
    from vpr_ros.images import load_image, to_tensor
    from vpr_ros.localizer import Localizer, LocalizerConfig

    path = _copy(plain_map, tmp_path / 'm.vprmap')
    db = MapDB.open(path)
    assert db.projection is None
    choice = adapt_map(db, AdaptConfig(method='pcaw', dims=(8,), validation_queries=24,
                                       folds=2), device='cpu')
    assert choice.method == 'pcaw' and choice.dim == 8
    db = MapDB.open(path)                           # verifies every sha256, adaptation too
    assert db.projection is not None and db.projection.dim == 8
    record = db.manifest['adaptation']
    assert record['model_fingerprint'] == db.manifest['model']['fingerprint']
    assert set(record['files']) == {'adaptation', 'adapted-descriptors', 'adapted-index',
                                    'validation-queries'}
    assert all(name in db.manifest['files'] for name in record['files'].values())
    # MapDB.search projects the model's descriptors: equal to brute force in the new space.
    raw = np.asarray(db.descriptors[:5]) + 0.05
    got_idx, got_scores = db.search(raw, 4)
    q = db.projection.apply(raw)
    brute = q @ db.projection.apply(np.asarray(db.descriptors)).T
    np.testing.assert_array_equal(got_idx, np.argsort(-brute, axis=1)[:, :4])
    np.testing.assert_allclose(got_scores, np.sort(brute, axis=1)[:, ::-1][:, :4], atol=1e-5)
    # The localizer searches through the map: its global scores are the projected ones.
    image = load_image(plain_map.parent / 'src' / 'img' / '0007.png')
    loc = Localizer(db, config=LocalizerConfig(rerank=False), device='cpu')
    est = loc.localize(image)
    desc = loc.model.describe(to_tensor(image)[None].to(loc.device))
    want_idx, want_scores = db.search(desc, 10)
    assert [c.index for c in est.candidates] == list(want_idx[0])
    np.testing.assert_allclose([c.score for c in est.candidates], want_scores[0], atol=1e-4)
    # Calibrated on the adapted scores: removing the adaptation later leaves it unfitting.
    from vpr_ros.calibrate import calibrate_map
    from vpr_ros.calibration import CalibrationConfig, store_calibration
    cal, report = calibrate_map(loc, CalibrationConfig(pseudo_queries=24, min_per_bin=5, bins=2),
                                progress=False)
    store_calibration(db, cal, report)
    # map info shows it; verify passes; removing it (method none) deletes the files.
    info = _vpr_ros('map', 'info', path, '--verify').stdout
    assert 'pcaw' in info and 'no longer fits' not in info
    _vpr_ros('map', 'verify', path)
    out = _vpr_ros('adapt', path, '--method', 'none').stdout
    assert 'switched off' in out
    assert 'note: the calibration no longer fits the map: its descriptors are projected ' \
        'differently' in out
    assert _vpr_ros('map', 'verify', path, check=False).returncode == 1
    db = MapDB.open(path)
    assert db.projection is None and db.manifest['adaptation']['method'] == 'none'
    assert not [n for n in db.manifest['files'] if n.startswith('adapt')]
    assert not list(path.glob('adapt*'))


def test_the_next_adapt_validates_on_the_stored_pseudo_queries(plain_map, tmp_path):
    """The pseudo-queries' descriptors are kept; the next adapt of that model skips them."""
    from vpr_ros.mapdb.adaptation import describe_pseudo_queries, QUERIES_STEM

    path = _copy(plain_map, tmp_path / 'm.vprmap')
    config = AdaptConfig(method='pcaw', dims=(8,), validation_queries=24, folds=2)
    first = adapt_map(MapDB.open(path), config, device='cpu')
    assert first.report['pseudo_queries_stored'] is False
    db = MapDB.open(path)                                  # the new file's sha256 verified
    record = db.manifest['adaptation']
    assert record['pseudo_queries'] == {
        'model_fingerprint': db.manifest['model']['fingerprint'], 'seed': 0, 'count': 24,
        'from': 'map thumbnails'}
    model = db.load_model('cpu')
    want, sources = describe_pseudo_queries(db, model, 24, seed=0)
    with np.load(path / record['files'][QUERIES_STEM], allow_pickle=False) as data:
        np.testing.assert_allclose(data['descriptors'], want, atol=1e-5)
        np.testing.assert_array_equal(data['sources'], sources)
    forwards = []
    hook = model.aggregation.register_forward_pre_hook(
        lambda _, inputs: forwards.append(len(inputs[0])))
    try:
        second = adapt_map(db, config.replace(dims=(4, 8)), model=model)
        assert forwards == [] and second.report['pseudo_queries_stored'] is True
        recall = {(r['method'], r['dim']): (r['recall@1'], r['recall@5'])
                  for r in first.table}
        again = {(r['method'], r['dim']): (r['recall@1'], r['recall@5'])
                 for r in second.table}
        assert again[('pcaw', 8)] == recall[('pcaw', 8)]      # the same queries, the same rates
        plain = ('none', db.descriptor_dim)
        assert again[plain] == recall[plain]
        # Other pseudo-queries (seed, count) or better ones (source images): described.
        third = adapt_map(MapDB.open(path), config.replace(seed=1), model=model)
        assert forwards and third.report['pseudo_queries_stored'] is False
        forwards.clear()
        from vpr_ros.mapdb.sources import source_images
        db = MapDB.open(path)
        adapt_map(db, config.replace(seed=1), model=model, images=source_images(db, None))
        assert forwards
    finally:
        hook.remove()
    assert MapDB.open(path).manifest['adaptation']['pseudo_queries']['from'] == 'source images'
    assert len(list(path.glob(f'{QUERIES_STEM}-*.npz'))) == 1   # the older ones removed
    adapt_map(MapDB.open(path), AdaptConfig(method='none'))
    assert not list(path.glob(f'{QUERIES_STEM}-*'))
    assert 'pseudo_queries' not in MapDB.open(path).manifest['adaptation']


def test_a_projection_that_does_not_fit_the_map_is_refused(plain_map, tmp_path):
    from vpr_ros.files import write_json

    path = _copy(plain_map, tmp_path / 'm.vprmap')
    adapt_map(MapDB.open(path), AdaptConfig(method='pcaw', dims=(8,), validation_queries=24,
                                            folds=2), device='cpu')
    manifest = json.loads((path / 'manifest.json').read_text())
    other = json.loads(json.dumps(manifest))
    other['adaptation']['model_fingerprint'] = 'f' * 16
    write_json(path / 'manifest.json', other)
    with pytest.raises(MapError, match='fitted for model'):
        MapDB.open(path)
    other = json.loads(json.dumps(manifest))
    other['adaptation']['files']['adaptation'] = '../outside.npz'
    write_json(path / 'manifest.json', other)
    with pytest.raises(MapError, match='not a file listed'):
        MapDB.open(path)
    write_json(path / 'manifest.json', manifest)
    name = manifest['adaptation']['files']['adaptation']
    data = bytearray((path / name).read_bytes())
    data[-10] ^= 0xFF
    (path / name).write_bytes(bytes(data))
    with pytest.raises(MapError, match='corrupt'):
        MapDB.open(path)


def test_adapt_cli_reports_the_validation_and_refuses_a_map_without_pseudo_query_images(
        plain_map, tmp_path):
    path = _copy(plain_map, tmp_path / 'm.vprmap')
    proc = _vpr_ros('adapt', path, '--dims', '4', '8', '--validation-queries', '24',
                    '--dry-run', '--json', tmp_path / 'a.json')
    assert 'held-out validation' in proc.stdout and 'nothing stored' in proc.stdout
    table = json.loads((tmp_path / 'a.json').read_text())['validation']
    dim = MapDB.open(path).descriptor_dim
    found = {(r['method'], r['dim']) for r in table}
    assert found >= {('none', dim), ('pcaw', 4), ('pcaw', 8)}
    assert MapDB.open(path).manifest.get('adaptation') is None      # dry run
    # 40 dimensions need more than the 32 entries a fold of this 48-entry map trains on.
    small = _vpr_ros('adapt', path, '--dims', '40', '--dry-run', check=False)
    assert small.returncode != 0 and 'too small' in small.stderr
    assert 'Traceback' not in small.stderr
    proc = _vpr_ros('adapt', path, '--dims', '8', '--validation-queries', '24', '--dry-run',
                    '--source', plain_map.parent / 'src' / 'route.csv')
    assert 'pseudo-queries from source images' in proc.stdout
    proc = _vpr_ros('adapt', path, '--source', tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    bare = textured_map(tmp_path / 'bare', 12, thumbnail_size=(0, 0),
                        adapt=AdaptConfig(method='none'))
    # Without --source: the source the map records, which needs no thumbnails ...
    proc = _vpr_ros('adapt', bare, '--dims', '4', '--validation-queries', '12', '--dry-run')
    assert 'pseudo-queries from source images' in proc.stdout
    # ... and when it is gone, the thumbnails, which this map lacks.
    (tmp_path / 'bare' / 'src').rename(tmp_path / 'bare' / 'gone')
    proc = _vpr_ros('adapt', bare, check=False)
    assert 'map thumbnails, not the source images' in proc.stdout
    assert proc.returncode != 0 and 'no thumbnails' in proc.stderr
    assert 'Traceback' not in proc.stderr
