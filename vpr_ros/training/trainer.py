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
process group is started (:mod:`vpr_ros.training.distributed`), the model is wrapped in
DistributedDataParallel, descriptor caches are computed in shards and gathered, and each
optimiser step's ``batch_size`` tuples are divided between the processes
(:mod:`vpr_ros.training.batches`). The settings are :mod:`vpr_ros.training.train_config`, the
model set-up :mod:`vpr_ros.training.model_setup`, the validation
:mod:`vpr_ros.training.validation`, the files a run writes :mod:`vpr_ros.training.run_files`.

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

from dataclasses import dataclass, field
import logging
import math
from pathlib import Path
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from vpr_ros.device import describe_device
from vpr_ros.errors import ConfigError
from vpr_ros.models.checkpoints import load_model
from vpr_ros.models.descriptor import DescriptorModel
from vpr_ros.models.heads import NetVLAD
from vpr_ros.training.batches import TupleBatches
from vpr_ros.training.data import load_data, Split, TrainData
from vpr_ros.training.distributed import (barrier, DistContext, setup_distributed,
                                          teardown_distributed)
from vpr_ros.training.frozen import compute_frozen_maps, frozen_maps_refusal, FrozenMaps
from vpr_ros.training.losses import batch_loss
from vpr_ros.training.mining import (batch_hard_negatives, plan_queries, refresh_and_mine)
from vpr_ros.training.model_setup import (freeze_all_but_last, init_netvlad_from_data,
                                          is_checkpoint, set_train_mode, TrainForward)
from vpr_ros.training.run_files import (plot_metrics, read_train_state, save_train_checkpoint,
                                        write_metrics_csv)
from vpr_ros.training.train_config import TrainConfig
from vpr_ros.training.validation import RECALL_VALUES, validate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a run wrote its files, and its per-epoch metrics."""

    out_dir: Path
    last: Path
    best: Path | None
    history: list[dict[str, float]] = field(default_factory=list)


def train(config: TrainConfig, *, data: TrainData | None = None,
          progress: bool = True) -> TrainResult:
    """Train a descriptor model as ``config`` says; ``data`` overrides ``config.data``."""
    ctx = setup_distributed(config.device)
    try:
        return _train(config, data, progress, ctx)
    finally:
        teardown_distributed(ctx)


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
            and not is_checkpoint(config.model):
        init_netvlad_from_data(model, data.train, config.netvlad_init_images,
                               np.random.default_rng([config.seed, 0, 1]))
    last_only = config.train_layers == 'last'
    frozen = None
    if last_only:
        log.info('training the last backbone stage and the head only (%d parameters)',
                 freeze_all_but_last(model))
        refusal = frozen_maps_refusal(config, model, data.train, ctx.world_size)
        if refusal:
            log.info('the frozen layers run for every image: %s', refusal)
        else:
            frozen = compute_frozen_maps(model, data.train.database, config.frozen_cache_mb,
                                         batch_size=config.infer_batch_size,
                                         progress=progress and ctx.main)
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
                save_train_checkpoint(model, best, train_state(epoch, False))
            if epoch > 0:
                save_train_checkpoint(model, last, train_state(epoch, True))
            write_metrics_csv(history, out / 'metrics.csv')
            plot_metrics(history, out / 'metrics.png')
        barrier(ctx)

    if start == 1 and config.validate_before and data.val is not None:
        recalls = validate(model, data.val, **kw)
        log.info('epoch 0 (start): %s', _fmt(recalls))
        finish_epoch(0, {'epoch': 0, 'loss': math.nan, 'triplet': math.nan, 'haf': math.nan,
                         **recalls, 'images_per_s': math.nan, 'seconds': 0.0,
                         'lr': config.lr})
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        stats = _run_epoch(config, model, forward, optimizer, data.train, plan, epoch, ctx,
                           tqdm, progress, frozen)
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
               ctx: DistContext, tqdm, progress: bool,
               frozen: FrozenMaps | None = None) -> dict[str, float]:
    """One pass over the (shuffled) training queries; returns mean losses and throughput.

    ``frozen``: the frozen layers' outputs of the database images; then only the queries
    pass through them, and only the trained layers run for the rest.
    """
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
                                    world_size=ctx.world_size, frozen=frozen)
        set_train_mode(model, config.freeze_bn, config.train_layers == 'last')
        batches = TupleBatches(split, triplets, config.batch_size, config.augment,
                               (config.seed, epoch, chunk), ctx.rank, ctx.world_size)
        if frozen is None:
            loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False,
                                                 num_workers=config.num_workers)
        else:
            loader = (batches.query_batch(b) for b in range(len(batches)))
        batches_iter = iter(loader)
        # Stochastic depth draws from torch's generator: seed it per chunk (after the
        # DataLoader took its seed from it), so a resumed run and one on cached frozen
        # outputs draw the same masks.
        torch.manual_seed(int(np.random.default_rng([config.seed, epoch, chunk, 1]).integers(
            2 ** 62)))
        t0 = time.perf_counter()  # throughput counts batch building, not mining
        for batch, xy, *db_ids in batches_iter:
            batch = batch.to(ctx.device, non_blocking=True)
            if frozen is None:
                desc, parts, scores = forward(batch)
            else:
                desc = frozen.with_queries(model, batch, db_ids[0].to(ctx.device))
                parts = scores = None
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
            images += len(desc) * ctx.world_size
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
