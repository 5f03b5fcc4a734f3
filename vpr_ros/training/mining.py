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

"""GPS weak supervision and hard-negative mining.

Papers: M. Gambino, M. Pierro, F. Grillo, "Visual Geo-Localization" (student project report on
ResNet-18 heads; §4 "Mining procedure", §5.2), and H. J. Kim, E. Dunn, J.-M. Frahm, "Learned
Contextual Feature Reweighting for Image Geo-Localization" (CRN), CVPR 2017.

- **Positives** of a training query: database images within ``positive_m`` (5 m, Gambino et
  al. §5.2's best); the *best* positive is the one closest to the query in descriptor space.
- **Negatives**: database images farther than ``negative_m`` (25 m) from the query; the
  ``negatives`` (10) closest in descriptor space are the hard negatives (Gambino et al. §4).
- **Cache**: descriptors change while the model trains, so they are recomputed every
  ``cache_refresh`` queries, for the queries of the next chunk and for the database (all of it,
  or a random sample of ``cache_size`` plus the positives of those queries: the benchmark's
  ``full`` / ``partial`` mining).
- **Within-batch hard negatives** (CRN, Kim et al.): images of the same batch that are closest to a
  query in feature space but farther than ``negative_m`` geographically, found on the live
  (training-mode) descriptors of the batch.

Convention: indices are positions in the split's ``ImageSet``; descriptors are unit vectors,
so squared L2 distance = ``2 - 2 * dot``.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
from typing import Sequence

import numpy as np
import torch
from vpr_ros.config import Config, option
from vpr_ros.errors import DataError
from vpr_ros.faiss_config import configure_faiss
from vpr_ros.training.data import ImageSet, resize_to, Split
from vpr_ros.training.frozen import cached_describe, FrozenMaps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningConfig(Config):
    """How training triplets are found (Gambino et al. §4; CRN's within-batch negatives)."""

    positive_m: float = option(5.0, 'train positives: database images within this (m); '
                                    '5 m was best in Gambino et al. §5.2', min=0.0)
    negative_m: float = option(25.0, 'negatives: database images farther than this (m)',
                               min=0.0)
    negatives: int = option(10, 'hard negatives per query from the cache', min=1)
    batch_negatives: int = option(1, 'extra within-batch hard negatives per query (CRN); '
                                     '0: off', min=0)
    cache_refresh: int = option(1000, 'queries between refreshes of the descriptor cache',
                                min=1)
    cache_size: int = option(0, 'database images described per refresh (a random sample '
                                'plus the positives of the queries); 0: all (full mining)',
                             min=0)
    mode: str = option('hard', 'hard negatives (descriptor-closest) or random ones',
                       choices=('hard', 'random'))

    def validate(self) -> None:
        """Negatives must lie outside the positive radius."""
        if self.negative_m < self.positive_m:
            from vpr_ros.errors import ConfigError
            raise ConfigError(f'MiningConfig.negative_m ({self.negative_m}) must be at least '
                              f'positive_m ({self.positive_m})')


@dataclass(frozen=True)
class Triplets:
    """Mined training tuples: query, best positive and ``K`` hard negatives (split indices)."""

    queries: np.ndarray     # (B,)
    positives: np.ndarray   # (B,)
    negatives: np.ndarray   # (B, K)

    def __len__(self) -> int:
        return len(self.queries)

    def take(self, rows: Sequence[int] | slice) -> 'Triplets':
        """Return the tuples ``rows``."""
        return Triplets(self.queries[rows], self.positives[rows], self.negatives[rows])


def radius_neighbours(query_xy: np.ndarray, db_xy: np.ndarray, radius: float, *,
                      exclude_self: bool = False) -> list[np.ndarray]:
    """Sorted database indices within ``radius`` m of each query (inclusive; FAISS range search).

    ``exclude_self``: queries are the database images, so query i never lists itself.
    """
    import faiss

    query_xy = np.asarray(query_xy, np.float64)
    db_xy = np.asarray(db_xy, np.float64)
    if len(db_xy) == 0:
        return [np.zeros(0, np.int64) for _ in range(len(query_xy))]
    centre = db_xy.mean(axis=0)  # float32 keeps mm precision near the centre
    configure_faiss()
    index = faiss.IndexFlatL2(2)
    index.add(np.ascontiguousarray(db_xy - centre, np.float32))
    lims, _, ids = index.range_search(np.ascontiguousarray(query_xy - centre, np.float32),
                                      float(radius) ** 2 + 1e-3)
    out = []
    for i in range(len(query_xy)):
        found = np.sort(ids[lims[i]:lims[i + 1]].astype(np.int64))
        # float32 rounding: confirm the boundary in float64
        d = np.sqrt(((db_xy[found] - query_xy[i]) ** 2).sum(-1))
        found = found[d <= radius]
        if exclude_self:
            found = found[found != i]
        out.append(found)
    return out


@dataclass(frozen=True)
class QueryPlan:
    """Training queries that have a positive and a negative, with their positives."""

    queries: np.ndarray              # usable query indices
    positives: list[np.ndarray]      # per usable query
    dropped_no_positive: list[str]   # names of queries without a positive
    dropped_no_negative: list[str]   # names of queries with every image within negative_m


def plan_queries(split: Split, config: MiningConfig) -> QueryPlan:
    """Find every query's positives; report (and drop) queries without positives or negatives.

    A DataError names the problem when no query is usable.
    """
    db, queries = split.database, split.queries
    positives = radius_neighbours(queries.xy, db.xy, config.positive_m,
                                  exclude_self=split.same)
    near = radius_neighbours(queries.xy, db.xy, config.negative_m, exclude_self=False)
    keep, kept_pos, no_pos, no_neg = [], [], [], []
    for i, (pos, close) in enumerate(zip(positives, near)):
        if len(pos) == 0:
            no_pos.append(queries.names[i])
        elif len(close) >= len(db):
            no_neg.append(queries.names[i])
        else:
            keep.append(i)
            kept_pos.append(pos)
    if no_pos:
        log.warning('%d of %d training queries have no database image within %.1f m and are '
                    'not used (e.g. %s)', len(no_pos), len(queries), config.positive_m,
                    ', '.join(no_pos[:3]))
    if no_neg:
        log.warning('%d training queries have no database image farther than %.1f m and are '
                    'not used (e.g. %s)', len(no_neg), config.negative_m, ', '.join(no_neg[:3]))
    if not keep:
        raise DataError(
            f'no usable training query: {len(no_pos)} of {len(queries)} have no positive '
            f'within positive_m={config.positive_m} m (e.g. {", ".join(no_pos[:3]) or "-"}), '
            f'{len(no_neg)} have no negative beyond negative_m={config.negative_m} m; check '
            'the positions, or raise positive_m / lower negative_m')
    return QueryPlan(np.array(keep, np.int64), kept_pos, no_pos, no_neg)


# ---------------------------------------------------------------- descriptors

def _all_gather_rows(local: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Gather variable-length row blocks from every rank (padded all_gather)."""
    import torch.distributed as dist

    width = max(counts)
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts)])


@torch.no_grad()
def describe_set(model: torch.nn.Module, images: ImageSet, indices: Sequence[int], *,
                 batch_size: int = 32, rank: int = 0, world_size: int = 1,
                 frozen: FrozenMaps | None = None) -> np.ndarray:
    """Descriptors ``(len(indices), D)`` float32 of images at native size, eval mode.

    With ``world_size > 1`` every rank describes every ``world_size``-th image and the rows
    are gathered, so all ranks return the same array. ``frozen``: the frozen layers' outputs
    of ``images`` (one process), so only the trained layers run.
    """
    indices = [int(i) for i in indices]
    if frozen is not None:
        return cached_describe(frozen, model, indices, batch_size)
    mine = indices[rank::world_size]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows: list[torch.Tensor] = []
    try:
        start = 0
        while start < len(mine):
            first = images.image(mine[start])
            batch = [resize_to(first, first.shape[:2])]
            stop = start + 1
            # images of one size go together; another size starts a new batch
            while stop < len(mine) and len(batch) < batch_size and \
                    images.image(mine[stop]).shape == first.shape:
                batch.append(resize_to(images.image(mine[stop]), first.shape[:2]))
                stop += 1
            rows.append(model(torch.stack(batch).to(device)).float())
            start = stop
    finally:
        model.train(was_training)
    dim = model.descriptor_dim if hasattr(model, 'descriptor_dim') else None
    local = torch.cat(rows) if rows else torch.zeros((0, dim or 1), device=device)
    if world_size > 1:
        counts = [len(indices[r::world_size]) for r in range(world_size)]
        gathered = _all_gather_rows(local, counts)
        out = torch.empty_like(gathered)
        order = [i for r in range(world_size) for i in range(r, len(indices), world_size)]
        out[torch.tensor(order, device=gathered.device)] = gathered
        local = out
    return local.cpu().numpy()


# ---------------------------------------------------------------- mining

def _desc_dist2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(2.0 - 2.0 * (a @ b.T), 0.0)


def mine_triplets(query_desc: np.ndarray, query_xy: np.ndarray, positives: Sequence[np.ndarray],
                  cache_ids: np.ndarray, cache_desc: np.ndarray, cache_xy: np.ndarray,
                  config: MiningConfig, rng: np.random.Generator) -> Triplets:
    """Pick the best positive and ``config.negatives`` negatives for each query.

    ``cache_*`` describe the database images of the cache (``cache_ids`` are their split
    indices; every positive must be among them). Hard mode takes the descriptor-closest
    images farther than ``negative_m``; random mode draws them uniformly. A query with fewer
    candidates than ``negatives`` repeats its hardest ones.
    """
    where = {int(c): j for j, c in enumerate(cache_ids)}
    k = config.negatives
    q_out, p_out, n_out = [], [], []
    for start in range(0, len(query_desc), 256):
        qd = query_desc[start:start + 256]
        dist = _desc_dist2(qd, cache_desc)
        geo = np.sqrt(((query_xy[start:start + 256, None, :] - cache_xy[None]) ** 2).sum(-1))
        for row in range(len(qd)):
            i = start + row
            cols = np.array([where[int(p)] for p in positives[i]], np.int64)
            best = cols[np.argmin(dist[row, cols])]
            candidates = np.flatnonzero(geo[row] > config.negative_m)
            if len(candidates) == 0:
                continue
            if config.mode == 'hard':
                chosen = candidates[np.argsort(dist[row, candidates], kind='stable')[:k]]
            else:
                chosen = rng.choice(candidates, size=min(k, len(candidates)), replace=False)
            if len(chosen) < k:
                chosen = np.resize(chosen, k)
            q_out.append(i)
            p_out.append(cache_ids[best])
            n_out.append(cache_ids[chosen])
    if not q_out:
        return Triplets(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, k), np.int64))
    return Triplets(np.array(q_out, np.int64), np.array(p_out, np.int64),
                    np.stack(n_out).astype(np.int64))


def refresh_and_mine(model: torch.nn.Module, split: Split, plan: QueryPlan,
                     plan_rows: np.ndarray, config: MiningConfig, rng: np.random.Generator, *,
                     batch_size: int = 32, rank: int = 0, world_size: int = 1,
                     frozen: FrozenMaps | None = None) -> Triplets:
    """Refresh the descriptor cache for the plan rows ``plan_rows`` and mine their triplets.

    Returned ``Triplets.queries`` are split query indices, in the order of ``plan_rows``.
    ``frozen``: the frozen layers' outputs of the database images (:func:`describe_set`).
    """
    db = split.database
    q_ids = plan.queries[plan_rows]
    positives = [plan.positives[r] for r in plan_rows]
    if config.cache_size and config.cache_size < len(db):
        sample = rng.choice(len(db), size=config.cache_size, replace=False)
        cache_ids = np.unique(np.concatenate([sample, *positives]))
    else:
        cache_ids = np.arange(len(db))
    if split.same:  # queries are database images: describe the union once
        union = np.unique(np.concatenate([cache_ids, q_ids]))
        desc = describe_set(model, db, union, batch_size=batch_size, rank=rank,
                            world_size=world_size, frozen=frozen)
        pos = {int(u): j for j, u in enumerate(union)}
        cache_desc = desc[[pos[int(c)] for c in cache_ids]]
        query_desc = desc[[pos[int(q)] for q in q_ids]]
    else:
        cache_desc = describe_set(model, db, cache_ids, batch_size=batch_size, rank=rank,
                                  world_size=world_size, frozen=frozen)
        query_desc = describe_set(model, split.queries, q_ids, batch_size=batch_size,
                                  rank=rank, world_size=world_size)
    mined = mine_triplets(query_desc, split.queries.xy[q_ids], positives, cache_ids,
                          cache_desc, db.xy[cache_ids], config, rng)
    return Triplets(q_ids[mined.queries], mined.positives, mined.negatives)


def batch_hard_negatives(desc: torch.Tensor, xy: torch.Tensor, group_size: int, k: int,
                         negative_m: float) -> torch.Tensor:
    """Within-batch hard negatives (CRN, Kim et al.): ``(B, k)`` row indices, -1 where none.

    The batch holds ``B`` tuples of ``group_size`` rows, the query first. For each query, the
    ``k`` images of *other* tuples closest to it in descriptor space among those farther than
    ``negative_m`` from its position. Uses detached descriptors.
    """
    with torch.no_grad():
        d = desc.detach()
        n = d.shape[0]
        b = n // group_size
        q_rows = torch.arange(b, device=d.device) * group_size
        group = torch.arange(n, device=d.device) // group_size
        dist = torch.cdist(d[q_rows], d)                                  # (B, N)
        geo = torch.cdist(xy[q_rows].double(), xy.double()).to(d.device)  # (B, N)
        own = group.unsqueeze(0) == torch.arange(b, device=d.device).unsqueeze(1)
        dist = dist.masked_fill((geo <= negative_m) | own, float('inf'))
        values, idx = dist.topk(min(k, n), dim=1, largest=False)
        return idx.masked_fill(torch.isinf(values), -1)
