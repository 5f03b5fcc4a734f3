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

"""Map-side descriptor adaptation: a whitening projection learnt on the map, kept only if it helps.

Off-the-shelf CNN descriptors are dominated by a few directions of high variance that say
little about the place (co-occurring activations, in the words of Jégou and Chum, "Negative
evidences and co-occurrences in image retrieval: the benefit of PCA and whitening", ECCV 2012).
Whitening learnt on the images being searched removes them and, cut to a smaller dimension,
drops the noisy low-variance ones. Two projections, both ``x -> normalise(P (x - m))``:

- ``pcaw``: PCA whitening of the map's descriptors (Jégou and Chum, ECCV 2012), the
  ``pcawhitenlearn`` of Radenović et al.;
- ``lw``: learnt whitening from matching pairs (Radenović, Tolias and Chum, "Fine-tuning CNN
  Image Retrieval with No Human Annotation", TPAMI 2018, arXiv 1711.02512, their
  ``whitenlearn``): whiten the covariance of the differences of matching pairs (here map
  images within ``positive_radius_m`` of each other), then rotate onto the principal
  directions of the whitened map descriptors.

Both covariances get a little shrinkage towards their mean eigenvalue: a map has fewer entries
(and far fewer independent pairs) than the descriptor has dimensions.

Nothing here is trusted without a check on the map itself. :func:`choose_adaptation` cuts the
map into spatial folds (held-out places), fits each candidate (method, dimension) on the other
folds, and scores retrieval of pseudo-queries (augmented map thumbnails, the entry itself left
out) made from the held-out places against the whole map. The best candidate is kept only if it
beats the plain descriptors by ``min_gain`` in recall@1 on those held-out places, and the
queries it changes show it (:func:`vpr_ros.significance.sign_test`, p at most ``max_p``
divided by the number of candidates: the best of many is tested); otherwise the map keeps
its plain descriptors. The final projection is fitted on the whole map.

Why one module of this size: the projections, their spatial-fold validation and the
choice are one decision (fit only what held-out places show helps) and are read together.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
import logging
import operator
from pathlib import Path
import time
from typing import Any, Callable, Sequence

import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.errors import DataError, MapError
from vpr_ros.faiss_config import configure_faiss
from vpr_ros.files import save_array, save_arrays
from vpr_ros.significance import sign_test
from vpr_ros.vectors import unit_rows

log = logging.getLogger(__name__)

METHODS = ('auto', 'none', 'pcaw', 'lw')
#: Manifest key of the adaptation record.
KEY = 'adaptation'
#: File stems of the adaptation files in the map directory.
STEMS = ('adaptation', 'adapted-descriptors', 'adapted-index')
#: File stem of the validation pseudo-queries' descriptors, kept for the next ``adapt``.
QUERIES_STEM = 'validation-queries'


@dataclass(frozen=True)
class AdaptConfig(Config):
    """How a map learns a descriptor projection from its own images (``vpr-ros adapt``)."""

    method: str = option('auto', 'auto: the best of none/pcaw/lw on held-out map places; or '
                         'force one (none removes the adaptation)', choices=METHODS)
    dims: tuple[int, ...] = option((32, 64, 128, 256, 512), 'output dimensions to try (those '
                                   'below the number of training entries)')
    positive_radius_m: float = option(5.0, 'lw: map images this close are a matching pair',
                                      min=0.0)
    max_pairs: int = option(50000, 'lw: matching pairs used at most (sampled)', min=10)
    shrinkage: float = option(0.1, 'covariance shrinkage towards the mean eigenvalue',
                              min=0.0, max=1.0)
    folds: int = option(3, 'spatial folds of the held-out validation', min=2)
    validation_queries: int = option(200, 'pseudo-queries made from map thumbnails to '
                                     'validate on', min=10)
    right_place_spacings: float = option(3.0, 'validation: a retrieval is right within this '
                                         'many place spacings of the entry the pseudo-query '
                                         'was made from',
                                         min=0.5)
    min_gain: float = option(0.01, 'keep a projection only if held-out recall@1 rises by '
                             'this much over the plain descriptors', min=0.0)
    max_p: float = option(0.05, 'and only if the held-out queries it changes show it: '
                          'one-sided exact sign test (McNemar) of those it puts right against '
                          'those it puts wrong, p at most this over the number of candidates '
                          '(Bonferroni; 1 with one candidate: no test)', min=0.0, max=1.0)
    seed: int = option(0, 'seed of folds, pseudo-queries and pair sampling')


@dataclass(frozen=True)
class Projection:
    """Map ``x`` to ``normalise(matrix @ (x - mean))``; rows by decreasing variance."""

    method: str
    mean: np.ndarray     # (D,) float32
    matrix: np.ndarray   # (d, D) float32

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.matrix.shape[1])

    def truncate(self, dim: int) -> 'Projection':
        """Return the same projection cut to its first ``dim`` output dimensions."""
        return Projection(self.method, self.mean, self.matrix[:dim])

    def apply(self, descriptors: np.ndarray, chunk: int = 65536, *,
              normalise: bool = True) -> np.ndarray:
        """Project ``(N, D)`` descriptors to ``(N, d)`` float32, L2-normalised (by default)."""
        x = np.atleast_2d(np.asarray(descriptors, np.float32))
        if x.shape[1] != self.input_dim:
            raise MapError(f'adaptation: descriptors have {x.shape[1]} dimensions, the '
                           f'projection expects {self.input_dim}')
        out = np.empty((len(x), self.dim), np.float32)
        for start in range(0, len(x), chunk):
            y = (x[start:start + chunk] - self.mean) @ self.matrix.T
            out[start:start + chunk] = unit_rows(y) if normalise else y
        return out


def _shrink(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    d = cov.shape[0]
    return (1.0 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d)


def _eigh_desc(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return np.maximum(values[order], 1e-12), vectors[:, order]


@dataclass(frozen=True)
class Moments:
    """Count, sum and scatter of descriptors about a fixed ``shift`` (float64 sums).

    The covariance of any union of map parts comes from adding the parts' moments, so the
    held-out check reads the map once for all its folds, methods and the final fit, instead of
    once per fold and method. The shift (the map's mean) keeps the sums free of cancellation.
    """

    count: int
    total: np.ndarray    # (D,) sum of x - shift
    scatter: np.ndarray  # (D, D) sum of (x - shift)(x - shift)^T
    shift: np.ndarray    # (D,)

    @classmethod
    def by_label(cls, x: np.ndarray, labels: np.ndarray, parts: int, shift: np.ndarray,
                 chunk: int = 16384) -> list['Moments']:
        """Moments of the rows of ``x`` with each label ``0 .. parts-1``, reading ``x`` once."""
        d = x.shape[1]
        count, total = np.zeros(parts, np.int64), np.zeros((parts, d))
        scatter = np.zeros((parts, d, d))
        for start in range(0, len(x), chunk):
            # Centred on the shift, float32 products lose nothing that matters (relative
            # error ~1e-6 against a shrinkage of 10 %) at half the time of float64 ones.
            block = (np.asarray(x[start:start + chunk], np.float64) - shift).astype(np.float32)
            label = labels[start:start + chunk]
            for part in range(parts):
                rows = block[label == part]
                count[part] += len(rows)
                total[part] += rows.sum(axis=0, dtype=np.float64)
                scatter[part] += rows.T @ rows
        return [cls(int(count[k]), total[k], scatter[k], shift) for k in range(parts)]

    @classmethod
    def of(cls, x: np.ndarray, chunk: int = 16384) -> 'Moments':
        """Moments of all rows of ``x`` about their mean (a memory-mapped map is not copied)."""
        shift = sum(np.asarray(x[start:start + chunk], np.float64).sum(axis=0)
                    for start in range(0, len(x), chunk)) / len(x)
        return cls.by_label(x, np.zeros(len(x), np.int64), 1, shift, chunk)[0]

    def __add__(self, other: 'Moments') -> 'Moments':
        return Moments(self.count + other.count, self.total + other.total,
                       self.scatter + other.scatter, self.shift)

    def mean(self) -> np.ndarray:
        """Mean of the rows."""
        return self.shift + self.total / self.count

    def covariance(self, about: np.ndarray) -> np.ndarray:
        """``mean((x - about)(x - about)^T)`` over the rows."""
        a = np.asarray(about, np.float64) - self.shift
        mu = self.total / self.count
        return (self.scatter / self.count - np.outer(mu, a) - np.outer(a, mu)
                + np.outer(a, a))


@dataclass(frozen=True)
class PairMoments:
    """Count, sum of first members and scatter of differences of matching pairs (float64 sums)."""

    count: int
    first_total: np.ndarray   # (D,) sum of x[i] over pairs (i, j)
    scatter: np.ndarray       # (D, D) sum of (x[i] - x[j])(x[i] - x[j])^T

    @classmethod
    def by_label(cls, x: np.ndarray, pairs: np.ndarray, labels: np.ndarray, parts: int,
                 chunk: int = 8192) -> list['PairMoments']:
        """Moments of the pairs with each label ``0 .. parts-1``."""
        d = x.shape[1]
        out = []
        for part in range(parts):
            chosen = pairs[labels == part]
            first, scatter = np.zeros(d), np.zeros((d, d))
            for start in range(0, len(chosen), chunk):
                i, j = chosen[start:start + chunk, 0], chosen[start:start + chunk, 1]
                xi = np.asarray(x[i], np.float32)
                diff = xi - np.asarray(x[j], np.float32)
                first += xi.sum(axis=0, dtype=np.float64)
                scatter += diff.T @ diff
            out.append(cls(len(chosen), first, scatter))
        return out

    def __add__(self, other: 'PairMoments') -> 'PairMoments':
        return PairMoments(self.count + other.count, self.first_total + other.first_total,
                           self.scatter + other.scatter)


def fit_pcaw(descriptors: np.ndarray, dim: int, *, shrinkage: float = 0.1) -> Projection:
    """PCA whitening of ``descriptors`` (Jégou and Chum, ECCV 2012), ``dim`` outputs."""
    return _pcaw(Moments.of(descriptors), dim, shrinkage)


def _pcaw(moments: Moments, dim: int, shrinkage: float) -> Projection:
    mean = moments.mean()
    values, vectors = _eigh_desc(_shrink(moments.covariance(mean), shrinkage))
    matrix = (vectors[:, :dim] / np.sqrt(values[:dim])).T
    return Projection('pcaw', mean.astype(np.float32), matrix.astype(np.float32))


def fit_pca(descriptors: np.ndarray, dim: int) -> Projection:
    """Rotation onto the top ``dim`` principal directions, no centring, no whitening.

    The projection the compact map format (v2) stores when the map keeps its plain
    descriptors: inner products are kept exactly for vectors in the span of the first ``dim``
    directions (all map descriptors when the map has at most ``dim`` entries) and nearly so
    otherwise, so retrieval ranks as with the plain descriptors. Without centring, the
    query-independent term ``-m . x`` that centring adds to every score does not appear.
    """
    x = np.asarray(descriptors, np.float32)
    values, vectors = _eigh_desc(Moments.of(x).covariance(np.zeros(x.shape[1])))
    dim = min(int(dim), x.shape[1])
    return Projection('pca', np.zeros(x.shape[1], np.float32),
                      vectors[:, :dim].T.astype(np.float32))


def fit_lw(descriptors: np.ndarray, pairs: np.ndarray, dim: int, *,
           shrinkage: float = 0.1) -> Projection:
    """Learnt whitening from matching ``pairs`` (Radenović et al., TPAMI 2018).

    ``P = eig(C_S^-1/2 cov(x) C_S^-1/2)^T C_S^-1/2`` with ``C_S`` the covariance of the
    differences of matching pairs; the first ``dim`` rows are kept.
    """
    x = np.asarray(descriptors, np.float32)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        raise DataError('learnt whitening needs matching pairs of map images; none found')
    return _lw(Moments.of(x), PairMoments.by_label(x, pairs, np.zeros(len(pairs), np.int64),
                                                   1)[0], dim, shrinkage)


def _lw(moments: Moments, pairs: PairMoments, dim: int, shrinkage: float) -> Projection:
    mean = pairs.first_total / pairs.count
    cov_s = _shrink(pairs.scatter / pairs.count, shrinkage)
    whiten = np.linalg.inv(np.linalg.cholesky(cov_s))    # C_S^-1/2 (up to a rotation)
    _, vectors = _eigh_desc(whiten @ moments.covariance(mean) @ whiten.T)
    matrix = vectors[:, :dim].T @ whiten
    return Projection('lw', mean.astype(np.float32), matrix.astype(np.float32))


def matching_pairs(enu: np.ndarray, radius_m: float, *, limit: int = 50000,
                   seed: int = 0) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, of map entries within ``radius_m`` metres (sampled)."""
    import faiss

    pts = np.ascontiguousarray(enu[:, :2], np.float32)
    if len(pts) < 2:
        return np.zeros((0, 2), np.int64)
    configure_faiss()
    index = faiss.IndexFlatL2(2)
    index.add(pts)
    lims, _, ids = index.range_search(pts, float(radius_m) ** 2 * (1 + 1e-6))
    rows = np.repeat(np.arange(len(pts)), np.diff(lims).astype(np.int64))
    pairs = np.stack([rows, ids.astype(np.int64)], axis=1)
    pairs = pairs[pairs[:, 0] < pairs[:, 1]]
    if len(pairs) > limit:
        keep = np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False)
        pairs = pairs[np.sort(keep)]
    return pairs


def fit_dims(config: AdaptConfig, d: int, train: int) -> list[int]:
    """Output dimensions to try: those of ``config.dims`` below ``d`` and ``train`` entries.

    A :class:`DataError` when there is none (the map is too small to fit a projection).
    """
    dims = sorted({int(k) for k in config.dims if 0 < int(k) < min(d, train)})
    if not dims:
        raise DataError(f'adaptation: no output dimension in {list(config.dims)} is below '
                        f'the {train} entries a fold trains on (and the descriptor size '
                        f'{d}); the map is too small to fit a projection')
    return dims


def spatial_folds(enu: np.ndarray, folds: int, *, seed: int = 0) -> np.ndarray:
    """Fold of each entry: k-means cells of the positions, dealt round-robin to the folds."""
    import faiss

    pts = np.ascontiguousarray(enu[:, :2], np.float32)
    cells = int(min(len(pts), 4 * folds))
    configure_faiss()
    km = faiss.Kmeans(2, cells, niter=20, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(pts)
    _, cell = km.index.search(pts, 1)
    # Deal the cells by their order along the first principal axis, so neighbouring cells
    # land in different folds and every fold spans the map.
    axis = np.linalg.svd(pts - pts.mean(axis=0), full_matrices=False)[2][0]
    rank = np.argsort(np.argsort(km.centroids @ axis))
    return (rank[cell[:, 0]] % folds).astype(np.int64)


def describe_pseudo_queries(db: Any, model: Any, count: int, *, seed: int = 0,
                            batch_size: int = 0,
                            images: Callable[[int], np.ndarray] | None = None,
                            candidates: np.ndarray | None = None,
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Raw descriptors of ``count`` pseudo-queries and the map entries they were made from.

    ``images(i)`` loads entry i as the build saw it (the map's source, checked and shrunk by
    :func:`vpr_ros.mapdb.sources.entry_images`); the map's thumbnails are used without it.
    ``candidates``: the entries to draw from (default: all). The same seed draws the same
    entries and views, so two models can be compared on identical pseudo-queries.
    """
    import torch

    from vpr_ros.device import forward_batch
    from vpr_ros.pseudo_queries import pseudo_query
    from vpr_ros.images import to_tensor

    batch_size = forward_batch(model.device, batch_size, model)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(db)) if candidates is None else np.asarray(candidates, np.int64)
    chosen = np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))
    out = np.empty((len(chosen), int(model.descriptor_dim)), np.float32)
    pending: dict[tuple[int, ...], list[tuple[int, Any]]] = {}

    def flush(shape: tuple[int, ...]) -> None:
        rows = pending.pop(shape)
        batch = torch.stack([t for _, t in rows]).to(model.device)
        out[[r for r, _ in rows]] = model.embed(model.resize(batch)).float().cpu().numpy()

    with torch.inference_mode():
        for row, i in enumerate(chosen):
            source = db.thumbnails(int(i)) if images is None else images(int(i))
            tensor = to_tensor(pseudo_query(source, rng))
            pending.setdefault(tuple(tensor.shape), []).append((row, tensor))
            if len(pending[tuple(tensor.shape)]) >= batch_size:
                flush(tuple(tensor.shape))
        for shape in list(pending):
            flush(shape)
    return out, chosen


@dataclass
class AdaptationChoice:
    """The chosen projection (None: plain descriptors) and the validation table behind it."""

    projection: Projection | None
    method: str
    dim: int
    table: list[dict[str, Any]]
    report: dict[str, Any]
    # The pseudo-queries it was validated on (plain descriptors, source entries), stored
    # with the adaptation so the next adapt of the same map and model need not describe them.
    queries: tuple[np.ndarray, np.ndarray] | None = None


def choose_adaptation(descriptors: np.ndarray, enu: np.ndarray, queries: np.ndarray | None,
                      sources: np.ndarray | None, config: AdaptConfig | None = None, *,
                      drive: tuple[np.ndarray, np.ndarray] | None = None,
                      ) -> AdaptationChoice:
    """Validate the candidates on held-out places, keep the best that helps, fit it on all.

    Args:
        descriptors: ``(N, D)`` plain map descriptors.
        enu: ``(N, 2)`` map positions in metres.
        queries: ``(Q, D)`` plain descriptors of pseudo-queries (unused with ``drive``).
        sources: ``(Q,)`` map entry each pseudo-query was made from.
        config: candidates and the gate.
        drive: ``(plain descriptors (F, D), east/north (F, 2))`` of a second drive's frames:
            each candidate is then fitted on the whole map and scored on these frames, which
            decide instead of the pseudo-queries (a real change of conditions, not a synthetic
            one of the map's own images).
    """
    from vpr_ros.fix_quality import place_spacing_m

    config = config or AdaptConfig()
    started = time.perf_counter()
    x = np.ascontiguousarray(descriptors, np.float32)
    n, d = x.shape
    enu = np.asarray(enu, np.float64)[:, :2]
    if not np.isfinite(enu).all():
        raise DataError('adaptation needs a position for every map entry (held-out places, '
                        'matching pairs); this map has entries without one')
    spacing = place_spacing_m(enu)
    radius = config.right_place_spacings * spacing
    # A second drive is scored against projections fitted on the whole map: no folds.
    fold = spatial_folds(enu, config.folds, seed=config.seed) if drive is None else None
    methods = ['pcaw', 'lw'] if config.method == 'auto' else [config.method]
    methods = [m for m in methods if m != 'none']
    pairs_all = matching_pairs(enu, config.positive_radius_m, limit=config.max_pairs,
                               seed=config.seed)
    if 'lw' in methods and len(pairs_all) < 10:
        if config.method == 'lw':
            raise DataError(f'learnt whitening: only {len(pairs_all)} pairs of map images '
                            f'within {config.positive_radius_m:g} m')
        methods.remove('lw')
    min_train = (n if fold is None else
                 min(int((fold != f).sum()) for f in range(config.folds)))
    dims = fit_dims(config, d, min_train) if methods else []
    # The map's moments per fold (one part with a second drive) and the matching pairs'
    # per pair of folds: each candidate below is fitted on sums of parts, so the map is read
    # once for every fold, method and the final fit.
    folds = 1 if fold is None else config.folds
    labels = np.zeros(n, np.int64) if fold is None else fold
    map_parts = Moments.by_label(x, labels, folds, x.mean(axis=0, dtype=np.float64))
    low, high = np.sort(labels[pairs_all], axis=1).T      # the folds of a pair's two ends
    pair_parts = (PairMoments.by_label(x, pairs_all, low * folds + high, folds * folds)
                  if 'lw' in methods else [])

    def fitted(method: str, held_out: int | None, dim: int) -> Projection | None:
        """Fit the candidate on every fold but ``held_out``; None: too few pairs there."""
        keep = [k for k in range(folds) if k != held_out]
        moments = functools.reduce(operator.add, [map_parts[k] for k in keep])
        if method == 'pcaw':
            return _pcaw(moments, dim, config.shrinkage)
        pairs = functools.reduce(operator.add, [pair_parts[a * folds + b] for a in keep
                                                for b in keep if a <= b])
        return _lw(moments, pairs, dim, config.shrinkage) if pairs.count >= 10 else None

    # One trial per held-out fold, or one for the second drive: the fold left out of the fit,
    # the queries, and how a search is scored.
    trials: list[tuple[int | None, np.ndarray, Callable[..., np.ndarray]]] = []
    if drive is not None:
        qx = np.ascontiguousarray(drive[0], np.float32)
        truth = np.asarray(drive[1], np.float64)[:, :2]
        trials.append((None, qx, lambda q, db: recall_at_positions(q, db, enu, truth,
                                                                   radius)))
    else:
        qx = np.ascontiguousarray(queries, np.float32)
        for f in range(config.folds):
            held = fold[sources] == f
            if held.any():
                trials.append((f, qx[held], lambda q, db, src=sources[held]: recall_rows(
                    q, db, src, enu, radius)))
    # hits[(method, dim)] = list of per-query right/wrong at 1 and 5, one part per trial.
    hits: dict[tuple[str, int], list[np.ndarray]] = {('none', d): []}
    for held_out, trial_queries, score in trials:
        hits[('none', d)].append(score(trial_queries, x))
        for method in methods:
            full = fitted(method, held_out, max(dims))
            if full is None:
                continue
            px_full = full.apply(x, normalise=False)
            pq_full = full.apply(trial_queries, normalise=False)
            for dim in dims:
                hits.setdefault((method, dim), []).append(
                    score(unit_rows(pq_full[:, :dim]), unit_rows(px_full[:, :dim])))
    table = []
    complete = len(hits[('none', d)])
    right: dict[tuple[str, int], np.ndarray] = {}     # per-query right at rank 1
    for (method, dim), parts in hits.items():
        if len(parts) != complete or not parts:
            continue
        rows = np.concatenate(parts)
        right[(method, dim)] = rows[:, 0]
        table.append({'method': method, 'dim': dim, 'queries': int(len(rows)),
                      'recall@1': float(rows[:, 0].mean()),
                      'recall@5': float(rows[:, 1].mean())})
    if not table or table[0]['queries'] == 0:
        raise DataError('adaptation: no pseudo-query fell in a held-out fold')
    where = 'on the second drive' if drive is not None else 'on held-out places'
    unit = 'frames' if drive is not None else 'queries'
    none = next(r for r in table if r['method'] == 'none')
    best = max(table, key=lambda r: (r['recall@1'], r['recall@5'], r['method'] == 'none',
                                     -r['dim']))
    forced = config.method not in ('auto',)
    if forced:
        pick = [r for r in table if r['method'] == config.method]
        best = max(pick, key=lambda r: (r['recall@1'], r['recall@5'], -r['dim'])) \
            if pick else none
    gain = best['recall@1'] - none['recall@1']
    p_value = sign_test(right[(best['method'], best['dim'])], right[('none', d)])
    # The best of several candidates is tested: Bonferroni keeps the chance that any plain-
    # equivalent candidate passes at max_p (conservative: candidates are correlated).
    candidates = sum(r['method'] != 'none' for r in table)
    threshold = config.max_p / max(1, candidates)
    if best['method'] != 'none' and not forced and gain < config.min_gain:
        reason = (f'best candidate {best["method"]}-{best["dim"]} gains {gain:+.3f} recall@1 '
                  f'{where} (< {config.min_gain:g}): plain descriptors kept')
        best = none
    elif best['method'] != 'none' and not forced and p_value > threshold:
        reason = (f'best candidate {best["method"]}-{best["dim"]} gains {gain:+.3f} recall@1 '
                  f'{where}, but the {unit} it changes do not show it (sign test '
                  f'p = {p_value:.4f} > {config.max_p:g} / {candidates} candidates): plain '
                  f'descriptors kept')
        best = none
    elif best['method'] == 'none':
        reason = f'no candidate beats the plain descriptors {where}'
    else:
        reason = (f'{best["method"]}-{best["dim"]}: recall@1 {none["recall@1"]:.3f} -> '
                  f'{best["recall@1"]:.3f} {where}' + (' (forced)' if forced else ''))
    projection = (fitted(best['method'], None, best['dim'])
                  if best['method'] in ('pcaw', 'lw') else None)
    report = {
        'reason': reason, 'place_spacing_m': spacing, 'right_place_m': radius,
        'folds': config.folds, 'pseudo_queries': 0 if drive is not None else int(len(qx)),
        'decided_by': 'second-drive' if drive is not None else 'held-out',
        'drive_frames': int(len(qx)) if drive is not None else 0, 'sign_test_p': p_value,
        'sign_test_threshold': threshold, 'candidates': candidates,
        'pairs': int(len(pairs_all)), 'seconds': round(time.perf_counter() - started, 3),
    }
    return AdaptationChoice(projection, best['method'], int(best['dim']), table, report)


def recall_rows(queries: np.ndarray, database: np.ndarray, sources: np.ndarray,
                enu: np.ndarray, radius_m: float) -> np.ndarray:
    """``(Q, 2)`` booleans: a right place at rank 1, within the top 5 (own entry left out)."""
    import faiss

    configure_faiss()
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(np.ascontiguousarray(database, np.float32))
    k = min(6, len(database))
    _, found = index.search(np.ascontiguousarray(queries, np.float32), k)
    rows = np.empty((len(queries), 2), bool)
    for q, (ids, src) in enumerate(zip(found, sources)):
        ids = [int(i) for i in ids if i >= 0 and i != src][:5]
        near = np.linalg.norm(enu[ids] - enu[src], axis=1) <= radius_m
        rows[q] = (bool(near[0]) if len(near) else False, bool(near.any()))
    return rows


def describe_drive(db: Any, model: Any, frames: Sequence[Any], *, batch_size: int = 0,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Plain descriptors and east/north (m, about the map's origin) of a second drive's frames.

    ``frames`` are source entries with positions; they are shrunk as the map's build shrank
    its images (``resize_max``).
    """
    from vpr_ros.geo import wgs84_to_enu
    from vpr_ros.mapdb.describe import extract_chunk

    resize_max = int((db.manifest.get('build') or {}).get('resize_max') or 0)
    descriptors = extract_chunk(model, list(frames), batch_size=batch_size,
                                resize_max=resize_max, thumbnail_size=(0, 0)).descriptors
    lat = np.array([f.lat for f in frames], np.float64)
    lon = np.array([f.lon for f in frames], np.float64)
    return descriptors, wgs84_to_enu(lat, lon, np.zeros_like(lat), db.origin)[:, :2]


def recall_at_positions(queries: np.ndarray, database: np.ndarray, enu: np.ndarray,
                        truth: np.ndarray, radius_m: float) -> np.ndarray:
    """Return ``(Q, 2)`` booleans: a map entry near the frame's position at rank 1, in the top 5.

    For frames with known positions (``truth``, east/north m); near is within ``radius_m``.
    """
    import faiss

    configure_faiss()
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(np.ascontiguousarray(database, np.float32))
    _, found = index.search(np.ascontiguousarray(queries, np.float32), min(5, len(database)))
    near = np.linalg.norm(enu[found] - np.asarray(truth)[:, None, :2], axis=2) <= radius_m
    return np.stack([near[:, 0], near.any(axis=1)], axis=1)


def adapt_map(db: Any, config: AdaptConfig | None = None, *, model: Any = None,
              device: str = 'auto', dry_run: bool = False,
              images: Callable[[int], np.ndarray] | None = None,
              drive: Sequence[Any] | None = None) -> AdaptationChoice:
    """Choose, fit and store the adaptation of an open map (``MapDB``); return the choice.

    ``method='none'`` removes a stored adaptation. Pseudo-queries are made from the map's
    source images when ``images(i)`` loads entry i as the build saw it (build-map passes
    :func:`vpr_ros.mapdb.sources.entry_images`; they keep the camera's resolution), else from
    its thumbnails; positions are needed. Without either, a
    :class:`DataError` (nothing is stored). ``drive``: source entries with positions of a
    second drive of the area, whose frames decide instead (:func:`choose_adaptation`).
    """
    config = config or AdaptConfig()
    if getattr(db, 'format_version', 1) >= 2:
        raise MapError(f'{db.path} is a compact (v2) map: its descriptors are stored '
                       f'projected already; adapt the v1 map, then convert it')
    if config.method == 'none':
        choice = AdaptationChoice(None, 'none', int(db.descriptor_dim), [],
                                  {'reason': 'adaptation switched off (method none)'})
    else:
        if images is None and drive is None and not db.manifest.get('thumbnails'):
            raise DataError(f'{db.path} has no thumbnails to make validation pseudo-queries '
                            "from; give the map's source images (--source) or rebuild it "
                            'with thumbnails')
        # Before any forward: the check choose_adaptation makes, on what it will train on
        # (the other folds; with a second drive, the whole map).
        train = len(db) if drive is not None else len(db) * (config.folds - 1) // config.folds
        fit_dims(config, int(db.descriptor_dim), train)
        model = model if model is not None else db.load_model(device)
        enu = db.positions_enu(np.arange(len(db)))
        if drive is not None:
            choice = choose_adaptation(np.asarray(db.descriptors), enu, None, None, config,
                                       drive=describe_drive(db, model, drive))
        else:
            made_from = 'source images' if images is not None else 'map thumbnails'
            stored = stored_pseudo_queries(db, config, model, made_from)
            if stored is not None:
                queries, sources, made_from = stored
            else:
                queries, sources = describe_pseudo_queries(db, model, config.validation_queries,
                                                           seed=config.seed, images=images)
            choice = choose_adaptation(np.asarray(db.descriptors), enu, queries, sources,
                                       config)
            choice.report['pseudo_queries_from'] = made_from
            choice.report['pseudo_queries_stored'] = stored is not None
            choice.queries = (queries, sources)
    if not dry_run:
        store_adaptation(db, choice, config)
    return choice


def stored_pseudo_queries(db: Any, config: AdaptConfig, model: Any, made_from: str,
                          ) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Return the pseudo-queries the last adaptation was validated on, if they still apply.

    They apply to the same model (fingerprint), seed and count, and were made from the source
    images, or from the thumbnails when nothing better is given now (``made_from``). Their
    descriptors are what :func:`describe_pseudo_queries` would give again, so a later
    ``adapt`` (other dimensions, a forced method) skips their forwards: on a CPU most of its
    time. None when they do not apply or cannot be read (then they are described again).
    """
    adaptation = db.manifest.get(KEY) or {}
    record = adaptation.get('pseudo_queries') or {}
    name = (adaptation.get('files') or {}).get(QUERIES_STEM)
    if not name or name not in db.manifest.get('files', {}):
        return None
    if (record.get('model_fingerprint') != str(model.fingerprint())
            or record.get('seed') != config.seed
            or record.get('count') != config.validation_queries
            or record.get('from') not in ('source images', made_from)):
        return None
    try:
        with np.load(db.path / name, allow_pickle=False) as data:
            queries = np.asarray(data['descriptors'], np.float32)
            sources = np.asarray(data['sources'], np.int64)
    except (OSError, ValueError, KeyError) as exc:
        log.warning('%s: stored pseudo-queries unreadable (%s); describing them again',
                    db.path / name, exc)
        return None
    if (queries.ndim != 2 or queries.shape[1] != int(model.descriptor_dim)
            or sources.shape != (len(queries),) or len(queries) == 0
            or sources.min() < 0 or sources.max() >= len(db)):
        log.warning('%s: stored pseudo-queries do not fit the map; describing them again',
                    db.path / name)
        return None
    return queries, sources, str(record['from'])


def store_adaptation(db: Any, choice: AdaptationChoice, config: AdaptConfig) -> None:
    """Write the projection, projected descriptors and their index into the map atomically.

    The validation pseudo-queries' descriptors go with them (:func:`stored_pseudo_queries`).
    """
    import faiss

    from vpr_ros.mapdb.index import build_index, IndexConfig, MapIndex

    record: dict[str, Any] = {
        'method': choice.method, 'dim': choice.dim, 'input_dim': int(db.descriptor_dim),
        'model_fingerprint': db.manifest['model'].get('fingerprint'),
        'validation': choice.table, 'report': choice.report, 'config': config.to_dict()}
    files: dict[str, tuple[str, Callable[[Path], Any]]] = {}
    if choice.queries is not None:
        queries, sources = choice.queries
        record['pseudo_queries'] = {
            'model_fingerprint': record['model_fingerprint'], 'seed': config.seed,
            'count': config.validation_queries,
            'from': choice.report.get('pseudo_queries_from', 'map thumbnails')}
        files[QUERIES_STEM] = ('.npz', lambda p: save_arrays(
            p, descriptors=np.asarray(queries, np.float32),
            sources=np.asarray(sources, np.int64)))
    if choice.projection is None:
        db.attach_files(KEY, files, lambda names: {**record, 'files': names},
                        drop_stems=STEMS + (QUERIES_STEM,))
        db.projection = None
        return
    projection = choice.projection
    adapted = projection.apply(np.asarray(db.descriptors))
    build = (db.manifest.get('build') or {}).get('index') or {}
    index, info = build_index(adapted, IndexConfig.from_dict(build, where='build.index'))
    record['index'] = info
    db.attach_files(KEY, {
        'adaptation': ('.npz', lambda p: save_arrays(p, mean=projection.mean,
                                                     matrix=projection.matrix)),
        'adapted-descriptors': ('.npy', lambda p: save_array(p, adapted)),
        'adapted-index': ('.faiss', lambda p: faiss.write_index(index, str(p))),
        **files,
    }, lambda names: {**record, 'files': names}, drop_stems=(QUERIES_STEM,))
    db.projection = projection
    db.index = MapIndex(index, info, adapted)


__all__ = ['adapt_map', 'AdaptConfig', 'AdaptationChoice', 'choose_adaptation',
           'describe_drive', 'describe_pseudo_queries', 'fit_lw', 'fit_pca', 'fit_pcaw',
           'matching_pairs', 'METHODS', 'recall_at_positions', 'recall_rows', 'Projection',
           'spatial_folds', 'store_adaptation', 'stored_pseudo_queries']
