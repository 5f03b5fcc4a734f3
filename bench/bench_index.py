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

"""Benchmark the map index kinds: latency per query, recall vs exact, places found, bytes.

Data (``--data route``, default): descriptors of a route (:mod:`vpr_ros.mapdb.synthetic`:
neighbouring frames cosine ~0.9, aliasing between segments) and queries that are map
descriptors moved to cosine 0.7-0.9 ('revisit') or 0.5-0.7 ('hard') with their source frame.
``--data clusters`` is the earlier generator (isotropic clusters, queries at cosine ~0.2 with
their source, exact top-10 scores tied to 1e-3): recall vs exact is ill-posed there.

Per kind and query set: recall@1 / @10 vs exact search, the share of queries whose top-1 /
top-10 holds a frame within ``--tol`` frames of the source ('place@k', also for exact search),
latency of single queries, bytes per entry in the index, and the auto-tuned parameters.
Goal (issue 5): 1M entries at <= 5 ms/query, >= 0.95 recall@10 vs exact, <= 64 B per entry.

    python bench/bench_index.py --sizes 10000 100000 [--kinds flat ivfpq hnsw ivfpq-fixed]
        [--json out.json]
"""

from __future__ import annotations

import json
import time

from _common import add_json, add_threads, bench_parser, write_json
import faiss
import numpy as np

from vpr_ros.mapdb.index import (build_index, exact_search, IndexConfig, MapIndex,
                                 recall_at_k)
from vpr_ros.mapdb.synthetic import route_descriptors, route_queries

QUERY_SETS = {'revisit': (0.7, 0.9), 'hard': (0.5, 0.7)}
# name -> IndexConfig; '-fixed': the defaults before auto-tuning (nprobe 32, refine 8)
KINDS = {
    'flat': IndexConfig(kind='flat'),
    'ivfpq': IndexConfig(kind='ivfpq'),
    'ivfpq-opq': IndexConfig(kind='ivfpq', opq=True),
    'ivfpq-fixed': IndexConfig(kind='ivfpq', target_recall=0.0),
    'hnsw': IndexConfig(kind='hnsw'),
    'hnsw-fixed': IndexConfig(kind='hnsw', target_recall=0.0, hnsw_ef_construction=40),
}


def clustered_unit_vectors(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` unit vectors around ``n / 50`` random centres (the earlier generator)."""
    centres = rng.standard_normal((max(1, n // 50), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, d)).astype(
        np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(kind: str, n: int, d: int, queries: int) -> tuple[np.ndarray, dict]:
    """Return the map and ``{name: (queries, source rows)}``."""
    if kind == 'route':
        db = route_descriptors(n, d, seed=0)
        return db, {name: route_queries(db, queries, seed=1 + i, cos_range=cos)
                    for i, (name, cos) in enumerate(QUERY_SETS.items())}
    rng = np.random.default_rng(0)
    db = clustered_unit_vectors(n, d, rng)
    source = rng.integers(0, n, queries)
    q = db[source] + 0.3 * rng.standard_normal((queries, d)).astype(np.float32)
    return db, {'clusters': (q / np.linalg.norm(q, axis=1, keepdims=True), source)}


def place_found(found: np.ndarray, source: np.ndarray, k: int, tol: int) -> float:
    """Share of queries with a result within ``tol`` frames of the source in the top ``k``."""
    return float(np.mean(np.any(np.abs(found[:, :k] - source[:, None]) <= tol, axis=1)))


def run(n: int, d: int, kinds: list[str], queries: int, k: int, data: str,
        tol: int) -> list[dict]:
    """Build each kind over the same data; time single queries; compare with exact top-k."""
    db, query_sets = make_data(data, n, d, queries)
    exact = {name: exact_search(db, q, k) for name, (q, _) in query_sets.items()}
    rows = []
    for kind in kinds:
        t0 = time.perf_counter()
        index, info = build_index(db, KINDS[kind])
        build_s = time.perf_counter() - t0
        search = MapIndex(index, info, db)
        index_bytes = faiss.serialize_index(index).nbytes
        for name, (q, source) in query_sets.items():
            search.search(q[:5], k)  # warm-up
            lat, found = [], []
            for row in q:
                t = time.perf_counter()
                idx, _ = search.search(row[None], k)
                lat.append(time.perf_counter() - t)
                found.append(idx[0])
            found = np.stack(found)
            ex = exact[name]
            rows.append({
                'entries': n, 'dim': d, 'data': data, 'queries': name, 'kind': kind,
                'factory': info['factory'],
                'params': {p: info[p] for p in ('nprobe', 'ef_search', 'refine') if p in info},
                'build_s': round(build_s, 1),
                'ms_per_query_p50': round(1e3 * float(np.median(lat)), 3),
                'ms_per_query_p95': round(1e3 * float(np.percentile(lat, 95)), 3),
                'recall@1_vs_exact': round(recall_at_k(found[:, :1], ex[:, :1]), 4),
                f'recall@{k}_vs_exact': round(recall_at_k(found, ex), 4),
                'place@1': round(place_found(found, source, 1, tol), 4),
                f'place@{k}': round(place_found(found, source, k, tol), 4),
                'exact_place@1': round(place_found(ex, source, 1, tol), 4),
                'index_bytes_per_entry': round(index_bytes / n, 1),
                'tuning_recall': info.get('tuning', {}).get('recall'),
            })
            print(json.dumps(rows[-1]), flush=True)
        del index, search
    return rows


def main() -> None:
    """Parse arguments, run every size, print a Markdown table."""
    parser = bench_parser(__doc__)
    parser.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000])
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--kinds', nargs='+', default=['flat', 'ivfpq', 'hnsw'],
                        choices=list(KINDS))
    parser.add_argument('--data', default='route', choices=('route', 'clusters'))
    parser.add_argument('--queries', type=int, default=200)
    parser.add_argument('--k', type=int, default=10)
    parser.add_argument('--tol', type=int, default=2, help='place@k: frames from the source')
    add_threads(parser, 0, 'FAISS threads (0: default)')
    add_json(parser, 'write the rows as JSON here')
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rows = []
    for n in args.sizes:
        rows += run(n, args.dim, args.kinds, args.queries, args.k, args.data, args.tol)
        # after every size: a long run that is stopped keeps what it measured
        write_json(args.json, {'threads': faiss.omp_get_max_threads(), 'rows': rows}, indent=1)
    keys = [key for key in rows[0] if key not in ('dim', 'data', 'factory', 'tuning_recall')]
    print('\n| ' + ' | '.join(keys) + ' |\n|' + '---|' * len(keys))
    for r in rows:
        print('| ' + ' | '.join(str(r[key]) for key in keys) + ' |')


if __name__ == '__main__':
    main()
