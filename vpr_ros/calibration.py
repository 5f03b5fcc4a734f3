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

"""Confidence -> horizontal sigma: a calibrated covariance for every fix.

A retrieval score is not a distance. This module learns, from frames with known positions,
how large the position error is given the confidence features the localizer computes
(:data:`FEATURES`), and turns that into a sigma in metres:

1. a least-squares fit of ``log(error + floor)`` on the standardised features ranks frames by
   expected error (``r``, the risk);
2. the frames are cut into quantile bins of ``r``; in each bin sigma is the value whose NEES
   coverage at 1, 2 and 3 sigma is closest to the 2-D Gaussian ideal (39.3 / 86.5 / 98.9 %,
   2 sigma weighted double); the bin sigmas are made non-decreasing in ``r`` and interpolated
   between bin centres.

Coverage matching, not a Gaussian likelihood: wrong matches are hundreds of metres off and
would inflate every sigma, and errors come in steps of the place spacing (many ties), where a
single quantile lands on a tie and over-covers.

The covariance is anisotropic: a place recogniser errs along the route (the neighbouring or a
wrong place of the same street) far more than across it (the lateral offset of the camera).
With the errors split into along-track / cross-track components (the map's local route
direction, :mod:`vpr_ros.fix_quality`), every bin also gets the ratio ``rho`` of along- to
cross-track spread; the bin's sigma is then fitted on the errors normalised by it, and the
covariance is ``R diag(sigma^2 rho, sigma^2 / rho) R^T`` (same area as the isotropic one, ``R``
the route direction in ENU). The result is a plain dict stored in the map's manifest.
:func:`nees_coverage` measures the share of 2-D normalised squared errors within 1/2/3 sigma
(ideal 39.3/86.5/98.9 %).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import math
from typing import Any, Mapping, Sequence

import numpy as np

from vpr_ros.confidence import feature_vector, FEATURES
from vpr_ros.config import Config, option
from vpr_ros.errors import ConfigError, DataError, MapError

#: Ideal share of a 2-D Gaussian within k sigma: 1 - exp(-k^2 / 2).
IDEAL_COVERAGE = {k: 1.0 - math.exp(-k * k / 2.0) for k in (1, 2, 3)}
VERSION = 2
#: Bounds of the along/cross-track spread ratio of a bin (a degenerate bin stays plausible).
RATIO_RANGE = (0.1, 10.0)
#: GeoWarp fusion weights ``vpr-ros calibrate`` tries (0: global order, 1: GeoWarp order).
FUSION_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0)


@dataclass(frozen=True)
class CalibrationConfig(Config):
    """How ``vpr-ros calibrate`` fits sigma from confidence features."""

    pseudo_queries: int = option(400, 'map images turned into pseudo-queries when no '
                                 'calibration set is given', min=10)
    bins: int = option(6, 'quantile bins of the risk r (fewer when there are few frames)',
                       min=1)
    min_per_bin: int = option(20, 'fewest frames per bin', min=5)
    min_sigma_m: float = option(0.1, 'smallest sigma ever reported (m)', min=0.01)
    seed: int = option(0, 'seed of the pseudo-query sampling and augmentation')
    fit_rerank_weight: bool = option(True, 'choose the GeoWarp fusion weight on the same '
                                     'frames (kept at 0, the global order, unless '
                                     're-ranking raises the right-place rate)')
    subspacing_gain: float = option(0.05, 'sub-spacing (localizer subspacing: auto) is kept '
                                    'only when it lowers the median error of the calibration '
                                    'frames below snapping by this many place spacings, on '
                                    'all of them and on held-out halves', min=0.0)
    right_place_spacings: float = option(3.0, 'fusion weight: a top-1 within this many place '
                                         'spacings of the truth is the right place', min=0.5)


@dataclass(frozen=True)
class Calibration:
    """A fitted feature -> sigma mapping; :meth:`to_dict` is what the manifest stores."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    floor_m: float
    knots_r: tuple[float, ...]
    knots_sigma: tuple[float, ...]
    min_sigma_m: float
    info: Mapping[str, Any]
    knots_ratio: tuple[float, ...] = ()   # along/cross-track sigma ratio per knot (1: round)

    def risk(self, features: np.ndarray) -> np.ndarray:
        """Return the fitted ``log(error + floor)`` of ``(N, F)`` features."""
        z = (np.asarray(features, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.weights) + self.bias

    def sigma(self, features: np.ndarray) -> np.ndarray:
        """Return the horizontal sigma in metres of ``(N, F)`` or ``(F,)`` features."""
        feats = np.asarray(features, np.float64)
        single = feats.ndim == 1
        r = self.risk(feats.reshape(1, -1) if single else feats)
        out = np.interp(r, self.knots_r, self.knots_sigma)
        out = np.maximum(out, self.min_sigma_m)
        return out[0] if single else out

    def ratio(self, features: np.ndarray) -> np.ndarray:
        """Return the along/cross-track sigma ratio of ``(N, F)`` or ``(F,)`` features."""
        feats = np.asarray(features, np.float64)
        single = feats.ndim == 1
        if not self.knots_ratio:
            return 1.0 if single else np.ones(len(feats))
        r = self.risk(feats.reshape(1, -1) if single else feats)
        out = np.interp(r, self.knots_r, self.knots_ratio)
        return out[0] if single else out

    def covariance_en(self, features: np.ndarray, track_en: Sequence[float]) -> np.ndarray:
        """Return the 2x2 east/north covariance (m^2) of one frame's ``(F,)`` features.

        ``track_en`` is the unit along-track direction; NaN (unknown) gives the round one.
        """
        return covariance_en(float(self.sigma(features)), float(self.ratio(features)),
                             track_en, self.min_sigma_m)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form stored under ``calibration`` in the manifest."""
        return {'version': VERSION, 'features': list(FEATURES), 'mean': list(self.mean),
                'scale': list(self.scale), 'weights': list(self.weights), 'bias': self.bias,
                'floor_m': self.floor_m, 'knots_r': list(self.knots_r),
                'knots_sigma': list(self.knots_sigma), 'min_sigma_m': self.min_sigma_m,
                'knots_ratio': list(self.knots_ratio), 'info': dict(self.info)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'Calibration':
        """Read the manifest form back; :class:`MapError` when it is not a calibration.

        Version 1 (isotropic, before the along/cross-track split) reads as a round covariance.
        """
        try:
            if data['version'] not in (1, VERSION) or tuple(data['features']) != FEATURES:
                raise MapError(f'calibration version {data.get("version")} with features '
                               f'{data.get("features")}: this vpr_ros expects version '
                               f'{VERSION} with {list(FEATURES)}; run vpr-ros calibrate again')
            cal = cls(tuple(map(float, data['mean'])), tuple(map(float, data['scale'])),
                      tuple(map(float, data['weights'])), float(data['bias']),
                      float(data['floor_m']), tuple(map(float, data['knots_r'])),
                      tuple(map(float, data['knots_sigma'])), float(data['min_sigma_m']),
                      dict(data.get('info', {})),
                      tuple(map(float, data.get('knots_ratio', ()))))
        except (KeyError, TypeError, ValueError) as exc:
            raise MapError(f'calibration in the manifest is malformed ({exc!r}); run vpr-ros '
                           f'calibrate again') from None
        n = len(FEATURES)
        if not (len(cal.mean) == len(cal.scale) == len(cal.weights) == n) or \
                len(cal.knots_r) != len(cal.knots_sigma) or not cal.knots_r or \
                (cal.knots_ratio and len(cal.knots_ratio) != len(cal.knots_r)) or \
                not all(math.isfinite(v) and v > 0 for v in cal.knots_sigma + cal.knots_ratio):
            raise MapError('calibration in the manifest has inconsistent sizes; run vpr-ros '
                           'calibrate again')
        return cal


def fit(features: np.ndarray, errors_m: np.ndarray, config: CalibrationConfig | None = None,
        *, floor_m: float = 1.0, info: Mapping[str, Any] | None = None,
        errors_track: np.ndarray | None = None) -> Calibration:
    """Fit the sigma mapping from ``(N, F)`` features and ``(N,)`` horizontal errors (m).

    Args:
        features: confidence features in :data:`FEATURES` order.
        errors_m: horizontal distance of each estimate to the truth.
        config: bins and target coverage.
        floor_m: added to the errors before the log (the map's place spacing is a good value:
            errors below it are all equally good).
        info: provenance stored with the fit (source, counts, coverage measured).
        errors_track: ``(N, 2)`` along-track / cross-track error components (m; NaN rows where
            the route direction is unknown): the fit is then anisotropic; round when None.
    """
    config = config or CalibrationConfig()
    x = np.asarray(features, np.float64)
    e = np.asarray(errors_m, np.float64)
    track = None
    if errors_track is not None:
        track = np.asarray(errors_track, np.float64)
        if track.shape != (len(e), 2):
            raise DataError(f'calibration: errors_track {track.shape} does not match '
                            f'({len(e)}, 2)')
    if x.ndim != 2 or x.shape[1] != len(FEATURES) or e.shape != (x.shape[0],):
        raise DataError(f'calibration: features {x.shape} and errors {e.shape} do not match '
                        f'(N, {len(FEATURES)}) and (N,)')
    good = np.isfinite(x).all(axis=1) & np.isfinite(e)
    x, e = x[good], e[good]
    if track is not None:
        track = track[good]
        # Unknown direction: the error counts equally along and across.
        unknown = ~np.isfinite(track).all(axis=1)
        track[unknown] = e[unknown, None] / math.sqrt(2.0)
    if len(e) < config.min_per_bin:
        raise DataError(f'calibration needs at least {config.min_per_bin} frames with known '
                        f'positions, got {len(e)}')
    if floor_m <= 0:
        raise ConfigError(f'calibration floor_m must be positive, got {floor_m}')
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    target = np.log(e + floor_m)
    design = np.hstack([z, np.ones((len(z), 1))])
    # A little ridge keeps the fit stable when features are collinear (e.g. no re-ranking).
    ridge = 1e-3 * len(z) * np.eye(design.shape[1])
    ridge[-1, -1] = 0.0
    coef = np.linalg.solve(design.T @ design + ridge, design.T @ target)
    weights, bias = coef[:-1], float(coef[-1])
    r = z @ weights + bias
    bins = max(1, min(config.bins, len(e) // config.min_per_bin))
    edges = np.quantile(r, np.linspace(0.0, 1.0, bins + 1))
    which = np.clip(np.searchsorted(edges, r, side='right') - 1, 0, bins - 1)
    knots_r, knots_sigma, knots_ratio = [], [], []
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        knots_r.append(float(np.median(r[members])))
        if track is None:
            knots_sigma.append(_coverage_sigma(e[members], config.min_sigma_m))
            continue
        rho = track_ratio(track[members])
        # NEES of an (along, cross) error under diag(s^2 rho, s^2 / rho) is radius^2 / s^2.
        radius = np.sqrt(track[members, 0] ** 2 / rho + track[members, 1] ** 2 * rho)
        knots_ratio.append(rho)
        knots_sigma.append(_coverage_sigma(radius, config.min_sigma_m))
    sigma = np.maximum.accumulate(np.maximum(np.asarray(knots_sigma), config.min_sigma_m))
    return Calibration(tuple(mean), tuple(scale), tuple(weights), bias, float(floor_m),
                       tuple(knots_r), tuple(float(s) for s in sigma), config.min_sigma_m,
                       dict(info or {}), tuple(knots_ratio))


def track_ratio(errors_track: np.ndarray) -> float:
    """Along/cross-track spread ratio of ``(N, 2)`` errors: 68th percentiles, bounded.

    Percentiles rather than RMS: a few wrong places (hundreds of metres along the route)
    would otherwise set the shape of every fix of the bin.
    """
    along, cross = (np.quantile(np.abs(errors_track[:, k]), 0.68) for k in (0, 1))
    if along <= 0 and cross <= 0:
        return 1.0
    rho = along / max(cross, 1e-9)
    return float(np.clip(rho, *RATIO_RANGE))


def covariance_en(sigma: float, ratio: float, track_en: Sequence[float],
                  min_sigma: float = 0.0) -> np.ndarray:
    """Return ``R diag(sigma^2 ratio, sigma^2 / ratio) R^T`` (m^2), symmetric positive definite.

    ``R`` has the unit along-track direction ``track_en`` (east, north) as first column; an
    unknown (NaN) or zero direction gives the round ``sigma^2 I``. Each axis sigma is at least
    ``min_sigma``.
    """
    d = np.asarray(track_en, np.float64).reshape(2)
    norm = float(np.hypot(*d)) if np.isfinite(d).all() else 0.0
    if norm < 1e-9 or not math.isfinite(ratio) or ratio <= 0:
        ratio, d = 1.0, np.array([1.0, 0.0])
    else:
        d = d / norm
    if not math.isfinite(sigma):
        return np.diag([sigma ** 2, sigma ** 2])
    s_along = max(sigma * math.sqrt(ratio), min_sigma)
    s_cross = max(sigma / math.sqrt(ratio), min_sigma)
    rot = np.array([[d[0], -d[1]], [d[1], d[0]]])
    cov = rot @ np.diag([s_along ** 2, s_cross ** 2]) @ rot.T
    return (cov + cov.T) / 2.0


def track_errors(errors_en: np.ndarray, tracks_en: np.ndarray) -> np.ndarray:
    """Split ``(N, 2)`` east/north errors into along/cross-track with ``(N, 2)`` unit tracks.

    The cross-track axis is the along-track one turned 90 degrees left; NaN where the track
    is unknown.
    """
    e = np.asarray(errors_en, np.float64).reshape(-1, 2)
    d = np.asarray(tracks_en, np.float64).reshape(-1, 2)
    along = (e * d).sum(axis=1)
    cross = e[:, 1] * d[:, 0] - e[:, 0] * d[:, 1]
    return np.stack([along, cross], axis=1)


def _coverage_sigma(errors: np.ndarray, min_sigma: float, candidates: int = 400) -> float:
    """Sigma whose 1/2/3-sigma coverage of ``errors`` is closest to the Gaussian ideal."""
    levels = np.array([1.0, 2.0, 3.0])
    ideal = np.array([IDEAL_COVERAGE[k] for k in (1, 2, 3)])
    weight = np.array([1.0, 2.0, 1.0])
    # Coverage only changes where some error crosses k sigma: try those points (and a bit
    # above, since coverage counts errors <= k sigma).
    cand = np.concatenate([errors / k for k in levels]) * (1 + 1e-9)
    cand = np.unique(np.maximum(cand, min_sigma))
    if len(cand) > candidates:
        cand = np.quantile(cand, np.linspace(0, 1, candidates))
    inside = errors[None, None, :] <= levels[None, :, None] * cand[:, None, None]
    loss = (((inside.mean(axis=2) - ideal) ** 2) * weight).sum(axis=1)
    best = np.flatnonzero(loss <= loss.min() + 1e-12)
    return float(np.median(cand[best]))


def nees(errors_en: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Return the 2-D NEES ``e^T S^-1 e`` of ``(N, 2)`` errors.

    ``spread`` is ``(N,)`` sigmas (``S = sigma^2 I``) or ``(N, 2, 2)`` covariances.
    """
    err = np.asarray(errors_en, np.float64).reshape(-1, 2)
    spread = np.asarray(spread, np.float64)
    if spread.ndim == 3:
        cov = spread.reshape(-1, 2, 2)
    else:
        sig = spread.reshape(-1)
        cov = sig[:, None, None] ** 2 * np.eye(2)[None]
    if len(err) != len(cov) or len(cov) == 0:
        raise DataError(f'nees: {len(err)} errors for {len(cov)} sigmas / covariances')
    return np.einsum('ni,nij,nj->n', err, np.linalg.inv(cov), err)


def nees_coverage(errors_en: np.ndarray, sigmas_m: np.ndarray,
                  levels: Sequence[int] = (1, 2, 3)) -> dict[int, float]:
    """Share of 2-D NEES within ``k^2`` per level ``k`` (sigmas or covariances: :func:`nees`)."""
    values = nees(errors_en, sigmas_m)
    return {k: float(np.mean(values <= k * k)) for k in levels}


def cross_validated_coverage(features: np.ndarray, errors_en: np.ndarray,
                             config: CalibrationConfig | None = None, *, floor_m: float = 1.0,
                             folds: int = 2, seed: int = 0,
                             tracks_en: np.ndarray | None = None) -> dict[int, float]:
    """NEES coverage of fits on ``folds - 1`` folds applied to the held-out fold (honest).

    With ``tracks_en`` (``(N, 2)`` unit along-track directions) the fits are anisotropic.
    """
    config = config or CalibrationConfig()
    err = np.asarray(errors_en, np.float64).reshape(-1, 2)
    x = np.asarray(features, np.float64)
    split = None if tracks_en is None else track_errors(err, tracks_en)
    order = np.random.default_rng(seed).permutation(len(err))
    parts = np.array_split(order, folds)
    cov = np.empty((len(err), 2, 2))
    for i, held in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != i])
        cal = fit(x[train], np.linalg.norm(err[train], axis=1), config, floor_m=floor_m,
                  errors_track=None if split is None else split[train])
        for h in held:
            track = (np.nan, np.nan) if tracks_en is None else tracks_en[h]
            cov[h] = cal.covariance_en(x[h], track)
    return nees_coverage(err, cov)


def pseudo_query(thumbnail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make a query-like view of a map image: a random homography and photometric change.

    The corners move by up to 10 % of the frame (kornia homography via GeoWarp's ``warp``),
    then gain, gamma, blur and noise vary, so the map's own images stand in for real queries
    when no calibration set with positions is given.
    """
    import cv2
    import torch
    from vpr_ros.models.geowarp import identity_points, warp

    image = torch.from_numpy(np.array(thumbnail)).permute(2, 0, 1).float()[None] / 255.0
    points = identity_points(1) + torch.from_numpy(rng.uniform(-0.1, 0.1, (1, 4, 2))).float()
    view = warp(image, points)[0].permute(1, 2, 0).numpy()
    view = np.clip(rng.uniform(0.6, 1.4) * view, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    view = (view * 255.0).astype(np.float32)
    if rng.random() < 0.5:
        view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.3, 1.0))
    view += rng.normal(0.0, rng.uniform(1.0, 6.0), view.shape).astype(np.float32)
    return np.clip(view, 0, 255).astype(np.uint8)


def place_spacing_m(enu: np.ndarray) -> float:
    """Median distance from each map entry to its nearest other entry (m), at least 0.5 m."""
    import faiss

    pts = np.ascontiguousarray(enu[:, :2], np.float32)
    if len(pts) < 2:
        return 1.0
    index = faiss.IndexFlatL2(2)
    index.add(pts)
    dist, _ = index.search(pts, 2)
    return max(0.5, float(np.median(np.sqrt(np.maximum(dist[:, 1], 0.0)))))


def localize_frames(localizer: Any, images: Sequence[Any], *,
                    exclude: Sequence[Sequence[int]] | None = None,
                    progress: bool = True) -> list[Any]:
    """Localize frames in batches of 16 with a tqdm bar; return the estimates."""
    from tqdm import tqdm

    out = []
    step = 16
    for start in tqdm(range(0, len(images), step), disable=not progress, desc='calibrate',
                      unit='batch'):
        chunk = list(images[start:start + step])
        excl = exclude[start:start + step] if exclude is not None else None
        out.extend(localizer.localize_batch(chunk, exclude=excl))
    return out


def frame_errors(localizer: Any, estimates: Sequence[Any], truth_lat_lon: np.ndarray, *,
                 tracks: bool = False) -> tuple[np.ndarray, ...]:
    """``(features (N, F), errors_en (N, 2) m)`` of the estimates that have features.

    With ``tracks``, a third array: each estimate's unit along-track direction ``(N, 2)``.
    """
    feats, errs, dirs = [], [], []
    for est, truth in zip(estimates, _truth_en(localizer.map.origin, truth_lat_lon)):
        if not est.features:
            continue
        feats.append(feature_vector(est.features))
        errs.append(np.asarray(est.enu) - truth)
        dirs.append(est.track_enu)
    out = (np.asarray(feats, np.float64).reshape(-1, len(FEATURES)),
           np.asarray(errs, np.float64).reshape(-1, 2))
    return (*out, np.asarray(dirs, np.float64).reshape(-1, 2)) if tracks else out


def calibration_frames(localizer: Any, images: Sequence[Any], truth_lat_lon: np.ndarray, *,
                       exclude: Sequence[Sequence[int]] | None = None,
                       progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Localize frames with known positions: ``(features (N, F), errors_en (N, 2) m)``."""
    estimates = localize_frames(localizer, images, exclude=exclude, progress=progress)
    return frame_errors(localizer, estimates, truth_lat_lon)


def _truth_en(origin: Sequence[float], truth_lat_lon: np.ndarray) -> np.ndarray:
    """East/north (m) of ``(N, 2)`` truth lat/lon in the map frame, ``(N, 2)``."""
    from vpr_ros.geo import wgs84_to_enu

    truth = np.asarray(truth_lat_lon, np.float64).reshape(-1, 2)
    if not len(truth):
        return np.zeros((0, 2))
    return np.stack([wgs84_to_enu(lat, lon, 0.0, origin)[:2] for lat, lon in truth])


def fit_rerank_weight(localizer: Any, estimates: Sequence[Any], truth_lat_lon: np.ndarray,
                      right_m: float, *, weights: Sequence[float] = FUSION_WEIGHTS,
                      min_gain: float = 0.01, seed: int = 0) -> tuple[float, dict[str, Any]]:
    """Choose the GeoWarp fusion weight on frames with known positions; 0 unless it helps.

    For each weight the estimates are re-ordered (no new forward) and scored by the share of
    frames whose top-1 lies within ``right_m`` of the truth. The weight is chosen on one half
    of the frames and scored on the other, both ways (2-fold, split by frame), and a weight
    above 0 is kept only when its held-out rate beats the global order (weight 0) by
    ``min_gain``: re-ranking that cannot show a gain on the map's own data does not reorder.
    Returns ``(weight, report)``.
    """
    import dataclasses

    truth_en = _truth_en(localizer.map.origin, truth_lat_lon)
    saved = localizer.config
    right = np.zeros((len(weights), len(estimates)), bool)
    try:
        for w, weight in enumerate(weights):
            localizer.config = dataclasses.replace(saved, rerank_weight=float(weight))
            for i, est in enumerate(estimates):
                if not est.candidates:
                    continue
                top = localizer.reorder(est).candidates[0].index
                pos = localizer.map.positions_enu(top)
                right[w, i] = np.linalg.norm(pos - truth_en[i]) <= right_m
    finally:
        localizer.config = saved
    rates = right.mean(axis=1)
    halves = np.array_split(np.random.default_rng(seed).permutation(len(estimates)), 2)
    held_out = np.zeros(len(estimates), bool)
    for a, b in ((0, 1), (1, 0)):
        pick = int(np.argmax(right[:, halves[a]].mean(axis=1)))
        held_out[halves[b]] = right[pick, halves[b]]
    best = int(np.argmax(rates))
    base = float(rates[list(weights).index(0.0)]) if 0.0 in weights else float(rates.min())
    cv_rate = float(held_out.mean())
    keep = weights[best] > 0 and cv_rate >= base + min_gain and rates[best] >= base + min_gain
    weight = float(weights[best]) if keep else 0.0
    report = {
        'weight': weight, 'right_place_m': float(right_m), 'frames': int(len(estimates)),
        'right_place_rate': {f'{w:g}': float(r) for w, r in zip(weights, rates)},
        'global_order_rate': base, 'chosen_rate_cross_validated': cv_rate,
        'reason': (f'weight {weight:g}: top-1 right place {base:.3f} -> {rates[best]:.3f} '
                   f'(2-fold held out {cv_rate:.3f})' if keep else
                   f're-ranking does not raise the right-place rate on these frames by '
                   f'{min_gain:g} (global {base:.3f}, best {rates[best]:.3f} at weight '
                   f'{weights[best]:g}, held out {cv_rate:.3f}): global order kept'),
    }
    return weight, report


def fit_subspacing(localizer: Any, estimates: Sequence[Any], truth_lat_lon: np.ndarray,
                   spacing_m: float, *, min_gain: float = 0.05,
                   seed: int = 0) -> tuple[str, dict[str, Any]]:
    """Choose snapping or a sub-spacing mode on frames with known positions; off unless it helps.

    Each mode re-derives the estimates (no new forward; GeoWarp sub-spacing needs the route
    neighbours' scores, so the frames must have been localised with ``subspacing: geowarp``)
    and is scored by the median horizontal error. A mode is chosen on one half of the frames
    and scored on the other, both ways, and kept only when its median error beats snapping's
    by ``min_gain`` place spacings both on all frames and held out. Pseudo-queries (a map
    image with itself left out) sit exactly on a map frame, so they cannot show a gain and the
    map keeps snapping: sub-spacing needs a calibration drive (``calibrate --queries``).
    Returns ``(mode, report)``.
    """
    truth_en = _truth_en(localizer.map.origin, truth_lat_lon)
    modes = ('off', 'geowarp', 'global') if localizer.rerank else ('off', 'global')
    saved = localizer.config
    errors = np.full((len(modes), len(estimates)), np.nan)
    try:
        for m, mode in enumerate(modes):
            localizer.config = dataclasses.replace(saved, subspacing=mode)
            for i, est in enumerate(estimates):
                if est.candidates:
                    xy = localizer.reorder(est).enu
                    errors[m, i] = float(np.linalg.norm(np.asarray(xy) - truth_en[i]))
    finally:
        localizer.config = saved
    good = np.isfinite(errors).all(axis=0)
    errors = errors[:, good]
    medians = np.median(errors, axis=1) if errors.shape[1] else np.full(len(modes), np.nan)
    halves = np.array_split(np.random.default_rng(seed).permutation(errors.shape[1]), 2)
    held = []
    for a, b in ((0, 1), (1, 0)):
        if len(halves[a]) == 0 or len(halves[b]) == 0:
            continue
        pick = int(np.argmin(np.median(errors[:, halves[a]], axis=1)))
        held.append((np.median(errors[pick, halves[b]]), np.median(errors[0, halves[b]])))
    best = int(np.nanargmin(medians)) if np.isfinite(medians).any() else 0
    need = min_gain * spacing_m
    keep = best > 0 and bool(held) and medians[best] <= medians[0] - need and \
        all(chosen <= snap - need for chosen, snap in held)
    mode = modes[best] if keep else 'off'
    report = {
        'mode': mode, 'frames': int(errors.shape[1]), 'place_spacing_m': float(spacing_m),
        'median_error_m': {name: float(v) for name, v in zip(modes, medians)},
        'held_out_median_error_m': [[float(c), float(s)] for c, s in held],
        'reason': (f'{mode}: median error {medians[0]:.2f} m snapping -> {medians[best]:.2f} m '
                   f'(held out {", ".join(f"{s:.2f} -> {c:.2f}" for c, s in held)})' if keep else
                   f'no sub-spacing mode lowers the median error of these frames by '
                   f'{min_gain:g} place spacings (snapping {medians[0]:.2f} m, best '
                   f'{modes[best]} {medians[best]:.2f} m): snapping kept'),
    }
    return mode, report


def calibrate_map(localizer: Any, config: CalibrationConfig | None = None, *,
                  queries: tuple[Sequence[Any], np.ndarray] | None = None,
                  progress: bool = True) -> tuple[Calibration, dict[str, Any]]:
    """Fit the map's calibration with its localizer; return ``(calibration, report)``.

    Args:
        localizer: a ``vpr_ros.localizer.Localizer`` over the map (its GeoWarp included).
        config: sampling and fit settings.
        queries: ``(images, (N, 2) lat/lon)`` of a calibration set; pseudo-queries made from
            the map's own thumbnails (:func:`pseudo_query`, the entry itself excluded) when None.
        progress: tqdm bars.

    The report holds the NEES coverage in-sample and 2-fold cross-validated, the place
    spacing (the error floor) and the error quantiles.
    """
    config = config or CalibrationConfig()
    db = localizer.map
    pos = db.positions(np.arange(len(db)))
    spacing = place_spacing_m(db.positions_enu(np.arange(len(db))))
    if queries is None:
        if not db.manifest.get('thumbnails'):
            raise MapError(f'{db.path} has no thumbnails to make pseudo-queries from; pass '
                           f'a calibration set with positions (--queries)')
        rng = np.random.default_rng(config.seed)
        count = min(len(db), config.pseudo_queries)
        chosen = np.sort(rng.choice(len(db), size=count, replace=False))
        images = [pseudo_query(db.thumbnails(int(i)), rng) for i in chosen]
        truth = pos[chosen, :2]
        exclude = [[int(i)] for i in chosen]
        source = f'{count} pseudo-queries from the map images'
    else:
        images, truth = queries
        truth = np.asarray(truth, np.float64).reshape(-1, 2)
        exclude = None
        source = f'{len(truth)} calibration frames with positions'
    chosen_mode = localizer.config.subspacing
    if chosen_mode == 'auto':
        # Localise with GeoWarp sub-spacing so the route neighbours get scored; every mode is
        # then tried on the same frames without a new forward.
        localizer.config = dataclasses.replace(localizer.config, subspacing='geowarp')
    estimates = localize_frames(localizer, images, exclude=exclude, progress=progress)
    fusion = None
    if localizer.rerank and config.fit_rerank_weight:
        weight, fusion = fit_rerank_weight(localizer, estimates, truth,
                                           config.right_place_spacings * spacing,
                                           seed=config.seed)
        localizer.config = dataclasses.replace(localizer.config, rerank_weight=weight)
    if chosen_mode == 'auto':
        mode, subspacing = fit_subspacing(localizer, estimates, truth, spacing,
                                          min_gain=config.subspacing_gain, seed=config.seed)
    else:
        mode, subspacing = chosen_mode, {'mode': chosen_mode,
                                         'reason': 'set by the localizer config'}
    localizer.config = dataclasses.replace(localizer.config, subspacing=mode)
    estimates = [localizer.reorder(est) for est in estimates]
    feats, errs, dirs = frame_errors(localizer, estimates, truth, tracks=True)
    norms = np.linalg.norm(errs, axis=1)
    split = track_errors(errs, dirs)
    cal = fit(feats, norms, config, floor_m=spacing, info={}, errors_track=split)
    covs = np.stack([cal.covariance_en(f, d) for f, d in zip(feats, dirs)]) if len(feats) \
        else np.zeros((0, 2, 2))
    known = np.isfinite(split).all(axis=1)
    report = {
        'source': source,
        'frames': int(len(norms)),
        'place_spacing_m': spacing,
        'error_m': {'median': float(np.median(norms)), 'p95': float(np.quantile(norms, 0.95)),
                    'along_track_median': float(np.median(np.abs(split[known, 0])))
                    if known.any() else None,
                    'cross_track_median': float(np.median(np.abs(split[known, 1])))
                    if known.any() else None},
        'sigma_ratio_along_cross': list(cal.knots_ratio),
        'nees_coverage': {str(k): v for k, v in nees_coverage(errs, covs).items()},
        'nees_coverage_cv': {str(k): v for k, v in cross_validated_coverage(
            feats, errs, config, floor_m=spacing, seed=config.seed, tracks_en=dirs).items()}
        if len(norms) >= 2 * config.min_per_bin else {},
        'rerank': bool(localizer.rerank),
        'rerank_fusion': fusion,
        'subspacing': subspacing,
        'geowarp_mode': localizer.config.geowarp.mode,
    }
    cal = dataclasses.replace(cal, info=report)
    return cal, report


def store_calibration(db: Any, calibration: Calibration, report: Mapping[str, Any]) -> None:
    """Store the calibration, fusion weight and sub-spacing mode it was fitted with, in one write.

    The sigma mapping is only valid for the candidate order and positions it saw, so they go
    together; a calibration without a fusion fit leaves the localizer's default (GeoWarp
    order), one without a sub-spacing choice snaps (``subspacing: auto``).
    """
    from vpr_ros.localizer import FUSION_KEY, SUBSPACING_KEY

    db.update_manifest(**{'calibration': calibration.to_dict(),
                          FUSION_KEY: dict(report.get('rerank_fusion') or {}),
                          SUBSPACING_KEY: dict(report.get('subspacing') or {})})
