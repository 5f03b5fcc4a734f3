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

"""FAISS index kinds: flat equals brute force; IVF-PQ and HNSW recall vs exact search."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.errors import MapError
from vpr_ros.mapdb.index import build_index, IndexConfig, MapIndex, resolve_kind


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


@pytest.mark.parametrize('config', [
    IndexConfig(kind='ivfpq', pq_m=16),
    IndexConfig(kind='hnsw'),
    IndexConfig(kind='ivfpq', pq_m=16, pca_dim=48, refine=16),
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
    assert resolve_kind('auto', 10) == 'flat' and resolve_kind('auto', 10**6) == 'ivfpq'
    with pytest.raises(MapError, match='unknown index kind'):
        resolve_kind('lsh', 10)
    db = clustered(40)
    index, info = build_index(db, IndexConfig(kind='flat'))
    with pytest.raises(MapError, match='query descriptors have 8 dimensions, the map 64'):
        MapIndex(index, info, db).search(np.zeros((1, 8), np.float32), 1)
    with pytest.raises(MapError, match='pca_dim 64 must be below'):
        build_index(db, IndexConfig(pca_dim=64))
