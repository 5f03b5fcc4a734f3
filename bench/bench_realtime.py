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

r"""The real-time goals of issue 18 on the CPU, side by side in one run (one process, one load).

Builds a synthetic 480x640 route map with the default model (stored GeoWarp features), exports
it to ONNX (``vpr-ros export``), then for each query, in turn (so load changes hit every
variant alike), times: the torch eager forward (resize + descriptor), the ONNX Runtime forward
of the same image, and ``Localizer.localize()`` with each backend (torch, onnxruntime) in
GeoWarp ``features`` and ``image`` mode at fusion weight 1 (GeoWarp's order, the published
method), and in ``features`` mode at fusion weight 0 (the global order); the re-rank stage is
read from the localizer's timings. The ONNX Runtime localizer runs GeoWarp's regression where
it timed faster at start-up (torch or ONNX Runtime); a row with it in the other one shows the
choice. Ratios are to the torch forward of the same image (and to the ONNX Runtime one).
Goals: ONNX Runtime forward <= 0.7x torch; localize() <= 1.6x a torch forward; re-rank of 5
candidates <= 0.5x a forward, cold or warm (the map's stored features make both the same).

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/bench_realtime.py --threads 2 \\
        --json bench/results/realtime_cpu_2threads.json
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
import shutil
import sys
import tempfile
import time

from _common import (add_json, add_route, add_threads, bench_parser, load_average, machine,
                     set_torch_threads, write_json)
import numpy as np
from vpr_ros.images import to_tensor
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import build_map, BuildConfig, MapDB
from vpr_ros.runtime.backends import run
from vpr_ros.runtime.export import export_map
from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source


def main(argv=None) -> int:
    parser = bench_parser(__doc__)
    add_route(parser, frames=30)
    add_threads(parser, 2, 'torch and ONNX Runtime threads')
    parser.add_argument('--work', type=Path, help='keep the map here (reused when present)')
    add_json(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    set_torch_threads(args.threads)
    load_before = load_average()
    work = args.work or Path(tempfile.mkdtemp(prefix='bench-realtime-'))
    try:
        route = SynthRoute(SynthConfig(frames=args.frames, image_size=tuple(args.size)))
        path = work / 'bench.vprmap'
        t0 = time.perf_counter()
        if not path.is_dir():
            csv = write_csv_source(route.map_pass(), work / 'map')
            build_map(csv, path, BuildConfig(model=args.model), progress=False)
        if not (MapDB.open(path).manifest.get('onnx') or {}).get('fp32'):
            export_map(path)
        setup_s = time.perf_counter() - t0
        model = MapDB.open(path).load_model('cpu')
        locs = {}
        for backend in ('torch', 'onnxruntime'):
            for mode in ('features', 'image'):
                cfg = LocalizerConfig(backend=backend, rerank_weight=1.0)
                cfg = cfg.replace(geowarp=cfg.geowarp.replace(mode=mode))
                locs[f'{backend}/{mode}'] = Localizer(MapDB.open(path), model, cfg)
            # Fusion weight 0 (what calibrate stores where re-ranking does not help): the
            # global order, GeoWarp scores only the top-1.
            cfg = LocalizerConfig(backend=backend, rerank_weight=0.0)
            locs[f'{backend}/features w=0'] = Localizer(MapDB.open(path), model, cfg)
        # The regression where the localizer did not put it (it times both at start-up and
        # keeps the faster on the CPU): the choice, side by side.
        chosen = locs['onnxruntime/features'].regression_backend
        other = 'onnxruntime' if chosen == 'torch' else 'torch'
        alt = Localizer(MapDB.open(path), model,
                        LocalizerConfig(backend='onnxruntime', rerank_weight=1.0))
        alt.geowarp.regression = (alt.runtime.regression() if other == 'onnxruntime' else
                                  locs['torch/features'].geowarp.regression)
        locs[f'onnxruntime/features, regression in {other}'] = alt
        ort_desc = locs['onnxruntime/features'].runtime.sessions['descriptor']
        queries = [f.image for f in route.query_pass()][:args.queries]
        rows: dict[str, list[float]] = {'torch_forward': [], 'ort_forward': []}
        for name in locs:
            rows[f'localize {name}'] = []
            rows[f'rerank {name}'] = []
        for loc in locs.values():                          # warm-up
            loc.localize(queries[0])
        for q in queries:
            x = to_tensor(q)[None]
            t0 = time.perf_counter()
            model.describe(x)
            rows['torch_forward'].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run(ort_desc, x.numpy())
            rows['ort_forward'].append(time.perf_counter() - t0)
            for name, loc in locs.items():
                t0 = time.perf_counter()
                est = loc.localize(q)
                rows[f'localize {name}'].append(time.perf_counter() - t0)
                rows[f'rerank {name}'].append(est.timings['rerank'] / 1e3)
        med = {k: 1e3 * float(np.median(v)) for k, v in rows.items()}
        fwd, ort_fwd = med['torch_forward'], med['ort_forward']
        result = {
            'machine': f'{machine()}, shared',
            'load_average_before': load_before, 'load_average_after': load_average(),
            'model': args.model, 'input': list(args.size), 'map_frames': args.frames,
            'queries': len(queries), 'threads': args.threads, 'setup_s': setup_s,
            'thumbnail': list(locs['torch/features'].thumb_size),
            'stored_geowarp_features': locs['torch/features'].stored_features is not None,
            'onnxruntime_regression_in': chosen,
            'onnxruntime_reason': locs['onnxruntime/features'].runtime.reason,
            'median_ms': med,
            'over_torch_forward': {k: v / fwd for k, v in med.items()},
            'over_ort_forward': {k: v / ort_fwd for k, v in med.items()},
        }
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    print(f'\n| stage ({args.threads} threads, load {load_before[0]:.1f}) | ms | x torch forward '
          f'| x ORT forward | goal |')
    print('|---|---|---|---|---|')
    goals = {'ort_forward': '<= 0.7 x torch', 'localize torch/features': '<= 1.6',
             'localize onnxruntime/features': '<= 1.6', 'localize onnxruntime/image': '<= 1.6',
             'rerank torch/features': '<= 0.5', 'rerank onnxruntime/features': '<= 0.5',
             'rerank torch/features w=0': '<= 0.5',
             'rerank onnxruntime/features w=0': '<= 0.5'}
    for k, v in med.items():
        print(f'| {k} | {v:.1f} | {result["over_torch_forward"][k]:.2f} | '
              f'{result["over_ort_forward"][k]:.2f} | {goals.get(k, "")} |')
    write_json(args.json, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
