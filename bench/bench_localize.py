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

"""Where the time of one ``Localizer.localize()`` goes, and re-ranking as a ratio to a forward.

Builds a small synthetic map with the default model, then for each query (interleaved, so load
changes hit every variant alike) times: a bare descriptor forward of the image, localize() with
GeoWarp in ``features`` mode with a cold and a warm candidate cache, and in ``image`` mode.
Goals (issue 6): re-rank <= 1.0x a forward in features mode, <= 6x in image mode, |P| = 5.

    bash scripts/env.sh run python bench/bench_localize.py [--queries 20] [--size 480 640]
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import sys
import tempfile
import time

from _common import add_json, add_route, add_threads, bench_parser, set_torch_threads, write_json
import numpy as np
import torch
from vpr_ros.images import to_tensor
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import build_map, BuildConfig, MapDB
from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source

STAGES = ('decode', 'resize', 'forward', 'search', 'rerank', 'estimate')


def main(argv=None) -> int:
    parser = bench_parser(__doc__)
    add_route(parser, frames=40)
    add_threads(parser, 0, 'torch threads (0: default)')
    add_json(parser)
    args = parser.parse_args(argv)
    set_torch_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix='bench-localize-'))
    try:
        route = SynthRoute(SynthConfig(frames=args.frames, image_size=tuple(args.size)))
        csv = write_csv_source(route.map_pass(), work / 'map')
        path = build_map(csv, work / 'bench.vprmap', BuildConfig(model=args.model),
                         progress=False)
        model = MapDB.open(path).load_model('cpu')
        base = LocalizerConfig(rerank_weight=1.0)     # GeoWarp's order: all |P| scored
        feat = Localizer(MapDB.open(path), model, base)
        image = Localizer(MapDB.open(path), model,
                          base.replace(geowarp=base.geowarp.replace(mode='image')))
        plain = Localizer(MapDB.open(path), model, base.replace(rerank=False))
        queries = [f.image for f in route.query_pass()][:args.queries]
        rows = {k: [] for k in ('forward', 'plain', 'features_cold', 'features_warm', 'image')}
        stages = {k: [] for k in STAGES}
        feat.localize(queries[0])                       # warm-up (allocations, lazy imports)
        for q in queries:
            x = to_tensor(q)[None]
            t0 = time.perf_counter()
            model.describe(x)
            rows['forward'].append(time.perf_counter() - t0)
            rows['plain'].append(sum(plain.localize(q).timings.values()) / 1e3)
            feat._cache.clear()
            cold = feat.localize(q)
            rows['features_cold'].append(cold.timings['rerank'] / 1e3)
            warm = feat.localize(q)
            rows['features_warm'].append(warm.timings['rerank'] / 1e3)
            image._cache.clear()
            rows['image'].append(image.localize(q).timings['rerank'] / 1e3)
            for k in STAGES:
                stages[k].append(cold.timings[k])
        med = {k: 1e3 * float(np.median(v)) for k, v in rows.items()}
        result = {
            'model': args.model, 'input': list(args.size), 'map_frames': args.frames,
            'queries': len(queries), 'threads': torch.get_num_threads(),
            'num_reranked': base.geowarp.num_reranked,
            'thumbnail': list(feat.thumb_size),
            'median_ms': med,
            'localize_stages_ms (features, cold)': {k: float(np.median(v))
                                                    for k, v in stages.items()},
            'rerank_over_forward': {k: med[k] / med['forward']
                                    for k in ('features_cold', 'features_warm', 'image')},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    r = result['rerank_over_forward']
    print(f'\n| re-rank (|P|=5) | ms | x forward ({med["forward"]:.1f} ms) | goal |')
    print('|---|---|---|---|')
    print(f'| features, cold cache | {med["features_cold"]:.1f} | {r["features_cold"]:.2f} | '
          f'<= 1.0 |')
    print(f'| features, warm cache | {med["features_warm"]:.1f} | {r["features_warm"]:.2f} | '
          f'<= 1.0 |')
    print(f'| image | {med["image"]:.1f} | {r["image"]:.2f} | <= 6 |')
    write_json(args.json, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
