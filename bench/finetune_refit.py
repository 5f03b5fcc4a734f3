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

"""``adapt --finetune`` with and without ``--refit`` on a place-labelled set, query by query.

The held-out check trains on two of three spatial folds of the map; the third decides. The
model it keeps has never seen a third of the map's places, and queries come from all of them.
``--refit`` trains again on every place once the check has kept the model. This bench renders
a set as ``synth_places.py`` does, builds the map, fine-tunes one copy with the default gate
and one with ``--refit`` (the same command otherwise), and scores the queries against each map
(``eval --map --no-rerank``'s search), split by whether a query's place was in the held-out
fold.

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/finetune_refit.py --json out.json
"""

from __future__ import annotations

from pathlib import Path
import re
import shutil
import sys
import tempfile
import time

from _common import add_json, bench_parser, write_json
import numpy as np
from synth_places import write_places
from vpr_ros.cli import main as cli_main
from vpr_ros.evaluation.retrieval import evaluate_map, open_vg, RetrievalEvalConfig
from vpr_ros.mapdb import MapDB
from vpr_ros.mapdb.adaptation import spatial_folds

PLACE = re.compile(r'@p(\d+)v\d+@')


def query_rows(folder: Path, path: Path, held_places: set[int]) -> dict:
    """R@1/R@5 of the queries on the map, all and split by held-out places."""
    dataset = open_vg(folder / 'database', folder / 'queries', 5.0)
    result = evaluate_map(dataset, path, RetrievalEvalConfig(device='cpu'), rerank=False,
                          progress=False)
    right1 = np.array([row[0] in set(p.tolist())
                       for row, p in zip(result.predictions, dataset.positives)])
    right5 = np.array([bool(set(row[:5].tolist()) & set(p.tolist()))
                       for row, p in zip(result.predictions, dataset.positives)])
    held = np.array([int(PLACE.search(q.name).group(1)) in held_places
                     for q in dataset.queries])
    return {name: {'R@1': float(right1[mask].mean()), 'R@5': float(right5[mask].mean()),
                   'queries': int(mask.sum())}
            for name, mask in (('all', np.ones_like(held)), ('held-out places', held),
                               ('trained places', ~held))}


def main(argv: list[str] | None = None) -> int:
    """Render, build, fine-tune two copies, print the query table."""
    parser = bench_parser(__doc__)
    parser.add_argument('--seed', type=int, default=2)
    parser.add_argument('--places', type=int, default=25)
    parser.add_argument('--views', type=int, default=40)
    parser.add_argument('--queries', type=int, default=4, help='query views per place')
    parser.add_argument('--query-offset', type=float, nargs=3, default=(5.0, 3.0, 40.0),
                        metavar=('ALONG', 'ACROSS', 'YAW'))
    parser.add_argument('--keep', type=Path, help='work here and keep the set and maps')
    add_json(parser)
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix='refit-'))
    summary: dict = {'args': {k: (str(v) if isinstance(v, Path) else v)
                              for k, v in vars(args).items()}}
    try:
        write_places(folder, args.seed, args.places, args.views, args.queries, 12.0,
                     tuple(args.query_offset), (360, 640))
        built = folder / 'places.vprmap'
        if cli_main(['build-map', str(folder / 'database'), '--out', str(built),
                     '--no-progress']) != 0:
            raise RuntimeError('build-map failed')
        db = MapDB.open(built)
        fold = spatial_folds(db.positions_enu(np.arange(len(db))), 3, seed=0)
        held_places = {int(PLACE.search(db.names[i]).group(1))
                       for i in np.flatnonzero(fold == 0)}
        rows = {'map as built': query_rows(folder, built, held_places)}
        for name, extra in (('fine-tuned (default)', []), ('fine-tuned --refit', ['--refit'])):
            path = folder / f'{name.split()[-1].strip("()-")}.vprmap'
            shutil.copytree(built, path)
            out = folder / f'{path.stem}.json'
            started = time.perf_counter()
            if cli_main(['adapt', str(path), '--finetune', '--no-progress', '--json', str(out),
                         *extra]) != 0:
                raise RuntimeError(f'adapt --finetune {extra} failed')
            summary[f'{name} seconds'] = round(time.perf_counter() - started, 1)
            summary[f'{name} report'] = MapDB.open(path).manifest.get('finetune')
            rows[name] = query_rows(folder, path, held_places)
        summary['held_out_places'] = sorted(held_places)
        summary['rows'] = rows
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print('\n| map | queries R@1 (all) | held-out places | trained places | R@5 (all) |')
    print('|---|---|---|---|---|')
    for name, r in rows.items():
        print(f'| {name} | {r["all"]["R@1"]:.3f} | {r["held-out places"]["R@1"]:.3f} '
              f'({r["held-out places"]["queries"]}) | {r["trained places"]["R@1"]:.3f} '
              f'({r["trained places"]["queries"]}) | {r["all"]["R@5"]:.3f} |')
    write_json(args.json, summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
