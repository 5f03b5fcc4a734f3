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

"""FAISS index over a map's descriptors: flat, IVF-PQ or HNSW, chosen by name or by size.

All kinds use the **inner product** on L2-normalised descriptors (= cosine similarity). The
approximate kinds return ``refine x k`` candidates that are re-scored exactly against the
stored descriptors (a memory map, only the candidate rows are read), so the scores returned
are always exact cosine similarities and the recall vs exact search stays high.

Bytes per entry held by the index (D = descriptor size): flat ``4 D``; IVF-PQ ``pq_m`` code
bytes + 8 (id); HNSW ``4 D + 8 hnsw_m``. Optional PCA (``pca_dim``, with whitening) is
fitted at build time and applied before the coarse search only.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Callable

import faiss
import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.errors import MapError

# faiss 1.15 switches to BLAS when nq * d exceeds this; the default (128000) keeps batched
# 256-D search on the slow SIMD loop (notes/environment.md section 8).
faiss.cvar.distance_compute_blas_threshold = 20

AUTO_FLAT_MAX = 50_000  # 'auto' uses flat up to this many entries, IVF-PQ above


@dataclass(frozen=True)
class IndexConfig(Config):
    """Which FAISS index a map gets and how it is searched."""

    kind: str = option('auto', 'index kind; auto: flat up to 50k entries, ivfpq above',
                       choices=('auto', 'flat', 'ivfpq', 'hnsw'))
    nlist: int = option(0, 'IVF lists; 0: 4 * sqrt(N), at most N / 39', min=0)
    nprobe: int = option(32, 'IVF lists visited per query', min=1, runtime=True)
    pq_m: int = option(32, 'PQ code bytes per entry (a divisor of D is used)', min=1)
    hnsw_m: int = option(32, 'HNSW neighbours per node', min=4)
    ef_search: int = option(128, 'HNSW search depth', min=1, runtime=True)
    refine: int = option(8, 'approximate kinds: candidates per result re-scored exactly',
                         min=1, runtime=True)
    pca_dim: int = option(0, 'PCA before the coarse index (0: none)', min=0)
    pca_whiten: bool = option(False, 'whiten the PCA output')


def _largest_divisor(d: int, at_most: int) -> int:
    return max(m for m in range(1, min(d, at_most) + 1) if d % m == 0)


def _flat(d: int, n: int, config: IndexConfig) -> tuple[str, dict[str, Any]]:
    return 'Flat', {}


def _ivfpq(d: int, n: int, config: IndexConfig) -> tuple[str, dict[str, Any]]:
    nlist = config.nlist or int(4 * math.sqrt(n))
    nlist = max(1, min(nlist, n // 39))
    m = _largest_divisor(d, config.pq_m)
    nbits = max(1, min(8, int(math.log2(max(2, n // 39)))))  # >= 39 points per centroid
    return f'IVF{nlist},PQ{m}x{nbits}', {'nlist': nlist, 'pq_m': m, 'pq_nbits': nbits,
                                         'nprobe': config.nprobe, 'refine': config.refine}


def _hnsw(d: int, n: int, config: IndexConfig) -> tuple[str, dict[str, Any]]:
    return f'HNSW{config.hnsw_m}', {'hnsw_m': config.hnsw_m, 'ef_search': config.ef_search,
                                    'refine': config.refine}


# kind -> (descriptor dim, entry count, config) -> (faiss factory string, parameters)
INDEX_KINDS: dict[str, Callable[[int, int, IndexConfig], tuple[str, dict[str, Any]]]] = {
    'flat': _flat,
    'ivfpq': _ivfpq,
    'hnsw': _hnsw,
}


def resolve_kind(kind: str, n: int) -> str:
    """Turn ``'auto'`` into a concrete kind for ``n`` entries; check the name."""
    if kind == 'auto':
        return 'flat' if n <= AUTO_FLAT_MAX else 'ivfpq'
    if kind not in INDEX_KINDS:
        raise MapError(f'unknown index kind {kind!r}; known: {["auto", *INDEX_KINDS]}')
    return kind


def build_index(descriptors: np.ndarray, config: IndexConfig, *, seed: int = 0,
                add_chunk: int = 65536) -> tuple[Any, dict[str, Any]]:
    """Train (if needed) and fill an index over ``descriptors`` (N, D), read in chunks."""
    n, d = descriptors.shape
    kind = resolve_kind(config.kind, n)
    factory, params = INDEX_KINDS[kind](d, n, config)
    if config.pca_dim:
        if config.pca_dim >= d:
            raise MapError(f'pca_dim {config.pca_dim} must be below the descriptor size {d}')
        pca = f'PCA{"W" if config.pca_whiten else ""}{config.pca_dim},L2norm,'
        factory = pca + factory
        params.update(pca_dim=config.pca_dim, pca_whiten=config.pca_whiten)
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        count = min(n, max(100_000, 64 * params.get('nlist', 1)))
        rows = np.sort(rng.choice(n, size=count, replace=False))
        index.train(np.ascontiguousarray(descriptors[rows], dtype=np.float32))
    for start in range(0, n, add_chunk):
        index.add(np.ascontiguousarray(descriptors[start:start + add_chunk], np.float32))
    return index, {'kind': kind, 'factory': factory, 'metric': 'inner_product', **params}


class MapIndex:
    """Search an index; approximate kinds re-score their candidates exactly."""

    def __init__(self, index: Any, info: dict[str, Any], descriptors: np.ndarray) -> None:
        self.index = index
        self.info = info
        self.descriptors = descriptors
        self.exact = info['kind'] == 'flat' and not info.get('pca_dim')
        space = faiss.ParameterSpace()
        if 'nprobe' in info:
            space.set_index_parameter(index, 'nprobe', int(info['nprobe']))
        if 'ef_search' in info:
            space.set_index_parameter(index, 'efSearch', int(info['ef_search']))

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` entries per query: ``(indices int64 (Q, k), scores float32 (Q, k))``.

        ``k`` is clipped to the map size; scores are cosine similarities, best first.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.descriptors.shape[1]:
            raise MapError(f'query descriptors have {queries.shape[1]} dimensions, the map '
                           f'{self.descriptors.shape[1]}')
        k = max(1, min(int(k), self.size))
        if self.exact:
            scores, indices = self.index.search(queries, k)
            return indices.astype(np.int64), scores.astype(np.float32)
        wide = min(self.size, k * int(self.info.get('refine', 1)))
        _, candidates = self.index.search(queries, wide)
        out_i = np.full((len(queries), k), -1, np.int64)
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        for q, row in enumerate(candidates):
            row = row[row >= 0]
            if row.size == 0:
                continue
            order = np.argsort(row)  # memory maps read fastest in ascending order
            vectors = np.asarray(self.descriptors[row[order]], np.float32)
            scores = vectors @ queries[q]
            best = np.argsort(-scores, kind='stable')[:k]
            out_i[q, :best.size] = row[order][best]
            out_s[q, :best.size] = scores[best]
        return out_i, out_s
