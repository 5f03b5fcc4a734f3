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

"""The on-disk format of a map (``*.vprmap`` directory): manifest, checksums, validation.

A map directory holds::

    manifest.json     written last; describes everything below (see :func:`make_manifest`)
    descriptors.npy   (N, D) float32, L2-normalised global descriptors (v2: (N, d) float16,
                      projected by projection.npz; see :mod:`vpr_ros.mapdb.compact`)
    positions.npy     (N, 3) float64 WGS84 lat (deg), lon (deg), alt (m, ellipsoid; NaN unknown)
    entries.csv       name, stamp_ns (empty if unknown), heading_deg (empty if unknown)
    index.faiss       the FAISS index over the descriptors (kind in the manifest)
    thumbnails.npy    (N, h, w, 3) uint8 RGB, fixed size, for GeoWarp re-ranking (v2: JPEG,
                      thumbnails-jpeg.npy bytes + thumbnails-offsets.npy (N + 1) int64)
    model.pt          the model checkpoint that made the descriptors (self-contained map)

Format versions:
    1: first version.
    2: compact (``vpr-ros map convert``): descriptors reduced by the map's projection to
       float16, thumbnails as JPEG, FAISS flat index as float16 codes.

No pickle anywhere: numpy files are read with ``allow_pickle=False``, the manifest is JSON.
The manifest is validated as a whole when read (:func:`validate_manifest`): at most
``MAX_MANIFEST_BYTES`` and ``MAX_MANIFEST_DEPTH`` levels, every number finite, and every file
it names (a ``files`` key, or the value of any ``file`` / ``*_file`` key in any section) a plain
name inside the map that ``files`` lists, so its size and sha256 are checked too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from pathlib import Path
import re
from typing import Any

from vpr_ros.errors import MapError
from vpr_ros.version import __version__

FORMAT_NAME = 'vprmap'
FORMAT_VERSION = 2
#: Versions this vpr_ros reads; ``build-map`` writes 1 unless told otherwise (``map convert``).
READ_VERSIONS = (1, 2)
MANIFEST = 'manifest.json'
DESCRIPTORS = 'descriptors.npy'
POSITIONS = 'positions.npy'
ENTRIES = 'entries.csv'
INDEX = 'index.faiss'
THUMBNAILS = 'thumbnails.npy'
MODEL = 'model.pt'
REQUIRED_FILES = (DESCRIPTORS, POSITIONS, ENTRIES, INDEX, MODEL)

# Limits checked before and while parsing: a manifest is a few kB (calibration tables included).
MAX_MANIFEST_BYTES = 16 << 20
MAX_MANIFEST_DEPTH = 32
_SHA256 = re.compile(r'[0-9a-f]{64}')

# Keys that update_manifest may not change: they describe the files, not something learnt later.
FROZEN_KEYS = ('format', 'format_version', 'files', 'entries', 'descriptors', 'model')


#: Name prefixes of the map files that grow with its entries; the others (model, GeoWarp weights,
#: projections, exports) are one per map, whatever its size.
ENTRY_FILE_PREFIXES = ('descriptors', 'positions', 'entries', 'index', 'thumbnails',
                       'local-features')


def entry_file_bytes(files: dict[str, dict[str, Any]], entries: int) -> dict[str, float]:
    """Bytes per entry of each file of a manifest's ``files`` that grows with the map."""
    n = max(1, int(entries))
    return {name: rec['size'] / n for name, rec in sorted(files.items())
            if name.startswith(ENTRY_FILE_PREFIXES)}


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


def make_manifest(directory: Path, *, version: int = 1, **fields: Any) -> dict[str, Any]:
    """Assemble a manifest for the finished files of ``directory`` (checksums included)."""
    return {
        'format': FORMAT_NAME,
        'format_version': version,
        'package_version': __version__,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        **fields,
        'calibration': fields.get('calibration', {}),
        'files': file_records(directory),
    }


def read_manifest(directory: Path) -> dict[str, Any]:
    """Load and sanity-check ``manifest.json``; a clear :class:`MapError` on any problem."""
    if not directory.is_dir():
        raise MapError(f'map not found: {directory} is not a directory')
    path = directory / MANIFEST
    if not path.is_file():
        raise MapError(f'{path} is missing: {directory} is not a finished map '
                       f'(an interrupted build leaves no manifest)')
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise MapError(f'{path} has {size} bytes, more than the {MAX_MANIFEST_BYTES >> 20} MiB '
                       f'a manifest may have: not a map manifest')
    try:
        manifest = json.loads(path.read_text(encoding='utf-8'), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise MapError(f'{path} is not readable JSON: {exc}') from None
    except RecursionError:
        raise MapError(f'{path} is nested more than {MAX_MANIFEST_DEPTH} levels deep: not a '
                       f'map manifest') from None
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT_NAME:
        raise MapError(f'{path} is not a vpr_ros map manifest (no "format": "{FORMAT_NAME}")')
    version = manifest.get('format_version')
    if version not in READ_VERSIONS or type(version) is not int:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = ('made by a newer vpr_ros; upgrade' if newer else 'rebuild the map')
        raise MapError(f'{path}: format version {version!r}, this vpr_ros '
                       f'{__version__} reads versions '
                       f'{", ".join(map(str, READ_VERSIONS))} ({hint})')
    for key in ('files', 'entries', 'descriptors', 'model', 'index', 'origin'):
        if key not in manifest:
            raise MapError(f'{path}: key {key!r} is missing')
    validate_manifest(manifest, where=str(path))
    return manifest


def _no_constant(name: str) -> Any:
    raise ValueError(f'{name} is not a finite number')


def check_file_name(name: Any, *, where: str) -> str:
    """Return ``name`` if it is a plain file name inside the map directory, else MapError."""
    if (not isinstance(name, str) or not name or name in ('.', '..') or '/' in name
            or '\\' in name or '\0' in name or Path(name).name != name):
        raise MapError(f'{where}: bad file name {name!r} (a file of the map must be a plain '
                       f'name inside the map directory)')
    return name


def _is_file_key(key: str) -> bool:
    return key == 'file' or key.endswith('_file')


def validate_manifest(manifest: dict[str, Any], *, where: str = MANIFEST) -> None:
    """Check the whole manifest; a :class:`MapError` names the key and what is wrong.

    Depth at most ``MAX_MANIFEST_DEPTH``; every number finite; ``files`` maps plain names to
    ``{'sha256': 64 hex digits, 'size': bytes}``; every ``file`` / ``*_file`` value in any
    section is a plain name that ``files`` lists; entries, descriptor size and origin sane.
    """
    stack: list[tuple[Any, str, int]] = [(manifest, '', 0)]
    refs: list[tuple[str, Any]] = []
    while stack:
        value, key, depth = stack.pop()
        if depth > MAX_MANIFEST_DEPTH:
            raise MapError(f'{where}: {key} is nested more than {MAX_MANIFEST_DEPTH} levels '
                           f'deep')
        if isinstance(value, float) and not math.isfinite(value):
            raise MapError(f'{where}: {key} is {value}, not a finite number')
        if isinstance(value, dict):
            for k, v in value.items():
                sub = f'{key}.{k}' if key else str(k)
                if key != 'files' and _is_file_key(str(k)):
                    refs.append((sub, v))
                stack.append((v, sub, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f'{key}[{i}]', depth + 1) for i, v in enumerate(value))
    files = manifest['files']
    if not isinstance(files, dict):
        raise MapError(f'{where}: files must be an object of name -> {{sha256, size}}')
    for name, record in files.items():
        check_file_name(name, where=f'{where}: files')
        if (not isinstance(record, dict) or not isinstance(record.get('sha256'), str)
                or not _SHA256.fullmatch(record['sha256'])
                or type(record.get('size')) is not int or record['size'] < 0):
            raise MapError(f'{where}: files.{name} must be {{"sha256": 64 hex digits, '
                           f'"size": bytes}}, got {record!r}')
    for key, name in refs:
        check_file_name(name, where=f'{where}: {key}')
        if name not in files:
            raise MapError(f'{where}: {key} names {name!r}, which files does not list (no '
                           f'size or checksum to check it against)')
    entries = manifest['entries']
    if type(entries) is not int or entries < 1:
        raise MapError(f'{where}: entries must be a positive integer, got {entries!r}')
    dim = manifest['descriptors'].get('dim') if isinstance(manifest['descriptors'], dict) \
        else None
    if type(dim) is not int or dim < 1:
        raise MapError(f'{where}: descriptors.dim must be a positive integer, got {dim!r}')
    origin = manifest['origin']
    if not isinstance(origin, dict) or not all(
            isinstance(origin.get(k), (int, float)) and not isinstance(origin.get(k), bool)
            for k in ('lat', 'lon', 'alt')):
        raise MapError(f'{where}: origin must be {{"lat", "lon", "alt"}} numbers, got '
                       f'{origin!r}')
    if abs(origin['lat']) > 90 or abs(origin['lon']) > 180:
        raise MapError(f'{where}: origin {origin} is not a WGS84 latitude/longitude')


def verify_files(directory: Path, manifest: dict[str, Any], *, fast: bool = False) -> None:
    """Check every file listed in the manifest: present, same size and (unless fast) sha256."""
    files = manifest['files']
    for name in REQUIRED_FILES:
        if name not in files:
            raise MapError(f'{directory / MANIFEST}: does not list {name}')
    for name, record in files.items():
        path = directory / check_file_name(name, where=f'{directory / MANIFEST}: files')
        if not path.is_file():
            raise MapError(f'{path} is missing (listed in the manifest)')
        size = path.stat().st_size
        if size != record['size']:
            raise MapError(f'{path} has {size} bytes, the manifest says {record["size"]} '
                           f'(truncated or modified)')
        if not fast and sha256_file(path) != record['sha256']:
            raise MapError(f'{path} is corrupt: sha256 differs from the manifest')
