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

Why one module of this size: opening a map is one all-or-nothing check (manifest, checksums,
model, descriptors, projection, index, thumbnails in v1 and v2 layouts) and :class:`MapDB` is
what the checks produce; the readers are private to it. The format itself is
:mod:`vpr_ros.mapdb.format`, v2 writing is :mod:`vpr_ros.mapdb.compact`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vpr_ros.errors import MapError
from vpr_ros.files import publish, temporary, write_json
from vpr_ros.mapdb import adaptation
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
                 positions: np.ndarray, names: list[str] | None, stamps: list[int | None] | None,
                 index: MapIndex, thumbnails: Any) -> None:
        self.path = path
        self.manifest = manifest
        self.descriptors = descriptors
        self._positions = positions
        self._names = names
        self._stamps = stamps
        self.index = index
        self._thumbnails = thumbnails
        #: The projection applied to queries: the learnt one (``vpr-ros adapt``) or, in a
        #: compact (v2) map, the one its descriptors were stored with; None when plain.
        self.projection: adaptation.Projection | None = None

    @classmethod
    def open(cls, path: str | Path, model: Any = None, *,  # noqa: A003 - MapDB.open reads well
             fast: bool = False) -> 'MapDB':
        """Open and verify a map; every problem is a :class:`MapError` naming the file.

        Args:
            path: the ``*.vprmap`` directory.
            model: if given, its ``fingerprint()`` and descriptor size must match the map's.
            fast: check file sizes only, not sha256 (for huge maps).
        """
        path = Path(path)
        manifest = fmt.read_manifest(path)
        fmt.verify_files(path, manifest, fast=fast)
        if model is not None:
            check_model(path, manifest, model)
        version = int(manifest['format_version'])
        n, d = int(manifest['entries']), int(manifest['descriptors']['dim'])
        dtype = np.float16 if version >= 2 else np.float32
        descriptors = _load_npy(path / fmt.DESCRIPTORS, mmap=True)
        if descriptors.shape != (n, d) or descriptors.dtype != dtype:
            raise MapError(f'{path / fmt.DESCRIPTORS}: {descriptors.dtype} {descriptors.shape}, '
                           f'the manifest says {np.dtype(dtype)} ({n}, {d})')
        positions = _load_npy(path / fmt.POSITIONS, mmap=True)
        if positions.shape != (n, 3) or positions.dtype != np.float64:
            raise MapError(f'{path / fmt.POSITIONS}: {positions.dtype} {positions.shape}, '
                           f'expected float64 ({n}, 3)')
        check_positions(path / fmt.POSITIONS, positions)
        if not fast:
            check_descriptors(path / fmt.DESCRIPTORS, descriptors)
        # Names are read on first use when fast (a 1 M-entry CSV costs seconds and 100s of MB).
        entries = None if fast else _read_entries(path / fmt.ENTRIES, n)
        raw_index = _read_index(path / fmt.INDEX, n, d, kind=manifest['index'].get('kind'))
        thumbnails = None
        if manifest.get('thumbnails'):
            thumbnails = _load_thumbnails(path, manifest, n)
        db = cls(path, manifest, descriptors, positions, *(entries or (None, None)),
                 MapIndex(raw_index, manifest['index'], descriptors), thumbnails)
        if version >= 2:
            db.projection = _load_projection(path, manifest)
        elif (manifest.get(adaptation.KEY) or {}).get('method', 'none') != 'none':
            db.projection, db.index = _load_adaptation(path, manifest)
        return db

    @property
    def format_version(self) -> int:
        return int(self.manifest['format_version'])

    @property
    def names(self) -> list[str]:
        """Return the entry names, from ``entries.csv`` read on first use."""
        if self._names is None:
            self._names, self._stamps = _read_entries(self.path / fmt.ENTRIES, len(self))
        return self._names

    @names.setter
    def names(self, value: list[str]) -> None:
        self._names = value

    @property
    def stamps(self) -> list[int | None]:
        """Return the entry stamps in ns, None where unknown, read on first use."""
        if self._stamps is None:
            self._names, self._stamps = _read_entries(self.path / fmt.ENTRIES, len(self))
        return self._stamps

    @stamps.setter
    def stamps(self, value: list[int | None]) -> None:
        self._stamps = value

    def __len__(self) -> int:
        return int(self.manifest['entries'])

    @property
    def descriptor_dim(self) -> int:
        """Size of the model's descriptors (v2 stores them projected, see ``projection``)."""
        desc = self.manifest['descriptors']
        return int(desc.get('input_dim', desc['dim']))

    @property
    def origin(self) -> tuple[float, float, float]:
        """Geodetic origin ``(lat, lon, alt)`` for local ENU coordinates of this map."""
        o = self.manifest['origin']
        return float(o['lat']), float(o['lon']), float(o['alt'])

    @property
    def thumbnail_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the stored thumbnails (GeoWarp re-ranking); None without."""
        thumbs = self.manifest.get('thumbnails') or {}
        return (int(thumbs['height']), int(thumbs['width'])) if thumbs else None

    @property
    def geowarp_path(self) -> Path | None:
        """The GeoWarp fitted on this map (``vpr-ros fit-geowarp``); None when not fitted."""
        info = self.manifest.get('geowarp') or {}
        return self.path / info['file'] if info else None

    def search(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` entries per query descriptor: ``(indices (Q, k), scores (Q, k))``.

        ``descriptors`` are the model's own; the map's adaptation projection, if any, is
        applied here, so every caller (localizer, eval, node) searches the same way.
        """
        if self.projection is not None:
            descriptors = self.projection.apply(descriptors)
        return self.index.search(descriptors, k)

    def positions(self, indices: Any) -> np.ndarray:
        """Return WGS84 ``(..., 3)`` lat (deg), lon (deg), alt (m; NaN if unknown) of entries."""
        return np.asarray(self._positions[np.asarray(indices, np.int64)])

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
        write_json(self.path / fmt.MANIFEST, manifest)
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
        names = self.attach_files(key, {stem: (suffix, write)},
                                  lambda names: {**record, 'file': names[stem]})
        return self.path / names[stem]

    def attach_files(self, key: str, files: dict[str, tuple[str, Callable[[Path], Any]]],
                     make_record: Callable[[dict[str, str]], dict[str, Any]], *,
                     drop_stems: tuple[str, ...] = ()) -> dict[str, str]:
        """Add or replace several extra files and their manifest record in one manifest write.

        ``files`` maps a stem to ``(suffix, write)``; each file is written under a temporary
        name and renamed to ``<stem>-<sha256[:12]><suffix>``. One atomic manifest write then
        lists them all and sets ``manifest[key] = make_record({stem: name})``; older files of
        these stems (and of ``drop_stems``) are removed last. Returns ``{stem: name}``.
        """
        if key in fmt.FROZEN_KEYS:
            raise MapError(f'attach_files: manifest key {key!r} cannot be changed')
        names: dict[str, str] = {}
        records: dict[str, dict[str, Any]] = {}
        for stem, (suffix, write) in files.items():
            if not stem or '/' in stem or stem.startswith('.'):
                raise MapError(f'attach_files: bad stem {stem!r}')
            with temporary(self.path / f'{stem}{suffix}') as tmp:
                write(tmp)
                digest = fmt.sha256_file(tmp)
                name = f'{stem}-{digest[:12]}{suffix}'
                publish(tmp, self.path / name)
            names[stem] = name
            records[name] = {'sha256': digest, 'size': (self.path / name).stat().st_size}
        manifest = fmt.read_manifest(self.path)
        listed = manifest['files']
        stems = {stem: suffix for stem, (suffix, _) in files.items()}
        stale = [n for n in listed if n not in records and (
            any(n.startswith(f'{s}-') and n.endswith(x) for s, x in stems.items())
            or any(n.startswith(f'{s}-') for s in drop_stems))]
        for n in stale:
            del listed[n]
        listed.update(records)
        manifest[key] = make_record(names)
        write_json(self.path / fmt.MANIFEST, manifest)
        self.manifest = manifest
        for n in stale:
            (self.path / n).unlink(missing_ok=True)
        return names


def check_model(path: Path, manifest: dict[str, Any], model: Any) -> None:
    """Raise :class:`MapError` unless ``model`` is the model that made the map."""
    expected = manifest['model'].get('fingerprint')
    got = str(model.fingerprint())
    if got != expected:
        raise MapError(f'{path / fmt.MANIFEST}: the map was built with model {expected}, '
                       f'this model is {got}; use the model stored in the map '
                       f'(MapDB.load_model) or rebuild the map')
    dim = int(manifest['descriptors'].get('input_dim', manifest['descriptors']['dim']))
    if int(model.descriptor_dim) != dim:
        raise MapError(f'{path / fmt.MANIFEST}: map descriptors have {dim} dimensions, the '
                       f'model gives {model.descriptor_dim}')


def _load_adaptation(path: Path, manifest: dict[str, Any],
                     ) -> tuple[adaptation.Projection, MapIndex]:
    """Read the adaptation files the manifest lists; a MapError when they do not fit the map."""
    record = manifest[adaptation.KEY]
    where = f'{path / fmt.MANIFEST}: {adaptation.KEY}'
    try:
        files = {stem: record['files'][stem] for stem in adaptation.STEMS}
        dim, input_dim = int(record['dim']), int(record['input_dim'])
        fingerprint, info = record['model_fingerprint'], dict(record['index'])
    except (KeyError, TypeError, ValueError) as exc:
        raise MapError(f'{where} is malformed ({exc!r}); run vpr-ros adapt again') from None
    for name in files.values():
        if not isinstance(name, str) or Path(name).name != name or \
                name not in manifest['files']:
            raise MapError(f'{where} names {name!r}, not a file listed in the map')
    if fingerprint != manifest['model'].get('fingerprint'):
        raise MapError(f'{where} was fitted for model {fingerprint}, the map holds '
                       f'{manifest["model"].get("fingerprint")}; run vpr-ros adapt again')
    n, d = int(manifest['entries']), int(manifest['descriptors']['dim'])
    try:
        with np.load(path / files['adaptation'], allow_pickle=False) as data:
            projection = adaptation.Projection(str(record['method']),
                                               np.asarray(data['mean'], np.float32),
                                               np.asarray(data['matrix'], np.float32))
    except (OSError, ValueError, KeyError) as exc:
        raise MapError(f'{path / files["adaptation"]} is not a readable projection: '
                       f'{exc}') from None
    if projection.mean.shape != (d,) or projection.matrix.shape != (dim, d) or input_dim != d:
        raise MapError(f'{path / files["adaptation"]}: projection {projection.matrix.shape} '
                       f'does not map the {d}-D descriptors to {dim}-D')
    adapted = _load_npy(path / files['adapted-descriptors'], mmap=True)
    if adapted.shape != (n, dim) or adapted.dtype != np.float32:
        raise MapError(f'{path / files["adapted-descriptors"]}: {adapted.dtype} '
                       f'{adapted.shape}, expected float32 ({n}, {dim})')
    index = _read_index(path / files['adapted-index'], n, dim, kind=info.get('kind'))
    return projection, MapIndex(index, info, adapted)


def _load_projection(path: Path, manifest: dict[str, Any]) -> adaptation.Projection:
    """Read the projection of a compact (v2) map's descriptors (applied to queries)."""
    desc = manifest['descriptors']
    try:
        record = desc['projection']
        name, method = record['file'], str(record['method'])
        dim, input_dim = int(desc['dim']), int(desc['input_dim'])
    except (KeyError, TypeError, ValueError) as exc:
        raise MapError(f'{path / fmt.MANIFEST}: descriptors.projection is malformed '
                       f'({exc!r})') from None
    try:
        with np.load(path / name, allow_pickle=False) as data:
            projection = adaptation.Projection(method, np.asarray(data['mean'], np.float32),
                                               np.asarray(data['matrix'], np.float32))
    except (OSError, ValueError, KeyError) as exc:
        raise MapError(f'{path / name} is not a readable projection: {exc}') from None
    if projection.mean.shape != (input_dim,) or projection.matrix.shape != (dim, input_dim):
        raise MapError(f'{path / name}: projection {projection.matrix.shape} does not map '
                       f'{input_dim}-D descriptors to the {dim}-D stored ones')
    return projection


class JpegThumbnails:
    """Thumbnails stored as JPEG (v2): ``t[indices]`` decodes ``(len, h, w, 3)`` uint8 RGB."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, height: int, width: int) -> None:
        self.data = data
        self.offsets = offsets
        self.shape = (len(offsets) - 1, height, width, 3)

    def __len__(self) -> int:
        return self.shape[0]

    def encoded(self, i: int) -> np.ndarray:
        """Return the JPEG bytes of entry ``i``."""
        return np.asarray(self.data[int(self.offsets[i]):int(self.offsets[i + 1])])

    def __getitem__(self, indices: Any) -> np.ndarray:
        import cv2

        idx = np.asarray(indices, np.int64).reshape(-1)
        out = np.empty((len(idx), *self.shape[1:]), np.uint8)
        for row, i in enumerate(idx):
            bgr = cv2.imdecode(self.encoded(int(i)), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape != self.shape[1:]:
                raise MapError(f'thumbnail {int(i)} is not a {self.shape[2]}x{self.shape[1]} '
                               f'JPEG')
            out[row] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return out


def _load_thumbnails(path: Path, manifest: dict[str, Any], n: int) -> Any:
    t = manifest['thumbnails']
    if t.get('encoding') == 'jpeg':
        data = _load_npy(path / t['file'], mmap=True)
        offsets = _load_npy(path / t['offsets_file'], mmap=False)
        if (data.dtype != np.uint8 or data.ndim != 1 or offsets.shape != (n + 1,)
                or offsets.dtype != np.int64 or offsets[0] != 0 or offsets[-1] != len(data)
                or (np.diff(offsets) <= 0).any()):
            raise MapError(f'{path / t["offsets_file"]}: offsets do not cut '
                           f'{path / t["file"]} into {n} JPEG thumbnails')
        return JpegThumbnails(data, offsets, int(t['height']), int(t['width']))
    thumbnails = _load_npy(path / fmt.THUMBNAILS, mmap=True)
    if thumbnails.shape != (n, t['height'], t['width'], 3):
        raise MapError(f'{path / fmt.THUMBNAILS}: shape {thumbnails.shape} does not '
                       f'match the manifest')
    return thumbnails


def _read_index(path: Path, n: int, d: int, *, kind: str | None = None,
                mmap: bool = True) -> Any:
    """Read a FAISS index file that must hold ``n`` vectors of ``d`` dimensions.

    With ``mmap`` the bulk of the index stays in the file (read-only, paged in on demand): the
    inverted lists of IVF kinds (``IO_FLAG_MMAP``), the codes of flat kinds
    (``IO_FLAG_MMAP_IFC``); a kind that cannot be mapped is read into memory.
    """
    import faiss

    flags = 0
    if mmap:
        flags = faiss.IO_FLAG_MMAP if str(kind).startswith('ivf') else faiss.IO_FLAG_MMAP_IFC
    try:
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError:
            if not flags:
                raise
            index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise MapError(f'{path} is not a readable FAISS index: '
                       f'{str(exc).splitlines()[0]}') from None
    if index.ntotal != n or index.d != d:
        raise MapError(f'{path}: {index.ntotal} x {index.d}, the manifest says {n} x {d}')
    return index


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


def check_consistency(db: MapDB, sample: int = 512, seed: int = 0) -> None:
    """Raise :class:`MapError` when the map's files disagree with one another (``map verify``).

    Checksums prove that each file is what its writer wrote, not that the writer was right:
    here the descriptors must be unit length, an adaptation's descriptors the projection of the
    plain ones, and the searched index must find each sampled entry's own descriptor (every
    one for exact kinds, 95 % for approximate ones). ``sample`` entries are checked.
    """
    n = len(db)
    if n == 0:
        return
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, sample), replace=False))
    adapted = (db.manifest.get(adaptation.KEY) or {}).get('files') if db.projection is not \
        None and db.format_version < 2 else None
    searched_file = db.path / (adapted['adapted-descriptors'] if adapted else fmt.DESCRIPTORS)
    index_file = db.path / (adapted['adapted-index'] if adapted else fmt.INDEX)
    tolerance = 1e-3 if db.format_version < 2 else 5e-3      # v2 stores float16
    plain = np.asarray(db.descriptors[rows], np.float32)
    searched = np.asarray(db.index.descriptors[rows], np.float32) if adapted else plain
    for name, vectors in [(db.path / fmt.DESCRIPTORS, plain)] + (
            [(searched_file, searched)] if adapted else []):
        norms = np.linalg.norm(vectors, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > tolerance)
        if len(bad):
            raise MapError(f'{name}: descriptor {rows[bad[0]]} has length '
                           f'{norms[bad[0]]:.4f}, not 1')
    if adapted:
        want = db.projection.apply(plain)
        off = np.abs(want - searched).max(axis=1)
        if (off > 1e-4).any():
            i = int(np.argmax(off))
            raise MapError(f"{searched_file}: entry {rows[i]} is not the adaptation's "
                           f'projection of its descriptor (off by {off[i]:.3g}); run vpr-ros '
                           f'adapt again')
    # The best hit of each sampled descriptor must be the entry itself (or a copy of it),
    # scored on the descriptors: an exact index answers with its own vectors' scores.
    if db.index.exact:
        top = db.index.search(searched, 1)[0][:, 0]
        hit = np.asarray(db.index.descriptors[np.clip(top, 0, n - 1)], np.float32)
        score = np.where(top >= 0, (hit * searched).sum(axis=1), -np.inf)
    else:     # candidates are re-scored on the descriptors already; 8 widen the net
        score = db.index.search(searched, 8)[1][:, 0]
    missed = np.flatnonzero(score < (searched * searched).sum(axis=1) - 1e-3)
    allowed = 0 if db.index.exact else int(0.05 * len(rows))
    if len(missed) > allowed:
        raise MapError(f'{index_file}: the index does not find the own descriptor of '
                       f'{len(missed)} of {len(rows)} sampled entries (entry {rows[missed[0]]} '
                       f'first): it was not built from {searched_file.name}; rebuild the map')


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
