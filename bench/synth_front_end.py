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

"""The front end on the synthetic route: adaptation and the re-rank fusion, per seed.

For each seed: render the map and query passes (``vpr_ros.synth``), ``build-map`` with the
default model and the default adaptation (its choice and validation table are reported),
``fit-geowarp`` (short), ``calibrate`` (which chooses the GeoWarp fusion weight on
pseudo-queries), then localise the query pass once and re-order each estimate for the global
order (w = 0), the GeoWarp order (w = 1) and the calibrated weight. Prints the share of
queries whose top-1 lies within 1 and 2 place spacings and 10 m, per order.

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/synth_front_end.py --seeds 0 1
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import tempfile

from _common import add_json, bench_parser, write_json
import numpy as np
import pymap3d
from vpr_ros.calibrate import calibrate_map
from vpr_ros.calibration import CalibrationConfig, store_calibration
from vpr_ros.localizer import Localizer
from vpr_ros.mapdb import build_map, BuildConfig
from vpr_ros.mapdb.sources import source_images
from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source
from vpr_ros.training.geowarp_trainer import fit_geowarp, GeoWarpFitConfig


def run_seed(seed: int, frames: int, fit_steps: int, folder: Path,
             image_size: tuple[int, int] | None = None,
             thumbnail_size: tuple[int, int] | None = None, mode: str | None = None) -> dict:
    """Build, fit, calibrate and localise one seed's route; return the rates per order."""
    config = SynthConfig(frames=frames, seed=seed,
                         **({'image_size': image_size} if image_size else {}))
    route = SynthRoute(config)
    csv = write_csv_source(route.map_pass(), folder / 'map')
    queries = list(route.query_pass())
    build = BuildConfig(**({'thumbnail_size': thumbnail_size} if thumbnail_size else {}))
    path = build_map(csv, folder / 'route.vprmap', build, progress=False)
    fit_geowarp(path, GeoWarpFitConfig(iterations=fit_steps, batch_size=8), restart=True,
                progress=False)
    loc = Localizer.open(path)
    if mode:
        loc.config = loc.config.replace(geowarp=loc.config.geowarp.replace(mode=mode))
    cal, report = calibrate_map(loc, CalibrationConfig(pseudo_queries=frames),
                                map_images=source_images(loc.map), progress=False)
    store_calibration(loc.map, cal, report)
    loc = Localizer.open(path, loc.config)
    weight = loc.rerank_weight
    loc.config = dataclasses.replace(loc.config, rerank_weight=1.0)
    estimates = loc.localize_batch([q.image for q in queries])
    truth = np.array([pymap3d.geodetic2enu(q.lat, q.lon, 0.0, *loc.map.origin)[:2]
                      for q in queries])
    rows = {}
    for name, w in (('global order (w=0)', 0.0), ('GeoWarp order (w=1)', 1.0),
                    (f'calibrated (w={weight:g})', weight)):
        loc.config = dataclasses.replace(loc.config, rerank_weight=w)
        top = [loc.reorder(e).candidates[0].index for e in estimates]
        err = np.linalg.norm(loc.map.positions_enu(np.array(top)) - truth, axis=1)
        rows[name] = {'within_1_spacing': float(np.mean(err <= config.spacing_m + 1e-6)),
                      'within_2_spacings': float(np.mean(err <= 2 * config.spacing_m + 1e-6)),
                      'within_10m': float(np.mean(err <= 10.0)),
                      'median_m': float(np.median(err))}
    adaptation = loc.map.manifest.get('adaptation') or {}
    return {'seed': seed, 'frames': frames, 'spacing_m': config.spacing_m,
            'image_size': list(config.image_size), 'thumbnail_size': list(loc.thumb_size),
            'mode': loc.config.geowarp.mode,
            'adaptation': {k: adaptation.get(k) for k in ('method', 'dim', 'validation')}
            | {'reason': (adaptation.get('report') or {}).get('reason')},
            'fusion': report.get('rerank_fusion'), 'rows': rows}


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument('--frames', type=int, default=150)
    parser.add_argument('--fit-steps', type=int, default=20)
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='rendered size (SynthConfig default when omitted)')
    parser.add_argument('--thumbnail-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='GeoWarp thumbnails (BuildConfig default when omitted)')
    parser.add_argument('--mode', choices=('features', 'image'),
                        help='GeoWarp mode (the localizer default when omitted)')
    add_json(parser)
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_seed(seed, args.frames, args.fit_steps, Path(tmp),
                              tuple(args.image_size) if args.image_size else None,
                              tuple(args.thumbnail_size) if args.thumbnail_size else None,
                              args.mode)
        results.append(result)
        print(f'seed {seed}: adaptation {result["adaptation"]["method"]}-'
              f'{result["adaptation"]["dim"]} ({result["adaptation"]["reason"]}); fusion '
              f'{(result["fusion"] or {}).get("reason")}')
        print('| order | top-1 <= 1 spacing | <= 2 spacings | <= 10 m | median m |')
        print('|---|---|---|---|---|')
        for name, r in result['rows'].items():
            print(f'| {name} | {r["within_1_spacing"]:.3f} | {r["within_2_spacings"]:.3f} | '
                  f'{r["within_10m"]:.3f} | {r["median_m"]:.2f} |')
        write_json(args.json, results)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
