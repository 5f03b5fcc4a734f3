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

r"""End-to-end cost of the localizer node: image message in, NavSatFix out (issue 7).

1. Latency, one frame at a time at 640x480 (rgb8 Image, reliable): the node's message-to-fix
   time as a ratio to a bare ``Localizer.localize()`` and to a bare model forward on the same
   images, in this process with the same thread count. Goal: node / localize <= 1.15x.
2. Sustained input at 10 Hz and 30 Hz for ``--duration`` s: output rate, frames dropped by the
   node (latest frame wins) and lost in transport, latency p50/p95 and the node's memory growth.

The map is a synthetic route (vpr_ros.synth) rendered at 480x640 and built with ``--model``
(cached in ``--work``); queries are the route's query pass. Run:

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/bench_node.py \\
        --json bench/results/node_cpu_2core.json
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import json
import os
from pathlib import Path
import shutil
import statistics
import subprocess
import time

from _common import (add_json, bench_parser, BenchCamera, load_average, machine, rss_mb,
                     stop_process, wait_for_line, write_json)
import numpy as np
from vpr_ros.models import DEFAULT_MODEL


def build_route_map(work: Path, model: str, frames: int, device: str,
                    export: bool = False) -> tuple[Path, list]:
    """Build (once) a map of a 480x640 synthetic route; return it and the query images.

    ``export``: also export it to ONNX (``vpr-ros export``) for the onnxruntime backend.
    """
    from vpr_ros.mapdb.build import build_map, BuildConfig
    from vpr_ros.mapdb.database import MapDB
    from vpr_ros.runtime.map_features import ensure_local_features
    from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source

    route = SynthRoute(SynthConfig(frames=frames, image_size=(480, 640)))
    path = work / f'route_{model}_{frames}.vprmap'
    if not path.is_dir():
        csv = write_csv_source(route.map_pass(), work / f'src_{frames}')
        build_map(csv, path, BuildConfig(model=model, device=device), overwrite=True,
                  progress=False)
    ensure_local_features(MapDB.open(path))             # a map cached from before they existed
    if export and not (MapDB.open(path).manifest.get('onnx') or {}).get('fp32'):
        from vpr_ros.runtime.export import export_map

        export_map(path)
    queries = [f.image for f in route.query_pass()]
    return path, queries


def percentile(values: list, q: float) -> float:
    """Return the q-th percentile of the values, NaN when there are none."""
    return float(np.percentile(values, q)) if values else float('nan')


class Bare:
    """A bare forward and a bare ``Localizer.localize()`` in this process (no ROS)."""

    def __init__(self, map_path: Path, device: str, config=None) -> None:
        from vpr_ros.localizer import Localizer

        self.localizer = Localizer.open(map_path, config, device=device)
        self.device = self.localizer.device

    def forward(self, image: np.ndarray) -> None:
        """Compute the descriptor of one image (resize + embed): what every frame costs."""
        import torch
        from vpr_ros.images import to_tensor

        model = self.localizer.model
        with torch.inference_mode():
            model.embed(model.resize(to_tensor(image).unsqueeze(0).to(self.device)))
            if self.device.type == 'cuda':
                torch.cuda.synchronize()

    def localize(self, image: np.ndarray) -> None:
        """Run the whole localizer on one image."""
        self.localizer.localize(image)


_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix='bare')


def timed_ms(fn, *args) -> float:
    """Return the wall time of one call (ms), made on a worker thread as the node makes it.

    On a busy machine torch's OpenMP team of the main thread ran 5-30x slower than the same
    call on a second thread (which, like the node's worker, behaves as one compute thread):
    comparing the node with main-thread calls would flatter the node.
    """
    def run():
        start = time.perf_counter()
        fn(*args)
        return (time.perf_counter() - start) * 1e3
    return _POOL.submit(run).result()


class Driver(BenchCamera):
    """The camera and listener: one frame at a time, each with a stamp of its own."""

    def __init__(self) -> None:
        super().__init__('bench_camera')
        self.seq = 0

    def publish(self, image: np.ndarray) -> int:
        """Publish one rgb8 frame with a unique stamp; return its key."""
        self.seq += 1
        return self.send(self.message(image), (1_000_000 + self.seq) * 10**9)


def node_round_trip(driver: 'Driver', image: np.ndarray) -> float:
    """Publish one frame and wait for its fix: the node's latency without queueing (ms)."""
    key = driver.publish(image)
    driver.spin_until(time.monotonic() + 60, lambda: key in driver.latency_ms)
    return driver.latency_ms.get(key, float('nan'))


def interleaved(bare: Bare, driver: 'Driver', queries: list, repeats: int) -> dict:
    """Bare forward, bare localize and node round trip on the same frame, in turn.

    Taking the three in turn on each frame lets them share whatever load the machine has.
    """
    for image in queries[:5]:                                  # warm-up
        timed_ms(bare.forward, image)
        timed_ms(bare.localize, image)
        node_round_trip(driver, image)
    fwd, loc, node = [], [], []
    for i in range(repeats):
        image = queries[i % len(queries)]
        fwd.append(timed_ms(bare.forward, image))
        loc.append(timed_ms(bare.localize, image))
        node.append(node_round_trip(driver, image))
    ok = [t for t in node if np.isfinite(t)]
    out = {'frames': repeats, 'fixes': len(ok),
           'forward_ms': statistics.median(fwd), 'localize_ms': statistics.median(loc),
           'node_ms': statistics.median(ok), 'node_p95_ms': percentile(ok, 95),
           'localize_p95_ms': percentile(loc, 95)}
    driver.spin_until(time.monotonic() + 1.5)                  # fresh diagnostics
    out['node_localize_p50_ms'] = float(driver.diag.get('localize_p50_ms', 'nan'))
    out['node_to_its_localize'] = out['node_ms'] / out['node_localize_p50_ms']
    out['node_to_localize'] = out['node_ms'] / out['localize_ms']
    out['node_to_forward'] = out['node_ms'] / out['forward_ms']
    # Per frame ratios, then their median: robust to load that changes between frames.
    out['node_to_localize_per_frame_median'] = statistics.median(
        n / l for n, l in zip(node, loc) if np.isfinite(n))
    return out


def sustained(driver: Driver, queries: list, rate_hz: float, duration_s: float,
              pid: int) -> dict:
    """Publish at ``rate_hz`` for ``duration_s``; output rate, drops, latency, memory."""
    driver.spin_until(time.monotonic() + 1.5)                  # fresh diagnostics
    before = dict(driver.diag)
    keys, rss = [], [rss_mb(pid)]
    start = time.monotonic()
    next_rss = start + 5
    for i in range(int(rate_hz * duration_s)):
        keys.append(driver.publish(queries[i % len(queries)]))
        driver.spin_until(start + (i + 1) / rate_hz)
        if time.monotonic() >= next_rss:
            rss.append(rss_mb(pid))
            next_rss += 5
    elapsed = time.monotonic() - start
    driver.spin_until(time.monotonic() + 3)                    # last fixes and diagnostics
    rss.append(rss_mb(pid))
    after = driver.diag

    def delta(key):
        return int(after.get(key, 0)) - int(before.get(key, 0))
    lat = [driver.latency_ms[k] for k in keys if k in driver.latency_ms]
    received = delta('frames_received')
    return {
        'rate_hz': rate_hz, 'duration_s': round(elapsed, 1), 'published': len(keys),
        'received_by_node': received, 'lost_in_transport': len(keys) - received,
        'dropped_by_node': delta('frames_dropped'), 'processed': delta('frames_processed'),
        'fixes_received': len(lat), 'output_rate_hz': round(len(lat) / elapsed, 2),
        'latency_p50_ms': percentile(lat, 50), 'latency_p95_ms': percentile(lat, 95),
        'rss_start_mb': round(rss[0], 1), 'rss_end_mb': round(rss[-1], 1),
        'rss_growth_mb': round(rss[-1] - rss[0], 1), 'rss_samples_mb': [round(r, 1) for r in rss],
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--map-frames', type=int, default=60)
    parser.add_argument('--repeats', type=int, default=20, help='frames per latency figure')
    parser.add_argument('--duration', type=float, default=60.0, help='s per sustained rate')
    parser.add_argument('--rates', type=float, nargs='+', default=[10.0, 30.0])
    parser.add_argument('--work', type=Path, default=Path('/tmp/vpr_bench_node'))
    parser.add_argument('--backend', default='torch',
                        help='localizer.backend of the node and the bare localizer (onnxruntime '
                        'exports the map first)')
    parser.add_argument('--mode', default='features', choices=('features', 'image'),
                        help='GeoWarp mode (localizer.geowarp.mode)')
    parser.add_argument('--rerank-weight', type=float, default=-1.0,
                        help='localizer.rerank_weight (-1: the weight the map stores, 0 for '
                             'this uncalibrated map: the global order, GeoWarp scores only '
                             "the top-1; 1: GeoWarp's order)")
    parser.add_argument('--no-pipeline', action='store_true',
                        help='pipeline:=false (decode in the inference thread)')
    add_json(parser, 'write the results here')
    args = parser.parse_args()
    os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    import torch

    threads = torch.get_num_threads()
    load_start = load_average()
    args.work.mkdir(parents=True, exist_ok=True)
    from vpr_ros.localizer import LocalizerConfig

    map_path, queries = build_route_map(args.work, args.model, args.map_frames, args.device,
                                        export=args.backend != 'torch')
    loc_config = LocalizerConfig(backend=args.backend)
    loc_config = loc_config.replace(geowarp=loc_config.geowarp.replace(mode=args.mode),
                                    rerank_weight=args.rerank_weight)
    bare = Bare(map_path, args.device, loc_config)
    log = open(args.work / 'node.log', 'w')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    node = subprocess.Popen(
        [shutil.which('localizer'), '--ros-args', '-p', f'map:={map_path}', '-p',
         f'device:={args.device}', '-p', 'image_reliability:=reliable', '-p',
         'publish_no_fix:=true', '-p', 'diagnostics_period_s:=0.5', '-p',
         f'localizer.backend:={args.backend}', '-p', f'localizer.geowarp.mode:={args.mode}',
         '-p', f'pipeline:={str(not args.no_pipeline).lower()}',
         '-p', f'localizer.rerank_weight:={args.rerank_weight}'],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    driver = None
    try:
        wait_for_line(args.work / 'node.log', 'localizer started', node)
        driver = Driver()
        driver.spin_until(time.monotonic() + 3)                # discovery
        single = interleaved(bare, driver, queries, args.repeats)
        print(f'one at a time: forward {single["forward_ms"]:.1f} ms, localize '
              f'{single["localize_ms"]:.1f} ms, node {single["node_ms"]:.1f} ms = '
              f'{single["node_to_localize"]:.2f}x localize, '
              f'{single["node_to_forward"]:.2f}x forward; localize() inside the node '
              f'{single["node_localize_p50_ms"]:.1f} ms '
              f'({single["node_to_its_localize"]:.2f}x)', flush=True)
        del bare                                               # free its memory and threads
        runs = []
        for rate in args.rates:
            result = sustained(driver, queries, rate, args.duration, node.pid)
            runs.append(result)
            print(json.dumps(result), flush=True)
    finally:
        if driver is not None:
            driver.close()
        stop_process(node, log)
    results = {
        'machine': machine(), 'device': args.device,
        'torch_threads': threads, 'model': args.model, 'map_frames': args.map_frames,
        'backend': args.backend, 'geowarp_mode': args.mode, 'pipeline': not args.no_pipeline,
        'rerank_weight': args.rerank_weight,
        'load_average_start': load_start,
        'image': '640x480 rgb8 Image, reliable QoS', 'one_at_a_time': single,
        'sustained': runs, 'node_exit_code': node.returncode,
        'load_average': load_average(),
    }
    write_json(args.json, results)
    print(json.dumps({k: results[k] for k in ('one_at_a_time', 'node_exit_code')}, indent=1))


if __name__ == '__main__':
    main()
