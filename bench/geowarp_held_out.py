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

"""Whether ``calibrate``'s fusion check favours GeoWarp on the places it was fitted on.

``fit-geowarp`` trains on the map's own images and ``calibrate`` then weighs the GeoWarp
fusion on pseudo-queries made from those same images. If the regression learnt those places,
the check would see a gain that new places do not give. Corridor refs as the map (1 m apart):
GeoWarp is fitted once on all of them and once per spatial fold on a map of the other two
folds (the places of the left-out fold never seen). The same pseudo-queries (calibrate's: the
source images, the entry left out) and the real queries are localised with every fit, and the
right-place rate (top-1 within 3 m) per fusion weight is pooled over frames at places the fit
never saw and at places it was fitted on.

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/geowarp_held_out.py \
        [--fit-iterations 60] [--json out.json]
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import sys
import tempfile
import time

from _common import add_json, bench_parser, write_json
from corridor_localize import build_corridor_map, corridor_truth
import numpy as np
from vpr_ros.calibrate import FUSION_WEIGHTS, localize_frames, per_setting, pseudo_query_frames
from vpr_ros.images import load_image
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import MapDB
from vpr_ros.mapdb.adaptation import spatial_folds
from vpr_ros.mapdb.sources import source_images
from vpr_ros.models.geowarp import load_geowarp
from vpr_ros.significance import sign_test
from vpr_ros.training.geowarp_trainer import fit_geowarp, GeoWarpFitConfig

RIGHT_M = 3.0


def fitted(map_path: Path, config: GeoWarpFitConfig):
    """Fit GeoWarp on ``map_path`` and return the fitted module."""
    fit_geowarp(map_path, config, restart=True, progress=False)
    db = MapDB.open(map_path)
    return load_geowarp(map_path / db.manifest['geowarp']['file'])[0]


def right_per_weight(loc: Localizer, images, exclude, truth_en: np.ndarray) -> np.ndarray:
    """``(weights, frames)`` booleans: the fused order's top-1 within RIGHT_M of the truth."""
    estimates = localize_frames(loc, images, exclude=exclude, progress=False)
    return per_setting(loc, estimates, 'rerank_weight', [float(w) for w in FUSION_WEIGHTS],
                       lambda e, i: float(np.linalg.norm(
                            loc.map.positions_enu(e.candidates[0].index) - truth_en[i])
                            <= RIGHT_M)) == 1.0


def main(argv=None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument('--fit-iterations', type=int, default=60)
    parser.add_argument('--fit-batch', type=int, default=8)
    parser.add_argument('--folds', type=int, default=3)
    add_json(parser)
    args = parser.parse_args(argv)
    refs, queries, positives, ref_ll = corridor_truth()
    work = Path(tempfile.mkdtemp(prefix='geowarp-held-out-'))
    started = time.perf_counter()
    try:
        full = build_corridor_map(work / 'full', refs, ref_ll)
        db = MapDB.open(full)
        enu = db.positions_enu(np.arange(len(db)))
        folds = spatial_folds(enu, args.folds, seed=0)
        config = GeoWarpFitConfig(iterations=args.fit_iterations, batch_size=args.fit_batch,
                                  device='cpu')
        fits = {'all': fitted(full, config)}
        for k in range(args.folds):
            keep = np.flatnonzero(folds != k)
            part = build_corridor_map(work / f'without{k}', [refs[i] for i in keep], ref_ll[keep])
            fits[k] = fitted(part, config)
            print(f'fitted without fold {k} ({len(keep)} of {len(refs)} places)', flush=True)
        db = MapDB.open(full)
        model = db.load_model('cpu')
        images, chosen, _ = pseudo_query_frames(db, len(db), 0, source_images(db))
        sets = {
            'pseudo-queries': ([images[i] for i in range(len(chosen))],
                               [[int(i)] for i in chosen], enu[chosen], folds[chosen]),
            'real queries': ([load_image(p) for p in queries], None,
                             np.array([enu[sorted(p)].mean(axis=0) for p in positives]),
                             np.array([folds[min(p)] for p in positives])),
        }
        right = {}
        for name, geowarp in fits.items():
            loc = Localizer(MapDB.open(full), model, LocalizerConfig().replace(rerank_weight=1.0),
                            geowarp=geowarp)
            right[name] = {s: right_per_weight(loc, imgs, excl, truth)
                           for s, (imgs, excl, truth, _) in sets.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = {}
    for s, (_, _, _, fold) in sets.items():
        # Every frame once under the fit that never saw its place, and under each fit that did.
        unseen = np.stack([right[int(f)][s][:, i] for i, f in enumerate(fold)], axis=1)
        seen = np.concatenate([right[k][s][:, fold != k] for k in range(args.folds)], axis=1)
        every = right['all'][s]
        rows[s] = {'frames': int(len(fold)),
                   'unseen_places': unseen.mean(axis=1).tolist(),
                   'seen_places': seen.mean(axis=1).tolist(),
                   'fit_on_all': every.mean(axis=1).tolist(),
                   # GeoWarp alone (w = 1) against the global order, on unseen places.
                   'unseen_w1_vs_global_p': sign_test(unseen[-1], unseen[0])}
    summary = {'fit_iterations': args.fit_iterations, 'fit_batch': args.fit_batch,
               'folds': args.folds, 'fold_sizes': np.bincount(folds).tolist(),
               'weights': list(FUSION_WEIGHTS), 'right_place_m': RIGHT_M, 'rows': rows,
               'seconds': round(time.perf_counter() - started, 1)}
    print('\n| frames | fit | ' + ' | '.join(f'w={w:g}' for w in FUSION_WEIGHTS) + ' |')
    print('|---|---|' + '---|' * len(FUSION_WEIGHTS))
    for s, r in rows.items():
        for key, label in (('unseen_places', 'places never fitted on'),
                           ('seen_places', 'places fitted on'), ('fit_on_all', 'fit on all')):
            print(f'| {s} ({r["frames"]}) | {label} | ' +
                  ' | '.join(f'{v:.3f}' for v in r[key]) + ' |')
    print(json.dumps({s: r['unseen_w1_vs_global_p'] for s, r in rows.items()}))
    write_json(args.json, summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
