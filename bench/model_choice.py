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

r"""Could a map choose its own front end? Pseudo-query recall against real-query recall per model.

``build-map --model auto`` picks the model from the image size. A map could instead describe
its images with each candidate and keep the one whose pseudo-queries (the map's own images
under a random homography and photometric change, as ``adapt`` and ``calibrate`` make them)
find their place best. That only helps if pseudo-queries rank the models as real queries do.
For each model: Corridor (refs as the map at 1 m spacing, the 111 queries with their ground
truth) and the synthetic route (map pass and query pass, 240x320): real-query R@1 beside the
pseudo-queries' R@1 (own entry left out; right within 1 or 2 spacings).

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/model_choice.py \
        --json bench/results/model_choice.json
"""

from __future__ import annotations

import sys
import time

from _common import add_json, bench_parser, set_torch_threads, write_json
from corridor_recall import load_corridor, recalls
import numpy as np
from vpr_ros.geo import wgs84_to_enu
from vpr_ros.mapdb.adaptation import recall_at_positions, recall_rows
from vpr_ros.models.api import describe
from vpr_ros.models.checkpoints import load_model
from vpr_ros.pseudo_queries import pseudo_query
from vpr_ros.synth import SynthConfig, SynthRoute

MODELS = ('effnet-lite0-gem', 'effnet-lite0-gem-ms', 'effnet-lite0-gem-360',
          'effnet-lite0-gem-360-ms')


def pseudo_sets(images: list, seeds: tuple[int, ...]) -> list[list[np.ndarray]]:
    """One pseudo-query per map image and seed: the same views for every model."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        out.append([pseudo_query(image, rng) for image in images])
    return out


def pseudo_recall(model, db: np.ndarray, sets: list, enu: np.ndarray,
                  radius_m: float) -> tuple[float, float]:
    """Return R@1 and R@5 of the pseudo-queries: a map entry within ``radius_m`` of the source."""
    rows = np.concatenate([recall_rows(describe(views, model), db, np.arange(len(db)), enu,
                                       radius_m) for views in sets])
    return float(rows[:, 0].mean()), float(rows[:, 1].mean())


def model_rows(set_name: str, models: list[str], map_images: list, enu: np.ndarray,
               spacing: float, sets: list, real) -> list[dict]:
    """Describe the map with each model; score its real queries and its pseudo-queries.

    ``real(model, db)`` gives the real queries' R@1 and R@5; the pseudo-queries are right
    within 1 and 2 ``spacing``.
    """
    rows = []
    for name in models:
        started = time.perf_counter()
        model = load_model(name, 'cpu')
        db = describe(map_images, model)
        real_r1, real_r5 = real(model, db)
        row = {'set': set_name, 'model': name, 'real_R1': real_r1, 'real_R5': real_r5}
        for k in (1, 2):
            row[f'pseudo_R1_{k}sp'], row[f'pseudo_R5_{k}sp'] = pseudo_recall(
                model, db, sets, enu, k * spacing)
        row['seconds'] = round(time.perf_counter() - started, 1)
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def corridor_rows(models: list[str]) -> list[dict]:
    """Real and pseudo-query recall of each model on Corridor (refs 1 m apart)."""
    refs, queries, positives = load_corridor()
    ref_images = [(r.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for r in refs]
    query_images = [(q.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                    for q in queries]
    enu = np.stack([np.arange(len(ref_images), dtype=float), np.zeros(len(ref_images))], 1)

    def real(model, db: np.ndarray) -> tuple[float, float]:
        found = recalls(db, describe(query_images, model), positives)
        return found[1], found[5]

    return model_rows('corridor', models, ref_images, enu, 1.0,
                      pseudo_sets(ref_images, (0, 1)), real)


def route_rows(models: list[str], seed: int, frames: int) -> list[dict]:
    """Real and pseudo-query recall of each model on one synthetic route (240x320)."""
    route = SynthRoute(SynthConfig(seed=seed, frames=frames))
    map_pass, query_pass = list(route.map_pass()), list(route.query_pass())
    origin = (map_pass[0].lat, map_pass[0].lon, 0.0)

    def east_north(frames_: list) -> np.ndarray:
        lat = np.array([f.lat for f in frames_])
        lon = np.array([f.lon for f in frames_])
        return wgs84_to_enu(lat, lon, np.zeros_like(lat), origin)[:, :2]

    map_enu, query_enu = east_north(map_pass), east_north(query_pass)
    spacing = float(np.median(np.linalg.norm(np.diff(map_enu, axis=0), axis=1)))
    map_images = [f.image for f in map_pass]

    def real(model, db: np.ndarray) -> tuple[float, float]:
        found = recall_at_positions(describe([f.image for f in query_pass], model), db,
                                    map_enu, query_enu, spacing)
        return float(found[:, 0].mean()), float(found[:, 1].mean())

    return model_rows(f'route seed {seed}', models, map_images, map_enu, spacing,
                      pseudo_sets(map_images, (0,)), real)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--route-seeds', type=int, nargs='*', default=[0])
    parser.add_argument('--frames', type=int, default=150, help='route frames')
    add_json(parser)
    args = parser.parse_args()
    set_torch_threads(2)
    rows = corridor_rows(args.models)
    for seed in args.route_seeds:
        rows += route_rows(args.models, seed, args.frames)
    print('| set | model | real R@1 | pseudo R@1 (1 / 2 spacings) | pseudo R@5 (1 / 2) |')
    print('|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['set']} | {r['model']} | {r['real_R1']:.3f} | {r['pseudo_R1_1sp']:.3f} / "
              f"{r['pseudo_R1_2sp']:.3f} | {r['pseudo_R5_1sp']:.3f} / {r['pseudo_R5_2sp']:.3f} |")
    write_json(args.json, rows)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
