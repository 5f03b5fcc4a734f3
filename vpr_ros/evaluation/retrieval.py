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

"""Retrieval evaluation of a descriptor model on a labelled dataset (``vpr-ros eval``).

The metric of Gambino, Pierro, Grillo, "Visual Geo-Localization" (student project report,
"Metric adopted") and of GeoWarp (Berton et al., "Viewpoint Invariant Dense Matching for Visual
Geolocalization", ICCV 2021, arXiv 2109.09827, §4 "Datasets and metric"), computed the way the
deep visual geo-localization benchmark's ``test.py`` does (Berton et al., CVPR 2022, arXiv
2204.03444): describe the database, then the queries; search the query descriptors in an exact
``faiss.IndexFlatL2`` for ``max(recall_values)`` neighbours; score cumulative recall@N over
*all* queries with :mod:`vpr_ros.evaluation.recall`.

Layouts:
    - ``vg``: two folders of images named ``@utm_east@utm_north@...@.jpg`` (sorted, recursive);
      positives are database images within ``positive_dist_threshold`` m (inclusive). Only
      east/north are used, as in the benchmark; names that carry zones must agree on one.
    - ``vprbench``: a folder with ``ref/`` (database), ``query/`` and the ground truth as a
      ``ground_truth.csv`` (``query,ref_matches``), or the upstream pickled ``.npy`` that is
      read only with ``allow_pickle``.

Why one module of this size: the two dataset layouts, the protocol and its result are one
measurement and are read together; recall itself is :mod:`vpr_ros.evaluation.recall`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
import math
from pathlib import Path
import time
from typing import Any, Sequence

import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.device import BATCH_HELP, forward_batch, read_step
from vpr_ros.errors import ConfigError, DataError
from vpr_ros.evaluation.recall import (DEFAULT_RECALL_VALUES, load_vprbench_csv,
                                       load_vprbench_npy, positives_within,
                                       recall_from_positives, RecallResult)
from vpr_ros.faiss_config import configure_faiss
from vpr_ros.images import IMAGE_SUFFIXES
from vpr_ros.mapdb.entry import Entry, FileImage
from vpr_ros.mapdb.sources import parse_vg_name
from vpr_ros.models import AUTO_MODEL, AUTO_PRESETS, resolve_model

log = logging.getLogger(__name__)

LAYOUTS = ('auto', 'vg', 'vprbench')
CSV_GROUND_TRUTH = 'ground_truth.csv'
_NO_ZONE = '?'  # VG names without a zone: the protocol needs only east/north


@dataclass(frozen=True)
class RetrievalEvalConfig(Config):
    """How ``vpr-ros eval`` scores a model (defaults: the benchmark protocol)."""

    layout: str = option('auto', 'dataset layout; auto: query/+ref/ is VPR-Bench, '
                                 'database/+queries/ or two folders is VG', choices=LAYOUTS)
    positive_dist_threshold: float = option(
        25.0, 'VG layout: database images within this many metres are positives (inclusive)',
        min=0.0)
    recall_values: tuple[int, ...] = option(DEFAULT_RECALL_VALUES, 'the N of recall@N')
    image_size: tuple[int, ...] = option(
        (), 'model input (H, W) for this run; empty: the input_size of the model')
    model: str = option(AUTO_MODEL, 'preset name, model YAML or vpr_ros checkpoint; auto: '
                        f'{AUTO_PRESETS[0][1]} for database images of {AUTO_PRESETS[0][0]} '
                        f'rows or more, {AUTO_PRESETS[-1][1]} below (as build-map)')
    device: str = option('auto', 'torch device: auto, cpu, cuda, cuda:N')
    batch_size: int = option(0, f'images per forward pass; {BATCH_HELP} (larger batches '
                                'overflow its caches and run slower)', min=0)
    num_workers: int = option(0, 'DataLoader processes decoding images (0: in process)', min=0)
    allow_pickle: bool = option(False, 'read the upstream VPR-Bench .npy ground truth, a pickle '
                                       'that can run code from the file')

    def validate(self) -> None:
        values = list(self.recall_values)
        if not values or values != sorted(set(values)) or values[0] < 1:
            raise ConfigError(f'RetrievalEvalConfig.recall_values: {values} must be increasing '
                              'positive integers')
        if len(self.image_size) not in (0, 2):
            raise ConfigError(f'RetrievalEvalConfig.image_size: {list(self.image_size)} must be '
                              'two numbers H W (or empty)')


@dataclass
class RetrievalDataset:
    """Database and query images with the positives of every query (database indices)."""

    layout: str
    database: list[Entry]
    queries: list[Entry]
    positives: list[np.ndarray]
    ground_truth: str  # where the positives come from, for the printed protocol
    threshold_m: float | None = None
    paths: dict[str, str] = field(default_factory=dict)


@dataclass
class RetrievalResult:
    """Recall@N plus everything needed to read and reproduce it."""

    recall: RecallResult
    protocol: dict[str, Any]
    predictions: np.ndarray  # (Q, K) database indices, best first

    def summary_lines(self) -> list[str]:
        """Return the protocol and the numbers as printable lines."""
        p = self.protocol
        size = p['image_size']
        size_text = 'native' if size == [0, 0] else f'{size[0]}x{size[1]}'
        lines = [
            f'dataset ({p["layout"]}): {p["database_images"]} database images, '
            f'{p["query_images"]} queries',
            f'ground truth: {p["ground_truth"]}; {p["queries_without_positives"]} of '
            f'{p["query_images"]} queries have no positive (they count as failures)',
            f'model: {p["model"]} (fingerprint {p["model_fingerprint"][:12]}), input '
            f'{size_text}, {p["descriptor_dim"]}-D, device {p["device"]}',
            f'search: {p["search"]}, top {p["top_k"]}; recall@N = queries with '
            f'a positive in the top N / all {p["query_images"]} queries, in percent',
            str(self.recall),
        ]
        return lines

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready result: recalls by N, and the protocol."""
        return {'recalls': {str(n): r for n, r in self.recall.as_dict().items()},
                'protocol': self.protocol}


def _list_images(folder: Path, *, recursive: bool, role: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f'{role} folder not found: {folder}')
    pattern = folder.rglob('*') if recursive else folder.iterdir()
    files = sorted(p for p in pattern if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f'{role} folder {folder} holds no images ({", ".join(IMAGE_SUFFIXES)})')
    return files


def _entries(files: Sequence[Path], root: Path) -> list[Entry]:
    return [Entry(str(p.relative_to(root)), math.nan, math.nan, math.nan, FileImage(p))
            for p in files]


def _vg_utm(files: Sequence[Path], role: str) -> tuple[np.ndarray, set[str]]:
    points, zones = [], set()
    for p in files:
        try:
            east, north, zone = parse_vg_name(p.name, _NO_ZONE)
        except DataError as exc:
            raise DataError(f'{role} image {p}: {exc}') from None
        points.append((east, north))
        if zone != _NO_ZONE:
            zones.add(zone)
    return np.array(points, np.float64), zones


def open_vg(database_folder: str | Path, queries_folder: str | Path,
            threshold_m: float = 25.0) -> RetrievalDataset:
    """Read two VG-format folders; positives within ``threshold_m`` on UTM east/north."""
    db_dir, q_dir = Path(database_folder), Path(queries_folder)
    db_files = _list_images(db_dir, recursive=True, role='database')
    q_files = _list_images(q_dir, recursive=True, role='queries')
    db_utm, db_zones = _vg_utm(db_files, 'database')
    q_utm, q_zones = _vg_utm(q_files, 'query')
    if len(db_zones | q_zones) > 1:
        raise DataError(f'images name several UTM zones {sorted(db_zones | q_zones)}; '
                        'distances across zones are meaningless, evaluate one zone at a time')
    positives = positives_within(q_utm, db_utm, threshold_m)
    return RetrievalDataset(
        'vg', _entries(db_files, db_dir), _entries(q_files, q_dir), positives,
        f'UTM east/north from file names, positives within {threshold_m:g} m (inclusive)',
        float(threshold_m), {'database_folder': str(db_dir), 'queries_folder': str(q_dir)})


def find_ground_truth(root: Path) -> Path:
    """Return ``root/ground_truth.csv``, else the one ``.npy`` in ``root``; DataError if none."""
    csv_path = root / CSV_GROUND_TRUTH
    if csv_path.is_file():
        return csv_path
    npys = sorted(root.glob('*.npy'))
    if len(npys) == 1:
        return npys[0]
    raise DataError(f'{root}: no ground truth found (expected {CSV_GROUND_TRUTH} or one '
                    f'ground_truth*.npy, found {[p.name for p in npys]}); pass --ground_truth')


def open_vprbench(root: str | Path | None = None, *, ground_truth: str | Path | None = None,
                  database_folder: str | Path | None = None,
                  queries_folder: str | Path | None = None,
                  allow_pickle: bool = False) -> RetrievalDataset:
    """Read a VPR-Bench folder: ``ref/`` is the database, ``query/`` the queries.

    Queries the ground truth does not list have no positive (and count as failures); a
    ground-truth query that is not an image of ``query/`` is a DataError.
    """
    root = Path(root) if root is not None else None
    db_dir = Path(database_folder) if database_folder else (root / 'ref' if root else None)
    q_dir = Path(queries_folder) if queries_folder else (root / 'query' if root else None)
    if db_dir is None or q_dir is None:
        raise DataError('VPR-Bench layout: give the dataset folder (with query/ and ref/) or '
                        'both the database and queries folders')
    db_files = _list_images(db_dir, recursive=False, role='database (ref)')
    q_files = _list_images(q_dir, recursive=False, role='queries (query)')
    gt = Path(ground_truth) if ground_truth else find_ground_truth(root or db_dir.parent)
    if not gt.is_file():
        raise DataError(f'ground truth not found: {gt}')
    ref_names = [p.name for p in db_files]
    query_names = [p.name for p in q_files]
    if gt.suffix.lower() == '.npy':
        if not allow_pickle:
            raise DataError(f'{gt} is the upstream VPR-Bench ground truth, a pickled numpy '
                            'object array: reading it can run code from the file. Pass '
                            '--allow-pickle if you trust it, or use a ground_truth.csv')
        positives = load_vprbench_npy(gt, allow_pickle=True)
        if len(positives) > len(query_names):
            raise DataError(f'{gt}: names query index {len(positives) - 1} but {q_dir} holds '
                            f'{len(query_names)} images')
        positives += [np.zeros(0, np.int64)] * (len(query_names) - len(positives))
        bad = [int(i) for p in positives for i in p if not 0 <= i < len(ref_names)]
        if bad:
            raise DataError(f'{gt}: reference index {bad[0]} outside the {len(ref_names)} '
                            f'images of {db_dir}')
    else:
        table = load_vprbench_csv(gt, ref_names)
        by_name = dict(zip(table.query_names, table.positives))
        unknown = sorted(set(by_name) - set(query_names))
        if unknown:
            raise DataError(f'{gt}: query image(s) {unknown[:3]} not found in {q_dir}')
        positives = [by_name.get(n, np.zeros(0, np.int64)) for n in query_names]
    return RetrievalDataset(
        'vprbench', _entries(db_files, db_dir), _entries(q_files, q_dir), positives,
        f'reference matches from {gt.name}', None,
        {'database_folder': str(db_dir), 'queries_folder': str(q_dir), 'ground_truth': str(gt)})


def detect_layout(folder: Path) -> str:
    """Tell the layout of a dataset folder: ``vprbench`` (query/, ref/) or ``vg``."""
    if not folder.is_dir():
        raise DataError(f'dataset folder not found: {folder}')
    if (folder / 'query').is_dir() and (folder / 'ref').is_dir():
        return 'vprbench'
    if (folder / 'database').is_dir() and (folder / 'queries').is_dir():
        return 'vg'
    raise DataError(f'{folder}: neither a VPR-Bench folder (query/, ref/, ground truth) nor a '
                    'VG split (database/, queries/); or give --database_folder and '
                    '--queries_folder')


def open_dataset(config: RetrievalEvalConfig, *, dataset_folder: str | Path | None = None,
                 database_folder: str | Path | None = None,
                 queries_folder: str | Path | None = None,
                 ground_truth: str | Path | None = None) -> RetrievalDataset:
    """Open a dataset given as one folder or as database + queries folders."""
    root = Path(dataset_folder) if dataset_folder else None
    if root is None and not (database_folder and queries_folder):
        raise DataError('give --dataset_folder, or both --database_folder and --queries_folder')
    layout = config.layout
    if layout == 'auto':
        layout = detect_layout(root) if root is not None else (
            'vprbench' if ground_truth else 'vg')
    if layout == 'vprbench':
        return open_vprbench(root, ground_truth=ground_truth, database_folder=database_folder,
                             queries_folder=queries_folder, allow_pickle=config.allow_pickle)
    if ground_truth:
        raise DataError('--ground_truth is for the VPR-Bench layout; VG positives come from '
                        'the file names')
    db_dir = Path(database_folder) if database_folder else root / 'database'
    q_dir = Path(queries_folder) if queries_folder else root / 'queries'
    return open_vg(db_dir, q_dir, config.positive_dist_threshold)


def load_eval_model(spec: str, device: str = 'auto', image_size: Sequence[int] = ()) -> Any:
    """Load a model; with ``image_size`` the same weights run at that input size."""
    from vpr_ros.models.checkpoints import load_model
    from vpr_ros.models.weights import load_state_dict_checked
    from vpr_ros.models.descriptor import build_model

    model = load_model(spec, device)
    size = tuple(int(v) for v in image_size)
    if size and size != tuple(model.config.input_size):
        config = model.config.replace(input_size=size, pretrained=False, checkpoint='')
        resized = build_model(config)
        load_state_dict_checked(resized, model.state_dict(), source=f'model {spec}')
        model = resized.to(model.device).eval()
    return model


def describe_entries(model: Any, entries: Sequence[Entry], *, batch_size: int = 0,
                     num_workers: int = 0, progress: bool = True,
                     desc: str = 'describe') -> np.ndarray:
    """Describe entries in order with build-map's extractor, one tqdm step per batch run."""
    from tqdm import tqdm

    from vpr_ros.mapdb.describe import extract_chunk, model_device

    batch_size = forward_batch(model_device(model), batch_size, model)
    step = read_step(batch_size) * max(1, 4 * num_workers)  # a worker pool per step: long
    parts = []
    with tqdm(total=len(entries), unit='img', desc=desc, disable=not progress) as bar:
        for start in range(0, len(entries), step):
            part = entries[start:start + step]
            parts.append(extract_chunk(model, part, batch_size=batch_size,
                                       thumbnail_size=(0, 0),
                                       num_workers=num_workers).descriptors)
            bar.update(len(part))
    return np.concatenate(parts)


def search_exact(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Return ``(Q, k)`` database indices by exact L2 distance (-1 where k > database size)."""
    import faiss

    configure_faiss()
    index = faiss.IndexFlatL2(database.shape[1])
    index.add(np.ascontiguousarray(database, np.float32))
    _, predictions = index.search(np.ascontiguousarray(queries, np.float32), k)
    return predictions


def evaluate_retrieval(dataset: RetrievalDataset, config: RetrievalEvalConfig, *,
                       model: Any = None, progress: bool = True) -> RetrievalResult:
    """Describe, search and score ``dataset`` with ``config.model`` (or ``model``)."""
    model_name = (resolve_model(config.model, dataset.database) if model is None else
                  f'<{type(model).__name__} object>')
    if model is None:
        model = load_eval_model(model_name, config.device, config.image_size)
    started = time.perf_counter()
    db = describe_entries(model, dataset.database, batch_size=config.batch_size,
                          num_workers=config.num_workers, progress=progress, desc='database')
    queries = describe_entries(model, dataset.queries, batch_size=config.batch_size,
                               num_workers=config.num_workers, progress=progress,
                               desc='queries')
    extract_s = time.perf_counter() - started
    top_k = max(config.recall_values)
    predictions = search_exact(db, queries, top_k)
    recalls, without = recall_from_positives(predictions, dataset.positives,
                                             config.recall_values)
    result = RecallResult(tuple(config.recall_values), recalls, len(dataset.queries), without,
                          dataset.threshold_m)
    protocol = {
        'layout': dataset.layout, **dataset.paths,
        'database_images': len(dataset.database), 'query_images': len(dataset.queries),
        'ground_truth': dataset.ground_truth,
        'positive_dist_threshold_m': dataset.threshold_m,
        'queries_without_positives': without,
        'recall_values': list(config.recall_values),
        'recall_denominator': 'all queries', 'top_k': top_k,
        'search': 'exact L2 (faiss.IndexFlatL2)',
        'model': model_name, 'model_fingerprint': str(model.fingerprint()),
        'image_size': list(model.config.input_size), 'descriptor_dim': int(db.shape[1]),
        'device': str(model.device), 'batch_size': forward_batch(
            model.device, config.batch_size, model),
        'extraction_s': round(extract_s, 3),
    }
    return RetrievalResult(result, protocol, predictions)


def map_entry_order(map_names: Sequence[str], database: Sequence[Entry]) -> np.ndarray:
    """Dataset database index of every map entry, matched by relative path or unique file name.

    A map built from the dataset's database folder (or a CSV listing it) names its entries by
    path; a map entry with no counterpart is -1 (it can never be a positive).
    """
    by_path = {e.name.replace('\\', '/'): i for i, e in enumerate(database)}
    by_file: dict[str, list[int]] = {}
    for i, e in enumerate(database):
        by_file.setdefault(Path(e.name).name, []).append(i)
    order = np.full(len(map_names), -1, np.int64)
    for j, name in enumerate(map_names):
        key = name.replace('\\', '/')
        if key in by_path:
            order[j] = by_path[key]
            continue
        same = by_file.get(Path(key).name, [])
        if len(same) == 1:
            order[j] = same[0]
    return order


def evaluate_map(dataset: RetrievalDataset, map_path: str | Path, config: RetrievalEvalConfig,
                 *, rerank: bool = True, localizer_config: Any = None,
                 progress: bool = True) -> RetrievalResult:
    """Recall@N of the dataset's queries against a built map, the way the node searches.

    The queries go through :class:`vpr_ros.localizer.Localizer` (the map's model, its
    adaptation projection and index, GeoWarp re-ranking unless ``rerank`` is False); the
    candidates, best first, are mapped back to the dataset's database images by name, and
    recall@N is scored exactly as :func:`evaluate_retrieval` does.
    """
    from tqdm import tqdm

    from vpr_ros.localizer import calibration_record, Localizer, LocalizerConfig

    top_k = max(config.recall_values)
    loc_config = (localizer_config or LocalizerConfig()).replace(top_k=top_k, rerank=rerank)
    localizer = Localizer.open(map_path, loc_config, device=config.device)
    order = map_entry_order(localizer.map.names, dataset.database)
    matched = int((order >= 0).sum())
    if matched == 0:
        raise DataError(f'{map_path}: none of its {len(order)} entries is an image of the '
                        f'dataset database ({dataset.paths.get("database_folder")}); build '
                        f'the map from that folder')
    started = time.perf_counter()
    predictions = np.full((len(dataset.queries), top_k), -1, np.int64)
    batch = forward_batch(localizer.device, config.batch_size, localizer.model)
    step = read_step(batch)
    with tqdm(total=len(dataset.queries), unit='img', desc='queries',
              disable=not progress) as bar:
        for start in range(0, len(dataset.queries), step):
            part = dataset.queries[start:start + step]
            images = [e.load() for e in part]
            for q, est in enumerate(localizer.localize_batch(images, batch_size=batch)):
                found = [int(order[c.index]) for c in est.candidates][:top_k]
                predictions[start + q, :len(found)] = found
            bar.update(len(part))
    elapsed = time.perf_counter() - started
    recalls, without = recall_from_positives(predictions, dataset.positives,
                                             config.recall_values)
    result = RecallResult(tuple(config.recall_values), recalls, len(dataset.queries), without,
                          dataset.threshold_m)
    db = localizer.map
    adaptation = db.manifest.get('adaptation') or {}
    protocol = {
        'layout': dataset.layout, **dataset.paths, 'map': str(map_path),
        'database_images': len(dataset.database), 'query_images': len(dataset.queries),
        'map_entries': len(db), 'map_entries_matched': matched,
        'ground_truth': dataset.ground_truth,
        'positive_dist_threshold_m': dataset.threshold_m,
        'queries_without_positives': without,
        'recall_values': list(config.recall_values),
        'recall_denominator': 'all queries', 'top_k': top_k,
        'search': f'map index ({db.index.info.get("kind")})'
                  + (f', adaptation {adaptation.get("method")}-{adaptation.get("dim")}'
                     if db.projection is not None else ', plain descriptors')
                  + (f', GeoWarp re-rank of the top {loc_config.geowarp.num_reranked} '
                     f'({localizer.geowarp_mode} mode)' if localizer.rerank else ''),
        # The order the node would use depends on the calibration (the fusion weight).
        'calibration': calibration_record(localizer, Path(map_path).name),
        'model': f'stored in {Path(map_path).name}',
        'model_fingerprint': str(localizer.model.fingerprint()),
        'image_size': list(localizer.model.config.input_size),
        'descriptor_dim': int(db.projection.dim if db.projection is not None
                              else db.descriptor_dim),
        'device': str(localizer.device), 'batch_size': batch,
        'extraction_s': round(elapsed, 3),
    }
    return RetrievalResult(result, protocol, predictions)
