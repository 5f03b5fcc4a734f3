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

"""Localisation metrics of a fix series against a ground-truth series (pure numpy).

The same function serves recorded live output (``eval-bag --fix``) and the offline mode that
runs the localizer on a bag's images: both provide a :class:`FixSeries` (one entry per
published fix message, NO_FIX included), a :class:`TruthSeries` and, when known, the stamps of
the camera frames.

Protocol:
    - positions are compared in a local ENU frame whose origin is the first valid truth sample
      (:mod:`vpr_ros.geo`); errors are **horizontal** (east, north);
    - the truth is linearly interpolated in ENU at each fix's ``header.stamp``. A fix outside
      the truth's time span, or between two truth samples more than ``truth_max_gap_s`` apart,
      is not matched (counted in ``fixes_outside_truth``); invalid truth samples (status below
      STATUS_FIX, NaN latitude/longitude) are dropped first;
    - *queries* are the camera frames in the truth's coverage when frame stamps are given, else
      the fix messages in it. ``recall@d`` = valid fixes within ``d`` m / queries (a NO_FIX, or a
      frame without any fix, is a miss); ``precision@d`` = the same count / matched valid fixes;
    - ``availability`` = valid fixes / frames (fix messages when frames are unknown);
      ``no_fix_rate`` = NO_FIX messages / fix messages;
    - NEES = e^T S^-1 e with e the horizontal error and S the east/north block of the fix's
      ENU covariance; coverage at k sigma = share with NEES <= k^2 (ideal for a calibrated 2-D
      Gaussian: 39.3 / 86.5 / 98.9 %, mean NEES 2). Fixes whose block is not positive definite
      are left out and counted. The coverage curve gives the same share at k = 0.25 ... 4
      sigma against the ideal ``1 - exp(-k^2 / 2)``;
    - along-track / cross-track error: the horizontal error split along the truth's direction
      of travel at the fix's stamp (from the truth samples around it) and across it (left
      positive); fixes where the truth does not move are left out;
    - latency (``kind`` ``receive``) = bag receive (log) time - header stamp over all fix
      messages, when recorded live; offline (``kind`` ``processing``) the localizer's own
      processing time per frame instead, which leaves out transport and queueing;
    - a jump is a pair of consecutive valid fixes (by stamp) further apart than
      ``max_speed_mps * dt + jump_margin_m``; ``jump_rate`` = jumps / pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any

import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.errors import DataError
from vpr_ros.geo import wgs84_to_enu

SIGMA_LEVELS = (1, 2, 3)
IDEAL_COVERAGE = {k: 1.0 - math.exp(-k * k / 2.0) for k in SIGMA_LEVELS}  # 2-D Gaussian
#: Sigma levels of the NEES coverage curve.
CURVE_LEVELS = tuple(np.round(np.arange(0.25, 4.001, 0.25), 2).tolist())


@dataclass(frozen=True)
class EvalConfig(Config):
    """Thresholds and plausibility limits of the localisation metrics."""

    thresholds_m: tuple[float, ...] = option((10.0, 25.0, 50.0),
                                             'recall@d / precision@d distances (m)')
    max_speed_mps: float = option(40.0, 'fastest plausible motion, for the jump rate (m/s)',
                                  min=0.0)
    jump_margin_m: float = option(10.0, 'displacement allowed on top of max_speed * dt (m)',
                                  min=0.0)
    truth_max_gap_s: float = option(2.0, 'do not interpolate truth across larger gaps (s)',
                                    min=0.0)

    def validate(self) -> None:
        """Require at least one positive distance threshold."""
        from vpr_ros.errors import ConfigError

        if not self.thresholds_m or any(t <= 0 for t in self.thresholds_m):
            raise ConfigError(f'EvalConfig.thresholds_m: need positive distances, got '
                              f'{list(self.thresholds_m)}')


def _array(value: Any, dtype: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype)
    if n is not None and len(arr) != n:
        raise DataError(f'{name}: expected {n} values, got {len(arr)}')
    return arr


@dataclass(frozen=True)
class TruthSeries:
    """Ground-truth positions: WGS84 degrees, ellipsoidal altitude (m), stamps in ns."""

    stamp_ns: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    valid: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.atleast_1d(self.stamp_ns))
        for name, dtype in (('stamp_ns', np.int64), ('lat', np.float64), ('lon', np.float64),
                            ('alt', np.float64), ('valid', bool)):
            object.__setattr__(self, name, _array(getattr(self, name), dtype, name, n))


@dataclass(frozen=True)
class FixSeries:
    """Published fixes, one per message (NO_FIX included, ``valid`` False).

    Convention:
        - ``cov_enu`` (n, 3, 3): NavSatFix ``position_covariance`` reshaped row-major, m^2,
          ENU;
        - ``receive_ns``: bag log time of each message, or None when not recorded live;
        - ``processing_ms``: offline runs, the localizer's processing time of each frame
          (reported in place of the latency when ``receive_ns`` is None).
    """

    stamp_ns: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    valid: np.ndarray
    cov_enu: np.ndarray
    receive_ns: np.ndarray | None = None
    processing_ms: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(np.atleast_1d(self.stamp_ns))
        for name, dtype in (('stamp_ns', np.int64), ('lat', np.float64), ('lon', np.float64),
                            ('alt', np.float64), ('valid', bool)):
            object.__setattr__(self, name, _array(getattr(self, name), dtype, name, n))
        if self.processing_ms is not None:
            object.__setattr__(self, 'processing_ms',
                               _array(self.processing_ms, np.float64, 'processing_ms', n))
        cov = np.asarray(self.cov_enu, np.float64).reshape(n, 3, 3)
        object.__setattr__(self, 'cov_enu', cov)
        if self.receive_ns is not None:
            object.__setattr__(self, 'receive_ns',
                               _array(self.receive_ns, np.int64, 'receive_ns', n))
        valid = self.valid & np.isfinite(self.lat) & np.isfinite(self.lon)
        object.__setattr__(self, 'valid', valid)


@dataclass
class Evaluation:
    """Metrics plus the per-fix arrays behind them (for plots and exports)."""

    metrics: dict[str, Any]
    origin: tuple[float, float, float]
    fix_stamp_ns: np.ndarray
    fix_enu: np.ndarray          # (n, 3), NaN for NO_FIX
    fix_valid: np.ndarray        # (n,)
    matched: np.ndarray          # (n,) stamp inside the truth's coverage
    truth_at_fix_enu: np.ndarray  # (n, 3), NaN where not matched
    error_m: np.ndarray          # (n,) horizontal error, NaN unless valid and matched
    sigma_m: np.ndarray          # (n,) sqrt of the largest east/north covariance eigenvalue
    cov_en: np.ndarray           # (n, 2, 2)
    nees: np.ndarray             # (n,) NaN where not computable
    track_error: np.ndarray      # (n, 2) along/cross-track error, NaN where unknown
    truth_stamp_ns: np.ndarray   # valid truth samples, sorted
    truth_enu: np.ndarray
    config: EvalConfig = field(default_factory=EvalConfig)


def _to_enu(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray,
            origin: tuple[float, float, float]) -> np.ndarray:
    alt = np.where(np.isfinite(alt), alt, origin[2])
    out = np.full((len(lat), 3), np.nan)
    ok = np.isfinite(lat) & np.isfinite(lon)
    if ok.any():
        out[ok] = wgs84_to_enu(lat[ok], lon[ok], alt[ok], origin)
    return out


def _coverage(stamps: np.ndarray, truth_stamps: np.ndarray, max_gap_ns: int) -> np.ndarray:
    """Whether each stamp lies in the truth's span, between samples at most max_gap apart."""
    after = np.searchsorted(truth_stamps, stamps, side='left')
    exact = (after < len(truth_stamps)) & (truth_stamps[np.minimum(after, len(truth_stamps)
                                                                   - 1)] == stamps)
    inside = (after > 0) & (after < len(truth_stamps))
    hi = np.minimum(after, len(truth_stamps) - 1)
    lo = np.maximum(after - 1, 0)
    gap_ok = (truth_stamps[hi] - truth_stamps[lo]) <= max_gap_ns
    return exact | (inside & gap_ok)


def _interpolate(stamps: np.ndarray, truth_stamps: np.ndarray,
                 truth_enu: np.ndarray) -> np.ndarray:
    t = (stamps - truth_stamps[0]).astype(np.float64)
    tt = (truth_stamps - truth_stamps[0]).astype(np.float64)
    return np.stack([np.interp(t, tt, truth_enu[:, k]) for k in range(3)], axis=-1)


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {'median': None, 'mean': None, 'p95': None, 'rmse': None, 'max': None}
    return {'median': float(np.median(values)), 'mean': float(np.mean(values)),
            'p95': float(np.percentile(values, 95)),
            'rmse': float(np.sqrt(np.mean(values ** 2))), 'max': float(np.max(values))}


def _nees(error_en: np.ndarray, cov_en: np.ndarray) -> np.ndarray:
    """Compute e^T S^-1 e per row; NaN where S is not positive definite or e is NaN."""
    out = np.full(len(error_en), np.nan)
    a, b, c = cov_en[:, 0, 0], 0.5 * (cov_en[:, 0, 1] + cov_en[:, 1, 0]), cov_en[:, 1, 1]
    det = a * c - b * b
    ok = np.isfinite(error_en).all(axis=1) & (a > 0) & (det > 0) & np.isfinite(det)
    e, n = error_en[ok, 0], error_en[ok, 1]
    out[ok] = (c[ok] * e * e - 2 * b[ok] * e * n + a[ok] * n * n) / det[ok]
    return out


def _sigma(cov_en: np.ndarray) -> np.ndarray:
    sym = 0.5 * (cov_en + np.transpose(cov_en, (0, 2, 1)))
    finite = np.isfinite(sym).all(axis=(1, 2))
    out = np.full(len(cov_en), np.nan)
    if finite.any():
        out[finite] = np.sqrt(np.clip(np.linalg.eigvalsh(sym[finite])[:, -1], 0, None))
    return out


def _track_directions(stamps: np.ndarray, truth_stamps: np.ndarray,
                      truth_enu: np.ndarray) -> np.ndarray:
    """Return the truth's unit east/north direction of travel at each stamp (NaN: standing)."""
    n = len(truth_stamps)
    hi = np.clip(np.searchsorted(truth_stamps, stamps, side='right'), 1, n - 1)
    lo = hi - 1
    step = truth_enu[hi, :2] - truth_enu[lo, :2]
    norm = np.hypot(step[:, 0], step[:, 1])
    with np.errstate(invalid='ignore', divide='ignore'):
        out = step / norm[:, None]
    out[~(norm > 1e-3)] = np.nan
    return out


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _valid_truth(truth: TruthSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the usable-sample mask, the sort order of those samples and their stamps."""
    keep = truth.valid & np.isfinite(truth.lat) & np.isfinite(truth.lon)
    order = np.argsort(truth.stamp_ns[keep], kind='stable')
    t_stamp = truth.stamp_ns[keep][order]
    if len(t_stamp) < 2:
        raise DataError(f'the truth has {len(t_stamp)} valid sample(s); need at least 2 to '
                        f'interpolate')
    return keep, order, t_stamp


def truth_coverage(stamp_ns: Any, truth: TruthSeries,
                   config: EvalConfig | None = None) -> np.ndarray:
    """Tell which stamps :func:`compute_metrics` can match to the truth (before any work)."""
    config = config or EvalConfig()
    _, _, t_stamp = _valid_truth(truth)
    return _coverage(np.asarray(stamp_ns, np.int64), t_stamp,
                     int(round(config.truth_max_gap_s * 1e9)))


def compute_metrics(fixes: FixSeries, truth: TruthSeries, config: EvalConfig | None = None, *,
                    frame_stamp_ns: np.ndarray | None = None) -> Evaluation:
    """Match fixes to the truth by stamp and compute every metric (see the module docstring).

    Raises:
        DataError: fewer than two valid truth samples, no fix messages, or no fix stamp in the
            truth's coverage.
    """
    config = config or EvalConfig()
    keep, order, t_stamp = _valid_truth(truth)
    t_lat, t_lon, t_alt = (truth.lat[keep][order], truth.lon[keep][order],
                           truth.alt[keep][order])
    origin = (float(t_lat[0]), float(t_lon[0]),
              float(t_alt[0]) if math.isfinite(t_alt[0]) else 0.0)
    t_enu = _to_enu(t_lat, t_lon, t_alt, origin)
    n = len(fixes.stamp_ns)
    if n == 0:
        raise DataError('there are no fix messages to evaluate')
    max_gap_ns = int(round(config.truth_max_gap_s * 1e9))
    matched = _coverage(fixes.stamp_ns, t_stamp, max_gap_ns)
    if not matched.any():
        raise DataError(
            f'no fix stamp lies within the truth: fixes {fixes.stamp_ns.min() / 1e9:.3f} - '
            f'{fixes.stamp_ns.max() / 1e9:.3f} s, truth {t_stamp[0] / 1e9:.3f} - '
            f'{t_stamp[-1] / 1e9:.3f} s (gaps over {config.truth_max_gap_s} s not bridged)')
    valid = fixes.valid
    fix_enu = _to_enu(np.where(valid, fixes.lat, np.nan), fixes.lon, fixes.alt, origin)
    truth_at = np.full((n, 3), np.nan)
    truth_at[matched] = _interpolate(fixes.stamp_ns[matched], t_stamp, t_enu)
    scored = valid & matched
    err_en = np.where(scored[:, None], fix_enu[:, :2] - truth_at[:, :2], np.nan)
    error = np.hypot(err_en[:, 0], err_en[:, 1])
    cov_en = fixes.cov_enu[:, :2, :2]
    nees = _nees(err_en, cov_en)
    sigma = _sigma(cov_en)
    track = np.full((n, 2), np.nan)
    if scored.any():
        d = _track_directions(fixes.stamp_ns[scored], t_stamp, t_enu)
        e = err_en[scored]
        track[scored] = np.stack([(e * d).sum(axis=1), e[:, 1] * d[:, 0] - e[:, 0] * d[:, 1]],
                                 axis=1)
    known = np.isfinite(track).all(axis=1)

    if frame_stamp_ns is not None:
        frames = np.asarray(frame_stamp_ns, np.int64)
        denominator = len(frames)
        queries = int(_coverage(frames, t_stamp, max_gap_ns).sum()) if len(frames) else 0
    else:
        denominator = n
        queries = int(matched.sum())
    errors = error[scored]
    recall, precision = {}, {}
    for d in config.thresholds_m:
        hits = int((errors <= d).sum())
        key = f'{d:g}'
        recall[key] = _rate(hits, queries)
        precision[key] = _rate(hits, int(scored.sum()))
    nees_ok = nees[np.isfinite(nees)]
    coverage = {f'{k}sigma': _rate(int((nees_ok <= k * k).sum()), len(nees_ok))
                for k in SIGMA_LEVELS}
    latency = {'kind': None, 'p50_ms': None, 'p95_ms': None, 'count': 0}
    lat_ms, kind = None, None
    if fixes.receive_ns is not None:
        lat_ms, kind = (fixes.receive_ns - fixes.stamp_ns).astype(np.float64) / 1e6, 'receive'
    elif fixes.processing_ms is not None:
        lat_ms, kind = fixes.processing_ms, 'processing'
    if lat_ms is not None:
        latency = {'kind': kind, 'p50_ms': float(np.percentile(lat_ms, 50)),
                   'p95_ms': float(np.percentile(lat_ms, 95)), 'count': int(n)}
    vi = np.flatnonzero(valid)
    vi = vi[np.argsort(fixes.stamp_ns[vi], kind='stable')]
    step = np.hypot(*(fix_enu[vi[1:], :2] - fix_enu[vi[:-1], :2]).T) if len(vi) > 1 \
        else np.zeros(0)
    dt = np.diff(fixes.stamp_ns[vi]).astype(np.float64) / 1e9
    jumps = int((step > config.max_speed_mps * dt + config.jump_margin_m).sum())

    metrics = {
        'counts': {
            'frames': None if frame_stamp_ns is None else int(denominator),
            'fix_messages': int(n), 'valid_fixes': int(valid.sum()),
            'no_fix_messages': int(n - valid.sum()),
            'fixes_outside_truth': int((~matched).sum()),
            'matched_valid_fixes': int(scored.sum()), 'queries': queries,
            'truth_samples': int(len(t_stamp)),
            'truth_samples_invalid': int((~keep).sum()),
        },
        'horizontal_error_m': _stats(errors),
        'recall': recall,
        'precision': precision,
        'availability': _rate(int(valid.sum()), denominator),
        'no_fix_rate': _rate(int(n - valid.sum()), n),
        'nees': {'coverage': coverage,
                 'ideal_coverage': {f'{k}sigma': IDEAL_COVERAGE[k] for k in SIGMA_LEVELS},
                 'curve': {'sigma': list(CURVE_LEVELS),
                           'coverage': [_rate(int((nees_ok <= k * k).sum()), len(nees_ok))
                                        for k in CURVE_LEVELS],
                           'ideal': [1.0 - math.exp(-k * k / 2.0) for k in CURVE_LEVELS]},
                 'mean': float(nees_ok.mean()) if nees_ok.size else None,
                 'count': int(nees_ok.size),
                 'invalid_covariance': int((scored & ~np.isfinite(nees)).sum())},
        'track_error_m': {'along': _stats(np.abs(track[known, 0])),
                          'cross': _stats(np.abs(track[known, 1])),
                          'count': int(known.sum())},
        'latency': latency,
        'jumps': {'count': jumps, 'pairs': int(max(len(vi) - 1, 0)),
                  'rate': _rate(jumps, max(len(vi) - 1, 0))},
        'origin': {'lat': origin[0], 'lon': origin[1], 'alt': origin[2]},
        'config': config.to_dict(),
    }
    return Evaluation(metrics, origin, fixes.stamp_ns, fix_enu, valid, matched, truth_at, error,
                      sigma, cov_en, nees, track, t_stamp, t_enu, config)
