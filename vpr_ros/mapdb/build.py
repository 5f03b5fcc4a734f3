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

"""Build a map (``*.vprmap``) from a source: streamed, chunked, resumable, atomic.

The entries of a source are cut into chunks of ``chunk_size``. Each chunk is turned into
descriptors and thumbnails by :func:`~vpr_ros.mapdb.describe.extract_chunk`, a pure function
of (model, entries) (:mod:`vpr_ros.mapdb.describe`), and
saved in a work directory beside the output (``route.vprmap.partial/chunk-000000.npz``, each
written to a temporary name and renamed, so a chunk on disk is always complete). A build that
is interrupted and run again skips the finished chunks; the result is the same map, bit for
bit, because chunk and batch boundaries do not depend on where the build stopped.

When all chunks exist the map is assembled in a temporary directory beside the output
(descriptors and thumbnails streamed chunk by chunk, so memory stays bounded), the index is
built, ``manifest.json`` is written last, and the directory is renamed into place
(:func:`vpr_ros.files.staged_dir`).

One build of an output at a time: ``.route.vprmap.lock`` beside it is held (``flock``) for the
whole build, so a second ``build-map`` to the same ``--out`` is refused at once; every chunk
carries the key of its job, so chunks of another build are never mixed in. Temporary folders
that a killed build left are removed by the next build of the same output (the lock, the work
directory and the clean-up: :mod:`vpr_ros.mapdb.work_dir`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import hashlib
import json
import logging
import math
from pathlib import Path
import shutil
import time
from typing import Any, Sequence

import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.device import BATCH_HELP
from vpr_ros.errors import ConfigError, DataError, MapError
from vpr_ros.files import save_arrays, staged_dir, write_json
from vpr_ros.geo import route_length_m
from vpr_ros.mapdb import format as fmt
from vpr_ros.mapdb.adaptation import AdaptConfig
from vpr_ros.mapdb.describe import describe_chunks, model_device
from vpr_ros.mapdb.entry import Entry, SourceConfig, SourceReport
from vpr_ros.mapdb.index import build_index, IndexConfig
from vpr_ros.mapdb.sources import open_source
from vpr_ros.mapdb.work_dir import (bad_rows, build_lock, load_chunk, prepare_work_dir,
                                    remove_stale, work_dir_for)
from vpr_ros.models import AUTO_MODEL, AUTO_PRESETS, resolve_model

log = logging.getLogger(__name__)
MAX_LISTED_SKIPPED = 1000   # unreadable images named in the manifest (all are counted)


@dataclass(frozen=True)
class BuildConfig(Config):
    """How ``build-map`` turns a source into a map."""

    model: str = option(AUTO_MODEL, 'model: checkpoint path, YAML config or preset; auto: '
                        f'{AUTO_PRESETS[0][1]} for images of {AUTO_PRESETS[0][0]} rows or '
                        f'more (after resize_max), {AUTO_PRESETS[-1][1]} below')
    device: str = option('auto', 'torch device: auto, cpu, cuda, cuda:N')
    batch_size: int = option(0, f'images per forward pass; {BATCH_HELP} (larger batches '
                                'overflow its caches and run slower)', min=0)
    num_workers: int = option(0, 'DataLoader processes decoding images (0: in process)',
                              min=0)
    chunk_size: int = option(1024, 'entries per resumable chunk', min=1)
    resize_max: int = option(0, 'shrink images so the longer side is at most this before '
                                'the model (0: native size)', min=0)
    thumbnail_size: tuple[int, int] = option(
        (96, 128), "GeoWarp thumbnail (H, W) stored per entry; (0, 0): none. The model's "
        'input size (240, 320 for the default model) gives GeoWarp 15x20 real cells and the '
        "query's features from its descriptor pass, at 5x the map's bytes")
    source: SourceConfig = option(SourceConfig(), 'how the source is read')
    index: IndexConfig = option(IndexConfig(), 'FAISS index of the map')
    adapt: AdaptConfig = option(AdaptConfig(), 'descriptor adaptation learnt on the finished '
                                'map (vpr-ros adapt); method none: off')
    skip_bad: bool = option(False, 'leave out images that cannot be read (listed in the '
                                   'manifest, skipped_images) instead of stopping')

    def validate(self) -> None:
        h, w = self.thumbnail_size
        if (h == 0) != (w == 0) or h < 0 or w < 0 or (h and min(h, w) < 16):
            raise ConfigError(f'BuildConfig.thumbnail_size: {self.thumbnail_size} must be '
                              f'(0, 0) or at least (16, 16)')


def _job_key(report: SourceReport, fingerprint: str, config: BuildConfig, device: str) -> str:
    """Hash of everything the chunks depend on: a work dir of another job is not reused."""
    job = {
        'entries': [(e.name, e.lat, e.lon, e.alt, e.stamp_ns) for e in report.entries],
        'model': fingerprint, 'device': device, 'batch_size': config.batch_size,
        'chunk_size': config.chunk_size, 'resize_max': config.resize_max,
        'thumbnail_size': list(config.thumbnail_size),
    }
    return hashlib.sha256(json.dumps(job, default=str).encode()).hexdigest()


def _load_model(config: BuildConfig, model: Any):
    from vpr_ros.device import resolve_device

    if model is not None:
        return model
    from vpr_ros.models.checkpoints import load_model
    return load_model(config.model, device=str(resolve_device(config.device)))


def _save_model(model: Any, path: Path) -> None:
    from vpr_ros.models.checkpoints import save_checkpoint
    save_checkpoint(model, path)


def _write_entries_csv(path: Path, entries: Sequence[Entry]) -> None:
    import csv

    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['name', 'stamp_ns', 'heading_deg'])
        for e in entries:
            writer.writerow([e.name, '' if e.stamp_ns is None else e.stamp_ns,
                             '' if math.isnan(e.heading_deg) else repr(e.heading_deg)])


def extent(positions: np.ndarray) -> dict[str, Any]:
    """Bounding box (deg) and route length (m) of ``(N, 3)`` lat/lon/alt positions."""
    lat, lon = positions[:, 0], positions[:, 1]
    return {'lat_min': float(lat.min()), 'lat_max': float(lat.max()),
            'lon_min': float(lon.min()), 'lon_max': float(lon.max()),
            'route_length_m': route_length_m(lat, lon)}


def _describe_all(describe: Any, entries: Sequence[Entry], report: SourceReport, model: Any,
                  fingerprint: str, config: BuildConfig, device: str, out: Path,
                  progress: bool) -> tuple[Path, list[Path], str]:
    """Describe the chunks not in the work dir yet, each saved as soon as it is finished.

    ``describe`` is :func:`describe_chunks` or the Ray describer (same arguments; it may
    yield the chunks in any order). Returns the work dir, every chunk path and the job key.
    """
    from tqdm import tqdm

    work = work_dir_for(out)
    key = _job_key(report, fingerprint, config, device)
    prepare_work_dir(work, key)

    n, size = len(entries), config.chunk_size
    chunks = [work / f'chunk-{i:06d}.npz' for i in range(math.ceil(n / size))]
    done = sum(min(size, n - i * size) for i, p in enumerate(chunks) if p.is_file())
    if done:
        log.info('resuming %s: %d of %d entries already described', work, done, n)
    started = time.perf_counter()
    pending = [i for i, path in enumerate(chunks) if not path.is_file()]
    with tqdm(total=n, initial=done, unit='img', desc='build-map', disable=not progress) as bar:
        for i, result in describe(model, entries, pending, chunk_size=size,
                                  batch_size=config.batch_size,
                                  resize_max=config.resize_max,
                                  thumbnail_size=config.thumbnail_size,
                                  num_workers=config.num_workers,
                                  skip_bad=config.skip_bad):
            expected = min(size, n - i * size)
            if len(result.descriptors) + len(result.bad) != expected:
                raise DataError(f'chunk {i}: described {len(result.descriptors)} of '
                                f'{expected} images')
            for row, reason in sorted(result.bad.items()):
                log.warning('skipped %s: %s', entries[i * size + row].name, reason)
            rows = sorted(result.bad)
            save_arrays(chunks[i], descriptors=result.descriptors,
                        thumbnails=result.thumbnails, job=np.array(key),
                        bad_rows=np.array(rows, np.int64),
                        bad_reasons=np.array([result.bad[r] for r in rows], np.str_))
            bar.update(expected)
    elapsed = time.perf_counter() - started
    if n > done:
        log.info('described %d images in %.1f s (%.1f images/s)', n - done, elapsed,
                 (n - done) / max(elapsed, 1e-9))
    return work, chunks, key


def build_map(source: str | Path | SourceReport, out: str | Path,
              config: BuildConfig | None = None, *, model: Any = None,
              overwrite: bool = False, progress: bool = True, ray: str | None = None,
              ray_actors: int = 0, adapt_queries: str | Path | None = None) -> Path:
    """Build ``out`` (a ``*.vprmap`` directory) from a source; resume an interrupted build.

    Args:
        source: a source path (VG folder, CSV, bag) or an already-read :class:`SourceReport`.
        out: the map directory to create.
        config: build settings; ``config.model`` is loaded unless ``model`` is given.
        model: an already loaded ``DescriptorModel`` (skips ``config.model``).
        overwrite: replace an existing ``out``.
        progress: show a tqdm bar (images/s).
        ray: describe the chunks on a Ray cluster (:mod:`vpr_ros.mapdb.distributed`):
            ``'local'`` starts one on this machine, ``'auto'`` or ``'HOST:PORT'`` connects
            to a running one; None (default) describes in this process.
        ray_actors: Ray actors describing at once (0: one per cluster CPU, or per GPU).
        adapt_queries: a second drive of the area with positions (any source): its frames
            decide the adaptation instead of pseudo-queries of held-out places, as
            ``vpr-ros adapt --queries`` (read before the build starts, so a bad one fails
            at once).

    Returns:
        The path of the finished map.
    """
    config = config or BuildConfig()
    out = Path(out)
    try:
        with build_lock(out):
            remove_stale(out)
            return _build_locked(source, out, config, model, overwrite, progress, ray,
                                 ray_actors, adapt_queries)
    except OSError as exc:  # read-only folder, disk full, ...: name the file, no traceback
        raise MapError(f'cannot build {out}: {exc.strerror or exc}'
                       + (f': {exc.filename}' if exc.filename else '')) from None


def _build_locked(source: str | Path | SourceReport, out: Path, config: BuildConfig,
                  model: Any, overwrite: bool, progress: bool, ray: str | None = None,
                  ray_actors: int = 0, adapt_queries: str | Path | None = None) -> Path:
    if out.exists() and not overwrite:
        raise MapError(f'{out} exists already, not overwriting (use --overwrite)')
    report = source if isinstance(source, SourceReport) else open_source(source, config.source)
    drive = None
    if adapt_queries is not None:
        if config.adapt.method == 'none':
            raise ConfigError('a second drive (adapt_queries) decides the adaptation, which '
                              'is switched off (adapt method none)')
        # The drive is read whole and in any format: the map's thinning and kind are the map's.
        drive = open_source(adapt_queries, config.source.replace(kind='auto',
                                                                 min_spacing_m=0.0)).entries
    entries = report.entries
    if report.skipped:
        log.info('source %s: %d entries, skipped %s', report.path, len(entries), report.skipped)
    if model is None:
        # The map records the preset auto chose: a rebuild or fine-tune reuses it.
        config = config.replace(model=resolve_model(config.model, entries,
                                                    resize_max=config.resize_max))
    model_spec = config.model if model is None else f'<{type(model).__name__} object>'
    model = _load_model(config, model)
    fingerprint = str(model.fingerprint())
    with contextlib.ExitStack() as cluster:
        describe, device = describe_chunks, str(model_device(model))
        if ray is not None:   # the chunks are described by Ray actors, in any order
            from vpr_ros.mapdb.distributed import ray_describer
            describe, device = cluster.enter_context(ray_describer(
                ray, model, device=config.device, num_workers=config.num_workers,
                chunk_size=config.chunk_size, thumbnail_size=config.thumbnail_size,
                actors=ray_actors))
        work, chunks, key = _describe_all(describe, entries, report, model, fingerprint,
                                          config, device, out, progress)

    with staged_dir(out, overwrite=overwrite) as tmp:
        manifest_fields = _assemble(tmp, chunks, report, model, fingerprint, config,
                                    model_spec, key)
        write_json(tmp / fmt.MANIFEST, fmt.make_manifest(tmp, **manifest_fields))
    shutil.rmtree(work, ignore_errors=True)
    log.info('map written to %s (%d entries)', out, manifest_fields['entries'])
    if config.thumbnail_size[0] > 0:
        from vpr_ros.mapdb.database import MapDB
        from vpr_ros.runtime.map_features import attach_local_features

        attach_local_features(MapDB.open(out, fast=True), model)
    if config.adapt.method != 'none':
        _adapt_built_map(out, config, model, entries, drive)
    return out


def _adapt_built_map(out: Path, config: BuildConfig, model: Any, entries: Sequence[Entry],
                     drive: Sequence[Entry] | None = None) -> None:
    """Fit the map's adaptation; a map it cannot adapt stays plain, with the reason logged.

    The validation pseudo-queries are made from the source images (found by entry name), at
    the camera's resolution, as the queries will be; a second drive's frames (``drive``)
    decide instead when given.
    """
    from vpr_ros.mapdb.adaptation import adapt_map
    from vpr_ros.mapdb.database import MapDB
    from vpr_ros.mapdb.sources import entry_images

    try:
        db = MapDB.open(out, fast=True)
        images = None
        if drive is None:
            by_name = {e.name: e for e in entries}
            images = entry_images(db, [by_name[n] for n in db.names], config.resize_max)
        choice = adapt_map(db, config.adapt, model=model, images=images, drive=drive)
    except (DataError, MapError) as exc:
        log.warning('%s: no descriptor adaptation (%s); the map uses plain descriptors', out,
                    exc)
        return
    log.info('%s: adaptation %s', out, choice.report['reason'])


def _assemble(tmp: Path, chunks: Sequence[Path], report: SourceReport, model: Any,
              fingerprint: str, config: BuildConfig, model_spec: str,
              key: str) -> dict[str, Any]:
    """Write every file of the map except the manifest; return the manifest's fields."""
    size = config.chunk_size
    bad = {c * size + r: reason for c, path in enumerate(chunks)
           for r, reason in bad_rows(path).items()}
    skipped = []
    if bad and not config.skip_bad:   # chunks of an earlier --skip-bad run of this job
        first = min(bad)
        raise DataError(f'{report.entries[first].name}: {bad[first]} (build-map --skip-bad '
                        f'leaves out images that cannot be read)')
    if bad:
        skipped = [{'name': report.entries[i].name, 'error': bad[i]}
                   for i in sorted(bad)[:MAX_LISTED_SKIPPED]]
        report = SourceReport(report.kind, report.path,
                              [e for i, e in enumerate(report.entries) if i not in bad],
                              {**report.skipped, 'unreadable_image': len(bad)})
    entries = report.entries
    if not entries:
        raise DataError(f'none of the {len(bad)} images of {report.path} could be read')
    n, d = len(entries), int(model.descriptor_dim)
    th, tw = config.thumbnail_size
    desc = np.lib.format.open_memmap(tmp / fmt.DESCRIPTORS, mode='w+', dtype=np.float32,
                                     shape=(n, d))
    thumbs = (np.lib.format.open_memmap(tmp / fmt.THUMBNAILS, mode='w+', dtype=np.uint8,
                                        shape=(n, th, tw, 3)) if th else None)
    row = 0
    for path in chunks:
        part = load_chunk(path, key)
        if not len(part.descriptors):
            continue
        desc[row:row + len(part.descriptors)] = part.descriptors
        if thumbs is not None:
            thumbs[row:row + len(part.descriptors)] = part.thumbnails
        row += len(part.descriptors)
    if row != n:
        raise MapError(f'chunks in {chunks[0].parent} hold {row} entries, expected {n}')
    desc.flush()
    if thumbs is not None:
        thumbs.flush()
        del thumbs
    positions = np.array([[e.lat, e.lon, e.alt] for e in entries], np.float64).reshape(n, 3)
    np.save(tmp / fmt.POSITIONS, positions, allow_pickle=False)
    _write_entries_csv(tmp / fmt.ENTRIES, entries)
    import faiss

    index, index_info = build_index(desc, config.index)
    faiss.write_index(index, str(tmp / fmt.INDEX))
    del desc, index
    _save_model(model, tmp / fmt.MODEL)
    alts = positions[:, 2]
    finite = alts[np.isfinite(alts)]
    origin = {
        'lat': float((positions[:, 0].min() + positions[:, 0].max()) / 2),
        'lon': float((positions[:, 1].min() + positions[:, 1].max()) / 2),
        'alt': float(np.median(finite)) if finite.size else 0.0,
    }
    config_dict = getattr(model, 'config', None)
    return {
        'entries': n,
        'model': {'config': config_dict.to_dict() if hasattr(config_dict, 'to_dict') else {},
                  'fingerprint': fingerprint, 'file': fmt.MODEL},
        'descriptors': {'dim': d, 'dtype': 'float32', 'normalised': 'l2'},
        'index': index_info,
        'origin': origin,
        'altitude_known': bool(finite.size == n),
        'extent': extent(positions),
        'thumbnails': ({'height': th, 'width': tw, 'bytes_per_entry': th * tw * 3,
                        'file': fmt.THUMBNAILS} if th else None),
        'source': report.summary(),
        **({'skipped_images': skipped} if skipped else {}),
        'build': {**{k: v for k, v in config.to_dict().items() if k != 'num_workers'},
                  'model': model_spec},
    }
