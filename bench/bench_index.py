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

"""Benchmark the map index kinds: latency per query, recall vs exact, bytes per entry.

Random unit vectors with clustered structure (like descriptors of a route) at 10k / 100k / 1M
entries x 256-D, through the same ``build_index`` / ``MapIndex`` the maps use. Goal (issue 5):
1M entries at <= 5 ms/query, >= 0.95 recall@10 vs exact, <= 64 B per entry in the index.

    python bench/bench_index.py --sizes 10000 100000 [--kinds flat ivfpq hnsw] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from vpr_ros.mapdb.index import build_index, IndexConfig, MapIndex


def clustered_unit_vectors(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` unit vectors around ``n / 50`` random centres (a route's places)."""
    centres = rng.standard_normal((max(1, n // 50), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, d)).astype(
        np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def run(n: int, d: int, kinds: list[str], queries: int, k: int) -> list[dict]:
    """Build each kind over the same data; time single queries; compare with exact top-k."""
    rng = np.random.default_rng(0)
    db = clustered_unit_vectors(n, d, rng)
    q = db[rng.integers(0, n, queries)] + 0.3 * rng.standard_normal((queries, d)).astype(
        np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = MapIndex(*build_index(db, IndexConfig(kind='flat')), db).search(q, k)[0]
    rows = []
    for kind in kinds:
        t0 = time.perf_counter()
        index, info = build_index(db, IndexConfig(kind=kind))
        build_s = time.perf_counter() - t0
        search = MapIndex(index, info, db)
        search.search(q[:5], k)  # warm-up
        lat = []
        found = []
        for row in q:
            t = time.perf_counter()
            idx, _ = search.search(row[None], k)
            lat.append(time.perf_counter() - t)
            found.append(idx[0])
        recall = np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact)])
        index_bytes = faiss.serialize_index(index).nbytes
        rows.append({'entries': n, 'dim': d, 'kind': kind, 'factory': info['factory'],
                     'build_s': round(build_s, 2),
                     'ms_per_query_p50': round(1e3 * float(np.median(lat)), 3),
                     'ms_per_query_p95': round(1e3 * float(np.percentile(lat, 95)), 3),
                     f'recall@{k}_vs_exact': round(float(recall), 4),
                     'index_bytes_per_entry': round(index_bytes / n, 1),
                     'refine_bytes_per_entry_on_disk': 0 if kind == 'flat' else 4 * d})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    """Parse arguments, run every size, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000])
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--kinds', nargs='+', default=['flat', 'ivfpq', 'hnsw'])
    parser.add_argument('--queries', type=int, default=200)
    parser.add_argument('--k', type=int, default=10)
    parser.add_argument('--threads', type=int, default=0, help='FAISS threads (0: default)')
    parser.add_argument('--json', help='write the rows as JSON here')
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rows = [r for n in args.sizes for r in run(n, args.dim, args.kinds, args.queries, args.k)]
    keys = list(rows[0])
    print('\n| ' + ' | '.join(keys) + ' |\n|' + '---|' * len(keys))
    for r in rows:
        print('| ' + ' | '.join(str(r[key]) for key in keys) + ' |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
