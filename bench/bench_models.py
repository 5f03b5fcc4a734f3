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

"""CPU cost of the descriptor models: ms/image, parameters, peak memory; JSON + Markdown.

Rows: the default model (EfficientNet-Lite0 + GeM) with and without the AS-Geo resizer, and
every backbone x head, at 240x320 and 480x640 (input images are already at that size, so the
plain bilinear resizer is a no-op and the AS-Geo ratio shows the resizer's own cost).

    bash scripts/env.sh run python bench/bench_models.py --quick          # default model only
    bash scripts/env.sh run python bench/bench_models.py --json out.json  # full grid (minutes)
"""

from __future__ import annotations

import resource
import sys
import time

from _common import add_json, add_threads, bench_parser, set_torch_threads, write_json
import torch
from vpr_ros.models.descriptor import build_model, ModelConfig
from vpr_ros.models.heads import HEADS

SIZES = ((240, 320), (480, 640))
BACKBONES = ('efficientnet-lite0', 'resnet18', 'resnet50', 'vgg16')


def time_model(cfg: ModelConfig, size: tuple[int, int], repeats: int, batch: int = 1) -> dict:
    """Return ms/image (median of ``repeats``), parameter count and peak RSS."""
    torch.manual_seed(0)
    model = build_model(cfg.replace(pretrained=False, input_size=size)).eval()
    x = torch.rand(batch, 3, *size)
    for _ in range(2):  # warm-up (allocator, oneDNN primitives for this shape)
        model.describe(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.describe(x)
        times.append((time.perf_counter() - start) * 1000 / batch)
    times.sort()
    return {'backbone': cfg.backbone, 'head': cfg.head, 'resizer': cfg.resizer,
            'input': list(size), 'dim': model.descriptor_dim,
            'params': sum(p.numel() for p in model.parameters()),
            'ms_per_image': round(times[len(times) // 2], 1),
            'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main(argv=None) -> int:
    """Run the grid and print the table."""
    parser = bench_parser(__doc__)
    parser.add_argument('--quick', action='store_true', help='default model and heads only')
    parser.add_argument('--repeats', type=int, default=5)
    add_threads(parser, 2)
    add_json(parser)
    args = parser.parse_args(argv)
    set_torch_threads(args.threads)
    rows = []
    default = ModelConfig(netvlad_clusters=64)
    for size in SIZES:
        for resizer in (False, True):
            rows.append(time_model(default.replace(resizer=resizer), size, args.repeats))
            print(rows[-1], file=sys.stderr)
    backbones = BACKBONES[:1] if args.quick else BACKBONES
    for backbone in backbones:
        for head in HEADS:
            for size in (SIZES[-1:] if args.quick else SIZES):
                if (backbone, head) == ('efficientnet-lite0', 'gem'):
                    continue
                rows.append(time_model(default.replace(backbone=backbone, head=head), size,
                                       args.repeats))
                print(rows[-1], file=sys.stderr)
    print('| backbone | head | resizer | input | dim | params | ms/image | peak RSS MiB |')
    print('|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['backbone']} | {r['head']} | {'AS-Geo' if r['resizer'] else 'bilinear'} | "
              f"{r['input'][0]}x{r['input'][1]} | {r['dim']} | {r['params']:,} | "
              f"{r['ms_per_image']} | {r['peak_rss_mib']} |")
    for size in SIZES:
        base = [r for r in rows if r['input'] == list(size) and r['head'] == 'gem'
                and r['backbone'] == 'efficientnet-lite0']
        plain = next(r for r in base if not r['resizer'])
        asgeo = next(r for r in base if r['resizer'])
        print(f'AS-Geo resizer cost at {size[0]}x{size[1]}: '
              f'{asgeo["ms_per_image"] / plain["ms_per_image"]:.2f}x the bilinear model')
    write_json(args.json, rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
