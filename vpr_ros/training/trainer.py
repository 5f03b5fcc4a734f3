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

"""The training loop: triplets with GPS weak supervision, Adam, validation recall, checkpoints.

One code path for a CPU, one GPU and several GPUs: under ``torchrun`` (``WORLD_SIZE > 1``) the
process group is started (NCCL on CUDA, gloo on the CPU), the model is wrapped in
DistributedDataParallel, descriptor caches are computed in shards and gathered, and each
optimiser step's ``batch_size`` tuples are divided between the processes.

Per epoch (as in Gambino, Pierro, Grillo, "Visual Geo-Localization", a student project report on
ResNet-18 heads, §4): shuffle the usable training queries; for every ``cache_refresh`` of them,
refresh the descriptor cache and mine (query, best positive, 10 hard negatives); build batches
(augmented, at a random size per batch, for the AS-Geo resizer: Lu et al., "AS-Geo:
Arbitrary-Sized Image Geolocalization with Learnable Geometric Enhancement Resizer", 2022); add
within-batch hard negatives (from CRN: Kim, Dunn, Frahm, "Learned Contextual Feature Reweighting
for Image Geo-Localization", CVPR 2017); triplet margin loss, plus the HAF detection term for the
HAF head (Yan et al., "Hierarchical Attention Fusion for Geo-Localization", ICASSP 2021, arXiv
2102.09186); Adam (lr 1e-5 by default, best in Gambino et al. Table 3). After each epoch:
recall@1/5/10 on the validation split, ``last.pt`` (with optimiser state, to resume) and
``best.pt`` (by ``best_metric``), both ordinary model checkpoints that ``build-map --model``
and ``load_model`` read, plus ``metrics.csv`` and ``metrics.png``.

Reproducibility: everything random in an epoch is drawn from generators seeded with
``(seed, epoch, ...)``, so resuming from ``last.pt`` of epoch ``e`` gives the same weights as an
uninterrupted run (on the same device and thread count).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
import io
import logging
import math
import os
from pathlib import Path
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from vpr_ros.config import Config, option
from vpr_ros.device import describe_device, resolve_device
from vpr_ros.errors import CheckpointError, ConfigError
from vpr_ros.evaluation.recall import recall_from_positives
from vpr_ros.models.backbones import final_stage
from vpr_ros.models.checkpoints import (FORMAT, load_model, read_checkpoint,
                                        save_checkpoint, YAML_SUFFIXES)
from vpr_ros.models.descriptor import DescriptorModel, ModelConfig, PRESETS
from vpr_ros.models.heads import init_netvlad, l2n, NetVLAD, sample_local_features
from vpr_ros.training.data import (augment, AugmentConfig, batch_size_for, DataConfig,
                                   load_data, resize_to, Split, TrainData)
from vpr_ros.training.losses import batch_loss, LossConfig
from vpr_ros.training.mining import (batch_hard_negatives, describe_set, MiningConfig,
                                     plan_queries, radius_neighbours, refresh_and_mine,
                                     Triplets)

log = logging.getLogger(__name__)

RECALL_VALUES = (1, 5, 10)
METRIC_COLUMNS = ('epoch', 'loss', 'triplet', 'haf', 'R@1', 'R@5', 'R@10', 'images_per_s',
                  'seconds', 'lr')


@dataclass(frozen=True)
class TrainConfig(Config):
    """Everything ``vpr-ros train`` needs (``config/train.yaml`` documents each field)."""

    model: str = option('effnet-lite0-gem', 'model to train: preset, model YAML or checkpoint')
    out_dir: str = option('runs/train', 'folder for best.pt, last.pt, metrics.csv/png')
    device: str = option('auto', 'torch device: auto, cpu, cuda, cuda:N (torchrun: the '
                                 'process local GPU)')
    epochs: int = option(5, 'number of epochs', min=1)
    batch_size: int = option(4, 'tuples (query, positive, negatives) per optimiser step, over '
                                'all processes', min=1)
    lr: float = option(1e-5, 'Adam learning rate (1e-5 was best in Gambino et al. Table 3)',
                       min=0.0)
    weight_decay: float = option(0.0, 'Adam weight decay', min=0.0)
    queries_per_epoch: int = option(0, 'training queries per epoch (0: all of them)', min=0)
    infer_batch_size: int = option(32, 'images per forward pass when caching descriptors',
                                   min=1)
    num_workers: int = option(0, 'DataLoader processes building batches (0: in process)',
                              min=0)
    seed: int = option(0, 'random seed (split, query order, mining, augmentation)')
    resume: str = option('', 'last.pt of an earlier run to continue from')
    train_layers: str = option('all', 'weights trained: all, or last (the last backbone stage '
                                      'and the head; fast on a CPU)', choices=('all', 'last'))
    freeze_bn: bool = option(True, 'keep the backbone BatchNorm statistics fixed (small '
                                   'batches)')
    netvlad_init: str = option('auto', 'k-means init of NetVLAD/CRN centroids from training '
                                       'features: auto (unless the model is a checkpoint), '
                                       'never', choices=('auto', 'never'))
    netvlad_init_images: int = option(500, 'training images sampled for the k-means init',
                                      min=1)
    val_positive_m: float = option(25.0, 'validation positives: database images within this '
                                         '(m), as the benchmark', min=0.0)
    best_metric: str = option('R@5', 'validation recall that selects best.pt',
                              choices=('R@1', 'R@5', 'R@10'))
    validate_before: bool = option(True, 'validate the starting model as epoch 0 (best.pt '
                                         'then never falls below it)')
    data: DataConfig = option(DataConfig(), 'training data and split')
    augment: AugmentConfig = option(AugmentConfig(), 'augmentations (Gambino et al. §5.3)')
    mining: MiningConfig = option(MiningConfig(), 'positives and negatives (Gambino et al. '
                                                  '§4, CRN)')
    loss: LossConfig = option(LossConfig(), 'loss margins and weights')


@dataclass
class TrainResult:
    """Where a run wrote its files, and its per-epoch metrics."""

    out_dir: Path
    last: Path
    best: Path | None
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------- distributed

@dataclass(frozen=True)
class DistContext:
    """This process in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Return True on the process that writes files."""
        return self.rank == 0


def setup_distributed(device: str) -> DistContext:
    """Start the process group under torchrun; a plain single-process context otherwise."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return DistContext(0, 1, resolve_device(device))
    import torch.distributed as dist

    base = resolve_device(device)
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if base.type == 'cuda':
        torch_device = torch.device('cuda', local_rank)
        torch.cuda.set_device(torch_device)
        backend = 'nccl'
    else:
        torch_device, backend = torch.device('cpu'), 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), torch_device)


def _barrier(ctx: DistContext) -> None:
    if ctx.world_size > 1:
        import torch.distributed as dist
        dist.barrier()


# ---------------------------------------------------------------- model pieces

class TrainForward(nn.Module):
    """The module DDP wraps: descriptors and, for HAF, the per-scale parts, in one forward."""

    def __init__(self, model: DescriptorModel, haf_parts: bool) -> None:
        super().__init__()
        self.model = model
        self.haf_parts = haf_parts

    def forward(self, images: torch.Tensor):
        """Return ``(descriptors, parts, scores)``; parts and scores are None unless HAF."""
        if not self.haf_parts:
            return self.model(images), None, None
        x = self.model._prepare(images)  # normalise + resizer, as DescriptorModel.forward
        parts, scores = self.model.aggregation.parts(self.model.backbone.forward_stages(x))
        return l2n(self.model.aggregation.fuse(parts)), parts, scores


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Training mode, with the backbone's BatchNorm layers kept in eval mode if asked."""
    model.train()
    if freeze_bn:
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def freeze_all_but_last(model: DescriptorModel) -> int:
    """Train only the last backbone stage and the head; return the trainable parameter count."""
    modules, _ = final_stage(model.backbone)
    for p in model.parameters():
        p.requires_grad_(False)
    for module in [*modules, model.aggregation]:
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _is_checkpoint(spec: str) -> bool:
    if spec in PRESETS:
        return False
    path = Path(spec)
    if path.suffix.lower() in YAML_SUFFIXES:
        return bool(ModelConfig.from_yaml(path).checkpoint)
    return True


@torch.no_grad()
def init_netvlad_from_data(model: DescriptorModel, split: Split, images: int,
                           rng: np.random.Generator) -> float:
    """FAISS k-means init of a NetVLAD/CRN head from training features (Gambino et al. §3.3)."""
    db = split.database
    chosen = np.sort(rng.choice(len(db), size=min(images, len(db)), replace=False))
    device = next(model.parameters()).device
    model.eval()
    descs = []
    for n, i in enumerate(chosen):
        x = resize_to(db.image(i), db.image(i).shape[:2]).unsqueeze(0).to(device)
        descs.append(sample_local_features(model.dense_features(x), seed=n))
    alpha = init_netvlad(model.aggregation, np.concatenate(descs))
    log.info('NetVLAD centroids initialised by k-means on %d local features of %d training '
             'images (alpha %.1f)', sum(len(d) for d in descs), len(chosen), alpha)
    return alpha


# ---------------------------------------------------------------- batches

class TupleBatches(torch.utils.data.Dataset):
    """Batch ``b`` of mined tuples as ``(images (N, 3, h, w), xy (N, 2))`` for this process.

    Batch ``b`` holds global tuples ``[b * batch_size, (b + 1) * batch_size)``; process ``rank``
    takes every ``world_size``-th of them. The batch size (H, W) is drawn from
    ``(seed..., b)`` and each tuple's augmentation from ``(seed..., b, tuple)``, so the images do
    not depend on the number of processes or workers.
    """

    def __init__(self, split: Split, triplets: Triplets, batch_size: int,
                 augment_config: AugmentConfig, seed: tuple[int, ...], rank: int = 0,
                 world_size: int = 1) -> None:
        self.split = split
        self.triplets = triplets
        self.batch_size = batch_size
        self.augment = augment_config
        self.seed = tuple(seed)
        self.rank = rank
        self.world_size = world_size
        full, rest = divmod(len(triplets), batch_size)
        self.batches = full + (1 if rest >= world_size else 0)  # every rank needs a tuple

    def __len__(self) -> int:
        return self.batches

    def tuple_ids(self, b: int) -> list[int]:
        """Global tuple indices of batch ``b`` handled by this process."""
        stop = min((b + 1) * self.batch_size, len(self.triplets))
        return list(range(b * self.batch_size, stop))[self.rank::self.world_size]

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Build batch ``b``: per tuple the query, its positive and its negatives."""
        if not 0 <= b < self.batches:
            raise IndexError(b)
        db, queries = self.split.database, self.split.queries
        ids = self.tuple_ids(b)
        first = queries.image(self.triplets.queries[ids[0]])
        size = batch_size_for(first, self.augment,
                              np.random.default_rng([*self.seed, b]))
        target = self.augment.apply_to
        images, xy = [], []
        for t in ids:
            rng = np.random.default_rng([*self.seed, b, t])
            q = int(self.triplets.queries[t])
            q_img = queries.image(q)
            images.append(augment(q_img, size, self.augment, rng) if target != 'none'
                          else resize_to(q_img, size))
            xy.append(queries.xy[q])
            for r in [int(self.triplets.positives[t]), *self.triplets.negatives[t].tolist()]:
                img = db.image(r)
                images.append(augment(img, size, self.augment, rng) if target == 'all'
                              else resize_to(img, size))
                xy.append(db.xy[r])
        return torch.stack(images), torch.from_numpy(np.stack(xy))


# ---------------------------------------------------------------- validation

def validate(model: DescriptorModel, split: Split, *, positive_m: float, batch_size: int = 32,
             ctx: DistContext | None = None) -> dict[str, float]:
    """Recall@1/5/10 (percent, benchmark protocol) of the queries of ``split`` on its database.

    When the queries are the database images, each query's own image is removed from its
    predictions and its positives.
    """
    import faiss

    ctx = ctx or DistContext(0, 1, torch.device('cpu'))
    db, queries = split.database, split.queries
    kw = {'batch_size': batch_size, 'rank': ctx.rank, 'world_size': ctx.world_size}
    db_desc = describe_set(model, db, range(len(db)), **kw)
    q_desc = db_desc if split.same else describe_set(model, queries, range(len(queries)), **kw)
    k = min(max(RECALL_VALUES) + int(split.same), len(db))
    index = faiss.IndexFlatL2(db_desc.shape[1])
    index.add(np.ascontiguousarray(db_desc, np.float32))
    _, preds = index.search(np.ascontiguousarray(q_desc, np.float32), k)
    if split.same:
        preds = np.stack([np.concatenate([row[row != i], [-1]])[:k - 1]
                          for i, row in enumerate(preds)])
    positives = radius_neighbours(queries.xy, db.xy, positive_m, exclude_self=split.same)
    recalls, _ = recall_from_positives(preds, positives, RECALL_VALUES)
    return {f'R@{n}': r for n, r in zip(RECALL_VALUES, recalls)}


# ---------------------------------------------------------------- files

def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (all or nothing)."""
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_metrics_csv(history: list[dict[str, float]], path: Path) -> None:
    """Write one row per epoch (epoch 0: the starting model) to ``path`` atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction='ignore')
    writer.writeheader()
    for row in history:
        writer.writerow({k: ('' if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in row.items()})
    atomic_write(path, buf.getvalue().encode())


def plot_metrics(history: list[dict[str, float]], path: Path) -> None:
    """Loss (left) and validation recall@1/5/10 (right) per epoch as a PNG."""
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    epochs = [row['epoch'] for row in history]
    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(10.0, 4.0), dpi=100)
    for key in ('loss', 'triplet', 'haf'):
        values = [row.get(key, math.nan) for row in history]
        if any(v > 0 for v in values if not math.isnan(v)):
            ax_loss.plot(epochs, values, marker='o', label=key)
    ax_loss.set(xlabel='epoch', ylabel='training loss', title='loss')
    for key in ('R@1', 'R@5', 'R@10'):
        ax_rec.plot(epochs, [row.get(key, math.nan) for row in history], marker='o', label=key)
    ax_rec.set(xlabel='epoch', ylabel='recall (%)', title='validation recall')
    for ax in (ax_loss, ax_rec):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc='best')
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _save(model: DescriptorModel, path: Path, train_state: dict[str, Any]) -> Path:
    return save_checkpoint(model, path, extra={'train': train_state})


def read_train_state(path: str | Path) -> dict[str, Any]:
    """Return the training state of a ``last.pt``; CheckpointError if it has none."""
    obj = read_checkpoint(path)
    state = obj.get('extra', {}).get('train') if isinstance(obj, dict) and \
        obj.get('format') == FORMAT else None
    if not isinstance(state, dict) or 'optimizer' not in state:
        raise CheckpointError(f'{path} holds no training state to resume from (use the '
                              'last.pt of a vpr-ros train run)')
    return state


# ---------------------------------------------------------------- the loop

def train(config: TrainConfig, *, data: TrainData | None = None,
          progress: bool = True) -> TrainResult:
    """Train a descriptor model as ``config`` says; ``data`` overrides ``config.data``."""
    ctx = setup_distributed(config.device)
    try:
        return _train(config, data, progress, ctx)
    finally:
        if ctx.world_size > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def _train(config: TrainConfig, data: TrainData | None, progress: bool,
           ctx: DistContext) -> TrainResult:
    from tqdm import tqdm

    out = Path(config.out_dir)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
    data = data or load_data(config.data, seed=config.seed)
    plan = plan_queries(data.train, config.mining)
    if config.resume:
        state = read_train_state(config.resume)
        model = load_model(config.resume, device='cpu')
    else:
        state = None
        model = load_model(config.model, device='cpu')
    model.to(ctx.device)
    log.info('training %s on %s (process %d of %d)', model.extra_repr(),
             describe_device(ctx.device), ctx.rank + 1, ctx.world_size)
    head = model.aggregation
    if state is None and isinstance(head, NetVLAD) and config.netvlad_init == 'auto' \
            and not _is_checkpoint(config.model):
        init_netvlad_from_data(model, data.train, config.netvlad_init_images,
                               np.random.default_rng([config.seed, 0, 1]))
    if config.train_layers == 'last':
        log.info('training the last backbone stage and the head only (%d parameters)',
                 freeze_all_but_last(model))
    haf = model.config.head == 'haf' and config.loss.haf_weight > 0
    forward: nn.Module = TrainForward(model, haf)
    if ctx.world_size > 1:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[ctx.device.index] if ctx.device.type == 'cuda' else None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    best_value, start = -math.inf, 1
    if state is not None:
        optimizer.load_state_dict(state['optimizer'])
        history = [dict(row) for row in state['history']]
        best_value = float(state['best'])
        start = int(state['epoch']) + 1
        log.info('resuming from %s after epoch %d', config.resume, start - 1)
    last, best = out / 'last.pt', out / 'best.pt'
    kw = {'positive_m': config.val_positive_m, 'batch_size': config.infer_batch_size,
          'ctx': ctx}

    def train_state(epoch: int, with_optimizer: bool) -> dict[str, Any]:
        s = {'epoch': epoch, 'history': history, 'best': best_value,
             'best_metric': config.best_metric, 'config': config.to_dict(),
             'data': dict(data.report)}
        if with_optimizer:
            s['optimizer'] = optimizer.state_dict()
        return s

    def finish_epoch(epoch: int, row: dict[str, float]) -> None:
        nonlocal best_value
        history.append(row)
        value = row.get(config.best_metric, math.nan)
        improved = math.isnan(value) or value > best_value  # no validation: last is best
        if improved and not math.isnan(value):
            best_value = value
        if ctx.main:
            if improved:
                _save(model, best, train_state(epoch, False))
            if epoch > 0:
                _save(model, last, train_state(epoch, True))
            write_metrics_csv(history, out / 'metrics.csv')
            plot_metrics(history, out / 'metrics.png')
        _barrier(ctx)

    if start == 1 and config.validate_before and data.val is not None:
        recalls = validate(model, data.val, **kw)
        log.info('epoch 0 (start): %s', _fmt(recalls))
        finish_epoch(0, {'epoch': 0, 'loss': math.nan, 'triplet': math.nan, 'haf': math.nan,
                         **recalls, 'images_per_s': math.nan, 'seconds': 0.0,
                         'lr': config.lr})
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        stats = _run_epoch(config, model, forward, optimizer, data.train, plan, epoch, ctx,
                           tqdm, progress)
        recalls = validate(model, data.val, **kw) if data.val is not None else \
            {f'R@{n}': math.nan for n in RECALL_VALUES}
        row = {'epoch': epoch, **stats, **recalls, 'seconds': time.perf_counter() - t0,
               'lr': optimizer.param_groups[0]['lr']}
        log.info('epoch %d: loss %.4f, %s, %.1f images/s, %.0f s', epoch, stats['loss'],
                 _fmt(recalls), stats['images_per_s'], row['seconds'])
        finish_epoch(epoch, row)
    if start > config.epochs:
        log.warning('%s already finished epoch %d of %d: nothing to do', config.resume,
                    start - 1, config.epochs)
    return TrainResult(out, last, best if best.is_file() else None, history)


def _fmt(recalls: dict[str, float]) -> str:
    return ', '.join(f'{k} {v:.1f}' for k, v in recalls.items())


def _run_epoch(config: TrainConfig, model: DescriptorModel, forward: nn.Module,
               optimizer: torch.optim.Optimizer, split: Split, plan, epoch: int,
               ctx: DistContext, tqdm, progress: bool) -> dict[str, float]:
    """One pass over the (shuffled) training queries; returns mean losses and throughput."""
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(len(plan.queries))
    if config.queries_per_epoch:
        order = order[:config.queries_per_epoch]
    mining = config.mining
    group = 2 + mining.negatives
    sums = {'loss': 0.0, 'triplet': 0.0, 'haf': 0.0}
    steps, images, busy = 0, 0, 0.0
    bar = tqdm(total=math.ceil(len(order) / config.batch_size),
               desc=f'epoch {epoch}/{config.epochs}', unit='batch',
               disable=not (progress and ctx.main), leave=False)
    for chunk, first in enumerate(range(0, len(order), mining.cache_refresh)):
        rows = order[first:first + mining.cache_refresh]
        triplets = refresh_and_mine(model, split, plan, rows, mining, rng,
                                    batch_size=config.infer_batch_size, rank=ctx.rank,
                                    world_size=ctx.world_size)
        set_train_mode(model, config.freeze_bn)
        batches = TupleBatches(split, triplets, config.batch_size, config.augment,
                               (config.seed, epoch, chunk), ctx.rank, ctx.world_size)
        loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False,
                                             num_workers=config.num_workers)
        t0 = time.perf_counter()  # throughput counts batch building, not mining
        for batch, xy in loader:
            desc, parts, scores = forward(batch.to(ctx.device, non_blocking=True))
            extra = None
            if mining.batch_negatives:
                extra = batch_hard_negatives(desc, xy, group, mining.batch_negatives,
                                             mining.negative_m)
            losses = batch_loss(desc, mining.negatives, config.loss, batch_negatives=extra,
                                haf=(parts, scores) if parts is not None else None)
            optimizer.zero_grad(set_to_none=True)
            losses['loss'].backward()
            optimizer.step()
            busy += time.perf_counter() - t0
            t0 = time.perf_counter()
            steps += 1
            images += len(batch) * ctx.world_size
            for key in sums:
                sums[key] += float(losses[key].detach())
            bar.update(1)
            bar.set_postfix(loss=f'{sums["loss"] / steps:.4f}',
                            img_s=f'{images / max(busy, 1e-9):.1f}')
    bar.close()
    if ctx.world_size > 1:  # report the mean over all processes, not rank 0's share
        import torch.distributed as dist
        total = torch.tensor([sums[k] for k in sums], dtype=torch.float64, device=ctx.device)
        dist.all_reduce(total)
        sums = dict(zip(sums, (total / ctx.world_size).tolist()))
    if steps == 0:
        raise ConfigError(f'epoch {epoch} made no optimiser step: {len(order)} usable queries '
                          f'for batch_size {config.batch_size} x {ctx.world_size} processes')
    stats = {key: value / steps for key, value in sums.items()}
    stats['images_per_s'] = images / max(busy, 1e-9)
    return stats
