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

"""The ONNX export record of a map: where it lives in the manifest and whether it still fits.

``manifest['onnx'][precision]`` names the three graph files (``<part>_file``) and the model
fingerprint and GeoWarp sha256 they were exported from. :mod:`vpr_ros.runtime.export` writes
it; :mod:`vpr_ros.runtime.backends` reads it before running a map on ONNX Runtime or TensorRT.
"""

from __future__ import annotations

from typing import Any

from vpr_ros.errors import MapError
from vpr_ros.mapdb import format as fmt
from vpr_ros.mapdb.database import MapDB

#: Manifest key of the exports: ``manifest['onnx'][precision]``.
KEY = 'onnx'
PARTS = ('descriptor', 'local_features', 'geowarp')


def geowarp_sha256(db: MapDB) -> str | None:
    """Return the sha256 of the map's fitted GeoWarp file (None: the identity warp)."""
    info = db.manifest.get('geowarp') or {}
    if not info.get('file'):
        return None
    return db.manifest['files'][info['file']]['sha256']


def export_status(db: MapDB) -> dict[str, str]:
    """Return per precision 'ok' or why the stored export cannot be used with this map."""
    out = {}
    for precision, record in (db.manifest.get(KEY) or {}).items():
        out[precision] = problem(db, record) or 'ok'
    return out


def problem(db: MapDB, record: dict[str, Any]) -> str | None:
    """Return why an export record does not fit the map (another model or GeoWarp), or None."""
    fingerprint = db.manifest['model'].get('fingerprint')
    if record.get('model_fingerprint') != fingerprint:
        return (f'the ONNX export was made for model {record.get("model_fingerprint")}, the '
                f'map holds {fingerprint}; run vpr-ros export {db.path} again')
    if record.get('geowarp_sha256') != geowarp_sha256(db):
        return ('the ONNX export holds another GeoWarp than the map (fitted again since?); '
                f'run vpr-ros export {db.path} again')
    for part in PARTS:
        name = record.get(f'{part}_file')
        if not name or name not in db.manifest['files']:
            return f'the ONNX export record names no listed {part} file'
    return None


def verify_sha256(db: MapDB, record: dict[str, Any]) -> None:
    """Check the export files' sha256 even when the map was opened ``fast``."""
    for part in PARTS:
        name = record[f'{part}_file']
        if fmt.sha256_file(db.path / name) != db.manifest['files'][name]['sha256']:
            raise MapError(f'{db.path / name} is corrupt: sha256 differs from the manifest '
                           f'(run vpr-ros export {db.path} again)')


__all__ = ['export_status', 'geowarp_sha256', 'KEY', 'PARTS', 'problem', 'verify_sha256']
