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

r"""``adapt --finetune``'s training epoch with the frozen layers' outputs cached, and without.

On a CPU only the final backbone stage and the head train; the frozen layers' outputs of the
map images (the positive and negatives of every tuple, and the mining refreshes) are computed
once (``FinetuneConfig.frozen_cache_mb``). This runs ``finetune_map`` as a dry run on a copy
of ``MAP`` (one epoch of ``--queries`` training queries) with the cache and with
``frozen_cache_mb`` 0, alternating, and prints the epoch time (mining included), the training
throughput, the whole command's time and the loss (equal up to float rounding: the cache
changes what is computed, not what is learnt).

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/finetune_speed.py MAP \
        [--queries 100] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

from pathlib import Path
import shutil
import sys
import tempfile

from _common import add_json, bench_parser, load_average, machine, set_torch_threads, write_json
from vpr_ros.mapdb.finetune import finetune_map, FinetuneConfig


def one_run(map_path: Path, queries: int, cache_mb: int) -> dict:
    """One dry-run fine-tuning epoch on a copy of the map; its timings and loss."""
    work = Path(tempfile.mkdtemp(prefix='finetune-speed-'))
    try:
        copy = work / map_path.name
        shutil.copytree(map_path, copy)
        config = FinetuneConfig(epochs=1, queries_per_epoch=queries, frozen_cache_mb=cache_mb)
        result = finetune_map(copy, config, dry_run=True, progress=False)
        epoch = result.report['history'][0]
        return {'frozen_cache_mb': cache_mb, 'epoch_s': round(epoch['seconds'], 1),
                'images_per_s': round(epoch['images_per_s'], 2),
                'command_s': result.report['seconds'], 'loss': epoch['loss'],
                'train_images': result.report['train_images']}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument('map', type=Path, help='a v1 map whose source images can be read')
    parser.add_argument('--queries', type=int, default=100, help='training queries (tuples)')
    parser.add_argument('--repeats', type=int, default=1)
    add_json(parser)
    args = parser.parse_args(argv)
    set_torch_threads(2)
    runs = []
    for _ in range(args.repeats):
        for cache_mb in (4096, 0):
            runs.append(one_run(args.map, args.queries, cache_mb))
            print(runs[-1], flush=True)
    by = {mb: [r for r in runs if r['frozen_cache_mb'] == mb] for mb in (4096, 0)}
    ratio = sum(r['epoch_s'] for r in by[0]) / sum(r['epoch_s'] for r in by[4096])
    print(f'epoch time without the cache / with it: {ratio:.2f}x '
          f'({args.queries} tuples, {runs[0]["train_images"]} training images)')
    write_json(args.json, {'machine': machine(), 'load_average': load_average(),
                           'map': str(args.map), 'queries': args.queries, 'runs': runs,
                           'epoch_ratio': ratio})
    return 0


if __name__ == '__main__':
    sys.exit(main())
