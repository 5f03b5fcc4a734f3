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

r"""Build throughput: ``build_map`` images/s as a ratio to the raw batched model forward.

Synthetic route images (:mod:`vpr_ros.synth`, JPEG or PNG files + CSV) are described three
ways, side by side in one process and interleaved per repeat (the VM is shared; medians):

* ``raw``: the model's ``describe`` on the same batches, images already decoded and stacked;
* ``extract``: :func:`vpr_ros.mapdb.describe.extract_chunk` over every chunk (decode, DataLoader,
  thumbnails, forward) plus writing the chunk files, i.e. the streaming part of a build;
* ``build``: the whole :func:`vpr_ros.mapdb.build_map` (also assembling the map, the index,
  the model copy, checksums and the manifest; these fixed costs shrink per image on big maps).

Goal (issue 5): build >= 0.9x the raw forward's images/s (ratio of times <= 1.1). Decoding is
the build's main cost above the forward: a 240x320 synthetic frame decodes in ~1.5 ms as JPEG
(the VG benchmark format) but ~7.7 ms as PNG (its noise compresses badly), which matters next
to a cheap model such as ``tiny-test``.

    OMP_NUM_THREADS=2 python bench/bench_build.py --images 256 \
        --presets tiny-test effnet-lite0-gem [--format jpg|png] [--workers N] [--json out.json]
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
import statistics
import tempfile
import time

from _common import add_json, add_threads, bench_parser, set_torch_threads, write_json
import torch

from vpr_ros.files import save_arrays
from vpr_ros.images import to_tensor
from vpr_ros.mapdb import build_map, BuildConfig, open_source
from vpr_ros.mapdb.describe import extract_chunk
from vpr_ros.models import DEFAULT_MODEL
from vpr_ros.models.descriptor import build_model, PRESETS
from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source


def main() -> None:
    """Render the images, time the three ways per preset, print a table."""
    parser = bench_parser(__doc__)
    parser.add_argument('--images', type=int, default=256)
    parser.add_argument('--size', type=int, nargs=2, default=(240, 320), help='H W')
    parser.add_argument('--presets', nargs='+', default=['tiny-test', DEFAULT_MODEL])
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--chunk-size', type=int, default=128)
    parser.add_argument('--format', default='jpg', choices=('jpg', 'png'), help='image files')
    parser.add_argument('--workers', type=int, default=0)
    parser.add_argument('--repeats', type=int, default=3)
    add_threads(parser, 2, 'torch threads')
    add_json(parser)
    args = parser.parse_args()
    set_torch_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        route = SynthRoute(SynthConfig(frames=args.images, image_size=tuple(args.size)))
        frames = (dataclasses.replace(f, name=f.name.replace('.png', f'.{args.format}'))
                  for f in route.map_pass())
        csv_path = write_csv_source(frames, tmp / 'src')
        report = open_source(csv_path)
        images = [e.load() for e in report.entries]
        batches = [torch.stack([to_tensor(im) for im in images[i:i + args.batch_size]])
                   for i in range(0, len(images), args.batch_size)]
        config = BuildConfig(batch_size=args.batch_size, chunk_size=args.chunk_size,
                             num_workers=args.workers)
        for preset in args.presets:
            torch.manual_seed(0)
            model = build_model(PRESETS[preset].replace(pretrained=False)).eval()

            def raw() -> None:
                for x in batches:
                    model.describe(x)

            def extract() -> None:
                for i in range(0, len(report.entries), args.chunk_size):
                    part = extract_chunk(model, report.entries[i:i + args.chunk_size],
                                         batch_size=args.batch_size,
                                         thumbnail_size=config.thumbnail_size,
                                         num_workers=args.workers)
                    save_arrays(tmp / 'chunk.npz', descriptors=part.descriptors,
                                thumbnails=part.thumbnails)

            def build() -> None:
                build_map(report, tmp / 'map.vprmap', config, model=model, overwrite=True,
                          progress=False)

            raw()  # warm-up: oneDNN primitives, allocator, page cache
            times = {'raw': [], 'extract': [], 'build': []}
            for _ in range(args.repeats):
                for name, fn in (('raw', raw), ('extract', extract), ('build', build)):
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({
                'preset': preset, 'images': len(images), 'image_size': list(args.size),
                'format': args.format,
                'batch_size': args.batch_size, 'chunk_size': args.chunk_size,
                'workers': args.workers, 'threads': args.threads,
                **{f'{k}_img_per_s': round(len(images) / v, 1) for k, v in med.items()},
                'extract_vs_raw_time': round(med['extract'] / med['raw'], 3),
                'build_vs_raw_time': round(med['build'] / med['raw'], 3),
                'times_s': {k: [round(t, 3) for t in v] for k, v in times.items()},
            })
            print(json.dumps(rows[-1]), flush=True)
    keys = ['preset', 'format', 'images', 'raw_img_per_s', 'extract_img_per_s', 'build_img_per_s',
            'extract_vs_raw_time', 'build_vs_raw_time']
    print('\n| ' + ' | '.join(keys) + ' |\n|' + '---|' * len(keys))
    for r in rows:
        print('| ' + ' | '.join(str(r[k]) for k in keys) + ' |')
    # appends: one file can hold several runs (formats, presets)
    write_json(args.json, rows, indent=1, append=True)


if __name__ == '__main__':
    main()
