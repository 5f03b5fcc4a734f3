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

"""Write files and folders atomically: a reader sees the old version or the new, never half.

Maps, checkpoints and reports are read by other processes (the node, a second build, a
resumed run) and must survive a crash or a kill in the middle of a write. Every writer here
follows one recipe:

1. write into a temporary sibling with a unique name (``tempfile.mkstemp``/``mkdtemp`` in
   the target's folder, so two writers never share it and the rename stays on one file
   system), named ``.<stem>.tmp-<random><suffix>`` so clean-up code can find left-overs;
2. ``fsync`` the data (every file, for a folder);
3. ``os.replace`` it onto the target (atomic on POSIX);
4. ``fsync`` the folder, so the rename itself is on disk.

On any exception (including ``KeyboardInterrupt``) the temporary is removed and the target is
left as it was. New files get the usual ``0o666 & ~umask`` permissions (folders ``0o777``),
not the private ``0o600`` that ``mkstemp`` gives. Serialise-then-write helpers (JSON) fail
before any file is touched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np


def fsync_dir(directory: str | Path) -> None:
    """Flush a folder's entries (renames, new files) to disk where the OS allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:   # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """Return the process umask, read without changing it where /proc allows."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name_parts(target: Path) -> tuple[str, str]:
    """``(prefix, suffix)`` of a temporary for ``target``: ``.<stem>.tmp-XXXX<suffix>``."""
    return f'.{target.stem}.tmp-', target.suffix


@contextlib.contextmanager
def temporary(target: str | Path) -> Iterator[Path]:
    """Yield a new, empty, uniquely named file beside ``target``; removed at exit if still there.

    Use with :func:`publish` when the final name is known only after writing (e.g. named by
    its checksum); otherwise :func:`staged` does both.
    """
    target = Path(target)
    prefix, suffix = _temp_name_parts(target)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def publish(tmp: str | Path, target: str | Path) -> Path:
    """Fsync ``tmp``, rename it onto ``target`` (same folder) and fsync the folder."""
    tmp, target = Path(tmp), Path(target)
    _fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    return target


@contextlib.contextmanager
def staged(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` when the block ends.

    For writers that want a path (``torch.save``, ``faiss.write_index``, ``cv2.imwrite``):
    the temporary keeps the target's suffix. If the block raises, the temporary is removed
    and ``target`` is untouched.
    """
    target = Path(target)
    with temporary(target) as tmp:
        yield tmp
        publish(tmp, target)


def write_with(target: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a binary file that atomically becomes ``target``; return the path."""
    target = Path(target)
    with staged(target) as tmp, open(tmp, 'wb') as f:
        write(f)
    return target


def write_bytes(target: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``target``."""
    return write_with(target, lambda f: f.write(data))


def write_text(target: str | Path, text: str, *, encoding: str = 'utf-8') -> Path:
    """Atomically write ``text`` to ``target`` (no newline translation)."""
    return write_bytes(target, text.encode(encoding))


def write_json(target: str | Path, data: Any, *, indent: int | None = 2,
               allow_nan: bool = False, default: Callable[[Any], Any] | None = None,
               sort_keys: bool = False) -> Path:
    """Atomically write ``data`` as JSON plus a final newline.

    ``data`` is serialised first, so a value JSON cannot hold (or NaN, unless ``allow_nan``)
    raises ``TypeError``/``ValueError`` before any file is created.
    """
    text = json.dumps(data, indent=indent, allow_nan=allow_nan, default=default,
                      sort_keys=sort_keys)
    return write_text(target, text + '\n')


def save_array(target: str | Path, array: np.ndarray) -> Path:
    """Atomically ``np.save`` one array (``allow_pickle=False``: object arrays are refused)."""
    return write_with(target, lambda f: np.save(f, array, allow_pickle=False))


def save_arrays(target: str | Path, **arrays: np.ndarray) -> Path:
    """Atomically ``np.savez`` named arrays (uncompressed)."""
    return write_with(target, lambda f: np.savez(f, **arrays))


def _fsync_tree(root: Path) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                _fsync_file(path)
        fsync_dir(folder)


def _temporary_dir(target: Path, kind: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f'.{target.name}.{kind}-', dir=target.parent))
    path.chmod(0o777 & ~_umask())
    return path


def replace_dir(src: str | Path, target: str | Path, *, overwrite: bool = False,
                backup: str | Path | None = None) -> Path:
    """Fsync the folder ``src`` (every file in it) and rename it onto ``target``.

    When ``target`` exists: without ``overwrite`` a ``FileExistsError`` is raised and
    nothing moves; with it the old folder is renamed aside first (to ``backup`` if given,
    which is kept; otherwise to a unique ``.<name>.old-XXXX`` sibling, deleted once the new
    folder is in place). If the second rename fails, the old folder is put back. ``src``
    must be on the same file system as ``target`` (a sibling).
    """
    src, target = Path(src), Path(target)
    _fsync_tree(src)
    old = None
    if target.exists():
        if not overwrite:
            raise FileExistsError(errno.EEXIST, 'exists already, not overwriting', str(target))
        old = Path(backup) if backup is not None else _temporary_dir(target, 'old')
        os.replace(target, old)   # onto the empty unique folder: rename(2) allows it
    try:
        os.replace(src, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    fsync_dir(target.parent)
    if old is not None and backup is None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged_dir(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``target``; it replaces ``target`` when the block ends.

    Missing parent folders of ``target`` are created. The temporary folder is named
    ``.<name>.tmp-XXXX`` (unique). At the end of the block it is moved
    into place by :func:`replace_dir` (so an existing ``target`` is a ``FileExistsError``
    unless ``overwrite``); if the block raises, the folder is deleted and ``target`` is left
    as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_dir(target, 'tmp')
    try:
        yield tmp
        replace_dir(tmp, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ['fsync_dir', 'publish', 'replace_dir', 'save_array', 'save_arrays', 'staged',
           'staged_dir', 'temporary', 'write_bytes', 'write_json', 'write_text', 'write_with']
