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

"""How well plain descriptor retrieval localises the synthetic route (vpr_ros.synth).

Renders the map and query passes, describes them with a model (default: the demo's default
model), and for each query takes the top-1 map frame by cosine similarity. Prints the share of
queries whose top-1 lies within 1 and 2 place spacings and 10/25 m, and the median / p90
error (metres, from the frames' lat/lon). The map pass against itself (leave-one-out: each
map frame's best *other* map frame) is the sanity row: it should find a neighbour. Also
prints the rendering speed (frames/s, one process).

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/synth_retrieval.py
    bash scripts/env.sh run python bench/synth_retrieval.py --set spacing_m=3 --set frames=150
"""

from __future__ import annotations

import sys
import time

from _common import add_json, bench_parser, write_json
import numpy as np
import pymap3d
from vpr_ros.models import AUTO_MODEL, model_for_rows
from vpr_ros.models.api import DEFAULT_MODEL, describe
from vpr_ros.synth import SynthConfig, SynthRoute
import yaml


def _enu(frames, origin) -> np.ndarray:
    return np.array([pymap3d.geodetic2enu(f.lat, f.lon, f.alt, *origin)[:2] for f in frames])


def retrieval_row(name: str, errors: np.ndarray, spacing: float) -> dict:
    """Summarise top-1 errors (metres) as rates within 1/2 spacings and 10/25 m."""
    return {'pass': name, 'n': int(len(errors)),
            'top1_within_1_spacing': float(np.mean(errors <= spacing + 1e-6)),
            'top1_within_2_spacings': float(np.mean(errors <= 2 * spacing + 1e-6)),
            'top1_within_10m': float(np.mean(errors <= 10.0)),
            'top1_within_25m': float(np.mean(errors <= 25.0)),
            'median_m': float(np.median(errors)),
            'p90_m': float(np.percentile(errors, 90))}


def evaluate(config: SynthConfig, model: str = DEFAULT_MODEL) -> dict:
    """Render, describe and retrieve; return the rows, render speed and the config.

    ``auto`` picks the preset ``build-map`` would for the rendered rows.
    """
    if model == AUTO_MODEL:
        model = model_for_rows(config.image_size[0])
    route = SynthRoute(config)
    start = time.perf_counter()
    map_frames = list(route.map_pass())
    query_frames = list(route.query_pass())
    render_fps = (len(map_frames) + len(query_frames)) / (time.perf_counter() - start)
    start = time.perf_counter()
    db = describe([f.image for f in map_frames], model)
    q = describe([f.image for f in query_frames], model)
    describe_ms = (time.perf_counter() - start) * 1000 / (len(db) + len(q))
    db_xy, q_xy = _enu(map_frames, config.origin), _enu(query_frames, config.origin)

    sim = q @ db.T
    top1 = sim.argmax(axis=1)
    q_err = np.linalg.norm(q_xy - db_xy[top1], axis=1)
    self_sim = db @ db.T
    np.fill_diagonal(self_sim, -np.inf)
    self_top1 = self_sim.argmax(axis=1)
    m_err = np.linalg.norm(db_xy - db_xy[self_top1], axis=1)
    return {'config': config.to_dict(), 'model': model,
            'render_fps': round(render_fps, 1), 'describe_ms_per_image': round(describe_ms, 1),
            'rows': [retrieval_row('query->map', q_err, config.spacing_m),
                     retrieval_row('map->map (leave-one-out)', m_err, config.spacing_m)]}


def print_table(result: dict) -> None:
    """Print the rows as a Markdown table."""
    c = result['config']
    print(f"model {result['model']}, {c['frames']} frames/pass, spacing {c['spacing_m']} m, "
          f"image {c['image_size'][0]}x{c['image_size'][1]}, seed {c['seed']}; rendering "
          f"{result['render_fps']} frames/s, describing "
          f"{result['describe_ms_per_image']} ms/image")
    print('| pass | n | top-1 <= 1 spacing | <= 2 spacings | <= 10 m | <= 25 m | median m '
          '| p90 m |')
    print('|---|---|---|---|---|---|---|---|')
    for r in result['rows']:
        print(f"| {r['pass']} | {r['n']} | {r['top1_within_1_spacing']:.1%} | "
              f"{r['top1_within_2_spacings']:.1%} | {r['top1_within_10m']:.1%} | "
              f"{r['top1_within_25m']:.1%} | {r['median_m']:.1f} | {r['p90_m']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help="preset, YAML or checkpoint; auto: build-map's choice for the "
                             'rendered rows')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='SynthConfig field, value in YAML syntax (repeatable)')
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='evaluate several seeds (overrides seed)')
    add_json(parser, 'also write the results here')
    args = parser.parse_args(argv)
    fields = {}
    for item in args.set:
        key, sep, value = item.partition('=')
        if not sep:
            parser.error(f'--set expects KEY=VALUE, got {item!r}')
        fields[key] = yaml.safe_load(value)
    base = SynthConfig.from_dict(fields)
    seeds = args.seeds if args.seeds is not None else [base.seed]
    results = []
    for seed in seeds:
        result = evaluate(base.replace(seed=seed), args.model)
        print_table(result)
        results.append(result)
    write_json(args.json, results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
