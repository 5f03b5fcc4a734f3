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

"""Helpers of the Ray build tests: a real `ray start --head` cluster and a logging loader.

The cluster's worker processes get this folder on PYTHONPATH, so they can unpickle
:class:`LoggedLoad` (the loaders of the entries travel to the workers with each chunk).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

import psutil

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class LoggedLoad:
    """Picklable image loader: waits ``delay_s``, logs ``name pid`` to ``log``, then loads.

    The log (one line per read, appended with O_APPEND from any process) tells which
    images a build read, so a test can count what a resumed build described again.
    """

    load: Callable[[], Any]
    name: str
    log: str
    delay_s: float = 0.0

    def __call__(self):
        if self.delay_s:
            time.sleep(self.delay_s)
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f'{self.name} {os.getpid()}\n'.encode())
        finally:
            os.close(fd)
        return self.load()


def logged(report, log: Path, delay_s: float = 0.0):
    """Return ``report`` with every entry's loader wrapped in :class:`LoggedLoad`."""
    from vpr_ros.mapdb.sources import Entry

    report.entries = [Entry(e.name, e.lat, e.lon, e.alt,
                            LoggedLoad(e.load, e.name, str(log), delay_s), e.stamp_ns,
                            e.heading_deg) for e in report.entries]
    return report


def read_log(log: Path) -> list[tuple[str, int]]:
    """Return ``(name, pid)`` of each read a :class:`LoggedLoad` log holds, in order."""
    if not log.exists():
        return []
    return [(name, int(pid)) for name, pid in
            (line.rsplit(' ', 1) for line in log.read_text().splitlines())]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """Return the processes of the cluster whose session lives in ``temp_dir`` (ours only)."""
    found = []
    for proc in psutil.process_iter(['cmdline']):
        with contextlib.suppress(psutil.Error):
            if any(temp_dir in part for part in proc.info['cmdline'] or ()):
                found.append(proc)
    return found


def actor_processes(temp_dir: str, busy: bool = False) -> list[psutil.Process]:
    """Return the workers of the cluster in ``temp_dir`` running ``ray::ChunkDescriber``.

    ``busy``: only those describing a chunk right now (title ``ray::ChunkDescriber.describe``).
    """
    want = 'ray::ChunkDescriber.describe' if busy else 'ray::ChunkDescriber'
    raylets = {p.pid for p in cluster_processes(temp_dir)}
    found = []
    for proc in psutil.process_iter(['cmdline', 'ppid']):
        with contextlib.suppress(psutil.Error):
            title = ' '.join(proc.info['cmdline'] or ())
            if title.startswith(want) and proc.info['ppid'] in raylets:
                found.append(proc)
    return found


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, object_store_mb: int = 100) -> Iterator[tuple[str, str]]:
    """Run a real one-node Ray cluster (``ray start --head --block``); yield address, temp dir.

    Everything it starts is found by its own temp dir and ended by pid at the end.
    """
    temp_dir = tempfile.mkdtemp(prefix='vr', dir='/tmp')   # short: Unix socket paths
    port = _free_port()
    env = {**os.environ, 'RAY_USAGE_STATS_ENABLED': '0',
           'PYTHONPATH': os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')])}
    ray_bin = str(Path(sys.executable).with_name('ray'))
    log = open(Path(temp_dir) / 'head.log', 'wb')
    proc = subprocess.Popen(
        [ray_bin, 'start', '--head', '--block', f'--port={port}', f'--num-cpus={num_cpus}',
         '--num-gpus=0', '--node-ip-address=127.0.0.1',
         f'--object-store-memory={object_store_mb << 20}', '--include-dashboard=false',
         '--disable-usage-stats', f'--temp-dir={temp_dir}'],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f'127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                text = (Path(temp_dir) / 'head.log').read_text()
                raise RuntimeError(f'ray start failed: {text}')
            with contextlib.suppress(OSError):
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                if any('raylet' in ' '.join(p.cmdline()) for p in cluster_processes(temp_dir)
                       if p.is_running()):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError('ray start --head did not come up in 120 s')
            time.sleep(0.5)
        yield address, temp_dir
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)   # --block: stops what it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for left in cluster_processes(temp_dir):
            with contextlib.suppress(psutil.Error):
                left.kill()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
