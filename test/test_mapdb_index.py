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

"""FAISS index kinds: flat equals brute force; IVF-PQ and HNSW recall vs exact; auto-tune."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.errors import ConfigError, MapError
from vpr_ros.mapdb.index import (autotune, build_index, exact_search, IndexConfig, MapIndex,
                                 recall_at_k, resolve_kind)
from vpr_ros.mapdb.synthetic import (iter_route_descriptors, perturb, route_descriptors,
                                     route_queries)


def clustered(n, d=64, clusters=50, seed=0):
    """Draw unit vectors around random cluster centres (like descriptors of nearby places)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute(db, q, k):
    s = q @ db.T
    i = np.argsort(-s, axis=1, kind='stable')[:, :k]
    return i, np.take_along_axis(s, i, 1)


def test_flat_equals_brute_force():
    db, q = clustered(500), clustered(20, seed=1)
    index, info = build_index(db, IndexConfig(kind='flat'))
    idx, scores = MapIndex(index, info, db).search(q, 10)
    ref_i, ref_s = brute(db, q, 10)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert (idx == ref_i).mean() > 0.99  # ties aside
    assert info == {'kind': 'flat', 'factory': 'Flat', 'metric': 'inner_product'}


@pytest.mark.parametrize('config', [  # fixed search settings (no auto-tune), hard queries
    IndexConfig(kind='ivfpq', pq_m=16, target_recall=0),
    IndexConfig(kind='hnsw', target_recall=0),
    IndexConfig(kind='ivfpq', pq_m=16, pca_dim=48, refine=16, target_recall=0),
])
def test_recall_vs_exact(config):
    db, q = clustered(4000), clustered(50, seed=1)
    index, info = build_index(db, config)
    idx, scores = MapIndex(index, info, db).search(q, 10)
    ref_i, ref_s = brute(db, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ref_i)])
    assert recall >= 0.95, (info, recall)
    np.testing.assert_allclose(scores, np.sum(db[idx] * q[:, None], axis=2), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_small_maps_and_k():
    db = clustered(30)
    for kind in ('flat', 'ivfpq', 'hnsw'):
        index, info = build_index(db, IndexConfig(kind=kind))
        idx, scores = MapIndex(index, info, db).search(db[:3], 100)
        assert idx.shape == (3, 30)  # k clipped to the map size
        np.testing.assert_array_equal(idx[:, 0], [0, 1, 2])


def test_exception():
    assert resolve_kind('auto', 10) == 'flat' and resolve_kind('auto', 20_000) == 'flat'
    assert resolve_kind('auto', 20_001) == 'ivfpq' and resolve_kind('auto', 10**6) == 'ivfpq'
    with pytest.raises(MapError, match='unknown index kind'):
        resolve_kind('lsh', 10)
    db = clustered(40)
    index, info = build_index(db, IndexConfig(kind='flat'))
    with pytest.raises(MapError, match='query descriptors have 8 dimensions, the map 64'):
        MapIndex(index, info, db).search(np.zeros((1, 8), np.float32), 1)
    with pytest.raises(MapError, match='pca_dim 64 must be below'):
        build_index(db, IndexConfig(pca_dim=64))
    with pytest.raises(ConfigError, match='tune_cos'):
        IndexConfig(tune_cos=(0.9, 0.5))


def test_route_descriptors_and_queries():
    """The bench data: neighbours alike, distant frames not, queries at the asked cosine."""
    db = route_descriptors(3000, 64, seed=3)
    np.testing.assert_allclose(np.linalg.norm(db, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(db, route_descriptors(3000, 64, seed=3))
    assert 0.8 < np.median(np.sum(db[1:] * db[:-1], axis=1)) < 0.95
    assert np.median(np.sum(db[:1000] * db[2000:], axis=1)) < 0.4
    q, src = route_queries(db, 100, cos_range=(0.6, 0.8))
    cos = np.sum(q * db[src], axis=1)
    assert cos.min() >= 0.6 - 1e-4 and cos.max() <= 0.8 + 1e-4
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(np.sum(perturb(db[:5], 0.75, rng, pool=db[:5]) * db[:5], 1),
                               0.75, atol=1e-5)  # a pool row equal to the source is no problem


def test_route_descriptors_stream_in_blocks():
    """Big-map benches stream the route: the blocks are the same rows, in order."""
    blocks = list(iter_route_descriptors(1300, 32, seed=5, chunk=512))
    assert [len(b) for b in blocks] == [512, 512, 276]
    assert all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), route_descriptors(1300, 32, seed=5))
    other = np.concatenate(list(iter_route_descriptors(1300, 32, seed=6)))
    assert not np.allclose(other, route_descriptors(1300, 32, seed=5))


def test_exact_search_matches_brute_force():
    db, q = route_descriptors(5000, 32), route_descriptors(7, 32, seed=9)
    np.testing.assert_array_equal(exact_search(db, q, 10, chunk=777), brute(db, q, 10)[0])
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])) == pytest.approx(2 / 3)


@pytest.mark.parametrize('kind', ['ivfpq', 'hnsw'])
def test_autotune_reaches_target_on_route_queries(kind):
    """Tuned settings reach the target on queries the tuner never saw, and land in info."""
    db = route_descriptors(6000, 64, seed=2)
    index, info = build_index(db, IndexConfig(kind=kind, pq_m=16, target_recall=0.95))
    tuning = info['tuning']
    assert tuning['reached'] and tuning['recall'] >= 0.95 and tuning['k'] == 10
    assert tuning['query_cos'] == [0.5, 0.9] and tuning['queries'] == 256
    q, src = route_queries(db, 200, seed=42, cos_range=(0.5, 0.9))
    idx, scores = MapIndex(index, info, db).search(q, 10)
    exact = exact_search(db, q, 10)
    assert recall_at_k(idx, exact) >= 0.93

    def place_found(found):  # a frame within 2 of the source among the 10 results
        return np.mean(np.any(np.abs(found - src[:, None]) <= 2, axis=1))

    assert place_found(idx) >= place_found(exact) - 0.04
    np.testing.assert_allclose(scores, np.sum(db[idx] * q[:, None], axis=2), atol=1e-5)
    # cheaper than searching everything: the tuner stops once the target is met
    if kind == 'ivfpq':
        assert info['nprobe'] < info['nlist']


def test_autotune_picks_cheapest_and_reports_unreachable_target():
    db = route_descriptors(6000, 64, seed=2)
    index, info = build_index(db, IndexConfig(kind='ivfpq', pq_m=16, target_recall=0))
    low = autotune(index, info, db, target=0.5, queries=64)
    high = autotune(index, info, db, target=0.99, queries=64)
    assert low['nprobe'] <= high['nprobe'] and low['refine'] <= high['refine']
    assert (low['nprobe'], low['refine']) != (high['nprobe'], high['refine'])
    assert high['tuning']['recall'] >= 0.99 > low['tuning']['recall'] >= 0.5
    # a target above 1 cannot be met: the best setting found is kept and flagged
    best = autotune(index, info, db, target=1.01, queries=64)
    assert not best['tuning']['reached'] and best['tuning']['recall'] >= high['tuning']['recall']


def test_tuned_parameters_in_manifest_load_back(tmp_path, monkeypatch):
    """A built map stores the tuned parameters; MapDB.open searches with them."""
    from mapdb_helpers import test_model, write_csv_source

    from vpr_ros.mapdb import build_map, MapDB
    from vpr_ros.mapdb.adaptation import AdaptConfig
    from vpr_ros.mapdb.build import BuildConfig

    model = test_model(monkeypatch)
    csv_path = write_csv_source(tmp_path / 'src', 60)
    # No adaptation: when it is chosen (by held-out noise on 60 random stand-in descriptors,
    # on some CPUs) the map searches the adapted index, tuned on its own.
    config = BuildConfig(thumbnail_size=(0, 0), index=IndexConfig(kind='hnsw', hnsw_m=8),
                         adapt=AdaptConfig(method='none'))
    out = build_map(csv_path, tmp_path / 'r.vprmap', config, model=model, progress=False)
    db = MapDB.open(out, model=model)
    assert db.projection is None
    info = db.manifest['index']
    assert info['kind'] == 'hnsw' and info['tuning']['reached']
    assert info['tuning']['target_recall'] == IndexConfig().target_recall == 0.98
    assert db.index.index.hnsw.efSearch == info['ef_search']
    assert db.index.info['refine'] == info['refine']
    q = np.asarray(db.descriptors[:5])
    idx, _ = db.search(q, 5)
    np.testing.assert_array_equal(idx[:, 0], np.arange(5))


def test_flat_map_search_is_exact(tmp_path, monkeypatch):
    """An 'auto' map of a few entries is flat, untuned, and its search is brute force."""
    from mapdb_helpers import test_model, write_csv_source

    from vpr_ros.mapdb import build_map, MapDB
    from vpr_ros.mapdb.build import BuildConfig

    model = test_model(monkeypatch)
    csv_path = write_csv_source(tmp_path / 'src', 40)
    out = build_map(csv_path, tmp_path / 'f.vprmap', BuildConfig(thumbnail_size=(0, 0)),
                    model=model, progress=False)
    db = MapDB.open(out, model=model)
    assert db.manifest['index'] == {'kind': 'flat', 'factory': 'Flat',
                                    'metric': 'inner_product'}
    desc = np.asarray(db.descriptors)
    q = perturb(desc[::7], 0.8, np.random.default_rng(0), pool=desc)
    idx, scores = db.search(q, 10)
    ref_i, ref_s = brute(desc, q, 10)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    np.testing.assert_array_equal(idx, ref_i)


def test_searching_sets_the_faiss_blas_threshold():
    """Building or opening an index (not importing it) applies vpr_ros's FAISS setting."""
    import faiss
    from vpr_ros.faiss_config import BLAS_THRESHOLD

    faiss.cvar.distance_compute_blas_threshold = 128000
    try:
        db = clustered(200)
        index, info = build_index(db, IndexConfig(kind='flat'))
        assert faiss.cvar.distance_compute_blas_threshold == BLAS_THRESHOLD
        faiss.cvar.distance_compute_blas_threshold = 128000
        MapIndex(index, info, db)
        assert faiss.cvar.distance_compute_blas_threshold == BLAS_THRESHOLD
    finally:
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
