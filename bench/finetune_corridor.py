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

"""``adapt --finetune`` on Corridor: the held-out gate's view next to the real queries.

Builds the Corridor map from the refs (1 m apart), fine-tunes its model on the refs only
(``finetune_map`` with the gate switched off, so the tuned model is always measured), and
prints, per setting: the held-out pseudo-query recall@1 before/after (what the gate sees), the
real queries' global recall@1/5 before/after (what the gate cannot see), and the time. With
``--second-drive`` the even-numbered real queries are the gate's second drive (``adapt
--finetune --queries``) and the real recall is of the odd-numbered ones only.

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/finetune_corridor.py [--second-drive]
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import sys
import tempfile
import time

from _common import add_json, bench_parser, set_torch_threads, write_json
from corridor_localize import build_corridor_map, corridor_truth
import numpy as np
import torch
from vpr_ros.images import load_image, to_tensor
from vpr_ros.mapdb import MapDB
from vpr_ros.mapdb.finetune import finetune_map, FinetuneConfig


def real_recall(path: Path, queries, positives) -> dict[str, float]:
    """Global recall@1/5 of the real Corridor queries on the map (its model, its search)."""
    db = MapDB.open(path)
    model = db.load_model('cpu')
    desc = np.concatenate([model.describe(torch.stack([to_tensor(load_image(p))
                                                       for p in queries[i:i + 32]]))
                           for i in range(0, len(queries), 32)])
    ids, _ = db.search(desc, 5)
    return {'R@1': float(np.mean([row[0] in p for row, p in zip(ids, positives)])),
            'R@5': float(np.mean([bool(set(row.tolist()) & p)
                                  for row, p in zip(ids, positives)]))}


def main(argv=None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument('--settings', nargs='+', default=['last:1e-5:2', 'last:1e-4:2'],
                        help='layers:lr:epochs per run')
    parser.add_argument('--second-drive', action='store_true',
                        help='decide on the even-numbered real queries (adapt --finetune '
                             '--queries) and report real recall on the odd-numbered ones only')
    add_json(parser)
    args = parser.parse_args(argv)
    set_torch_threads(2)
    refs, queries, positives, ref_ll = corridor_truth()
    work = Path(tempfile.mkdtemp(prefix='finetune-corridor-'))
    rows = []
    drive = None
    try:
        if args.second_drive:
            # A query's position: the mean of its ground-truth refs' (as corridor_localize).
            (work / 'drive').mkdir()
            lines = ['image,lat,lon']
            for i in range(0, len(queries), 2):
                lat, lon = ref_ll[sorted(positives[i])].mean(axis=0)
                shutil.copy(queries[i], work / 'drive' / queries[i].name)
                lines.append(f'{queries[i].name},{float(lat)!r},{float(lon)!r}')
            drive = work / 'drive' / 'drive.csv'
            drive.write_text('\n'.join(lines) + '\n')
            queries, positives = queries[1::2], positives[1::2]
        base = build_corridor_map(work, refs, ref_ll)
        plain = real_recall(base, queries, positives)
        print('plain', plain, flush=True)
        for setting in args.settings:
            layers, lr, epochs = setting.split(':')
            path = work / f'{setting.replace(":", "_")}.vprmap'
            shutil.copytree(base, path)
            t0 = time.perf_counter()
            result = finetune_map(path, FinetuneConfig(layers=layers, lr=float(lr),
                                                       epochs=int(epochs), min_gain=-1.0,
                                                       max_p=1.0),
                                  source=work / 'refs.csv', queries=drive, progress=False)
            seconds = time.perf_counter() - t0
            row = {'setting': setting, 'held_out_before': result.before['recall@1'],
                   'held_out_after': result.after['recall@1'],
                   'sign_test_p': result.report['sign_test_p'],
                   'decided_by': result.report['decided_by'],
                   'pseudo_queries': [result.report['held_out_before']['recall@1'],
                                      result.report['held_out_after']['recall@1']],
                   'real_before': plain, 'real_after': real_recall(path, queries, positives),
                   'seconds': round(seconds, 1),
                   'loss': [h.get('loss') for h in result.report['history']]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print('| setting | gate R@1 before | after | sign test p | real R@1 before | after | '
          'real R@5 before | after | s |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['setting']} ({r['decided_by']}) | {r['held_out_before']:.3f} | "
              f"{r['held_out_after']:.3f} | "
              f"{r['sign_test_p']:.2g} | "
              f"{r['real_before']['R@1']:.3f} | {r['real_after']['R@1']:.3f} | "
              f"{r['real_before']['R@5']:.3f} | {r['real_after']['R@5']:.3f} | "
              f"{r['seconds']} |")
    write_json(args.json, rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
