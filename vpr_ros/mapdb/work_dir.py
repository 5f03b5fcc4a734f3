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

"""The resumable side of a map build: its lock, the work directory of chunks, left-overs.

A build of ``route.vprmap`` holds ``.route.vprmap.lock`` (``flock``) and keeps its finished
chunks in ``route.vprmap.partial/`` (``chunk-000000.npz``, each written atomically, each
carrying the key of its job), so a killed build resumes where it stopped and never mixes in
chunks of another job. :func:`remove_stale` clears what a killed build left.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
from pathlib import Path
import shutil
from typing import Iterator

import numpy as np

from vpr_ros.errors import MapError
from vpr_ros.files import write_json
from vpr_ros.mapdb.describe import ChunkResult

log = logging.getLogger(__name__)


def load_chunk(path: Path, key: str) -> ChunkResult:
    """Read a finished chunk; a :class:`MapError` when it belongs to another build (job key)."""
    with np.load(path, allow_pickle=False) as data:
        if 'job' in data.files and str(data['job']) != key:
            raise MapError(f'{path} belongs to another build (source, model or settings '
                           f'differ); remove {path.parent} and build again')
        bad = (dict(zip(data['bad_rows'].tolist(), data['bad_reasons'].tolist()))
               if 'bad_rows' in data.files else {})
        return ChunkResult(data['descriptors'], data['thumbnails'], bad)


def bad_rows(path: Path) -> dict[int, str]:
    """Row -> reason of the images a chunk left out (reads only those two arrays)."""
    with np.load(path, allow_pickle=False) as data:
        if 'bad_rows' not in data.files:
            return {}
        return dict(zip(data['bad_rows'].tolist(), data['bad_reasons'].tolist()))


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold ``.<out>.lock`` (flock) while building ``out``; a second build is refused at once.

    The kernel releases the lock when the process ends, even on ``kill -9``. The file is
    removed at the end while still locked; a build that locked a file removed meanwhile sees
    that the path no longer names its file and takes the new one.
    """
    lock = out.with_name(f'.{out.name}.lock')
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MapError(f'cannot create {out.parent}: {exc.strerror}') from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise MapError(f'cannot write in {out.parent}: {exc.strerror} (the map, its work '
                           f'directory and its lock file go there)') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or '?'
            os.close(fd)
            raise MapError(f'{out} is being built by another build-map (process {holder}); '
                           f'wait for it to finish or choose another --out') from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)   # the file was removed by the build that just ended: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def remove_stale(out: Path) -> list[Path]:
    """Remove what killed builds of ``out`` left (call with :func:`build_lock` held).

    Temporary map folders ``.<out>.tmp-*`` and temporary chunk files in the work directory
    go; a ``.<out>.old-*`` (the previous map, moved aside by ``--overwrite``) goes only once
    ``out`` exists again (names of :mod:`vpr_ros.files`). Returns what was removed.
    """
    stale = sorted(out.parent.glob(f'.{glob.escape(out.name)}.tmp-*'))
    if out.exists():
        stale += sorted(out.parent.glob(f'.{glob.escape(out.name)}.old-*'))
    work = work_dir_for(out)
    if work.is_dir():
        stale += sorted(work.glob('.*.tmp-*'))
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        log.info('removed %d left-overs of an interrupted build: %s', len(stale),
                 ', '.join(p.name for p in stale))
    return stale


def work_dir_for(out: Path) -> Path:
    """Where the resumable chunks of a build of ``out`` live."""
    return out.with_name(out.name + '.partial')


def prepare_work_dir(work: Path, key: str) -> None:
    """Create the work directory of job ``key``; one of another job is emptied first."""
    job_file = work / 'job.json'
    if work.is_dir():
        try:
            same = json.loads(job_file.read_text())['key'] == key
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if same:
            return
        log.warning('%s belongs to another build (source, model or settings differ); '
                    'starting over', work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_json(job_file, {'key': key})


__all__ = ['bad_rows', 'build_lock', 'load_chunk', 'prepare_work_dir', 'remove_stale',
           'work_dir_for']
