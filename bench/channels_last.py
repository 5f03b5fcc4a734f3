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

r"""CPU forward of the descriptor models with NCHW (contiguous) and NHWC (channels_last) weights.

``vpr_ros.models.checkpoints.load_model`` puts a model loaded for the CPU in channels_last,
which oneDNN runs faster for EfficientNet's depthwise convolutions. Each model describes the
same 480x640 frames in the batches ``forward_batch`` gives it, both layouts interleaved over
the repeats (medians, so the ratio is side by side), and the descriptors are compared.

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/channels_last.py \\
        --models effnet-lite0-gem effnet-lite0-gem-ms effnet-lite0-gem-360 --json out.json
"""

from __future__ import annotations

import sys

from _common import add_json, add_threads, bench_parser, cpu_model, median_ms
from _common import set_torch_threads, write_json
import torch
from vpr_ros.device import forward_batch
from vpr_ros.models.checkpoints import load_model


def main(argv: list[str] | None = None) -> int:
    """Print ms per image of each layout and their ratio for each model."""
    parser = bench_parser(__doc__)
    parser.add_argument('--models', nargs='+', default=['effnet-lite0-gem'])
    parser.add_argument('--images', type=int, default=8, help='frames per measurement')
    parser.add_argument('--repeats', type=int, default=9)
    add_threads(parser, 2)
    add_json(parser)
    args = parser.parse_args(argv)
    set_torch_threads(args.threads)
    frames = torch.rand(args.images, 3, 480, 640, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in args.models:
        nhwc = load_model(name, 'cpu')
        nchw = load_model(name, 'cpu').to(memory_format=torch.contiguous_format)
        batch = forward_batch('cpu', 0, nhwc)

        def describe(model: torch.nn.Module) -> torch.Tensor:
            return torch.cat([model.embed(model.resize(frames[i:i + batch]))
                              for i in range(0, len(frames), batch)])

        with torch.inference_mode():
            ms = median_ms({'nchw': lambda: describe(nchw), 'nhwc': lambda: describe(nhwc)},
                           args.repeats)
            diff = float((describe(nchw) - describe(nhwc)).abs().max())
        per = {k: v / len(frames) for k, v in ms.items()}
        rows.append({'model': name, 'batch': batch, 'ms_per_image': per,
                     'ratio_nhwc_to_nchw': round(per['nhwc'] / per['nchw'], 3),
                     'max_abs_descriptor_diff': diff})
        print(f'{name} (batch {batch}): NCHW {per["nchw"]:.1f} ms, NHWC {per["nhwc"]:.1f} ms '
              f'per image ({per["nhwc"] / per["nchw"]:.2f}x); descriptors within {diff:.1e}',
              flush=True)
    write_json(args.json, {'cpu': cpu_model(), 'threads': args.threads, 'images': args.images,
                           'repeats': args.repeats, 'rows': rows})
    return 0


if __name__ == '__main__':
    sys.exit(main())
