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

r"""Soak test of the localizer node: N frames at 20 Hz, 640x480, reliable and best-effort QoS.

For each image QoS a fresh node (``image_reliability`` to match) gets ``--frames`` rgb8 frames
at ``--rate`` Hz, stamped ``1/rate`` apart like a camera. Reported per QoS: the node's memory
(RSS) after warm-up and at the end (samples every 30 s), fixes received per second, frames the
worker dropped (latest frame wins), frames lost in transport (published - received, and the
node's own estimate from the stamp gaps in /diagnostics), errors, and the node's exit code.
The camera drives forth and back over the first 20 query images, so the sequence check has no
jump to refuse and processed frames without a fix are failures.

    OMP_NUM_THREADS=1 bash scripts/env.sh run python bench/soak.py \
        --json bench/results/soak_10k_20hz_1thread.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

from _common import (add_json, bench_parser, BenchCamera, load_average, machine, rss_mb,
                     stop_process, wait_for_line, write_json)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_node import build_route_map, percentile  # noqa: E402, I100
from vpr_ros.models import DEFAULT_MODEL  # noqa: E402


class Camera(BenchCamera):
    """Publishes pre-built 640x480 frames with camera-like stamps."""

    def __init__(self, images: list, reliable: bool) -> None:
        from rclpy.qos import qos_profile_sensor_data

        super().__init__('soak_camera', None if reliable else qos_profile_sensor_data,
                         fix_depth=100)
        self.msgs = [self.message(image) for image in images]

    def publish(self, i: int, rate_hz: float) -> None:
        """Publish frame ``i``, stamped ``i / rate_hz`` s after 1,000,000 s.

        The images go forth and back along the route (0 .. n-1, n-2 .. 1, 0 ..): a drive that
        turns round, never a jump from the last image to the first, which the sequence check
        rightly refuses (NO_FIX), so every processed frame should give a fix.
        """
        self.send(self.msgs[bounce(i, len(self.msgs))], 10**15 + round(i * 1e9 / rate_hz))


def bounce(i: int, n: int) -> int:
    """Return the image of frame ``i`` on a drive forth and back over ``n`` images."""
    if n < 2:
        return 0
    k = i % (2 * n - 2)
    return k if k < n else 2 * n - 2 - k


def soak(map_path: Path, images: list, args: argparse.Namespace, reliability: str) -> dict:
    """Run one node under ``--frames`` frames with the given image QoS; return its figures."""
    log_path = args.work / f'node_{reliability}.log'
    log = open(log_path, 'w')
    node = subprocess.Popen(
        [shutil.which('localizer'), '--ros-args', '-p', f'map:={map_path}', '-p',
         f'device:={args.device}', '-p', f'image_reliability:={reliability}', '-p',
         'diagnostics_period_s:=1.0'],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)
    camera = None
    try:
        wait_for_line(log_path, 'localizer started', node)
        camera = Camera(images, reliability == 'reliable')
        camera.spin_until(time.monotonic() + 3)                   # discovery
        rss = [rss_mb(node.pid)]
        start = time.monotonic()
        next_rss = start + 30
        for i in range(args.frames):
            camera.publish(i, args.rate)
            camera.spin_until(start + (i + 1) / args.rate)
            if time.monotonic() >= next_rss:
                rss.append(rss_mb(node.pid))
                next_rss += 30
        elapsed = time.monotonic() - start
        running = camera.diag.get('_message', '')                 # the health while busy
        camera.spin_until(time.monotonic() + 4)                   # last fixes and diagnostics
        rss.append(rss_mb(node.pid))
        d = camera.diag
        received = int(d.get('frames_received', 0))
        latency = list(camera.latency_ms.values())
        fixes = len(latency)
        result = {
            'image_reliability': reliability, 'frames_published': args.frames,
            'rate_hz': args.rate, 'duration_s': round(elapsed, 1),
            'frames_received_by_node': received,
            'lost_in_transport': args.frames - received,
            'lost_in_transport_pct': round(100.0 * (args.frames - received) / args.frames, 1),
            'node_estimate_lost_in_transport': int(d.get('frames_lost_transport', -1)),
            'node_estimate_camera_rate_hz': float(d.get('camera_rate_hz', 'nan')),
            'dropped_by_worker': int(d.get('frames_dropped', 0)),
            'processed': int(d.get('frames_processed', 0)),
            'errors': int(d.get('errors', 0)), 'bad_frames': int(d.get('bad_frames', 0)),
            'fixes_received': fixes, 'fixes_per_s': round(fixes / elapsed, 2),
            'latency_p50_ms': round(percentile(latency, 50), 1),
            'latency_p95_ms': round(percentile(latency, 95), 1),
            'rss_start_mb': round(rss[0], 1), 'rss_end_mb': round(rss[-1], 1),
            'rss_growth_mb': round(rss[-1] - rss[0], 1),
            'rss_samples_mb': [round(r, 1) for r in rss],
            'diagnostics_message_while_running': running,
        }
    finally:
        if camera is not None:
            camera.close()
        stop_process(node, log)
    result['node_exit_code'] = node.returncode
    result['traceback_in_log'] = 'Traceback' in log_path.read_text()
    return result


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument('--frames', type=int, default=10_000, help='frames per QoS')
    parser.add_argument('--rate', type=float, default=20.0, help='camera rate (Hz)')
    parser.add_argument('--qos', nargs='+', default=['reliable', 'best_effort'],
                        choices=['reliable', 'best_effort'])
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--map-frames', type=int, default=60)
    parser.add_argument('--work', type=Path, default=Path('/tmp/vpr_bench_soak'))
    add_json(parser, 'write the results here')
    args = parser.parse_args()
    os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    args.work.mkdir(parents=True, exist_ok=True)
    map_path, queries = build_route_map(args.work, args.model, args.map_frames, args.device)
    runs = []
    for reliability in args.qos:
        runs.append(soak(map_path, queries[:20], args, reliability))
        print(json.dumps(runs[-1]), flush=True)
    results = {
        'machine': machine(),
        'omp_num_threads': os.environ.get('OMP_NUM_THREADS', ''), 'device': args.device,
        'model': args.model, 'map_frames': args.map_frames,
        'image': '640x480 rgb8 sensor_msgs/Image', 'runs': runs,
        'load_average': load_average(),
    }
    write_json(args.json, results)


if __name__ == '__main__':
    main()
