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

"""What the benches share: common options, the JSON result written atomically, timing, machine.

Each bench keeps its own command line and output; this module holds the pieces they all had
written out: ``--json`` and ``--threads``, writing (or appending to) the result file through
:mod:`vpr_ros.files` (a bench stopped mid-write leaves the previous result whole), median wall
times, the machine line and load averages recorded beside timings, stopping a node process, and
the camera-and-listener node the node benches drive the localizer with.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import signal
import statistics
import subprocess
import time
from typing import Any, Callable, IO

from vpr_ros.files import write_text
from vpr_ros.models import DEFAULT_MODEL


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """Return a bench's parser, described by the first line of its module docstring."""
    return argparse.ArgumentParser(description=(doc or '').strip().splitlines()[0])


def add_json(parser: argparse.ArgumentParser, help: str | None = None) -> None:  # noqa: A002
    """Add ``--json PATH``: where the bench writes its result."""
    parser.add_argument('--json', type=Path, help=help)


def add_route(parser: argparse.ArgumentParser, frames: int) -> None:
    """Add the options of a bench on a synthetic route: model, map frames, queries, image size."""
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--frames', type=int, default=frames, help='map frames')
    parser.add_argument('--queries', type=int, default=15)
    parser.add_argument('--size', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'))


def add_threads(parser: argparse.ArgumentParser, default: int = 0,
                help: str | None = None) -> None:  # noqa: A002
    """Add ``--threads N`` (0: the library's default)."""
    parser.add_argument('--threads', type=int, default=default, help=help)


def set_torch_threads(threads: int) -> None:
    """Use ``threads`` torch threads; 0 keeps torch's default."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def write_json(path: str | Path | None, data: Any, *, indent: int = 2,
               default: Callable[[Any], Any] | None = None, append: bool = False) -> None:
    """Write ``data`` as JSON to ``path`` atomically (nothing when ``path`` is None).

    ``append``: the file holds a list of runs and ``data`` (a list) is added to it.
    """
    if path is None:
        return
    path = Path(path)
    if append and path.exists():
        data = json.loads(path.read_text()) + list(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=indent, default=default) + '\n')


def cpu_model() -> str:
    """Return the CPU's model name and whether it has AVX-512 (timings differ by CPU)."""
    name, flags = platform.processor() or platform.machine(), ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and value.strip():
                    name = value.strip()
                elif key.strip() == 'flags':
                    flags = value
                if flags and name:
                    break
    except OSError:
        pass
    return name + (', AVX-512' if ' avx512f' in f' {flags}' else '')


def machine() -> str:
    """Return ``'<host>: <n> cores, <cpu model>'``, recorded beside the timings."""
    return f'{platform.node()}: {os.cpu_count()} cores, {cpu_model()}'


def load_average() -> tuple[float, float, float]:
    """Return the 1/5/15-minute load averages (the benches share the machine)."""
    return os.getloadavg()


def median_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each callable; rounds interleave them so all see the same load."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def wait_for_line(path: Path, text: str, process: subprocess.Popen,
                  timeout_s: float = 300.0) -> None:
    """Wait until ``text`` appears in the log at ``path``.

    Exits with the log if ``process`` ends or ``timeout_s`` passes first: a node that cannot
    start must not hang a bench.
    """
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text(errors='replace'):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f'{text!r} never appeared in {path}:\n{path.read_text()}')
        time.sleep(0.1)


def stop_process(process: subprocess.Popen, log: IO | None = None,
                 timeout_s: float = 30.0) -> None:
    """SIGINT a node process, kill it if it has not exited after ``timeout_s``, close its log."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
    if log is not None:
        log.close()


class BenchCamera:
    """A camera and a listener in this process: publishes rgb8 frames, times their fixes.

    A fix is matched to its frame by the header stamp the node copies over; ``latency_ms`` maps
    a frame's stamp (ns) to its publish-to-fix time, ``diag`` holds the localizer's latest
    /diagnostics values (its status message under ``_message``). Images go out on ``/image``
    with ``qos`` (reliable, depth 5, by default).
    """

    def __init__(self, name: str, qos: Any = None, fix_depth: int = 10) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, NavSatFix

        rclpy.init()
        self.node = rclpy.create_node(name)
        if qos is None:
            qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, '/image', qos)
        self.node.create_subscription(NavSatFix, '/vpr/fix', self._on_fix, fix_depth)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.Image = Image
        self.sent: dict[int, float] = {}
        self.latency_ms: dict[int, float] = {}
        self.diag: dict[str, str] = {}

    def message(self, image: Any) -> Any:
        """Return an rgb8 ``sensor_msgs/Image`` of an HxWx3 uint8 array."""
        h, w = image.shape[:2]
        return self.Image(encoding='rgb8', height=h, width=w, step=3 * w, data=image.tobytes())

    def send(self, msg: Any, stamp_ns: int) -> int:
        """Stamp ``msg`` and publish it now; return the stamp, the key of its fix."""
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.sent[stamp_ns] = time.monotonic()
        self.pub.publish(msg)
        return stamp_ns

    def _on_fix(self, msg: Any) -> None:
        key = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if key in self.sent and key not in self.latency_ms:
            self.latency_ms[key] = (time.monotonic() - self.sent[key]) * 1e3

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if 'vpr_localizer' in status.name:
                self.diag = {kv.key: kv.value for kv in status.values}
                self.diag['_message'] = status.message

    def spin_until(self, deadline: float, done: Callable[[], bool] = lambda: False) -> None:
        """Spin until the monotonic deadline or until ``done()``."""
        while time.monotonic() < deadline and not done():
            self.executor.spin_once(timeout_sec=min(0.005, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        """Shut rclpy down."""
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def rss_mb(pid: int | str = 'self', field: str = 'VmRSS') -> float:
    """Return a process's resident memory in MB, from /proc (nan where it is not there).

    ``VmRSS`` is all of it, including the pages of memory-mapped files it has touched (page
    cache the kernel can drop); ``RssAnon`` is the memory the process itself holds.
    """
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024.0
    return float('nan')
