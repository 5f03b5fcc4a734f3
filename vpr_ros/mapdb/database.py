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

"""Open a finished map (``*.vprmap``): verify it, then search it and read its entries.

Example::

    db = MapDB.open('route.vprmap', model=model)     # MapError if anything does not match
    indices, scores = db.search(model.describe(batch), k=10)
    lat_lon_alt = db.positions(indices[0])
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vpr_ros.errors import MapError
from vpr_ros.mapdb import format as fmt
from vpr_ros.mapdb.index import MapIndex


def _load_npy(path: Path, *, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode='r' if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MapError(f'{path} is not a readable numpy file: {exc}') from None


class MapDB:
    """A verified map: descriptors, positions, entries, FAISS index, thumbnails and model."""

    def __init__(self, path: Path, manifest: dict[str, Any], descriptors: np.ndarray,
                 positions: np.ndarray, names: list[str], stamps: list[int | None],
                 index: MapIndex, thumbnails: np.ndarray | None) -> None:
        self.path = path
        self.manifest = manifest
        self.descriptors = descriptors
        self._positions = positions
        self.names = names
        self.stamps = stamps
        self.index = index
        self._thumbnails = thumbnails

    @classmethod
    def open(cls, path: str | Path, model: Any = None, *,  # noqa: A003 - MapDB.open reads well
             fast: bool = False) -> 'MapDB':
        """Open and verify a map; every problem is a :class:`MapError` naming the file.

        Args:
            path: the ``*.vprmap`` directory.
            model: if given, its ``fingerprint()`` and descriptor size must match the map's.
            fast: check file sizes only, not sha256 (for huge maps).
        """
        import faiss

        path = Path(path)
        manifest = fmt.read_manifest(path)
        fmt.verify_files(path, manifest, fast=fast)
        if model is not None:
            check_model(path, manifest, model)
        n, d = int(manifest['entries']), int(manifest['descriptors']['dim'])
        descriptors = _load_npy(path / fmt.DESCRIPTORS, mmap=True)
        if descriptors.shape != (n, d) or descriptors.dtype != np.float32:
            raise MapError(f'{path / fmt.DESCRIPTORS}: {descriptors.dtype} {descriptors.shape}, '
                           f'the manifest says float32 ({n}, {d})')
        positions = _load_npy(path / fmt.POSITIONS, mmap=False)
        if positions.shape != (n, 3) or positions.dtype != np.float64:
            raise MapError(f'{path / fmt.POSITIONS}: {positions.dtype} {positions.shape}, '
                           f'expected float64 ({n}, 3)')
        check_positions(path / fmt.POSITIONS, positions)
        if not fast:
            check_descriptors(path / fmt.DESCRIPTORS, descriptors)
        names, stamps = _read_entries(path / fmt.ENTRIES, n)
        try:
            raw_index = faiss.read_index(str(path / fmt.INDEX))
        except RuntimeError as exc:
            raise MapError(f'{path / fmt.INDEX} is not a readable FAISS index: '
                           f'{str(exc).splitlines()[0]}') from None
        if raw_index.ntotal != n or raw_index.d != d:
            raise MapError(f'{path / fmt.INDEX}: {raw_index.ntotal} x {raw_index.d}, the '
                           f'manifest says {n} x {d}')
        thumbnails = None
        if manifest.get('thumbnails'):
            thumbnails = _load_npy(path / fmt.THUMBNAILS, mmap=True)
            t = manifest['thumbnails']
            if thumbnails.shape != (n, t['height'], t['width'], 3):
                raise MapError(f'{path / fmt.THUMBNAILS}: shape {thumbnails.shape} does not '
                               f'match the manifest')
        return cls(path, manifest, descriptors, positions, names, stamps,
                   MapIndex(raw_index, manifest['index'], descriptors), thumbnails)

    def __len__(self) -> int:
        return int(self.manifest['entries'])

    @property
    def descriptor_dim(self) -> int:
        return int(self.manifest['descriptors']['dim'])

    @property
    def origin(self) -> tuple[float, float, float]:
        """Geodetic origin ``(lat, lon, alt)`` for local ENU coordinates of this map."""
        o = self.manifest['origin']
        return float(o['lat']), float(o['lon']), float(o['alt'])

    def search(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` entries per query descriptor: ``(indices (Q, k), scores (Q, k))``."""
        return self.index.search(descriptors, k)

    def positions(self, indices: Any) -> np.ndarray:
        """Return WGS84 ``(..., 3)`` lat (deg), lon (deg), alt (m; NaN if unknown) of entries."""
        return self._positions[np.asarray(indices, np.int64)]

    def positions_enu(self, indices: Any) -> np.ndarray:
        """Return ``(..., 2)`` east/north metres of entries about :attr:`origin` (height 0)."""
        from vpr_ros.geo import wgs84_to_enu

        pos = self.positions(indices)
        return wgs84_to_enu(pos[..., 0], pos[..., 1], np.zeros(pos.shape[:-1]),
                            self.origin)[..., :2]

    def thumbnails(self, indices: Any) -> np.ndarray:
        """Return the stored ``(..., h, w, 3)`` uint8 RGB thumbnails of entries (GeoWarp)."""
        if self._thumbnails is None:
            raise MapError(f'{self.path} was built without thumbnails')
        idx = np.asarray(indices, np.int64)
        return np.asarray(self._thumbnails[idx.reshape(-1)]).reshape(
            *idx.shape, *self._thumbnails.shape[1:])

    def load_model(self, device: str = 'auto') -> Any:
        """Load the model embedded in the map and check it is the one that made it."""
        from vpr_ros.models.checkpoints import load_model

        model = load_model(str(self.path / fmt.MODEL), device=device)
        check_model(self.path, self.manifest, model)
        return model

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        """Change top-level manifest keys (e.g. ``calibration``) atomically; return it."""
        frozen = sorted(set(changes) & set(fmt.FROZEN_KEYS))
        if frozen:
            raise MapError(f'{self.path / fmt.MANIFEST}: keys {frozen} describe the map files '
                           f'and cannot be updated; rebuild the map instead')
        manifest = fmt.read_manifest(self.path)
        manifest.update(changes)
        fmt.write_json_atomic(self.path / fmt.MANIFEST, manifest)
        self.manifest = manifest
        return manifest

    def attach_file(self, stem: str, suffix: str, write: Callable[[Path], Any], *,
                    key: str, record: dict[str, Any]) -> Path:
        """Add or replace an extra file (e.g. GeoWarp weights) and list it in the manifest.

        The file is written under a temporary name, renamed to ``<stem>-<sha256[:12]><suffix>``,
        then one atomic manifest write lists it and sets ``manifest[key] = {**record, 'file':
        name}``; an older ``<stem>-*`` file is removed last. A crash at any step leaves a map
        that loads, old or new. Returns the path.
        """
        if key in fmt.FROZEN_KEYS:
            raise MapError(f'attach_file: manifest key {key!r} cannot be changed')
        if not stem or '/' in stem or stem.startswith('.'):
            raise MapError(f'attach_file: bad stem {stem!r}')
        tmp = self.path / f'.{stem}.tmp-{os.getpid()}{suffix}'
        try:
            write(tmp)
            digest = fmt.sha256_file(tmp)
            name = f'{stem}-{digest[:12]}{suffix}'
            os.replace(tmp, self.path / name)
        finally:
            tmp.unlink(missing_ok=True)
        manifest = fmt.read_manifest(self.path)
        files = manifest['files']
        stale = [n for n in files if n.startswith(f'{stem}-') and n.endswith(suffix)
                 and n != name]
        for n in stale:
            del files[n]
        files[name] = {'sha256': digest, 'size': (self.path / name).stat().st_size}
        manifest[key] = {**record, 'file': name}
        fmt.write_json_atomic(self.path / fmt.MANIFEST, manifest)
        self.manifest = manifest
        for n in stale:
            (self.path / n).unlink(missing_ok=True)
        return self.path / name


def check_model(path: Path, manifest: dict[str, Any], model: Any) -> None:
    """Raise :class:`MapError` unless ``model`` is the model that made the map."""
    expected = manifest['model'].get('fingerprint')
    got = str(model.fingerprint())
    if got != expected:
        raise MapError(f'{path / fmt.MANIFEST}: the map was built with model {expected}, '
                       f'this model is {got}; use the model stored in the map '
                       f'(MapDB.load_model) or rebuild the map')
    dim = int(manifest['descriptors']['dim'])
    if int(model.descriptor_dim) != dim:
        raise MapError(f'{path / fmt.MANIFEST}: map descriptors have {dim} dimensions, the '
                       f'model gives {model.descriptor_dim}')


def check_positions(path: Path, positions: np.ndarray) -> None:
    """Raise :class:`MapError` unless lat/lon are finite WGS84, alt finite or NaN (unknown)."""
    lat, lon, alt = positions[:, 0], positions[:, 1], positions[:, 2]
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
            & ~np.isinf(alt))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MapError(f'{path}: entry {i} has position {positions[i].tolist()} ({int(bad.sum())}'
                       f' bad): latitude/longitude must be finite WGS84 degrees, altitude '
                       f'finite or NaN (unknown)')


def check_descriptors(path: Path, descriptors: np.ndarray, rows: int = 1 << 16) -> None:
    """Raise :class:`MapError` if any descriptor value is NaN or infinite (read in blocks)."""
    for start in range(0, len(descriptors), rows):
        block = np.asarray(descriptors[start:start + rows])
        if not np.isfinite(block).all():
            i = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise MapError(f'{path}: descriptor {i} is not finite')


def _read_entries(path: Path, n: int) -> tuple[list[str], list[int | None]]:
    try:
        with open(path, newline='', encoding='utf-8') as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MapError(f'{path} is not readable: {exc}') from None
    if len(rows) != n or (rows and not {'name', 'stamp_ns'} <= set(rows[0])):
        raise MapError(f'{path}: {len(rows)} rows with name,stamp_ns expected {n}')
    try:
        stamps = [int(r['stamp_ns']) if r['stamp_ns'] else None for r in rows]
    except ValueError as exc:
        raise MapError(f'{path}: bad stamp_ns: {exc}') from None
    return [r['name'] for r in rows], stamps
