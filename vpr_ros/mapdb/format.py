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

"""The on-disk format of a map (``*.vprmap`` directory): manifest, checksums, atomic writes.

A map directory holds::

    manifest.json     written last; describes everything below (see :func:`make_manifest`)
    descriptors.npy   (N, D) float32, L2-normalised global descriptors
    positions.npy     (N, 3) float64 WGS84 lat (deg), lon (deg), alt (m, ellipsoid; NaN unknown)
    entries.csv       name, stamp_ns (empty if unknown), heading_deg (empty if unknown)
    index.faiss       the FAISS index over the descriptors (kind in the manifest)
    thumbnails.npy    (N, h, w, 3) uint8 RGB, fixed size, for GeoWarp re-ranking
    model.pt          the model checkpoint that made the descriptors (self-contained map)

Format versions:
    1: first version.

No pickle anywhere: numpy files are read with ``allow_pickle=False``, the manifest is JSON.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import vpr_ros
from vpr_ros.errors import MapError

FORMAT_NAME = 'vprmap'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
DESCRIPTORS = 'descriptors.npy'
POSITIONS = 'positions.npy'
ENTRIES = 'entries.csv'
INDEX = 'index.faiss'
THUMBNAILS = 'thumbnails.npy'
MODEL = 'model.pt'
REQUIRED_FILES = (DESCRIPTORS, POSITIONS, ENTRIES, INDEX, MODEL)

# Keys that update_manifest may not change: they describe the files, not something learnt later.
FROZEN_KEYS = ('format', 'format_version', 'files', 'entries', 'descriptors', 'model')


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """``{name: {'sha256', 'size'}}`` of every file in ``directory`` except the manifest."""
    return {p.name: {'sha256': sha256_file(p), 'size': p.stat().st_size}
            for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}


def make_manifest(directory: Path, **fields: Any) -> dict[str, Any]:
    """Assemble a manifest for the finished files of ``directory`` (checksums included)."""
    return {
        'format': FORMAT_NAME,
        'format_version': FORMAT_VERSION,
        'package_version': vpr_ros.__version__,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        **fields,
        'calibration': fields.get('calibration', {}),
        'files': file_records(directory),
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file, fsync and rename (all or nothing)."""
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=2, sort_keys=False, allow_nan=False)
        f.write('\n')
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (renames) to disk where the OS allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_manifest(directory: Path) -> dict[str, Any]:
    """Load and sanity-check ``manifest.json``; a clear :class:`MapError` on any problem."""
    if not directory.is_dir():
        raise MapError(f'map not found: {directory} is not a directory')
    path = directory / MANIFEST
    if not path.is_file():
        raise MapError(f'{path} is missing: {directory} is not a finished map '
                       f'(an interrupted build leaves no manifest)')
    try:
        manifest = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MapError(f'{path} is not readable JSON: {exc}') from None
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT_NAME:
        raise MapError(f'{path} is not a vpr_ros map manifest (no "format": "{FORMAT_NAME}")')
    version = manifest.get('format_version')
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = ('made by a newer vpr_ros; upgrade' if newer else 'rebuild the map')
        raise MapError(f'{path}: format version {version!r}, this vpr_ros '
                       f'{vpr_ros.__version__} reads version {FORMAT_VERSION} ({hint})')
    for key in ('files', 'entries', 'descriptors', 'model', 'index', 'origin'):
        if key not in manifest:
            raise MapError(f'{path}: key {key!r} is missing')
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any], *, fast: bool = False) -> None:
    """Check every file listed in the manifest: present, same size and (unless fast) sha256."""
    files = manifest['files']
    for name in REQUIRED_FILES:
        if name not in files:
            raise MapError(f'{directory / MANIFEST}: does not list {name}')
    for name, record in files.items():
        path = directory / name
        if Path(name).name != name:
            raise MapError(f'{directory / MANIFEST}: bad file name {name!r}')
        if not path.is_file():
            raise MapError(f'{path} is missing (listed in the manifest)')
        size = path.stat().st_size
        if size != record['size']:
            raise MapError(f'{path} has {size} bytes, the manifest says {record["size"]} '
                           f'(truncated or modified)')
        if not fast and sha256_file(path) != record['sha256']:
            raise MapError(f'{path} is corrupt: sha256 differs from the manifest')
