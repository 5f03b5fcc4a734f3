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

"""Recall@1/5/10 of descriptor models on the Corridor set (../shared/data/corridor).

refs = database, queries = queries, ground truth from ground_truth.csv; exact L2 search
(faiss.IndexFlatL2, as the benchmark). Prints a Markdown table; ``--json`` writes the rows.

    bash scripts/env.sh run python bench/corridor_recall.py
    bash scripts/env.sh run python bench/corridor_recall.py --input-sizes 240x320 360x480
    bash scripts/env.sh run python bench/corridor_recall.py --models effnet-lite0-gem \
        effnet-lite0-gem-ms
"""

from __future__ import annotations

import csv
from pathlib import Path
import sys
import time

from _common import add_json, bench_parser, median_ms, set_torch_threads, write_json
import faiss
import numpy as np
import torch
from vpr_ros.images import load_image, to_tensor
from vpr_ros.models.descriptor import build_model, ModelConfig, PRESETS

CORRIDOR = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'corridor'
HEADS = ('avg', 'gem', 'gem_fc', 'netvlad', 'crn', 'crn2', 'haf')


def load_corridor(root: Path = CORRIDOR):
    """Return (refs, queries, positives) with positives[i] = set of ref indices."""
    ref_paths = sorted((root / 'ref').glob('*.jpg'))
    query_paths = sorted((root / 'query').glob('*.jpg'))
    refs = torch.stack([to_tensor(load_image(p)) for p in ref_paths])
    queries = torch.stack([to_tensor(load_image(p)) for p in query_paths])
    ref_index = {p.name: i for i, p in enumerate(ref_paths)}
    query_index = {p.name: i for i, p in enumerate(query_paths)}
    positives = [set() for _ in query_paths]
    with open(root / 'ground_truth.csv', newline='') as f:
        for row in csv.DictReader(f):
            matches = [m for m in row['ref_matches'].split(';') if m]
            positives[query_index[row['query']]] = {ref_index[m] for m in matches}
    return refs, queries, positives


def recalls(db: np.ndarray, q: np.ndarray, positives, values=(1, 5, 10)) -> dict[int, float]:
    """Benchmark recall@N: fraction of all queries with a positive among the top N."""
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(np.ascontiguousarray(db, dtype=np.float32))
    _, preds = index.search(np.ascontiguousarray(q, dtype=np.float32), max(values))
    out = {}
    for n in values:
        hits = sum(1 for i, row in enumerate(preds) if positives[i] & set(row[:n].tolist()))
        out[n] = hits / len(positives)
    return out


def evaluate(config: ModelConfig, data=None, batch: int = 32) -> dict[int, float]:
    """Describe the Corridor refs and queries with ``config`` and return its recalls."""
    refs, queries, positives = data or load_corridor()
    torch.manual_seed(0)
    model = build_model(config)
    db = np.concatenate([model.describe(refs[i:i + batch]) for i in range(0, len(refs), batch)])
    q = np.concatenate([model.describe(queries[i:i + batch])
                        for i in range(0, len(queries), batch)])
    return recalls(db, q, positives)


def forward_ms(config: ModelConfig, repeats: int = 10) -> float:
    """Median milliseconds of one 480x640 frame through the model (torch, CPU)."""
    model = build_model(config).eval()
    x = torch.rand(1, 3, 480, 640)
    with torch.inference_mode():
        return round(median_ms({'forward': lambda: model(x)}, repeats)['forward'], 1)


def main(argv=None) -> int:
    """Run the default model at two sizes and every head on EfficientNet-Lite0."""
    parser = bench_parser(__doc__)
    add_json(parser, 'write the rows as JSON here')
    parser.add_argument('--input-sizes', nargs='+', metavar='HxW',
                        help='only the default model, at these input sizes (e.g. 240x320 '
                             '360x480), with the time of a 480x640 forward at each')
    parser.add_argument('--models', nargs='+', metavar='PRESET', choices=sorted(PRESETS),
                        help='only these presets, with the time of a 480x640 forward of each')
    args = parser.parse_args(argv)
    set_torch_threads(2)
    data = load_corridor()
    rows = []
    timed = bool(args.input_sizes or args.models)
    if args.models:
        runs = [(name, PRESETS[name]) for name in args.models]
    elif args.input_sizes:
        runs = [(f'default @{s}', ModelConfig(input_size=tuple(int(v) for v in s.split('x'))))
                for s in args.input_sizes]
    else:
        runs = [('default (effnet-lite0 gem)', ModelConfig(input_size=(240, 320))),
                ('default @480x640', ModelConfig(input_size=(480, 640))),
                ('default @120x160 (native)', ModelConfig(input_size=(120, 160)))]
        runs += [(f'effnet-lite0 {h} (untrained head)', ModelConfig(head=h, netvlad_clusters=16))
                 for h in HEADS if h != 'gem']
    for name, cfg in runs:
        start = time.perf_counter()
        r = evaluate(cfg, data)
        rows.append({'model': name, 'input': list(cfg.input_size), 'head': cfg.head,
                     **{f'R@{n}': v for n, v in r.items()},
                     'seconds': round(time.perf_counter() - start, 1)})
        if timed:
            rows[-1]['forward_480x640_ms'] = forward_ms(cfg)
        print(rows[-1], file=sys.stderr)
    print('| model | input HxW | R@1 | R@5 | R@10 | 480x640 forward ms |')
    print('|---|---|---|---|---|---|')
    for row in rows:
        print(f"| {row['model']} | {row['input'][0]}x{row['input'][1]} | {row['R@1']:.3f} | "
              f"{row['R@5']:.3f} | {row['R@10']:.3f} | {row.get('forward_480x640_ms', '')} |")
    write_json(args.json, rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
