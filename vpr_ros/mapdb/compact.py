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

"""Compact maps (format v2), and maps made from maps: convert, merge, append.

A v1 map spends most of its bytes on what a robot rarely reads: 1280-D float32 descriptors,
their float32 copy in a flat index and raw 96x128 RGB thumbnails (about 42 KB per entry, and
11 KB more of stored GeoWarp features). Format v2 keeps per entry:

- the descriptor **projected** (``descriptors.npy``, ``(N, d)`` float16, unit rows) by the
  map's own projection: the adaptation chosen at build time (``pcaw``/``lw``, Jégou and Chum,
  ECCV 2012; Radenović et al., arXiv 1711.02512) when the map has one, else a rotation onto
  the top ``COMPACT_DIM`` principal directions (:func:`~vpr_ros.mapdb.adaptation.fit_pca`),
  which ranks as the plain descriptors do. Queries go through the same projection
  (``MapDB.search``);
- a flat index of float16 codes (FAISS ``SQfp16``: exact on the stored values) or, above
  ``AUTO_FLAT_MAX`` entries, IVF-PQ codes as before;
- the thumbnail as JPEG (``thumbnails-jpeg.npy`` + ``thumbnails-offsets.npy``), decoded on
  use: GeoWarp's features of a candidate are computed from it (cached), image-mode
  re-ranking, ``fit-geowarp``, ``calibrate`` and ``export`` read it as before. The float16
  features (11 KB per entry with the default model) are kept only with ``keep_features``.

Everything is written to a temporary folder beside the output, ``manifest.json`` last, then
renamed into place, so a map is always old or new, never half written.

:func:`merge_maps` joins maps of one model and one projection; :func:`append_to_map` adds a
new drive to a map, describing only the new images.

Why one module of this size: convert, merge and append all end in the same v2 writer
(:func:`write_compact`) and the same projection and thumbnail handling; apart they would
share most of their code through imports of private helpers.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
import shutil
from typing import Any, Sequence

import cv2
import numpy as np

from vpr_ros.errors import DataError, MapError
from vpr_ros.faiss_config import configure_faiss
from vpr_ros.files import save_array, staged_dir, write_json
from vpr_ros.mapdb import adaptation
from vpr_ros.mapdb import format as fmt
from vpr_ros.mapdb.database import JpegThumbnails, MapDB
from vpr_ros.mapdb.index import build_index, IndexConfig, resolve_kind
from vpr_ros.vectors import unit_rows

log = logging.getLogger(__name__)

#: Stored descriptor size of a map that has no adaptation projection of its own.
COMPACT_DIM = 256
JPEG_QUALITY = 90
PROJECTION = 'projection.npz'
THUMBS_JPEG = 'thumbnails-jpeg.npy'
THUMBS_OFFSETS = 'thumbnails-offsets.npy'
_LOCAL_FEATURES = 'local_features'
# Manifest keys the writer sets itself; every other key of a source map is carried over.
_OWN_KEYS = ('format', 'format_version', 'package_version', 'created', 'files', 'entries',
             'descriptors', 'index', 'origin', 'altitude_known', 'extent', 'thumbnails',
             _LOCAL_FEATURES)


def _unit_f16(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Rows made unit length in float32, then stored as float16."""
    out = np.empty(x.shape, np.float16)
    for start in range(0, len(x), chunk):
        out[start:start + chunk] = unit_rows(x[start:start + chunk]).astype(np.float16)
    return out


def encode_jpeg(thumbnails: Any, quality: int = JPEG_QUALITY,
                chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """JPEG-encode ``(N, h, w, 3)`` RGB thumbnails: ``(bytes uint8, offsets (N + 1) int64)``."""
    parts, sizes = [], [0]
    for start in range(0, len(thumbnails), chunk):
        for image in np.asarray(thumbnails[start:start + chunk]):
            ok, data = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
            if not ok:
                raise DataError('OpenCV could not JPEG-encode a thumbnail')
            parts.append(data.reshape(-1))
            sizes.append(len(parts[-1]))
    data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return data.astype(np.uint8, copy=False), np.cumsum(sizes, dtype=np.int64)


def build_compact_index(descriptors: np.ndarray, config: IndexConfig,
                        ) -> tuple[Any, dict[str, Any]]:
    """Index of float16 descriptors: flat as FAISS ``SQfp16`` (half of ``Flat``), else as v1."""
    import faiss

    configure_faiss()
    n, d = descriptors.shape
    if resolve_kind(config.kind, n) != 'flat' or config.pca_dim:
        return build_index(descriptors, config)
    index = faiss.index_factory(d, 'SQfp16', faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(descriptors[:min(n, 1024)], np.float32))
    for start in range(0, n, 65536):
        index.add(np.ascontiguousarray(descriptors[start:start + 65536], np.float32))
    return index, {'kind': 'flat', 'factory': 'SQfp16', 'metric': 'inner_product'}


def _origin(positions: np.ndarray) -> tuple[dict[str, float], bool]:
    alts = positions[:, 2]
    finite = alts[np.isfinite(alts)]
    return ({'lat': float((positions[:, 0].min() + positions[:, 0].max()) / 2),
             'lon': float((positions[:, 1].min() + positions[:, 1].max()) / 2),
             'alt': float(np.median(finite)) if finite.size else 0.0},
            bool(finite.size == len(positions)))


def write_compact(out: str | Path, *, descriptors: np.ndarray, positions: np.ndarray,
                  entries: Sequence[Sequence[str]], projection: adaptation.Projection,
                  model_file: Path, manifest: dict[str, Any], index_config: IndexConfig,
                  thumbnails: tuple[np.ndarray, np.ndarray] | None = None,
                  thumbnail_size: tuple[int, int] = (0, 0),
                  features: np.ndarray | None = None, extra_files: Sequence[Path] = (),
                  overwrite: bool = False, index: Any = None,
                  index_info: dict[str, Any] | None = None) -> Path:
    """Write a v2 map atomically from its parts; return its path.

    Args:
        out: the ``*.vprmap`` directory to create.
        descriptors: ``(N, d)`` stored (projected) descriptors, any float dtype.
        positions: ``(N, 3)`` WGS84 lat, lon, alt (NaN: unknown).
        entries: ``(name, stamp_ns, heading_deg)`` text of each entry (``entries.csv``).
        projection: maps the model's descriptors to the stored ones (applied to queries).
        model_file: the model checkpoint the descriptors came from (copied).
        manifest: keys carried over (``model``, ``source``, ``build``, ``calibration``, ...).
        index_config: how the index is built (when ``index`` is not given).
        thumbnails: JPEG ``(bytes, offsets)`` (:func:`encode_jpeg`) or None.
        thumbnail_size: ``(h, w)`` of the thumbnails.
        features: ``(N, C, h, w)`` float16 GeoWarp features to keep, with
            ``manifest['local_features']`` describing them; None: computed on use.
        extra_files: files the carried keys name (GeoWarp weights, ...), copied as they are.
        overwrite: replace an existing ``out``.
        index: a filled FAISS index over ``descriptors`` (append), with ``index_info``.
        index_info: the manifest record of ``index``.
    """
    import faiss

    from vpr_ros.mapdb.build import extent

    out = Path(out)
    if out.exists() and not overwrite:
        raise MapError(f'{out} exists already, not overwriting (use --overwrite)')
    n, d = descriptors.shape
    if positions.shape != (n, 3) or len(entries) != n:
        raise MapError(f'write_compact: {n} descriptors, {len(positions)} positions and '
                       f'{len(entries)} entries')
    if projection.dim != d:
        raise MapError(f'write_compact: the projection gives {projection.dim}-D, the stored '
                       f'descriptors have {d}')
    if n == 0:
        raise MapError('write_compact: a map needs at least one entry')
    with staged_dir(out, overwrite=overwrite) as tmp:
        stored = _unit_f16(descriptors)
        save_array(tmp / fmt.DESCRIPTORS, stored)
        positions = np.asarray(positions, np.float64)
        save_array(tmp / fmt.POSITIONS, positions)
        with open(tmp / fmt.ENTRIES, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            writer.writerow(['name', 'stamp_ns', 'heading_deg'])
            writer.writerows(entries)
        with open(tmp / PROJECTION, 'wb') as f:
            np.savez(f, mean=projection.mean, matrix=projection.matrix)
        if index is None:
            index, index_info = build_compact_index(stored, index_config)
        faiss.write_index(index, str(tmp / fmt.INDEX))
        del index
        shutil.copyfile(model_file, tmp / fmt.MODEL)
        for path in extra_files:
            shutil.copyfile(path, tmp / path.name)
        fields = {k: v for k, v in manifest.items() if k not in _OWN_KEYS}
        origin, altitude_known = _origin(positions)
        fields.update({
            'entries': n,
            'descriptors': {'dim': d, 'dtype': 'float16', 'normalised': 'l2',
                            'input_dim': projection.input_dim,
                            'projection': {'method': projection.method, 'file': PROJECTION}},
            'index': index_info, 'origin': origin, 'altitude_known': altitude_known,
            'extent': extent(positions), 'thumbnails': None})
        if thumbnails is not None:
            data, offsets = thumbnails
            if offsets.shape != (n + 1,):
                raise MapError(f'write_compact: {len(offsets) - 1} thumbnails for {n} entries')
            save_array(tmp / THUMBS_JPEG, np.asarray(data, np.uint8))
            save_array(tmp / THUMBS_OFFSETS, np.asarray(offsets, np.int64))
            h, w = thumbnail_size
            fields['thumbnails'] = {'height': int(h), 'width': int(w), 'encoding': 'jpeg',
                                    'quality': JPEG_QUALITY,
                                    'bytes_per_entry': round(len(data) / n),
                                    'file': THUMBS_JPEG, 'offsets_file': THUMBS_OFFSETS}
        if features is not None:
            record = dict(manifest[_LOCAL_FEATURES])
            save_array(tmp / record['file'], np.asarray(features, np.float16))
            fields[_LOCAL_FEATURES] = {**record, 'shape': list(features.shape)}
        write_json(tmp / fmt.MANIFEST, fmt.make_manifest(tmp, version=2, **fields))
    return out


def _entry_rows(db: MapDB) -> list[list[str]]:
    with open(db.path / fmt.ENTRIES, newline='', encoding='utf-8') as f:
        rows = list(csv.reader(f))
    if len(rows) != len(db) + 1:
        raise MapError(f'{db.path / fmt.ENTRIES}: {len(rows) - 1} rows, expected {len(db)}')
    header = rows[0]
    cols = [header.index(c) if c in header else None
            for c in ('name', 'stamp_ns', 'heading_deg')]
    return [[row[c] if c is not None else '' for c in cols] for row in rows[1:]]


def _extra_files(db: MapDB, skip: set[str]) -> list[Path]:
    """Files of ``db`` its carried manifest keys name (GeoWarp weights, exports, ...)."""
    return [db.path / name for name in db.manifest['files'] if name not in skip]


def _jpeg_of(db: MapDB) -> tuple[np.ndarray, np.ndarray] | None:
    thumbs = db._thumbnails
    if thumbs is None:
        return None
    if isinstance(thumbs, JpegThumbnails):
        return np.asarray(thumbs.data), np.asarray(thumbs.offsets)
    return encode_jpeg(thumbs)


def _thumb_size(db: MapDB) -> tuple[int, int]:
    t = db.manifest.get('thumbnails') or {}
    return int(t.get('height', 0)), int(t.get('width', 0))


def _core_files(db: MapDB) -> set[str]:
    """Files of ``db`` a conversion rewrites (not carried over as they are)."""
    m = db.manifest
    names = {fmt.DESCRIPTORS, fmt.POSITIONS, fmt.ENTRIES, fmt.INDEX, fmt.THUMBNAILS, fmt.MODEL,
             PROJECTION, THUMBS_JPEG, THUMBS_OFFSETS}
    names |= set(((m.get(adaptation.KEY) or {}).get('files') or {}).values())
    if m.get(_LOCAL_FEATURES):
        names.add(m[_LOCAL_FEATURES].get('file'))
    return names


def _index_config(db: MapDB) -> IndexConfig:
    build = (db.manifest.get('build') or {}).get('index') or {}
    return IndexConfig.from_dict(build, where='build.index')


def map_projection(db: MapDB, dim: int = COMPACT_DIM) -> adaptation.Projection:
    """Return the projection a v1 map gets in v2: its adaptation, else :func:`fit_pca`."""
    if db.projection is not None:
        return db.projection
    return adaptation.fit_pca(db.descriptors, dim)


def convert_map(path: str | Path, out: str | Path | None = None, *,
                dim: int = COMPACT_DIM, keep_features: bool = False,
                projection: adaptation.Projection | None = None) -> Path:
    """Write the compact (v2) form of a v1 map; ``out`` None replaces it (atomically).

    ``projection``: store the descriptors with this one instead (maps that are to be merged
    need the same projection, e.g. that of a map of the whole area, :func:`map_projection`).
    """
    path = Path(path)
    db = MapDB.open(path)
    if db.format_version >= 2:
        raise MapError(f'{path} is already format v{db.format_version}')
    if projection is None:
        projection = map_projection(db, dim)
    elif projection.input_dim != db.descriptor_dim:
        raise MapError(f'the projection takes {projection.input_dim}-D descriptors, {path} '
                       f'has {db.descriptor_dim}-D ones')
    stored = projection.apply(np.asarray(db.descriptors))
    manifest = dict(db.manifest)
    record = manifest.get(adaptation.KEY)
    if record:
        manifest[adaptation.KEY] = {k: v for k, v in record.items()
                                    if k not in ('files', 'index')}
    features = None
    if keep_features and manifest.get(_LOCAL_FEATURES):
        from vpr_ros.runtime.map_features import load_local_features
        features = load_local_features(db)
    target = Path(out) if out is not None else path
    result = write_compact(target, descriptors=stored, positions=np.asarray(db.positions(
        np.arange(len(db)))), entries=_entry_rows(db), projection=projection,
        model_file=path / fmt.MODEL, manifest=manifest, index_config=_index_config(db),
        thumbnails=_jpeg_of(db), thumbnail_size=_thumb_size(db), features=features,
        extra_files=_extra_files(db, _core_files(db)), overwrite=out is None)
    log.info('%s: format v2 written to %s', path, result)
    return result


def _same_projection(a: MapDB, b: MapDB) -> bool:
    pa, pb = a.projection, b.projection
    if pa is None or pb is None:
        return pa is None and pb is None
    return (pa.method == pb.method and np.array_equal(pa.mean, pb.mean)
            and np.array_equal(pa.matrix, pb.matrix))


def check_mergeable(a: MapDB, b: MapDB) -> None:
    """Raise :class:`MapError` unless ``b`` can join ``a``: one model, format and projection."""
    fa, fb = a.manifest['model'].get('fingerprint'), b.manifest['model'].get('fingerprint')
    if fa != fb:
        raise MapError(f'{a.path} and {b.path} were built with different models ({fa} vs '
                       f'{fb}): their descriptors cannot be compared; rebuild one with the '
                       f"other's model (--model {a.path / fmt.MODEL})")
    if a.format_version != b.format_version:
        raise MapError(f'{a.path} is format v{a.format_version}, {b.path} v'
                       f'{b.format_version}: convert the v1 map first (vpr-ros map convert)')
    if not _same_projection(a, b):
        raise MapError(f'{a.path} and {b.path} store their descriptors with different '
                       f'projections (adaptation or v2 reduction): convert both with one '
                       f'(vpr-ros map convert --projection-from MAP), or build the union')
    if _thumb_size(a) != _thumb_size(b):
        raise MapError(f'{a.path} has thumbnails {_thumb_size(a)}, {b.path} '
                       f'{_thumb_size(b)}: GeoWarp needs one size')


def merge_maps(paths: Sequence[str | Path], out: str | Path, *,
               overwrite: bool = False) -> Path:
    """Join maps of one model and projection into ``out`` (v2 maps give v2, v1 give v1).

    Entries are concatenated in the order given; the index is built anew with the first map's
    index settings, so the result equals a build of the union (same model and projection).
    """
    dbs = [MapDB.open(p) for p in paths]
    if len(dbs) < 2:
        raise MapError('merge needs at least two maps')
    for other in dbs[1:]:
        check_mergeable(dbs[0], other)
    first = dbs[0]
    stored = np.concatenate([np.asarray(db.descriptors) for db in dbs])
    positions = np.concatenate([db.positions(np.arange(len(db))) for db in dbs])
    rows = [row for db in dbs for row in _entry_rows(db)]
    jpegs = [_jpeg_of(db) for db in dbs]
    thumbs = None
    if all(j is not None for j in jpegs):
        thumbs = _concat_jpeg(jpegs)
    manifest = {k: v for k, v in first.manifest.items()
                if k not in ('calibration', 'geowarp', 'onnx', 'skipped_images')}
    manifest['source'] = {'kind': 'merge', 'path': ', '.join(str(p) for p in paths),
                          'maps': [db.manifest.get('source', {}) for db in dbs]}
    if first.format_version < 2:
        return _write_v1_union(dbs, Path(out), stored, positions, rows, manifest, overwrite)
    return write_compact(out, descriptors=stored, positions=positions, entries=rows,
                         projection=first.projection, model_file=first.path / fmt.MODEL,
                         manifest=manifest, index_config=_index_config(first),
                         thumbnails=thumbs, thumbnail_size=_thumb_size(first),
                         overwrite=overwrite)


def _concat_jpeg(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate([d for d, _ in parts])
    offsets, base = [np.zeros(1, np.int64)], 0
    for d, o in parts:
        offsets.append(o[1:] + base)
        base += len(d)
    return data, np.concatenate(offsets)


def _write_v1_union(dbs: Sequence[MapDB], out: Path, descriptors: np.ndarray,
                    positions: np.ndarray, rows: list[list[str]], manifest: dict[str, Any],
                    overwrite: bool) -> Path:
    """Write a v1 map of plain descriptors (merge of v1 maps without adaptation)."""
    import faiss

    from vpr_ros.mapdb.build import extent

    first = dbs[0]
    if first.projection is not None:
        raise MapError(f'{first.path} has an adaptation: convert the maps to v2 with one '
                       f'projection (vpr-ros map convert --projection-from MAP), then merge')
    if out.exists() and not overwrite:
        raise MapError(f'{out} exists already, not overwriting (use --overwrite)')
    with staged_dir(out, overwrite=overwrite) as tmp:
        save_array(tmp / fmt.DESCRIPTORS, np.asarray(descriptors, np.float32))
        save_array(tmp / fmt.POSITIONS, positions)
        with open(tmp / fmt.ENTRIES, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            writer.writerow(['name', 'stamp_ns', 'heading_deg'])
            writer.writerows(rows)
        index, info = build_index(descriptors, _index_config(first))
        faiss.write_index(index, str(tmp / fmt.INDEX))
        if first.manifest.get('thumbnails'):
            save_array(tmp / fmt.THUMBNAILS, np.concatenate(
                [np.asarray(db._thumbnails) for db in dbs]))
        features = [db.manifest.get(_LOCAL_FEATURES) for db in dbs]
        if all(features):
            from vpr_ros.runtime.map_features import load_local_features
            parts = [load_local_features(db) for db in dbs]
            if all(p is not None for p in parts):
                joined = np.concatenate(parts)
                name = f'{features[0]["file"].rsplit("-", 1)[0]}-merged.npy'
                save_array(tmp / name, joined)
                manifest[_LOCAL_FEATURES] = {**features[0], 'file': name,
                                             'shape': list(joined.shape)}
            else:
                manifest.pop(_LOCAL_FEATURES, None)
        else:
            manifest.pop(_LOCAL_FEATURES, None)
        shutil.copyfile(first.path / fmt.MODEL, tmp / fmt.MODEL)
        origin, altitude_known = _origin(positions)
        fields = {k: v for k, v in manifest.items() if k not in _OWN_KEYS}
        fields.pop(adaptation.KEY, None)
        if manifest.get(_LOCAL_FEATURES):
            fields[_LOCAL_FEATURES] = manifest[_LOCAL_FEATURES]
        fields.update({'entries': len(descriptors), 'descriptors': first.manifest['descriptors'],
                       'index': info, 'origin': origin, 'altitude_known': altitude_known,
                       'extent': extent(positions),
                       'thumbnails': first.manifest.get('thumbnails')})
        write_json(tmp / fmt.MANIFEST, fmt.make_manifest(tmp, version=1, **fields))
    return out


def append_to_map(path: str | Path, source: Any, *, model: Any = None,
                  batch_size: int = 0, out: str | Path | None = None) -> Path:
    """Add the entries of ``source`` (a new drive) to a v2 map; old entries are not described.

    The new images are described with the map's model and projection and appended; the index
    gets the new vectors added (IVF keeps its trained quantiser). ``out`` None replaces the
    map atomically. Returns the path of the result.
    """
    import faiss

    from vpr_ros.mapdb.describe import describe_chunks
    from vpr_ros.mapdb.entry import SourceConfig, SourceReport
    from vpr_ros.mapdb.sources import open_source

    path = Path(path)
    db = MapDB.open(path)
    if db.format_version < 2:
        raise MapError(f'{path} is format v1: convert it first (vpr-ros map convert), or '
                       f'build the map again with the new drive')
    report = source if isinstance(source, SourceReport) else open_source(
        source, SourceConfig.from_dict((db.manifest.get('build') or {}).get('source') or {},
                                       where='build.source'))
    entries = report.entries
    if not entries:
        raise DataError(f'{report.path} has no entries to append')
    model = model if model is not None else db.load_model('cpu')
    from vpr_ros.mapdb.database import check_model
    check_model(path, db.manifest, model)
    size = _thumb_size(db)
    resize_max = int((db.manifest.get('build') or {}).get('resize_max') or 0)
    (_, result), = describe_chunks(model, entries, [0], chunk_size=len(entries),
                                   batch_size=batch_size, resize_max=resize_max,
                                   thumbnail_size=size)
    new = db.projection.apply(result.descriptors)
    stored = np.concatenate([np.asarray(db.descriptors, np.float32), _unit_f16(new)])
    index = faiss.read_index(str(path / fmt.INDEX))   # in memory: it grows
    index.add(np.ascontiguousarray(_unit_f16(new), np.float32))
    positions = np.concatenate([db.positions(np.arange(len(db))), np.array(
        [[e.lat, e.lon, e.alt] for e in entries], np.float64)])
    rows = _entry_rows(db) + [[e.name, '' if e.stamp_ns is None else str(e.stamp_ns),
                               '' if np.isnan(e.heading_deg) else repr(e.heading_deg)]
                              for e in entries]
    thumbs = None
    old = _jpeg_of(db)
    if old is not None:
        thumbs = _concat_jpeg([old, encode_jpeg(result.thumbnails)])
    manifest = dict(db.manifest)
    manifest['source'] = {**(db.manifest.get('source') or {}),
                          'appended': [*((db.manifest.get('source') or {}).get('appended')
                                         or []), report.summary()]}
    target = Path(out) if out is not None else path
    return write_compact(target, descriptors=stored, positions=positions, entries=rows,
                         projection=db.projection, model_file=path / fmt.MODEL,
                         manifest=manifest, index_config=_index_config(db),
                         thumbnails=thumbs, thumbnail_size=size,
                         extra_files=_extra_files(db, _core_files(db)),
                         overwrite=out is None, index=index, index_info=db.manifest['index'])


__all__ = ['append_to_map', 'build_compact_index', 'check_mergeable', 'convert_map',
           'COMPACT_DIM', 'encode_jpeg', 'map_projection', 'merge_maps', 'write_compact']
