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
stored descriptors (a memory map, only the candidate rows are read; the same re-ranking as
FAISS ``IndexRefineFlat``, without a second copy of the vectors in the index), so the scores
returned are always exact cosine similarities.

**Auto-tune** (``target_recall``): after an approximate index is filled, ``nprobe`` (IVF-PQ)
or ``ef_search`` (HNSW) and ``refine`` are chosen on held-out queries made from map
descriptors moved to a realistic cosine similarity with their source (``tune_cos``, see
:mod:`vpr_ros.mapdb.synthetic`): the cheapest setting (by a cost model of codes scanned and
vectors re-scored; deterministic, unlike timings) whose recall@10 vs exact search reaches the
target. The chosen values and the measured recall are stored in the manifest's index
parameters, so a map opens with the same search settings it was tuned for.

Bytes per entry held by the index (D = descriptor size): flat ``4 D``; IVF-PQ ``pq_m`` code
bytes + 8 (id); HNSW ``4 D + 8 hnsw_m``. Optional PCA (``pca_dim``, with whitening) is
fitted at build time and applied before the coarse search only.

Measured (``bench/bench_index.py``, route-like descriptors, see bench/README.md): 'auto' keeps
flat (exact) up to ``AUTO_FLAT_MAX`` entries, where one query still costs a few ms on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Callable

import faiss
import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.errors import MapError
from vpr_ros.faiss_config import configure_faiss
from vpr_ros.mapdb.synthetic import perturb

AUTO_FLAT_MAX = 20_000  # 'auto': flat up to here (~5 ms/query on 1 core), IVF-PQ above
TUNE_K = 10  # auto-tune target: recall@TUNE_K vs exact search
NPROBE_STEPS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
REFINE_STEPS = (2, 3, 4, 6, 8, 12, 16, 24, 32)
# Cost model of the auto-tune, in exact D-dim distances: re-scoring one stored vector (a
# random read from the memory map) and visiting one HNSW neighbour; a PQ code costs
# pq_m / 16 (table look-ups vs SIMD multiply-adds).
COST_RESCORE = 8.0
COST_HNSW_VISIT = 1.0


@dataclass(frozen=True)
class IndexConfig(Config):
    """Which FAISS index a map gets and how it is searched."""

    kind: str = option('auto', 'index kind; auto: flat up to 20k entries, ivfpq above',
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
    opq: bool = option(False, 'IVF-PQ: learn a rotation (OPQ) before the product quantiser')
    hnsw_ef_construction: int = option(80, 'HNSW build depth', min=8)
    target_recall: float = option(
        0.98, 'approximate kinds: tune nprobe / ef_search and refine at build time to reach '
              'this recall@10 vs exact search (0: use the values given)', min=0.0, max=1.0)
    tune_queries: int = option(256, 'held-out queries of the auto-tune', min=16)
    tune_cos: tuple[float, float] = option(
        (0.5, 0.9), 'cosine similarity of an auto-tune query with its source descriptor '
                    '(uniform in this range: revisits under easy to hard conditions)')

    def validate(self) -> None:
        lo, hi = self.tune_cos
        if not 0.0 < lo <= hi < 1.0:
            from vpr_ros.errors import ConfigError
            raise ConfigError(f'IndexConfig.tune_cos: {self.tune_cos} must satisfy '
                              f'0 < low <= high < 1')


def _largest_divisor(d: int, at_most: int) -> int:
    return max(m for m in range(1, min(d, at_most) + 1) if d % m == 0)


def _flat(d: int, n: int, config: IndexConfig) -> tuple[str, dict[str, Any]]:
    return 'Flat', {}


def _ivfpq(d: int, n: int, config: IndexConfig) -> tuple[str, dict[str, Any]]:
    nlist = config.nlist or int(4 * math.sqrt(n))
    nlist = max(1, min(nlist, n // 39))
    m = _largest_divisor(d, config.pq_m)
    nbits = max(1, min(8, int(math.log2(max(2, n // 39)))))  # >= 39 points per centroid
    opq = f'OPQ{m},' if config.opq else ''
    # np: no polysemous training (minutes of annealing; codes are only scanned, not
    # compared by Hamming distance)
    return f'{opq}IVF{nlist},PQ{m}x{nbits}np', {
        'nlist': nlist, 'pq_m': m, 'pq_nbits': nbits, 'opq': config.opq,
        'nprobe': config.nprobe, 'refine': config.refine}


def _hnsw(d: int, n: int, config: IndexConfig) -> tuple[str, dict[str, Any]]:
    return f'HNSW{config.hnsw_m}', {'hnsw_m': config.hnsw_m,
                                    'hnsw_ef_construction': config.hnsw_ef_construction,
                                    'ef_search': config.ef_search, 'refine': config.refine}


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
    configure_faiss()
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
    if kind == 'hnsw':
        inner = faiss.downcast_index(index.index if config.pca_dim else index)
        inner.hnsw.efConstruction = config.hnsw_ef_construction
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        count = min(n, max(100_000, 64 * params.get('nlist', 1)))
        rows = np.sort(rng.choice(n, size=count, replace=False))
        index.train(np.ascontiguousarray(descriptors[rows], dtype=np.float32))
    for start in range(0, n, add_chunk):
        index.add(np.ascontiguousarray(descriptors[start:start + add_chunk], np.float32))
    info = {'kind': kind, 'factory': factory, 'metric': 'inner_product', **params}
    if kind != 'flat' and config.target_recall > 0:
        info = autotune(index, info, descriptors, target=config.target_recall,
                        queries=config.tune_queries, cos_range=config.tune_cos, seed=seed)
    return index, info


def exact_search(descriptors: np.ndarray, queries: np.ndarray, k: int,
                 chunk: int = 65536) -> np.ndarray:
    """Exact top-``k`` rows by inner product, reading ``descriptors`` in chunks: ``(Q, k)``."""
    queries = np.ascontiguousarray(queries, np.float32)
    k = min(k, len(descriptors))
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(descriptors), chunk):
        scores = queries @ np.asarray(descriptors[start:start + chunk], np.float32).T
        both_s = np.concatenate([best_s, scores], axis=1)
        both_i = np.concatenate([best_i, np.broadcast_to(
            np.arange(start, start + scores.shape[1]), scores.shape)], axis=1)
        keep = np.argpartition(-both_s, k - 1, axis=1)[:, :k] if both_s.shape[1] > k else \
            np.broadcast_to(np.arange(both_s.shape[1]), both_s.shape)
        best_s = np.take_along_axis(both_s, keep, 1)
        best_i = np.take_along_axis(both_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind='stable')
    return np.take_along_axis(best_i, order, 1)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of ``exact`` (Q, k) that appears in the same row of ``found``."""
    return float(np.mean([np.isin(e, f).mean() for f, e in zip(found, exact)]))


def _candidate_scores(descriptors: np.ndarray, queries: np.ndarray,
                      candidates: np.ndarray) -> np.ndarray:
    """Exact scores ``(Q, W)`` of candidate rows (-inf where a candidate is -1)."""
    valid = candidates >= 0
    rows, inverse = np.unique(candidates[valid], return_inverse=True)
    vectors = np.asarray(descriptors[rows], np.float32)  # ascending: memory maps read fastest
    scores = np.full(candidates.shape, -np.inf, np.float32)
    scores[valid] = np.einsum('ij,ij->i', vectors[inverse],
                              queries[np.nonzero(valid)[0]])
    return scores


def _top_k(candidates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    top_s = np.take_along_axis(scores, order, 1)
    top_i = np.where(np.isfinite(top_s), np.take_along_axis(candidates, order, 1), -1)
    return top_i.astype(np.int64), top_s


def _set_search_params(index: Any, info: dict[str, Any]) -> None:
    space = faiss.ParameterSpace()
    if 'nprobe' in info:
        space.set_index_parameter(index, 'nprobe', int(info['nprobe']))
    if 'ef_search' in info:
        space.set_index_parameter(index, 'efSearch', int(info['ef_search']))


def autotune(index: Any, info: dict[str, Any], descriptors: np.ndarray, *, target: float,
             queries: int = 256, cos_range: tuple[float, float] = (0.5, 0.9), seed: int = 0,
             k: int = TUNE_K) -> dict[str, Any]:
    """Choose the cheapest search setting of ``index`` that reaches ``target`` recall@k.

    Held-out queries are map descriptors moved to a cosine in ``cos_range`` with their
    source (:func:`vpr_ros.mapdb.synthetic.perturb`). Each ``nprobe`` / ``ef_search`` step
    is searched once with the widest ``refine``; narrower ``refine`` values are the first
    columns of the same candidate lists. Returns ``info`` with the chosen values and a
    ``tuning`` record (if the target is out of reach: the best recall found).
    """
    n = int(index.ntotal)
    k = min(k, n)
    rng = np.random.default_rng(seed + 1)
    rows = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    q = perturb(np.asarray(descriptors[rows]), rng.uniform(*cos_range, size=len(rows)), rng,
                pool=descriptors)
    exact = exact_search(descriptors, q, k)
    if info['kind'] == 'ivfpq':
        name, steps = 'nprobe', [p for p in NPROBE_STEPS if p < info['nlist']] + [info['nlist']]
        per_step = (n / info['nlist']) * info['pq_m'] / 16.0
    else:
        name, steps = 'ef_search', list(EF_STEPS)
        per_step = info['hnsw_m'] * COST_HNSW_VISIT
    refines = [r for r in REFINE_STEPS if r * k <= n] or [1]
    best: tuple[float, float, int, int] | None = None  # (cost, -recall, step, refine)
    fallback = (-1.0, 0, 0)  # (recall, step, refine)
    for step in steps:
        if best is not None and step * per_step >= best[0]:
            break  # scanning alone costs more than the best setting found
        _set_search_params(index, {**info, name: step})
        # IVF: the first r * k candidates of one wide search are the r * k search; HNSW
        # searches at least as deep as the candidates asked for, so each width is searched.
        for width in ([refines[-1]] if name == 'nprobe' else refines):
            _, candidates = index.search(q, min(n, k * width))
            scores = _candidate_scores(descriptors, q, candidates)
            for r in (refines if name == 'nprobe' else [width]):
                found, _ = _top_k(candidates[:, :r * k], scores[:, :r * k], k)
                recall = recall_at_k(found, exact)
                depth = step if name == 'nprobe' else max(step, r * k)
                cost = depth * per_step + r * k * COST_RESCORE
                if recall > fallback[0]:
                    fallback = (recall, step, r)
                if recall >= target and (best is None or cost < best[0]):
                    best = (cost, -recall, step, r)
    recall, step, refine = (-best[1], best[2], best[3]) if best else fallback
    tuned = {**info, name: int(step), 'refine': int(refine)}
    tuned['tuning'] = {'target_recall': target, 'k': k, 'queries': len(rows),
                       'query_cos': list(cos_range), 'recall': round(recall, 4),
                       'reached': best is not None}
    _set_search_params(index, tuned)
    return tuned


class MapIndex:
    """Search an index; approximate kinds re-score their candidates exactly."""

    def __init__(self, index: Any, info: dict[str, Any], descriptors: np.ndarray) -> None:
        self.index = index
        self.info = info
        self.descriptors = descriptors
        self.exact = info['kind'] == 'flat' and not info.get('pca_dim')
        configure_faiss()
        _set_search_params(index, info)

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
        return _top_k(candidates, _candidate_scores(self.descriptors, queries, candidates), k)
