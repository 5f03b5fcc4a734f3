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

r"""A place-labelled set like the issue 14 held-out one, end to end through the commands.

That set (a building, 25 places, about 40 map images per place, 640x360 colour) has a structure
neither Corridor (one image per metre) nor the synthetic route (one frame per 2 m) has: every
view of a place carries the place's coordinate, and queries see the place from elsewhere in
it. Here the synthetic renderer (``vpr_ros.synth``) makes one: ``--places`` places
``--spacing`` m apart along the route, ``--views`` map views of each (within +-3 m along,
+-2 m across, +-20 deg yaw of the place, light map noise) and ``--queries`` query views
(within ``--query-offset`` m along / m across / deg yaw, with the query pass's light, colour,
blur and noise), written as VG folders (``@utm_east@utm_north@zone@band@...@.jpg``). Then, as
a user would: ``vpr-ros eval`` (plain, the model ``auto`` gives), ``build-map`` (default
adaptation), ``fit-geowarp``, ``calibrate``, and ``eval --map`` without re-ranking, as
calibrated (in the GeoWarp mode calibrate chose), and in each mode set by hand. A retrieval
is right when it shares the query's place (``--positive_dist_threshold`` 5 m < the spacing).

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/synth_places.py --seed 1 \\
        --query-offset 5 3 40 --json out.json
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import sys
import tempfile

from _common import add_json, bench_parser, write_json
import cv2
import numpy as np
from pyproj import Transformer
from vpr_ros.cli import main as cli_main
from vpr_ros.mapdb import MapDB
from vpr_ros.synth import SynthConfig, SynthRoute


def write_places(folder: Path, seed: int, places: int, views: int, queries: int,
                 spacing_m: float, query_offset: tuple[float, float, float],
                 image_size: tuple[int, int]) -> None:
    """Render ``folder/database`` and ``folder/queries`` as VG-named JPEGs."""
    route = SynthRoute(SynthConfig(seed=seed, frames=int(places * spacing_m / 2) + 4,
                                   image_size=image_size))
    q = route.config
    rng = np.random.default_rng([seed, 100])
    lat0, lon0, _ = route.position(0.0)
    zone = int((lon0 + 180) // 6) + 1
    band = 'CDEFGHJKLMNPQRSTUVWX'[int((lat0 + 80) // 8)]
    utm = Transformer.from_crs('EPSG:4326', f'EPSG:{32600 + zone}', always_xy=True)
    for p in range(places):
        centre = spacing_m * (p + 1)
        lat, lon, _ = route.position(centre)
        east, north = utm.transform(lon, lat)
        settings = (('database', views, (3.0, 2.0, 20.0)), ('queries', queries, query_offset))
        for kind, count, (along, across, yaw) in settings:
            out = folder / kind
            out.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                image = route.render(centre + rng.uniform(-along, along),
                                     lateral_m=rng.uniform(-across, across),
                                     yaw_deg=rng.uniform(-yaw, yaw)).astype(np.float32) / 255
                if kind == 'queries':     # the query pass's changes, drawn per image
                    image = image ** rng.uniform(*q.query_gamma) * rng.uniform(*q.query_gain) \
                        * rng.uniform(1 - q.query_cast, 1 + q.query_cast, 3)
                    sigma = rng.uniform(*q.query_blur)
                    if sigma > 0:
                        image = cv2.GaussianBlur(image, (0, 0), sigma)
                noise = q.query_noise if kind == 'queries' else q.map_noise
                image = np.clip(image * 255 + rng.normal(0, noise, image.shape), 0, 255)
                name = (f'@{east:.2f}@{north:.2f}@{zone}@{band}@{lat:.7f}@{lon:.7f}'
                        f'@p{p:02d}v{k:02d}@.jpg')
                cv2.imwrite(str(out / name), cv2.cvtColor(image.astype(np.uint8),
                                                          cv2.COLOR_RGB2BGR))


def recall(folder: Path, *extra: str) -> dict:
    """``vpr-ros eval`` of the queries against the database (with ``extra`` options)."""
    out = folder / 'eval.json'
    args = ['eval', '--database_folder', str(folder / 'database'), '--queries_folder',
            str(folder / 'queries'), '--positive_dist_threshold', '5', '--no-progress',
            '--json', str(out), *extra]
    if cli_main(args) != 0:
        raise RuntimeError(f'vpr-ros {" ".join(args)} failed')
    return json.loads(out.read_text())['recalls']


def main(argv: list[str] | None = None) -> int:
    """Render the set, run the commands and print R@1/5/10 per row."""
    parser = bench_parser(__doc__)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--places', type=int, default=25)
    parser.add_argument('--views', type=int, default=16)
    parser.add_argument('--queries', type=int, default=4, help='query views per place')
    parser.add_argument('--spacing', type=float, default=12.0, help='m between places')
    parser.add_argument('--query-offset', type=float, nargs=3, default=(3.0, 2.0, 20.0),
                        metavar=('ALONG', 'ACROSS', 'YAW'))
    parser.add_argument('--image-size', type=int, nargs=2, default=(360, 640))
    parser.add_argument('--keep', type=Path, help='work here and keep the set and map')
    add_json(parser)
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix='places-'))
    try:
        write_places(folder, args.seed, args.places, args.views, args.queries, args.spacing,
                     tuple(args.query_offset), tuple(args.image_size))
        path = folder / 'places.vprmap'
        rows = {'plain retrieval (vpr-ros eval)': recall(folder)}
        for command in (['build-map', str(folder / 'database'), '--out', str(path)],
                        ['fit-geowarp', str(path)], ['calibrate', str(path)]):
            if cli_main(command + ['--no-progress']) != 0:
                raise RuntimeError(f'vpr-ros {" ".join(command)} failed')
        rows['map, no re-ranking'] = recall(folder, '--map', str(path), '--no-rerank')
        manifest = MapDB.open(path).manifest
        chosen = (manifest.get('rerank_fusion') or {}).get('geowarp_mode', 'features')
        rows[f'map, calibrated (mode auto: {chosen})'] = recall(folder, '--map', str(path))
        for mode in ('features', 'image'):
            config = folder / f'{mode}.yaml'
            config.write_text(f'geowarp: {{mode: {mode}}}\n')
            rows[f'map, calibrated, {mode} mode set'] = recall(
                folder, '--map', str(path), '--localizer-config', str(config))
        summary = {'args': {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in vars(args).items()},
                   'model': manifest['build']['model'],
                   'adaptation': (manifest.get('adaptation') or {}).get('report', {}).get(
                       'reason'),
                   'rerank_fusion': manifest.get('rerank_fusion'), 'rows': rows}
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print('\n| setting | R@1 | R@5 | R@10 |\n|---|---|---|---|')
    for name, r in rows.items():
        print(f'| {name} | {r["1"]:.1f} | {r["5"]:.1f} | {r["10"]:.1f} |')
    fusion = summary['rerank_fusion'] or {}
    print(f'\nmodel {summary["model"]}; adaptation: {summary["adaptation"]}; GeoWarp fusion '
          f'({fusion.get("geowarp_mode")} mode): {fusion.get("reason", fusion)}; mode: '
          f'{(fusion.get("mode_choice") or {}).get("reason")}')
    write_json(args.json, summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
