# Copyright 2026 The vpr_ros Authors
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

"""Fit GeoWarp's warping regression on a map's own images (paper §3.4, §4.1).

GeoWarp: Berton et al., "Viewpoint Invariant Dense Matching for Visual Geolocalization",
ICCV 2021, arXiv 2109.09827.

L_ss needs single images: random trapezoid pairs are cut from the map thumbnails (the
published recipe, image space); L_cons needs any pair (identity + horizontal flip); with the
map's positions, query-positive pairs (within ``t_geo`` and ``t_feat``) add L_fw. The
descriptor network stays frozen: only the regression learns, as in the paper, at the
thumbnail size the localizer re-ranks with. The paper trains 50 000 iterations with 16 pairs
per loss on a GPU; the default here is a short CPU fit.

State lives in ``<map>.geowarp/`` beside the map: ``state.pt`` (weights, optimiser, RNG,
iteration: resume continues bit for bit), ``losses.csv``, ``loss.png``. The result is attached
to the map (``MapDB.attach_file``) and listed in its manifest under ``geowarp``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
import datetime
import io
import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from vpr_ros.config import Config, option
from vpr_ros.errors import DataError, MapError
from vpr_ros.files import write_bytes, write_text
from vpr_ros.mapdb.database import MapDB
from vpr_ros.models.geowarp import GeoWarp, LOSS_FIELDS, save_geowarp
from vpr_ros.models.geowarp_losses import (consistency_loss, features_wise_loss,
                                           GeoWarpLossConfig, mine_pairs, random_trapezoids,
                                           self_supervised_loss, self_supervised_pair,
                                           total_loss)
from vpr_ros.models.weights import read_checkpoint, save_payload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeoWarpFitConfig(Config):
    """Settings of ``vpr-ros fit-geowarp``; how GeoWarp re-ranks is the localizer's."""

    # Before the split, the fitting settings were a geowarp: section (GeoWarpConfig).
    MOVED: ClassVar[Mapping[str, str]] = {f'geowarp.{n}': f'losses.{n}' for n in LOSS_FIELDS}
    RETIRED: ClassVar[Mapping[str, str]] = {
        'geowarp': 'how GeoWarp re-ranks is a localizer setting (LocalizerConfig.geowarp, ROS '
                   'parameters localizer.geowarp.*), not a fitting one'}

    losses: GeoWarpLossConfig = option(GeoWarpLossConfig(), 'random trapezoids, L_fw pairs '
                                       'and loss weights (k, t_geo, t_feat, lambdas)')
    iterations: int = option(300, 'optimiser steps (the paper: 50 000 on a GPU)', min=1)
    batch_size: int = option(16, 'pairs per loss per step (the paper: 16)', min=1)
    lr: float = option(1e-4, 'Adam learning rate', min=0.0)
    use_positions: bool = option(True, 'add L_fw on query-positive pairs from map positions')
    save_every: int = option(50, 'steps between resumable checkpoints', min=1)
    seed: int = option(0, 'seed of sampling and trapezoids')
    device: str = option('auto', 'torch device: auto, cpu, cuda, cuda:N')


def work_dir_for(map_path: Path) -> Path:
    """Folder beside the map that holds the fit's state, loss log and plot."""
    return map_path.parent / f'{map_path.name}.geowarp'


def _fw_pairs(db: MapDB, config: GeoWarpLossConfig) -> torch.Tensor:
    """Pairs of distinct map entries within t_geo metres and t_feat in descriptor space."""
    enu = db.positions_enu(np.arange(len(db)))
    if not np.isfinite(enu).all():
        return torch.zeros((0, 2), dtype=torch.long)
    desc = torch.from_numpy(np.array(db.descriptors, np.float32))
    pos = torch.from_numpy(enu)
    pairs = mine_pairs(pos, pos, desc, desc, config)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def _thumbs(db: MapDB, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.array(db.thumbnails(idx)))
    return t.permute(0, 3, 1, 2).float().div_(255.0).to(device)


def _plot(losses: list[dict[str, float]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))   # the object API: no pyplot, no global backend
    ax = fig.subplots()
    steps = [r['step'] for r in losses]
    for key in ('total', 'ss', 'fw', 'cons'):
        values = [r.get(key, float('nan')) for r in losses]
        if np.isfinite(values).any():
            ax.plot(steps, values, label=key)
    ax.set_xlabel('step')
    ax.set_ylabel('loss')
    ax.set_yscale('log')
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title('GeoWarp fit (losses of Berton et al., ICCV 2021)')
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    write_bytes(path, buf.getvalue())


def _write_losses(losses: list[dict[str, float]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=['step', 'total', 'ss', 'fw', 'cons'])
    writer.writeheader()
    for row in losses:
        writer.writerow({k: row.get(k, '') for k in writer.fieldnames})
    write_text(path, buf.getvalue())


def fit_geowarp(map_path: str | Path, config: GeoWarpFitConfig | None = None, *,
                restart: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fit GeoWarp on a map's thumbnails (and positions); attach the result to the map.

    Resumes from ``<map>.geowarp/state.pt`` when it was made with the same settings, unless
    ``restart``. Returns the manifest's ``geowarp`` record.
    """
    from tqdm import tqdm
    from vpr_ros.device import resolve_device

    config = config or GeoWarpFitConfig()
    map_path = Path(map_path)
    db = MapDB.open(map_path)
    if not db.manifest.get('thumbnails'):
        raise MapError(f'{map_path} was built without thumbnails: GeoWarp needs them '
                       f'(rebuild without --thumbnail-size 0 0)')
    if len(db) < 2:
        raise MapError(f'{map_path}: GeoWarp needs at least 2 map images, the map has {len(db)}')
    device = torch.device(resolve_device(config.device))
    model = db.load_model(str(device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    losses_cfg = config.losses
    with torch.random.fork_rng(devices=[]):        # the same seed, the same initial convs
        torch.manual_seed(config.seed)
        geowarp = GeoWarp().to(device).train()
    optimiser = torch.optim.Adam(geowarp.regression.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    pairs = (_fw_pairs(db, losses_cfg) if config.use_positions
             else torch.zeros((0, 2), dtype=torch.long))
    work = work_dir_for(map_path)
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / 'state.pt'
    # A longer run may continue a shorter one: the step count is not part of the settings.
    fixed = {k: v for k, v in config.to_dict().items() if k not in ('iterations', 'save_every')}
    settings = {'config': fixed, 'fingerprint': db.manifest['model']['fingerprint']}
    step, losses = 0, []
    if state_path.exists() and not restart:
        state = read_checkpoint(state_path)
        if state.get('settings') == settings:
            geowarp.load_state_dict(state['geowarp'])
            optimiser.load_state_dict(state['optimiser'])
            generator.set_state(state['generator'])
            step, losses = int(state['step']), list(state['losses'])
            log.info('resuming GeoWarp fit at step %d', step)
        else:
            log.warning('%s was made with other settings or another map; starting over',
                        state_path)

    def save_state() -> None:
        save_payload({'settings': settings, 'geowarp': geowarp.state_dict(),
                      'optimiser': optimiser.state_dict(), 'generator': generator.get_state(),
                      'step': step, 'losses': losses}, state_path)

    n = len(db)
    bar = tqdm(total=config.iterations, initial=step, disable=not progress,
               desc='fit-geowarp', unit='step')
    try:
        while step < config.iterations:
            idx = torch.randint(0, n, (config.batch_size,), generator=generator).numpy()
            images = _thumbs(db, idx, device)
            t_x, t_y, t_z = random_trapezoids(config.batch_size, losses_cfg.k, generator,
                                              device=device)
            view_a, view_b, t_a, t_b = self_supervised_pair(images, t_x, t_y, t_z)
            with torch.no_grad():
                f_a = model.local_features(view_a)
                f_b = model.local_features(view_b)
            l_ss = self_supervised_loss(geowarp, f_a, f_b, t_a, t_b)
            l_fw = l_cons = None
            if len(pairs):
                pick = torch.randint(0, len(pairs), (config.batch_size,), generator=generator)
                q_idx, g_idx = pairs[pick, 0].numpy(), pairs[pick, 1].numpy()
                img_q, img_g = _thumbs(db, q_idx, device), _thumbs(db, g_idx, device)
                with torch.no_grad():
                    f_q, f_g = model.local_features(img_q), model.local_features(img_g)
                    f_q_flip = model.local_features(torch.flip(img_q, dims=(-1,)))
                    f_g_flip = model.local_features(torch.flip(img_g, dims=(-1,)))
                l_fw = features_wise_loss(geowarp, f_q, f_g)
                l_cons = consistency_loss(geowarp, f_q, f_g, f_q_flip, f_g_flip)
            else:
                # No positions: L_cons on the self-supervised pairs, which need no labels.
                l_cons = consistency_loss(geowarp, f_a, f_b)
            loss = total_loss(losses_cfg, l_ss=l_ss, l_fw=l_fw, l_cons=l_cons)
            if not torch.isfinite(loss):
                raise DataError(f'GeoWarp fit diverged at step {step} (loss {loss.item()}); '
                                f'lower --lr')
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            row = {'step': step, 'total': loss.item(), 'ss': l_ss.item()}
            if l_fw is not None:
                row['fw'] = l_fw.item()
            row['cons'] = l_cons.item()
            losses.append(row)
            bar.update(1)
            bar.set_postfix(loss=f'{row["total"]:.4f}')
            if step % config.save_every == 0 or step == config.iterations:
                save_state()
    finally:
        bar.close()
    _write_losses(losses, work / 'losses.csv')
    _plot(losses, work / 'loss.png')
    geowarp.eval()
    head = np.mean([r['total'] for r in losses[:10]])
    tail = np.mean([r['total'] for r in losses[-10:]])
    record = {
        'backbone': model.config.backbone,
        'iterations': step,
        'batch_size': config.batch_size,
        'fw_pairs': int(len(pairs)),
        'losses': ['ss', 'cons'] + (['fw'] if len(pairs) else []),
        'loss_first10': float(head),
        'loss_last10': float(tail),
        'fitted': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    path = db.attach_file('geowarp', '.pt', lambda p: save_geowarp(
        geowarp, p, backbone=model.config.backbone, extra=record), key='geowarp', record=record)
    # Maps built before the features were stored get them here (vpr_ros.runtime).
    from vpr_ros.runtime.map_features import ensure_local_features
    ensure_local_features(db, model)
    return {**record, 'file': path.name}
