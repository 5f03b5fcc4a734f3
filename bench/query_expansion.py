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

r"""Whether query expansion or database-side augmentation raises retrieval recall.

Radenović, Tolias and Chum ("Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI
2018, arXiv 1711.02512) re-describe each query as the similarity-weighted mean of itself and
its top k database vectors (alpha query expansion, weights ``s ** alpha``) and each database
vector the same way over its k nearest database neighbours (alpha database-side augmentation,
DBA; alpha 3 in both). Both assume that a database holds several views of what a query shows.
This bench measures them against plain retrieval, side by side on the same descriptors:

- an image set the way ``vpr-ros eval`` opens it (default: Corridor in ``../shared/data``;
  ``--dataset_folder`` or ``--database_folder`` + ``--queries_folder`` for your own), recall@N
  with the set's positives;
- the synthetic route (``--seeds``), the query pass against the map pass: top-1 at the nearest
  map frame and within one place spacing.

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/query_expansion.py \\
        --models effnet-lite0-gem-ms effnet-lite0-gem-360 --seeds 0 1 2 3 --json out.json
    bash scripts/env.sh run python bench/query_expansion.py --models auto \\
        --database_folder DB --queries_folder Q
"""

from __future__ import annotations

from pathlib import Path
import sys

from _common import add_json, bench_parser, set_torch_threads, write_json
import numpy as np
from synth_retrieval import _enu
from vpr_ros.evaluation.recall import recall_from_positives
from vpr_ros.evaluation.retrieval import (describe_entries, load_eval_model, open_dataset,
                                          RetrievalEvalConfig)
from vpr_ros.models import AUTO_MODEL, model_for_rows, resolve_model
from vpr_ros.models.api import describe
from vpr_ros.synth import SynthConfig, SynthRoute
from vpr_ros.vectors import unit_rows

CORRIDOR = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'corridor'
ALPHA = 3.0


def _weighted_top(sim: np.ndarray, vectors: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """Sum over each row's top-k columns of ``max(s, 0) ** alpha`` times their vectors."""
    top = np.argsort(-sim, axis=1)[:, :k]
    weights = np.clip(np.take_along_axis(sim, top, axis=1), 0.0, None) ** alpha
    return np.einsum('nk,nkd->nd', weights, vectors[top])


def alpha_dba(database: np.ndarray, k: int, alpha: float = ALPHA) -> np.ndarray:
    """Each database vector as the weighted mean of its k nearest database vectors (itself one)."""
    if k <= 0:
        return database
    return unit_rows(_weighted_top(database @ database.T, database, k + 1, alpha))


def alpha_qe(queries: np.ndarray, database: np.ndarray, k: int,
             alpha: float = ALPHA) -> np.ndarray:
    """Each query plus the weighted sum of its top-k database vectors, normalised."""
    if k <= 0:
        return queries
    return unit_rows(queries + _weighted_top(queries @ database.T, database, k, alpha))


def variants(ks: list[int]) -> list[tuple[str, int, int]]:
    """(name, query expansion k, DBA k): plain, each alone, and both with the same k."""
    out = [('plain', 0, 0)]
    out += [(f'aQE k={k}', k, 0) for k in ks]
    out += [(f'aDBA k={k}', 0, k) for k in ks]
    out += [(f'aDBA+aQE k={k}', k, k) for k in ks]
    return out


def image_set_rows(dataset, model_spec: str, ks: list[int]) -> list[dict]:
    """Recall@1/5/10 of every variant on an image set with positives."""
    name = resolve_model(model_spec, dataset.database)
    model = load_eval_model(name)
    db = describe_entries(model, dataset.database, progress=False)
    q = describe_entries(model, dataset.queries, progress=False)
    rows = []
    for variant, kq, kd in variants(ks):
        base = alpha_dba(db, kd)
        order = np.argsort(-(alpha_qe(q, base, kq) @ base.T), axis=1)[:, :10]
        recalls, _ = recall_from_positives(order, dataset.positives, (1, 5, 10))
        rows.append({'set': 'images', 'model': name, 'variant': variant,
                     **{f'R@{n}': r / 100 for n, r in zip((1, 5, 10), recalls)}})
    return rows


def route_rows(seeds: list[int], size: tuple[int, int], model_spec: str, frames: int,
               ks: list[int]) -> list[dict]:
    """Top-1 at the nearest map frame / within one spacing of every variant, per seed."""
    name = model_for_rows(size[0]) if model_spec == AUTO_MODEL else model_spec
    per_seed = []
    for seed in seeds:
        config = SynthConfig(seed=seed, frames=frames, image_size=size)
        route = SynthRoute(config)
        map_frames, query_frames = list(route.map_pass()), list(route.query_pass())
        db = describe([f.image for f in map_frames], name)
        q = describe([f.image for f in query_frames], name)
        db_xy, q_xy = _enu(map_frames, config.origin), _enu(query_frames, config.origin)
        nearest = np.linalg.norm(q_xy[:, None] - db_xy[None], axis=2).argmin(axis=1)
        seed_rows = []
        for _, kq, kd in variants(ks):
            base = alpha_dba(db, kd)
            top = (alpha_qe(q, base, kq) @ base.T).argmax(axis=1)
            error = np.linalg.norm(q_xy - db_xy[top], axis=1)
            seed_rows.append((float(np.mean(top == nearest)),
                              float(np.mean(error <= config.spacing_m + 1e-6))))
        per_seed.append(seed_rows)
        print(f'route seed {seed} done', file=sys.stderr)
    rows = []
    for i, (variant, _, _) in enumerate(variants(ks)):
        exact = [s[i][0] for s in per_seed]
        within = [s[i][1] for s in per_seed]
        rows.append({'set': f'route {size[0]}x{size[1]}', 'model': name, 'variant': variant,
                     'seeds': seeds, 'exact_frame': float(np.mean(exact)),
                     'within_1_spacing': float(np.mean(within)),
                     'within_1_spacing_per_seed': within})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure the variants on the image set and, with ``--seeds``, the synthetic route."""
    parser = bench_parser(__doc__)
    parser.add_argument('--models', nargs='+', default=[AUTO_MODEL],
                        help='presets, YAMLs or checkpoints; auto: the model build-map picks')
    parser.add_argument('--k', type=int, nargs='+', default=[1, 2, 3, 5],
                        help='neighbours of query expansion and DBA to try')
    parser.add_argument('--dataset_folder', type=Path)
    parser.add_argument('--database_folder', type=Path)
    parser.add_argument('--queries_folder', type=Path)
    parser.add_argument('--seeds', type=int, nargs='*', default=[],
                        help='synthetic route seeds (none: the image set only)')
    parser.add_argument('--route-size', type=int, nargs=2, default=(360, 640),
                        metavar=('H', 'W'), help='rows and columns the route is rendered at')
    parser.add_argument('--frames', type=int, default=150, help='route map frames')
    add_json(parser, 'write the rows as JSON here')
    args = parser.parse_args(argv)
    set_torch_threads(2)
    folders = {'dataset_folder': args.dataset_folder, 'database_folder': args.database_folder,
               'queries_folder': args.queries_folder}
    if not any(folders.values()):
        folders['dataset_folder'] = CORRIDOR
    dataset = open_dataset(RetrievalEvalConfig(), **folders)
    rows = []
    for model in args.models:
        rows += image_set_rows(dataset, model, args.k)
        if args.seeds:
            rows += route_rows(args.seeds, tuple(args.route_size), model, args.frames, args.k)
    print('| set | model | variant | R@1 or exact frame | R@5 or within 1 spacing | R@10 |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        if r['set'] == 'images':
            cells = f"{r['R@1']:.3f} | {r['R@5']:.3f} | {r['R@10']:.3f}"
        else:
            cells = f"{r['exact_frame']:.3f} | {r['within_1_spacing']:.3f} |"
        print(f"| {r['set']} | {r['model']} | {r['variant']} | {cells} |")
    write_json(args.json, {'dataset': {k: str(v) for k, v in folders.items() if v},
                           'alpha': ALPHA, 'rows': rows})
    return 0


if __name__ == '__main__':
    sys.exit(main())
