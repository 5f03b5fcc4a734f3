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
2. the frames are cut into quantile bins of ``r`` (the riskiest few per cent in a bin of
   their own, where wrong places gather); in each bin sigma is the value whose NEES
   coverage at 1, 2 and 3 sigma is closest to the 2-D Gaussian ideal (39.3 / 86.5 / 98.9 %,
   2 sigma weighted double; each error spread over +-5 % of itself, so ties cannot make the
   fit jump); the bin sigmas are made non-decreasing in ``r`` and interpolated
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

Why one module of this size: the fit, the form the manifest stores and the coverage that
``calibrate`` and the benches measure are one contract (what is fitted is what the localizer
applies and what is scored), read together.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import math
from typing import Any, Mapping, Sequence

import numpy as np

from vpr_ros.confidence import FEATURES
from vpr_ros.config import Config, option
from vpr_ros.errors import ConfigError, DataError, MapError

#: Ideal share of a 2-D Gaussian within k sigma: 1 - exp(-k^2 / 2).
IDEAL_COVERAGE = {k: 1.0 - math.exp(-k * k / 2.0) for k in (1, 2, 3)}
VERSION = 2
#: Bounds of the along/cross-track spread ratio of a bin (a degenerate bin stays plausible).
RATIO_RANGE = (0.1, 10.0)


@dataclass(frozen=True)
class CalibrationConfig(Config):
    """How ``vpr-ros calibrate`` fits sigma from confidence features."""

    pseudo_queries: int = option(400, 'map images turned into pseudo-queries when no '
                                 'calibration set is given', min=10)
    bins: int = option(6, 'quantile bins of the risk r (fewer when there are few frames)',
                       min=1)
    min_per_bin: int = option(20, 'fewest frames per bin', min=5)
    min_sigma_m: float = option(0.1, 'smallest sigma ever reported (m)', min=0.01)
    tail_share: float = option(0.05, 'the riskiest share of frames gets a bin of its own '
                               '(wrong places gather there; 0: no tail bin)', min=0.0,
                               max=0.5)
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
    max_p: float = option(0.05, 'fusion weight: a weight above 0 is kept only if the held-out '
                          'frames the two orders disagree on show its gain (one-sided sign '
                          'test p at most this; 1: no test)', min=0.0, max=1.0)


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
    edges = np.quantile(r, _bin_levels(len(e), config))
    bins = len(edges) - 1
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


#: Fewest frames of the tail bin (:attr:`CalibrationConfig.tail_share`).
MIN_TAIL_FRAMES = 10


def _bin_levels(frames: int, config: CalibrationConfig) -> np.ndarray:
    """Quantile levels of the risk bins' edges: equal counts, then the riskiest tail apart.

    Wrong places are a few per cent of the frames, all near the top of the risk; in a bin of a
    sixth of the frames they are a minority the coverage fit rightly ignores, and a query that
    is as risky as they were got that bin's sub-metre sigma. A bin of the riskiest
    ``tail_share`` (at least :data:`MIN_TAIL_FRAMES`, leaving the top bin ``min_per_bin``)
    gives them a sigma of their own.
    """
    bins = max(1, min(config.bins, frames // config.min_per_bin))
    levels = np.linspace(0.0, 1.0, bins + 1)
    tail = config.tail_share * frames
    top = (levels[-1] - levels[-2]) * frames
    if config.tail_share > 0 and tail >= MIN_TAIL_FRAMES and top - tail >= config.min_per_bin:
        levels = np.concatenate([levels[:-1], [1.0 - config.tail_share, 1.0]])
    return levels


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


#: Each error counts as spread uniformly over +-this share of itself when its k-sigma coverage
#: is measured (see :func:`_coverage_sigma`).
COVERAGE_SPREAD = 0.05


def _coverage_sigma(errors: np.ndarray, min_sigma: float, candidates: int = 400) -> float:
    """Sigma whose 1/2/3-sigma coverage of ``errors`` is closest to the Gaussian ideal.

    Errors often come in whole place spacings (an estimate snapped to a map entry, a truth on
    the map's lattice: many exact ties). Counted as in or out, a tie crosses k sigma all at
    once, the best sigma jumps between two far-apart values, and a change of the errors by
    float rounding picked the other one: Corridor's calibration flipped between 1-sigma
    coverage 45 % and 21 % of its own frames when positions moved by millimetres. So each
    error counts as spread uniformly over +-:data:`COVERAGE_SPREAD` of itself: coverage is
    then continuous in sigma, and the fit of continuous errors moves by a few per cent at most.
    """
    e = np.asarray(errors, np.float64)
    levels = np.array([1.0, 2.0, 3.0])
    ideal = np.array([IDEAL_COVERAGE[k] for k in (1, 2, 3)])
    weight = np.array([1.0, 2.0, 1.0])
    # A geometric grid (steps under the spread) plus the points where an error's spread
    # starts or ends at k sigma.
    top = max(float(e.max()) * (1 + COVERAGE_SPREAD), 2 * min_sigma)
    edges = np.concatenate([e * (1 + d) / k for k in levels
                            for d in (-COVERAGE_SPREAD, COVERAGE_SPREAD)])
    edges = np.unique(np.maximum(edges, min_sigma))
    if len(edges) > candidates:
        edges = np.quantile(edges, np.linspace(0, 1, candidates))
    cand = np.unique(np.concatenate([np.geomspace(min_sigma, top, candidates), edges]))
    low, width = e * (1 - COVERAGE_SPREAD), np.maximum(2 * COVERAGE_SPREAD * e, 1e-12)
    inside = np.clip((levels[None, :, None] * cand[:, None, None] - low) / width, 0.0, 1.0)
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


#: Manifest keys of what ``vpr-ros calibrate`` validated on a map, written in one update
#: (:func:`store_calibration`) and read by the localizer.
CALIBRATION_KEY = 'calibration'
FUSION_KEY = 'rerank_fusion'
SUBSPACING_KEY = 'subspacing'


def store_calibration(db: Any, calibration: Calibration, report: Mapping[str, Any]) -> None:
    """Store the calibration, fusion weight and sub-spacing mode it was fitted with, in one write.

    The sigma mapping is only valid for the candidate order and positions it saw, so they go
    together; a calibration without a fusion fit leaves the localizer's default (GeoWarp
    order), one without a sub-spacing choice snaps (``subspacing: auto``).
    """
    db.update_manifest(**{CALIBRATION_KEY: calibration.to_dict(),
                          FUSION_KEY: dict(report.get('rerank_fusion') or {}),
                          SUBSPACING_KEY: dict(report.get('subspacing') or {})})


#: What the scores a calibration was fitted on depend on, other than the query image, and how
#: a difference reads (``fitted_with`` in the calibration's report).
_SCORE_INPUTS = {
    'model_fingerprint': 'the map holds another model (fine-tuned since?)',
    'projection': 'its descriptors are projected differently (vpr-ros adapt or map convert '
                  'since?)',
    'geowarp_sha256': 'it holds another GeoWarp (vpr-ros fit-geowarp since?)',
}


def fitted_with(db: Any, rerank: bool | None = None) -> dict[str, Any]:
    """Return what the map's scores depend on: model, query projection, GeoWarp (re-ranking).

    ``calibrate`` stores it with the sigma mapping and fusion weight, which were fitted on
    those scores; :func:`calibration_problem` compares it with the map as it is now. The
    GeoWarp is named by its file's sha256 (None: the identity warp), the projection by a
    digest of its arrays.
    """
    from vpr_ros.runtime.onnx_record import geowarp_sha256

    projection, digest = db.projection, None
    # A v2 map's full-rank rotation (``pca`` to as many dimensions as it takes) keeps every
    # score, so it is the plain descriptors' scores; a truncated one raises query scores.
    full_rotation = (projection is not None and projection.method == 'pca'
                     and projection.dim == projection.input_dim)
    if projection is not None and not full_rotation:
        h = hashlib.sha256(str(projection.method).encode())
        for array in (projection.mean, projection.matrix):
            h.update(np.ascontiguousarray(array, np.float32).tobytes())
        digest = h.hexdigest()[:16]
    out = {'model_fingerprint': db.manifest['model'].get('fingerprint'), 'projection': digest,
           'geowarp_sha256': geowarp_sha256(db)}
    if rerank is not None:
        out['rerank'] = bool(rerank)
    return out


def calibration_problem(info: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """Return why a calibration (its report ``info``) does not fit the scores ``now``, or None.

    A calibration from before ``fitted_with`` was stored is checked for re-ranking only (its
    report says whether it re-ranked); ``now`` without ``rerank`` skips that check.
    """
    then = info.get('fitted_with')
    if isinstance(then, Mapping):
        for key, why in _SCORE_INPUTS.items():
            if then.get(key) != now.get(key):
                return (f'the calibration no longer fits the map: {why}; its sigma and fusion '
                        f'weight were fitted on other scores (run vpr-ros calibrate again)')
    made = info.get('rerank')
    if made is not None and 'rerank' in now and bool(made) != bool(now['rerank']):
        words = {True: 'with', False: 'without'}
        return (f'the map was calibrated {words[bool(made)]} GeoWarp re-ranking and this '
                f'localizer runs {words[bool(now["rerank"])]} it: the sigma was fitted on '
                f'other scores (set rerank: {str(bool(made)).lower()}, or run vpr-ros '
                f'calibrate with the same setting)')
    return None


def stored_calibration_problem(db: Any) -> str | None:
    """Return why the map's stored calibration no longer fits the map's scores, or None."""
    cal = stored_calibration(db.manifest)
    return None if cal is None else calibration_problem(cal.info, fitted_with(db))


def stored_calibration(manifest: Mapping[str, Any]) -> Calibration | None:
    """Return the map's sigma mapping (MapError when malformed); None when not calibrated."""
    data = manifest.get(CALIBRATION_KEY) or {}
    return Calibration.from_dict(data) if data else None


def stored_rerank_weight(manifest: Mapping[str, Any]) -> float | None:
    """Return the GeoWarp fusion weight calibrate validated on the map (None: no choice)."""
    weight = (manifest.get(FUSION_KEY) or {}).get('weight')
    return None if weight is None else float(weight)


def stored_geowarp_mode(manifest: Mapping[str, Any]) -> str | None:
    """Return the GeoWarp mode calibrate fitted the map with (None: no choice; features)."""
    return (manifest.get(FUSION_KEY) or {}).get('geowarp_mode')


def stored_subspacing(manifest: Mapping[str, Any]) -> str | None:
    """Return the sub-spacing mode calibrate validated on the map (None: no choice)."""
    return (manifest.get(SUBSPACING_KEY) or {}).get('mode')
