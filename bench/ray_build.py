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

r"""Ray build vs local build of the same synthetic route: identical content, throughput, model.

Renders ``--images`` map frames of the synthetic street (:mod:`vpr_ros.synth`, JPEG + CSV),
then builds the map twice with the same BuildConfig:

* ``local``: ``build_map`` in this process (``--threads`` torch threads);
* ``ray``: ``build_map(..., ray='local', ray_actors=W)``: a local Ray cluster of W CPUs, one
  actor (1 torch thread) per CPU; the cluster start is part of the time, as for a user.

Each chunk file's modification time is when the driver saved that chunk, so the chunk
timeline gives the start-up (first chunk), the steady rate, and per-chunk describe time.
Two more terms of the scaling model are measured on their own: moving one chunk result
(descriptors + thumbnails) from a Ray worker to the driver, and the driver saving it
(``vpr_ros.files.save_arrays``). The maps are compared entry by entry (names, positions,
descriptors, thumbnails, search results).

    OMP_NUM_THREADS=1 bash scripts/env.sh run python bench/ray_build.py --images 2000 \
        --preset tiny-test --chunk-size 128 --actors 2 --json bench/results/ray_build.json
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
import statistics
import tempfile
import threading
import time

from _common import add_json, add_threads, bench_parser, set_torch_threads, write_json
import numpy as np

from vpr_ros.files import save_arrays
from vpr_ros.mapdb import build_map, BuildConfig, MapDB
from vpr_ros.mapdb.adaptation import AdaptConfig
from vpr_ros.mapdb.build import work_dir_for
from vpr_ros.mapdb.describe import ChunkResult
from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source


class ChunkClock:
    """Poll a build's work dir and note when each chunk file appears (driver saved it)."""

    def __init__(self, out: Path) -> None:
        self.work = work_dir_for(out)
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.work.is_dir():
                now = time.perf_counter()
                for p in self.work.glob('chunk-*.npz'):
                    self.seen.setdefault(p.name, now)
            time.sleep(0.01)

    def __enter__(self) -> 'ChunkClock':
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def timed_build(csv: Path, out: Path, config: BuildConfig, **kwargs) -> dict:
    """Build once; return wall time and the chunk timeline (s after the start)."""
    start = time.perf_counter()
    with ChunkClock(out) as clock:
        build_map(csv, out, config, progress=False, **kwargs)
    wall = time.perf_counter() - start
    times = sorted(t - start for t in clock.seen.values())
    gaps = np.diff(times) if len(times) > 1 else np.array([np.nan])
    return {'wall_s': round(wall, 2), 'first_chunk_s': round(times[0], 2),
            'last_chunk_s': round(times[-1], 2),
            'describe_s': round(times[-1], 2),
            'assemble_s': round(wall - times[-1], 2),
            'steady_chunk_interval_s': round(float(np.median(gaps)), 3),
            'chunks_seen': len(times)}


def transfer_and_save(chunk_size: int, dim: int, thumb: tuple[int, int], repeats: int) -> dict:
    """Time one chunk result from a Ray worker to the driver, and the driver saving it."""
    from vpr_ros.mapdb.distributed import connect, LOCAL

    h, w = thumb
    nbytes = chunk_size * (4 * dim + h * w * 3)
    with connect(LOCAL, num_cpus=1, object_store_bytes=max(256 << 20, 4 * nbytes)) as ray:
        @ray.remote(num_cpus=1)
        def make(seed: int) -> ChunkResult:
            rng = np.random.default_rng(seed)
            return ChunkResult(rng.random((chunk_size, dim), np.float32),
                               rng.integers(0, 255, (chunk_size, h, w, 3), np.uint8))

        ray.get(make.remote(0))   # the worker is started and warm
        xfer, compute = [], []
        for i in range(repeats):
            ref = make.remote(i)
            ray.wait([ref])   # made and stored on the worker side
            t0 = time.perf_counter()
            ray.get(ref)
            xfer.append(time.perf_counter() - t0)
        rng = np.random.default_rng(0)
        result = ChunkResult(rng.random((chunk_size, dim), np.float32),
                             rng.integers(0, 255, (chunk_size, h, w, 3), np.uint8))
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeats):
                t0 = time.perf_counter()
                save_arrays(Path(tmp) / 'chunk.npz', descriptors=result.descriptors,
                            thumbnails=result.thumbnails, job=np.array('x'))
                compute.append(time.perf_counter() - t0)
    return {'chunk_result_bytes': nbytes,
            'get_s_median': round(statistics.median(xfer), 4),
            'save_s_median': round(statistics.median(compute), 4)}


def compare(a: MapDB, b: MapDB) -> dict:
    """How equal two maps are: entries, order, descriptors, thumbnails, search results."""
    n = len(a)
    idx = np.arange(n)
    q = a.descriptors[:: max(1, n // 200)]
    (ia, sa), (ib, sb) = a.search(q, k=10), b.search(q, k=10)
    return {'entries': [len(a), len(b)], 'same_names_and_order': a.names == b.names,
            'same_positions': bool(np.array_equal(a.positions(idx), b.positions(idx))),
            'descriptor_max_abs_diff': float(np.abs(a.descriptors - b.descriptors).max()),
            'same_thumbnails': bool(np.array_equal(a.thumbnails(idx), b.thumbnails(idx))),
            'same_top10': bool(np.array_equal(ia, ib)),
            'top10_score_max_abs_diff': float(np.abs(sa - sb).max()),
            'same_index': a.manifest['index'] == b.manifest['index']}


def main() -> None:
    """Render, build locally and on Ray, compare, print and save the numbers."""
    parser = bench_parser(__doc__)
    parser.add_argument('--images', type=int, default=2000)
    parser.add_argument('--preset', default='tiny-test')
    parser.add_argument('--chunk-size', type=int, default=128)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--actors', type=int, default=2, help='Ray workers (local cluster CPUs)')
    add_threads(parser, 2, 'torch threads, local build')
    parser.add_argument('--repeats', type=int, default=5, help='transfer / save timings')
    parser.add_argument('--rounds', type=int, default=1,
                        help='local + Ray builds, interleaved; the fastest of each is kept')
    add_json(parser)
    args = parser.parse_args()
    set_torch_threads(args.threads)
    config = BuildConfig(model=args.preset, batch_size=args.batch_size,
                         chunk_size=args.chunk_size, adapt=AdaptConfig(method='none'))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        route = SynthRoute(SynthConfig(frames=args.images))
        frames = (dataclasses.replace(f, name=f.name.replace('.png', '.jpg'))
                  for f in route.map_pass())
        csv = write_csv_source(frames, tmp / 'src')
        render_s = time.perf_counter() - t0
        runs = {'local': [], 'ray': []}
        for _ in range(args.rounds):   # interleaved: the shared machine's load drifts
            runs['local'].append(timed_build(csv, tmp / 'local.vprmap', config,
                                             overwrite=True))
            print('local', json.dumps(runs['local'][-1]), flush=True)
            runs['ray'].append(timed_build(csv, tmp / 'ray.vprmap', config, overwrite=True,
                                           ray='local', ray_actors=args.actors))
            print('ray', json.dumps(runs['ray'][-1]), flush=True)
        local, ray = (min(runs[k], key=lambda r: r['wall_s']) for k in ('local', 'ray'))
        a, b = MapDB.open(tmp / 'local.vprmap'), MapDB.open(tmp / 'ray.vprmap')
        same = compare(a, b)
        print('equal', json.dumps(same), flush=True)
        dim = a.descriptor_dim
    costs = transfer_and_save(args.chunk_size, dim, config.thumbnail_size, args.repeats)
    print('costs', json.dumps(costs), flush=True)
    chunks = -(-args.images // args.chunk_size)
    # Per-chunk describe time of one worker: the steady interval between saved chunks times
    # the number of workers describing at once.
    t_chunk = ray['steady_chunk_interval_s'] * args.actors
    driver_per_chunk = costs['get_s_median'] + costs['save_s_median']
    start_up = ray['first_chunk_s'] - t_chunk
    model = {
        'chunks': chunks, 'workers': args.actors,
        't_chunk_per_worker_s': round(t_chunk, 3),
        'driver_s_per_chunk': round(driver_per_chunk, 4),
        'start_up_s': round(start_up, 2),
        'assemble_s': ray['assemble_s'],
        'driver_bound_workers': round(t_chunk / max(driver_per_chunk, 1e-9), 1),
        'predicted_wall_s': {
            str(w): round(start_up + max(chunks / w * t_chunk, chunks * driver_per_chunk)
                          + ray['assemble_s'], 1) for w in (1, 2, 4, 16, 64)},
    }
    row = {'images': args.images, 'preset': args.preset, 'chunk_size': args.chunk_size,
           'batch_size': args.batch_size, 'actors': args.actors,
           'local_threads': args.threads, 'render_s': round(render_s, 1),
           'local': local, 'ray': ray, 'rounds': runs, 'equal': same, 'costs': costs,
           'throughput_img_per_s': {'local': round(args.images / local['wall_s'], 1),
                                    'ray': round(args.images / ray['wall_s'], 1)},
           'ray_vs_local_throughput': round(local['wall_s'] / ray['wall_s'], 3),
           'scaling_model': model}
    print(json.dumps(row, indent=1))
    write_json(args.json, [row], indent=1, append=True)   # one file can hold several runs


if __name__ == '__main__':
    main()
