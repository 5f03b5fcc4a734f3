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

"""A big compact (v2) map: bytes per entry, build time, open time, query time, RSS.

Route-like synthetic descriptors (:func:`vpr_ros.mapdb.synthetic.route_descriptors`, the
``bench_index.py`` data) in the model's space are written as a v2 map straight through
:func:`vpr_ros.mapdb.compact.write_compact` (no images: no thumbnails), with the tiny-test
model as the map's model and a ``pca`` projection fitted on a sample. Then, in a fresh
process, the map is opened (``MapDB.open(fast=True)``: sizes checked, every array and the
IVF lists memory-mapped) and queried one at a time with revisit queries; recall@10 is
measured against exact search over the stored descriptors.

    bash scripts/env.sh run python bench/bench_bigmap.py --entries 1000000 \
        --json bench/results/bigmap.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time

from _common import add_json, bench_parser, rss_mb, write_json
import numpy as np


def _disk_read_mb() -> float:
    """Return what this process has made the kernel read from disk so far, in MB."""
    with open('/proc/self/io') as f:
        for line in f:
            if line.startswith('read_bytes:'):
                return int(line.split()[1]) / 1e6
    return float('nan')


def _drop_page_cache() -> None:
    """Empty the kernel's page cache (root only), so the map is read from disk."""
    subprocess.run(['sync'], check=True)
    try:
        Path('/proc/sys/vm/drop_caches').write_text('1\n')
    except OSError as exc:
        raise SystemExit(f'--cold needs root to drop the page cache: {exc}') from None


def _stored_descriptors(work: Path, n: int, d: int, seed: int, projection_sample: int):
    """Generate the route, fit the map's projection, write the projected rows (float16) to disk.

    Two passes over :func:`vpr_ros.mapdb.synthetic.iter_route_descriptors` (it is
    deterministic): the first keeps every k-th row to fit the projection on, the second
    projects each block into a float16 memory map, so no (n, d) float32 array is ever held
    (10 M x 256-D float32 would be 10 GB).
    """
    from vpr_ros.mapdb.adaptation import fit_pca
    from vpr_ros.mapdb.synthetic import iter_route_descriptors

    stride = max(1, n // projection_sample)
    sample, start = [], 0
    for block in iter_route_descriptors(n, d, seed=seed):
        # a copy, not a view: a view would keep the whole block alive
        sample.append(block[(-start) % stride::stride].copy())
        start += len(block)
    projection = fit_pca(np.concatenate(sample), d)
    del sample
    stored = np.lib.format.open_memmap(work / 'stored.npy', mode='w+', dtype=np.float16,
                                       shape=(n, projection.dim))
    start = 0
    for block in iter_route_descriptors(n, d, seed=seed):
        stored[start:start + len(block)] = projection.apply(block).astype(np.float16)
        start += len(block)
    stored.flush()
    return stored, projection


def build(path: Path, n: int, d: int, seed: int, nlist: int) -> dict:
    """Write the map; return what it took."""
    import torch

    from vpr_ros.mapdb.compact import write_compact
    from vpr_ros.mapdb.index import IndexConfig
    from vpr_ros.models.checkpoints import load_model, save_checkpoint

    torch.manual_seed(0)
    model = load_model('tiny-test', device='cpu')
    if int(model.descriptor_dim) != d:
        raise SystemExit(f'tiny-test gives {model.descriptor_dim}-D, not {d}')
    tmp = Path(tempfile.mkdtemp(dir=path.parent))
    t0 = time.perf_counter()
    stored, projection = _stored_descriptors(tmp, n, d, seed, projection_sample=100_000)
    gen_s = time.perf_counter() - t0
    save_checkpoint(model, tmp / 'model.pt')
    t0 = time.perf_counter()
    east = np.arange(n) * 2.0                      # a 2 m-spaced route, WGS84 about Zurich
    lat = 47.37 + (east % 20_000) / 111_320.0
    lon = 8.54 + (east // 20_000) * 1e-4
    positions = np.stack([lat, lon, np.full(n, np.nan)], axis=1)
    manifest = {'model': {'config': model.config.to_dict(), 'fingerprint':
                          str(model.fingerprint()), 'file': 'model.pt'},
                'source': {'kind': 'synthetic', 'path': f'route_descriptors({n}, {d})'}}
    write_compact(path, descriptors=stored, positions=positions,
                  entries=[(f'{i:08d}', '', '') for i in range(n)], projection=projection,
                  model_file=tmp / 'model.pt', manifest=manifest,
                  index_config=IndexConfig(target_recall=0.98, nlist=nlist))
    build_s = time.perf_counter() - t0
    del stored
    shutil.rmtree(tmp)
    return {'generate_s': round(gen_s, 1), 'build_s': round(build_s, 1)}


def make_queries(path: Path, queries: int, seed: int) -> np.ndarray:
    """Revisit queries of random entries, in the model's space, at cosine 0.7-0.9 to them.

    As in ``bench_index.py``; the stored projection is a rotation here, so the rows are
    turned back into the model's space. Made by the driver, before the serving process
    starts (and before ``--cold`` drops the page cache), so the rows they read are neither
    cached nor in the served map's RSS.
    """
    from vpr_ros.mapdb import MapDB
    from vpr_ros.mapdb.synthetic import perturb

    db = MapDB.open(path, fast=True)
    n = len(db)
    rng = np.random.default_rng(seed + 1)
    matrix = db.projection.matrix
    source = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    pool = np.asarray(db.descriptors[np.sort(rng.choice(n, size=min(n, 20_000),
                                                        replace=False))], np.float32) @ matrix
    x = np.asarray(db.descriptors[source], np.float32) @ matrix
    return perturb(x, rng.uniform(0.7, 0.9, size=len(x)), rng, pool=pool)


def serve(path: str, queries_file: str) -> dict:
    """Open the map in this (fresh) process and query it; print JSON."""
    import torch  # noqa: F401 - the model's runtime is part of the baseline

    from vpr_ros.mapdb import MapDB
    from vpr_ros.mapdb.index import exact_search, recall_at_k

    model = MapDB.open(path, fast=True).load_model('cpu')   # baseline: the model loaded
    q = np.load(queries_file, allow_pickle=False)
    import gc
    gc.collect()
    base, base_anon = rss_mb(), rss_mb(field='RssAnon')
    t0 = time.perf_counter()
    db = MapDB.open(path, fast=True)
    open_s = time.perf_counter() - t0
    rss_open = rss_mb() - base
    n = len(db)
    times, found = [], []
    read_before = _disk_read_mb()
    for row in q:
        t0 = time.perf_counter()
        idx, _ = db.search(row[None], 10)
        times.append(time.perf_counter() - t0)
        found.append(idx[0])
    read_mb = _disk_read_mb() - read_before
    rss_query, anon_query = rss_mb() - base, rss_mb(field='RssAnon') - base_anon
    exact = exact_search(db.descriptors, db.projection.apply(q), 10)
    t0 = time.perf_counter()
    MapDB.open(path, fast=False)
    verify_s = time.perf_counter() - t0
    files = db.manifest['files']
    per_file = {k: round(v['size'] / n, 1) for k, v in sorted(files.items())
                if k != 'model.pt'}
    return {'entries': n, 'dim_stored': int(db.manifest['descriptors']['dim']),
            'index': {k: v for k, v in db.manifest['index'].items() if k != 'tuning'},
            'tuning': db.manifest['index'].get('tuning'),
            'bytes_per_entry': round(sum(per_file.values()), 1),
            'bytes_per_entry_by_file': per_file,
            'open_s': round(open_s, 3), 'open_verify_sha256_s': round(verify_s, 1),
            'rss_model_mb': round(base, 1), 'rss_after_open_mb': round(rss_open, 1),
            'rss_after_queries_mb': round(rss_query, 1),
            'rss_anon_after_queries_mb': round(anon_query, 1),
            'disk_read_mb_queries': round(read_mb, 1),
            'queries': len(q), 'ms_per_query_p50': round(1e3 * np.median(times), 2),
            'ms_per_query_p95': round(1e3 * np.quantile(times, 0.95), 2),
            'recall@10_vs_exact': round(recall_at_k(np.array(found), exact), 4),
            'model': f'tiny-test ({model.descriptor_dim}-D)'}


def main(argv=None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument('--entries', type=int, default=1_000_000)
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--queries', type=int, default=500)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--nlist', type=int, default=0,
                        help='IVF lists (IndexConfig.nlist); 0: the default, 4 sqrt(N)')
    parser.add_argument('--dir', type=Path, default=None, help='where the map is written')
    add_json(parser)
    parser.add_argument('--cold', action='store_true',
                        help='drop the page cache before serving (root): the map comes from disk')
    parser.add_argument('--keep', action='store_true', help='keep the map (in --dir)')
    parser.add_argument('--serve', help=argparse.SUPPRESS)
    parser.add_argument('--queries-file', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        print(json.dumps(serve(args.serve, args.queries_file)))
        return 0
    work = args.dir or Path(tempfile.mkdtemp(prefix='bigmap-'))
    work.mkdir(parents=True, exist_ok=True)
    path = work / 'big.vprmap'
    queries_file = work / 'queries.npy'
    try:
        if args.keep and (path / 'manifest.json').exists():
            built = {'reused': str(path)}            # a map kept by an earlier --keep run
        else:
            shutil.rmtree(path, ignore_errors=True)
            built = build(path, args.entries, args.dim, args.seed, args.nlist)
        print('built', built, flush=True)
        np.save(queries_file, make_queries(path, args.queries, args.seed))
        if args.cold:
            _drop_page_cache()
        out = subprocess.run([sys.executable, __file__, '--serve', str(path),
                              '--queries-file', str(queries_file)],
                             capture_output=True, text=True, check=True)
        served = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
            queries_file.unlink(missing_ok=True)
    cache = 'cold (dropped before the serving process started)' if args.cold else 'warm'
    result = {**built, **served, 'threads': os.cpu_count(),
              'note': f'open: MapDB.open(fast=True) in a fresh process, page cache {cache}; '
                      f'RSS in MB above the process with torch and the model loaded'}
    print(json.dumps(result, indent=1))
    write_json(args.json, result, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
