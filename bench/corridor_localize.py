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

"""The Localizer on real data: Corridor refs as a map, its queries localised (issue 6 check).

The refs get synthetic geotags 1 m apart along a line (east of an origin); the map is built
with the default model, GeoWarp is fitted on the map images only (no query labels), the map is
calibrated with pseudo-queries from its own (source) images, then every query is localised. A
query's truth is the mean position of its ground-truth matches. Prints R@1/R@5 without and with
re-ranking (both modes), median / p95 error, NO_FIX rate and 2-D NEES coverage.

    bash scripts/env.sh run python bench/corridor_localize.py [--fit-iterations 100] [--json out]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
import shutil
import sys
import tempfile
import time

from _common import add_json, bench_parser, write_json
import numpy as np
import pymap3d
from vpr_ros.calibrate import calibrate_map
from vpr_ros.calibration import CalibrationConfig, nees_coverage, store_calibration
from vpr_ros.geo import wgs84_to_enu
from vpr_ros.images import load_image
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import build_map, BuildConfig, MapDB
from vpr_ros.mapdb.sources import source_images
from vpr_ros.models import DEFAULT_MODEL

CORRIDOR = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'corridor'
ORIGIN = (45.0, 7.0, 250.0)


def corridor_truth(root: Path = CORRIDOR, refs: int | None = None):
    """Return ``(ref paths, query paths, positives per query, ref lat/lon (R, 2))``.

    With ``refs``, only the first ``refs`` references and the queries whose matches all lie
    among them are kept (a subset for tests).
    """
    ref_paths = sorted((root / 'ref').glob('*.jpg'))[:refs]
    names = {p.name: i for i, p in enumerate(ref_paths)}
    queries, positives = [], []
    with open(root / 'ground_truth.csv', newline='') as f:
        for row in csv.DictReader(f):
            matches = [m for m in row['ref_matches'].split(';') if m]
            if matches and all(m in names for m in matches):
                queries.append(root / 'query' / row['query'])
                positives.append({names[m] for m in matches})
    east = np.arange(len(ref_paths), dtype=np.float64)          # 1 m apart
    lat, lon, _ = pymap3d.enu2geodetic(east, np.zeros_like(east), 0.0, *ORIGIN)
    return ref_paths, queries, positives, np.stack([lat, lon], axis=1)


def build_corridor_map(folder: Path, ref_paths, ref_lat_lon, model: str = DEFAULT_MODEL,
                       progress: bool = False, **build) -> Path:
    """Copy the refs beside a CSV with their geotags and build ``folder/corridor.vprmap``."""
    (folder / 'ref').mkdir(parents=True, exist_ok=True)
    rows = ['image,lat,lon']
    for path, (lat, lon) in zip(ref_paths, ref_lat_lon):
        shutil.copy(path, folder / 'ref' / path.name)
        rows.append(f'ref/{path.name},{float(lat)!r},{float(lon)!r}')
    (folder / 'refs.csv').write_text('\n'.join(rows) + '\n')
    return build_map(folder / 'refs.csv', folder / 'corridor.vprmap',
                     BuildConfig(model=model, **build),
                     progress=progress)


def evaluate(localizer: Localizer, images, positives, truth_lat_lon) -> dict:
    """Localise ``images``; recall over the candidate order, errors, NO_FIX rate, NEES."""
    t0 = time.perf_counter()
    estimates = localizer.localize_batch(images)
    seconds = time.perf_counter() - t0
    r1 = np.mean([e.candidates[0].index in p for e, p in zip(estimates, positives)])
    r5 = np.mean([bool({c.index for c in e.candidates[:5]} & p)
                  for e, p in zip(estimates, positives)])
    origin = localizer.map.origin
    got = np.array([wgs84_to_enu(e.lat, e.lon, 0.0, origin)[:2] for e in estimates])
    truth = np.array([wgs84_to_enu(a, b, 0.0, origin)[:2] for a, b in truth_lat_lon])
    err = got - truth
    norm = np.linalg.norm(err, axis=1)
    fix = np.array([e.ok for e in estimates])
    cov = np.stack([np.asarray(e.cov_enu)[:2, :2] for e in estimates])
    cover = nees_coverage(err, cov)
    fix_cover = nees_coverage(err[fix], cov[fix]) if fix.any() else {}
    return {'queries': len(images), 'R@1': float(r1), 'R@5': float(r5),
            'median_m': float(np.median(norm)), 'p95_m': float(np.quantile(norm, 0.95)),
            'no_fix_rate': float(1 - fix.mean()),
            'nees_1sigma': cover[1], 'nees_2sigma': cover[2], 'nees_3sigma': cover[3],
            'nees_2sigma_fixes': fix_cover.get(2, float('nan')),
            'ms_per_query': 1e3 * seconds / len(images)}


def main(argv=None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--fit-iterations', type=int, default=100)
    parser.add_argument('--fit-batch', type=int, default=8)
    parser.add_argument('--refs', type=int, default=None, help='first N refs only')
    parser.add_argument('--thumbnail-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='GeoWarp thumbnails (BuildConfig default when omitted)')
    add_json(parser)
    parser.add_argument('--keep', type=Path, help='build the map here and keep it')
    args = parser.parse_args(argv)
    from vpr_ros.training.geowarp_trainer import fit_geowarp, GeoWarpFitConfig

    refs, queries, positives, ref_ll = corridor_truth(refs=args.refs)
    truth = np.array([ref_ll[sorted(p)].mean(axis=0) for p in positives])
    images = [load_image(p) for p in queries]
    work = args.keep or Path(tempfile.mkdtemp(prefix='corridor-'))
    rows = {}
    try:
        t0 = time.perf_counter()
        build = {'thumbnail_size': tuple(args.thumbnail_size)} if args.thumbnail_size else {}
        path = build_corridor_map(work, refs, ref_ll, args.model, **build)
        build_s = time.perf_counter() - t0
        db = MapDB.open(path)
        model = db.load_model('cpu')
        auto = LocalizerConfig()
        base = auto.replace(geowarp=auto.geowarp.replace(mode='features'))
        # Before calibrate: GeoWarp's order (the published method); an uncalibrated map
        # would keep the global order.
        geo = base.replace(rerank_weight=1.0)

        def run(name, config, geowarp=None):
            loc = Localizer(MapDB.open(path), model, config, geowarp=geowarp)
            rows[name] = evaluate(loc, images, positives, truth)
            print(name, json.dumps(rows[name]), flush=True)
            return loc

        run('global only', base.replace(rerank=False))
        run('identity GeoWarp, features', geo)
        run('identity GeoWarp, image', geo.replace(geowarp=geo.geowarp.replace(mode='image')))
        t0 = time.perf_counter()
        fit = fit_geowarp(path, GeoWarpFitConfig(iterations=args.fit_iterations,
                                                 batch_size=args.fit_batch, device='cpu'),
                          restart=True, progress=False)
        fit_s = time.perf_counter() - t0
        run('fitted GeoWarp, features', geo)
        run('fitted GeoWarp, image', geo.replace(geowarp=geo.geowarp.replace(mode='image')))
        t0 = time.perf_counter()
        loc = Localizer(MapDB.open(path), model, auto)
        cal, report = calibrate_map(loc, CalibrationConfig(), map_images=source_images(db),
                                    progress=False)
        store_calibration(MapDB.open(path), cal, report)
        cal_s = time.perf_counter() - t0
        chosen = report['geowarp_mode']
        run(f'calibrated (mode auto: {chosen})', auto)
        run('calibrated, features', base)
        run('calibrated, image', base.replace(geowarp=base.geowarp.replace(mode='image')))
        run(f'calibrated ({chosen}), weighted', auto.replace(estimator='weighted'))
        summary = {'model': args.model, 'refs': len(refs),
                   'thumbnail_size': list(db.thumbnail_size or ()), 'build_s': build_s,
                   'fit_s': fit_s,
                   'fit': fit, 'calibrate_s': cal_s, 'calibration': report, 'rows': rows}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print('\n| setting | R@1 | R@5 | median m | p95 m | NO_FIX | NEES 1/2/3 sigma |')
    print('|---|---|---|---|---|---|---|')
    for name, r in rows.items():
        print(f'| {name} | {r["R@1"]:.3f} | {r["R@5"]:.3f} | {r["median_m"]:.2f} | '
              f'{r["p95_m"]:.2f} | {100 * r["no_fix_rate"]:.1f} % | '
              f'{100 * r["nees_1sigma"]:.0f}/{100 * r["nees_2sigma"]:.0f}/'
              f'{100 * r["nees_3sigma"]:.0f} % |')
    print(f'\nbuild {build_s:.1f} s, fit-geowarp {fit_s:.1f} s ({args.fit_iterations} steps), '
          f'calibrate {cal_s:.1f} s; calibration (pseudo-queries) {report["nees_coverage"]}')
    fusion = report.get('rerank_fusion') or {}
    if fusion.get('mode_choice'):
        print(f'GeoWarp mode: {fusion["mode_choice"]["reason"]}')
    if fusion.get('reason'):
        print(f'GeoWarp fusion: {fusion["reason"]}')
    write_json(args.json, summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
