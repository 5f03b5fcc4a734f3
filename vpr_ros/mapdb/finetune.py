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

"""Fine-tune a map's descriptor model on the map's own drive, keep it only if it helps.

The map is all a robot user has before the first query: its images and their positions. They
give GPS weak supervision as in NetVLAD (Arandjelovic et al., CVPR 2016) and the benchmark of
Berton et al. ("Deep Visual Geo-localization Benchmark", CVPR 2022): positives within 5 m,
negatives beyond 25 m, hard negatives mined from the map. Map images stand in for queries
through strong photometric and geometric augmentation (lighting, blur, homography-like
perspective, crops). The existing trainer does the work; on a CPU only the last backbone stage
and the head are trained.

One spatial fold of the map (whole places, ``spatial_folds``) is held out of training. The
decision is made there: pseudo-queries of held-out places (a kornia homography and photometric
change of the full-resolution source image, not the training augmentation) are searched
against the whole map, described once with the map's model and once with the fine-tuned one.
The new model is kept only if recall@1 at the right place rises by ``min_gain`` and the
pseudo-queries it changes show it (:func:`vpr_ros.significance.sign_test`); then the map
is rebuilt with it (new fingerprint, same build settings, adaptation re-chosen) and replaces
the old map, which stays beside it as a backup. With a second drive of the area (``queries``),
its frames decide instead: pseudo-queries are the map's own images under a synthetic change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import datetime
import logging
from pathlib import Path
import shutil
import time
from typing import Any, Callable, Sequence

import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.errors import DataError
from vpr_ros.files import replace_dir
from vpr_ros.significance import sign_test
from vpr_ros.training.data import AugmentConfig

log = logging.getLogger(__name__)

KEY = 'finetune'
LAYERS = ('auto', 'last', 'all')

# Query conditions the map drive does not show: stronger than the benchmark's defaults.
STRONG_AUGMENT = AugmentConfig(
    apply_to='queries', brightness=0.5, contrast=0.5, saturation=0.4, hue=0.05,
    crop_scale=(0.5, 1.0), crop_ratio=(0.8, 1.25), rotation_deg=5.0, perspective=0.3,
    perspective_p=0.8, blur_sigma=2.0, blur_p=0.5, size_scale=(1.0, 1.0))


@dataclass(frozen=True)
class FinetuneConfig(Config):
    """How ``vpr-ros adapt --finetune`` trains and decides."""

    layers: str = option('auto', 'trained weights: auto (last on a CPU, all on a GPU), last '
                                 '(last backbone stage and head), all', choices=LAYERS)
    epochs: int = option(2, 'passes over the training part of the map', min=1)
    queries_per_epoch: int = option(0, 'training queries per epoch (0: all)', min=0)
    batch_size: int = option(4, 'tuples per optimiser step', min=1)
    negatives: int = option(5, 'hard negatives per tuple, mined from the map', min=1)
    lr: float = option(1e-5, 'Adam learning rate', min=0.0)
    positive_m: float = option(5.0, 'positives: map images within this (m)', min=0.0)
    negative_m: float = option(25.0, 'negatives: map images farther than this (m)', min=0.0)
    folds: int = option(3, 'spatial folds of the map; one is held out to decide', min=2)
    validation_queries: int = option(200, 'pseudo-queries from held-out places', min=1)
    right_place_spacings: float = option(3.0, 'a top-1 within this many place spacings of '
                                              'the true entry is the right place', min=0.0)
    min_gain: float = option(0.01, 'keep the model only if held-out recall@1 rises this much')
    max_p: float = option(0.05, 'and only if the held-out queries it changes show it: '
                          'one-sided sign test p at most this (1: no test)', min=0.0, max=1.0)
    seed: int = option(0, 'split, training and pseudo-queries')
    frozen_cache_mb: int = option(4096, "memory for the frozen layers' outputs of the map "
                                        'images (layers last), computed once (0: recompute '
                                        'them every pass)', min=0)
    augment: AugmentConfig = option(STRONG_AUGMENT, 'augmentations standing in for queries')


@dataclass
class FinetuneResult:
    """Before/after recall on held-out places, the decision and where things went."""

    kept: bool
    before: dict[str, float]
    after: dict[str, float]
    reason: str
    report: dict[str, Any] = field(default_factory=dict)
    backup: Path | None = None


def resolve_layers(layers: str, device: Any) -> str:
    """Resolve ``auto``: the last stage on a CPU (minutes), everything on a GPU."""
    if layers != 'auto':
        return layers
    return 'all' if getattr(device, 'type', str(device)) == 'cuda' else 'last'


def held_out_recall(db: Any, model: Any, candidates: np.ndarray, images: Callable[[int], Any],
                    config: FinetuneConfig, database: np.ndarray,
                    ) -> tuple[dict[str, float], np.ndarray]:
    """Recall@1/5 at the right place of held-out pseudo-queries against ``database``.

    Returns the summary and the ``(Q, 2)`` right-at-1 / right-in-5 rows per pseudo-query
    (the same queries for the same seed and candidates, so two models' rows are paired).
    """
    from vpr_ros.fix_quality import place_spacing_m
    from vpr_ros.mapdb.adaptation import describe_pseudo_queries, recall_rows

    enu = db.positions_enu(np.arange(len(db)))
    queries, sources = describe_pseudo_queries(
        db, model, config.validation_queries, seed=config.seed, images=images,
        candidates=candidates)
    radius = config.right_place_spacings * place_spacing_m(enu)
    rows = recall_rows(queries, database, sources, enu, radius)
    return _recall_summary(rows, radius), rows


def drive_recall(db: Any, model: Any, frames: Sequence[Any], database: np.ndarray,
                 radius_m: float) -> tuple[dict[str, float], np.ndarray]:
    """Recall@1/5 at the right place of a second drive's frames against ``database``.

    ``frames`` are source entries with positions (:func:`vpr_ros.mapdb.sources.open_source`);
    a top-1 within ``radius_m`` of a frame's own position is right. Returns the summary and
    the ``(Q, 2)`` rows, paired across models as :func:`held_out_recall`'s are.
    """
    from vpr_ros.mapdb.adaptation import describe_drive, recall_at_positions

    queries, truth = describe_drive(db, model, frames)
    rows = recall_at_positions(queries, database, db.positions_enu(np.arange(len(db))), truth,
                               radius_m)
    return _recall_summary(rows, radius_m), rows


def _recall_summary(rows: np.ndarray, radius_m: float) -> dict[str, float]:
    """Summarise ``(Q, 2)`` right-at-1 / right-in-5 rows for the report and the command."""
    return {'recall@1': float(rows[:, 0].mean()), 'recall@5': float(rows[:, 1].mean()),
            'queries': int(len(rows)), 'right_place_m': float(radius_m)}


def finetune_map(map_path: str | Path, config: FinetuneConfig | None = None, *,
                 source: str | Path | None = None, queries: str | Path | None = None,
                 device: str = 'auto', work_dir: str | Path | None = None,
                 dry_run: bool = False, progress: bool = True) -> FinetuneResult:
    """Fine-tune the map's model on its own images; replace the map if held-out recall rises.

    ``queries``: a second drive of the area with positions (any build-map source). Its frames
    then decide instead of the held-out pseudo-queries (which are still reported): another
    drive shows what a synthetic change of the map's own images cannot.

    Resumable: the training checkpoints and the candidate map live in ``work_dir`` (default
    ``<map>.finetune`` beside the map); running again with the same settings continues.
    """
    from vpr_ros.device import resolve_device
    from vpr_ros.mapdb.adaptation import spatial_folds
    from vpr_ros.mapdb.database import MapDB
    from vpr_ros.models.checkpoints import load_model
    from vpr_ros.training.data import ImageSet, nearest_distance, Split, TrainData
    from vpr_ros.training.mining import MiningConfig
    from vpr_ros.training.trainer import read_train_state, train, TrainConfig

    config = config or FinetuneConfig()
    started = time.perf_counter()
    map_path = Path(map_path)
    db = MapDB.open(map_path)
    if db.format_version >= 2:
        from vpr_ros.errors import MapError
        raise MapError(f'{map_path} is a compact (v2) map: it keeps projected descriptors '
                       f'only; fine-tune the v1 map, then convert it (vpr-ros map convert)')
    from vpr_ros.mapdb.sources import entry_images, open_source, source_entries

    entries, source_path = source_entries(db, source)
    # Every source reader refuses an empty source and a frame without a finite position.
    drive = open_source(queries).entries if queries is not None else None
    enu = db.positions_enu(np.arange(len(db)))
    if not np.isfinite(enu).all():
        raise DataError(f'{map_path}: fine-tuning needs a position for every map entry')
    fold = spatial_folds(enu, config.folds, seed=config.seed)
    held = np.flatnonzero(fold == 0)
    train_mask = fold != 0
    train_mask &= nearest_distance(enu, enu[held]) >= config.positive_m
    if train_mask.sum() < config.batch_size + config.negatives + 2:
        raise DataError(f'{map_path}: only {int(train_mask.sum())} map images left to train on '
                        'after holding out a fold of places; the map is too small to fine-tune')
    build = db.manifest.get('build') or {}
    resize_max = int(build.get('resize_max') or 0)
    idx = np.flatnonzero(train_mask)
    images = ImageSet([entries[i].name for i in idx], enu[idx], [entries[i].load for i in idx],
                      resize_max=resize_max, cache=True)
    data = TrainData(Split(images, images, True), None, db.origin,
                     {'database': len(db), 'train': int(len(idx)), 'held_out': int(len(held))})
    mining = MiningConfig(positive_m=config.positive_m, negative_m=config.negative_m,
                          negatives=config.negatives)
    _check_tuples(map_path, data.train, mining, enu)
    torch_device = resolve_device(device)
    layers = resolve_layers(config.layers, torch_device)
    work = Path(work_dir) if work_dir else map_path.with_name(map_path.name + '.finetune')
    work.mkdir(parents=True, exist_ok=True)
    train_config = TrainConfig(
        model=str(map_path / 'model.pt'), out_dir=str(work / 'train'), device=device,
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
        queries_per_epoch=config.queries_per_epoch, seed=config.seed, train_layers=layers,
        validate_before=False, netvlad_init='never', augment=config.augment,
        frozen_cache_mb=config.frozen_cache_mb, mining=mining)
    last = work / 'train' / 'last.pt'
    if last.is_file():
        state = read_train_state(last)
        same = {**state['config'], 'resume': ''} == train_config.to_dict()
        if same:
            train_config = train_config.replace(resume=str(last))
            log.info('resuming the fine-tuning from %s', last)
        elif not same:
            log.warning('%s was made with other settings: starting again', last)
            shutil.rmtree(work / 'train')
    result = train(train_config, data=data, progress=progress)
    tuned = load_model(result.last, device=device)
    before_model = db.load_model(device)
    load = entry_images(db, entries, resize_max)
    before, rows_before = held_out_recall(db, before_model, held, load, config,
                                          np.asarray(db.descriptors))
    # The candidate map: the same build settings with the tuned model, adaptation chosen later.
    from vpr_ros.mapdb.adaptation import AdaptConfig, adapt_map
    from vpr_ros.mapdb.build import build_map, BuildConfig

    names = {f.name for f in dataclasses.fields(BuildConfig)}
    build_config = BuildConfig.from_dict({k: v for k, v in build.items() if k in names},
                                         where=f'{map_path} build')
    candidate_config = build_config.replace(model=str(result.last), device=device,
                                            adapt=AdaptConfig(method='none'))
    # Resumes from its own chunks when the same model was being described.
    candidate_path = build_map(source_path, work / map_path.name, candidate_config,
                               overwrite=True, progress=progress)
    candidate = MapDB.open(candidate_path)
    after, rows_after = held_out_recall(candidate, tuned, held, load, config,
                                        np.asarray(candidate.descriptors))
    held_out = {'held_out_before': before, 'held_out_after': after}
    decided_by = 'held-out'
    if drive is not None:
        radius = before['right_place_m']
        before, rows_before = drive_recall(db, before_model, drive, np.asarray(db.descriptors),
                                           radius)
        after, rows_after = drive_recall(candidate, tuned, drive,
                                         np.asarray(candidate.descriptors), radius)
        decided_by = 'second-drive'
    gain = after['recall@1'] - before['recall@1']
    # A gain of a query or two is what a model no better than the old one also shows.
    p_value = sign_test(rows_after[:, 0], rows_before[:, 0])
    helps = gain >= config.min_gain and p_value <= config.max_p
    kept = helps and not dry_run
    history = [{k: float(v) for k, v in row.items() if np.isfinite(v)}
               for row in result.history]
    report = {
        'layers': layers, 'train_images': int(len(idx)), 'held_out_images': int(len(held)),
        **held_out, 'decided_by': decided_by, 'gain': gain, 'sign_test_p': p_value,
        'history': history, 'parent_fingerprint': db.manifest['model'].get('fingerprint'),
        'seconds': round(time.perf_counter() - started, 1), 'config': config.to_dict(),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    if drive is not None:
        report['drive'] = {'source': str(queries), 'before': before, 'after': after}
    change = f'{decided_by} recall@1 {before["recall@1"]:.3f} -> {after["recall@1"]:.3f}'
    if gain < config.min_gain:
        reason = f'{change} ({gain:+.3f} < {config.min_gain:g}): the map keeps its model'
    elif p_value > config.max_p:
        reason = (f'{change} ({gain:+.3f}), but the queries it changes do not show it (sign '
                  f'test p = {p_value:.2g} > {config.max_p:g}): the map keeps its model')
    else:
        reason = f'{change} ({gain:+.3f})' + (': dry run, nothing replaced' if dry_run else
                                              ': the map now uses the fine-tuned model')
    report['reason'] = reason
    if not kept:
        shutil.rmtree(candidate_path, ignore_errors=True)
        return FinetuneResult(False, before, after, reason, report)
    _carry_over(db, candidate, before_model, layers, report)
    adapt = AdaptConfig.from_dict(build.get('adapt') or {}, where='build.adapt')
    if adapt.method != 'none':
        try:
            choice = adapt_map(candidate, adapt, model=tuned, images=load)
            report['adaptation'] = choice.report.get('reason')
        except DataError as exc:
            log.warning('adaptation of the fine-tuned map skipped: %s', exc)
    candidate.update_manifest(**{KEY: report})
    backup = _swap(map_path, candidate_path)
    # The model now lives in the map; a later --finetune starts from it, not from these.
    shutil.rmtree(work, ignore_errors=True)
    return FinetuneResult(True, before, after, reason, report, backup)


#: Warn when more than this share of the training images has no tuple (no positive or no
#: negative at the mining radii).
MAX_UNUSED = 0.25


def _check_tuples(map_path: Path, split: Any, mining: Any, enu: np.ndarray) -> None:
    """Fail (or warn) before training when the radii leave the map images without tuples.

    The radii suit a route map (frames a few metres apart, GNSS positions); a small site (a
    building whose places all lie within ``negative_m`` of each other) or places farther apart
    than ``positive_m`` leave images without a negative or a positive, which the trainer drops.
    """
    from vpr_ros.fix_quality import place_spacing_m
    from vpr_ros.training.mining import plan_queries

    hint = (f"adapt --finetune's --positive-radius ({mining.positive_m:g} m) and "
            f'--negative-radius ({mining.negative_m:g} m) set them; the places of the map are '
            f'{place_spacing_m(enu):.1f} m apart (median) and it spans '
            f'{float(np.ptp(enu[:, 0])):.0f} x {float(np.ptp(enu[:, 1])):.0f} m')
    try:
        plan = plan_queries(split, mining)
    except DataError as exc:
        raise DataError(f'{map_path}: nothing to fine-tune on: {exc}; {hint}') from None
    unused = len(plan.dropped_no_positive) + len(plan.dropped_no_negative)
    if unused > MAX_UNUSED * len(split.queries):
        log.warning('%s: %d of %d training images have no positive or no negative and are '
                    'not trained on; %s', map_path, unused, len(split.queries), hint)


def _carry_over(old: Any, new: Any, model: Any, layers: str, report: dict[str, Any]) -> None:
    """Copy GeoWarp to the new map when its features are unchanged; say what must be redone.

    ``model`` is the old map's, already loaded: its backbone says where the trained stage lies.
    """
    from vpr_ros.models.backbones import final_stage

    geowarp = old.manifest.get('geowarp') or {}
    _, after_local = final_stage(model.backbone)
    if geowarp and layers == 'last' and after_local:
        record = {k: v for k, v in geowarp.items() if k != 'file'}
        src = old.path / geowarp['file']
        new.attach_file('geowarp', Path(geowarp['file']).suffix,
                        lambda p: shutil.copyfile(src, p), key='geowarp', record=record)
        report['geowarp'] = 'kept (the features it compares were not trained)'
    elif geowarp:
        report['geowarp'] = 'dropped: run vpr-ros fit-geowarp again'
    if old.manifest.get('calibration'):
        report['calibration'] = 'dropped: run vpr-ros calibrate again'


def _swap(map_path: Path, candidate: Path) -> Path:
    """Put the candidate in the map's place; the old map stays beside it as a backup."""
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    backup = map_path.with_name(f'{map_path.name}.before-finetune-{stamp}')
    replace_dir(candidate, map_path, overwrite=True, backup=backup)
    return backup


__all__ = ['finetune_map', 'FinetuneConfig', 'FinetuneResult', 'held_out_recall',
           'resolve_layers', 'STRONG_AUGMENT']
