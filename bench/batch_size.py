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

r"""Time per image of a describe forward at several batch sizes, on this machine's CPU.

The offline paths (build-map, eval, adapt's pseudo-queries, calibrate, eval-bag) describe
images in batches; ``vpr_ros.device.forward_batch`` picks the size when none is given. Each
model describes the same 480x640 frames at every batch size, the sizes interleaved over the
repeats (the median is reported), so the ratios are side by side.

With ``--build``, also ``build_map`` of the Corridor refs (111 images, ``../shared/data``;
model ``auto``, no adaptation) with 16 images per forward against the default, interleaved.

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/batch_size.py \\
        --models effnet-lite0-gem effnet-lite0-gem-360 effnet-lite0-gem-ms --build --json out.json
"""

from __future__ import annotations

from pathlib import Path
import sys
import tempfile
import time

from _common import add_json, add_threads, bench_parser, cpu_model, set_torch_threads
from _common import write_json
import numpy as np
import torch
from vpr_ros.device import forward_batch
from vpr_ros.models.api import get_model


def corridor_builds(repeats: int) -> dict[str, list[float]]:
    """Seconds of ``build_map`` on the Corridor refs with batches of 16 and the default."""
    from corridor_localize import build_corridor_map, corridor_truth
    from vpr_ros.mapdb.adaptation import AdaptConfig

    refs, _, _, lat_lon = corridor_truth()
    seconds: dict[str, list[float]] = {'16': [], f'0 (auto: {forward_batch("cpu")})': []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for i, key in enumerate(seconds):
                start = time.perf_counter()
                build_corridor_map(Path(tmp) / f'{repeat}-{i}', refs, lat_lon, model='auto',
                                   batch_size=int(key.split()[0]), device='cpu',
                                   adapt=AdaptConfig(method='none'))
                seconds[key].append(round(time.perf_counter() - start, 2))
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Print ms per image for each model and batch size, and the ratio to the best."""
    parser = bench_parser(__doc__)
    parser.add_argument('--models', nargs='+', default=['effnet-lite0-gem'])
    parser.add_argument('--sizes', type=int, nargs='+', default=[1, 2, 4, 8, 16])
    parser.add_argument('--images', type=int, default=32, help='frames per measurement')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--build', action='store_true',
                        help='also time build-map of the Corridor refs, batch 16 vs default')
    add_threads(parser, 2)
    add_json(parser)
    args = parser.parse_args(argv)
    set_torch_threads(args.threads)
    frames = torch.rand(args.images, 3, 480, 640, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in args.models:
        model = get_model(name, 'cpu').eval()
        times: dict[int, list[float]] = {b: [] for b in args.sizes}
        with torch.inference_mode():
            model.embed(model.resize(frames[:4]))       # warm up
            for _ in range(args.repeats):
                for b in args.sizes:
                    start = time.perf_counter()
                    for i in range(0, len(frames), b):
                        model.embed(model.resize(frames[i:i + b]))
                    times[b].append((time.perf_counter() - start) * 1e3 / len(frames))
        ms = {b: float(np.median(v)) for b, v in times.items()}
        best = min(ms.values())
        rows.append({'model': name, 'ms_per_image': ms,
                     'ratio_to_best': {b: round(v / best, 2) for b, v in ms.items()},
                     'default_cpu_batch': forward_batch('cpu', 0, model)})
        cells = [f'b{b} {v:.1f} ms ({v / best:.2f}x)' for b, v in ms.items()]
        print(f'{name}: ' + ' | '.join(cells), flush=True)
    builds = corridor_builds(args.repeats) if args.build else {}
    for batch, seconds in builds.items():
        print(f'build-map Corridor refs, batch {batch}: '
              + ', '.join(f'{t:.1f}' for t in seconds) + ' s', flush=True)
    write_json(args.json, {'cpu': cpu_model(), 'threads': args.threads,
                           'images': args.images, 'repeats': args.repeats, 'rows': rows,
                           'corridor_build_s': builds})
    return 0


if __name__ == '__main__':
    sys.exit(main())
