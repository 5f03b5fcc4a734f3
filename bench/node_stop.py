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

r"""SIGINT to exit of the localizer executable, with and without the interpreter's teardown.

The ``localizer`` executable ends with :func:`vpr_ros.ros.entry.end_process` once the node has
stopped in order; the other side of each pair runs the same node through
:func:`vpr_ros.ros.entry.run_localizer` and a plain ``sys.exit`` (what it did before), so
Python then tears down torch, FAISS, OpenCV and DDS. Each run starts the node on a synthetic
route map, feeds it camera frames for a few seconds, sends SIGINT and times the exit; the two
variants alternate. ``ros2 launch`` sends SIGTERM to a node that has not exited 5 s after its
SIGINT. Run:

    OMP_NUM_THREADS=1 bash scripts/env.sh run python bench/node_stop.py \\
        --json bench/results/node_stop_1thread.json
"""

from __future__ import annotations

from pathlib import Path
import shutil
import signal
import statistics
import subprocess
import sys
import time

from _common import (add_json, bench_parser, load_average, machine, stop_process, wait_for_line,
                     write_json)
from bench_node import build_route_map
from vpr_ros.models import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
CAMERA = r"""
import sys, time
import cv2, rclpy
from sensor_msgs.msg import Image
from vpr_ros.ros.compat import ros_session
image = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB)
with ros_session(rclpy_signals=True):
    node = rclpy.create_node('bench_camera')
    pub = node.create_publisher(Image, '/image', 10)
    msg = Image(height=image.shape[0], width=image.shape[1], encoding='rgb8',
                step=image.shape[1] * 3, data=image.tobytes())
    while rclpy.ok():
        pub.publish(msg)
        time.sleep(0.2)
"""
OLD_EXIT = ('import sys; from vpr_ros.ros.entry import run_localizer; '
            'sys.exit(run_localizer(sys.argv))')


def one_stop(cmd: list[str], map_path: Path, feed_s: float, log: Path,
             deadline_s: float) -> dict:
    """Start the node, let it localise for ``feed_s``, SIGINT it; return the timings.

    A node still running ``deadline_s`` after its SIGINT is killed and its run marked
    ``hung``: a bench that waited for it would hang instead of reporting it.
    """
    full = cmd + ['--ros-args', '-p', f'map:={map_path}', '-p', 'device:=cpu']
    with open(log, 'wb') as out:
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT)
        wait_for_line(log, 'localizer started on', proc)
        time.sleep(feed_s)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stopped, hung = None, False
        while proc.poll() is None:
            if stopped is None and 'localizer stopped' in log.read_text(errors='replace'):
                stopped = time.monotonic() - start
            if time.monotonic() - start > deadline_s:
                hung = True
                proc.kill()
                proc.wait()
                break
            time.sleep(0.01)
        total = time.monotonic() - start
    text = log.read_text(errors='replace')
    return {'rc': proc.returncode, 'exit_s': round(total, 3), 'hung': hung,
            'stopped_log_s': None if stopped is None else round(stopped, 3),
            'stop_logged': 'localizer stopped' in text}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument('--repeats', type=int, default=5, help='runs per variant')
    parser.add_argument('--feed-s', type=float, default=4.0, help='camera time before SIGINT')
    parser.add_argument('--deadline-s', type=float, default=10.0,
                        help='kill a node not exited this long after SIGINT and count it hung '
                             '(ros2 launch sends SIGTERM after 5 s)')
    parser.add_argument('--work', default='/tmp/vpr_ros_node_stop', help='map cache folder')
    add_json(parser)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    map_path, queries = build_route_map(work, DEFAULT_MODEL, 60, 'cpu')
    image = work / 'query.png'
    import cv2
    cv2.imwrite(str(image), cv2.cvtColor(queries[10], cv2.COLOR_RGB2BGR))
    variants = {'end_process (localizer executable)': [shutil.which('localizer')],
                'interpreter teardown (sys.exit)': [sys.executable, '-c', OLD_EXIT]}
    runs: dict[str, list] = {name: [] for name in variants}
    camera = subprocess.Popen([sys.executable, '-c', CAMERA, str(image)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for r in range(args.repeats):
            for name, cmd in variants.items():
                result = one_stop(cmd, map_path, args.feed_s, work / f'node_{r}.log',
                                  args.deadline_s)
                runs[name].append(result)
                print(f'{name}: {result}', flush=True)
    finally:
        stop_process(camera)
    summary = {name: {'median_exit_s': statistics.median(r['exit_s'] for r in rows),
                      'max_exit_s': max(r['exit_s'] for r in rows),
                      'exit_codes': sorted({r['rc'] for r in rows}),
                      'hung': sum(r['hung'] for r in rows)}
               for name, rows in runs.items()}
    for name, row in summary.items():
        print(f'{name}: SIGINT to exit median {row["median_exit_s"]:.2f} s, '
              f'max {row["max_exit_s"]:.2f} s, exit codes {row["exit_codes"]}, '
              f'hung (killed after {args.deadline_s:g} s) {row["hung"]}')
    write_json(args.json, {'machine': machine(), 'load_average': load_average(),
                           'repeats': args.repeats, 'feed_s': args.feed_s,
                           'deadline_s': args.deadline_s,
                           'summary': summary, 'runs': runs})


if __name__ == '__main__':
    main()
