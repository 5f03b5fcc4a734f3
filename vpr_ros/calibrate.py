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

"""The ``vpr-ros calibrate`` stage: localise frames with known positions, then choose and fit.

Frames with known positions (a second drive of the route, ``calibrate --queries``, or
pseudo-queries made from the map's own images) are localised once; the GeoWarp fusion weight
and the sub-spacing mode are then chosen on them (each kept only when it helps held out), and
the sigma mapping (:mod:`vpr_ros.calibration`) is fitted on the frames re-derived with those
choices. The result goes into the map with :func:`vpr_ros.calibration.store_calibration`.
With ``geowarp.mode: auto`` the frames are described once and localised in each GeoWarp mode.

Why one module of this size: every choice (GeoWarp mode, fusion weight, sub-spacing) is made
on the same localised frames and hands the next one its estimates; the fits themselves live
in :mod:`vpr_ros.calibration`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from vpr_ros.calibration import (Calibration, CalibrationConfig, cross_validated_coverage, fit,
                                 fitted_with, nees_coverage, track_errors)
from vpr_ros.confidence import feature_vector, FEATURES
from vpr_ros.device import read_step
from vpr_ros.errors import MapError
from vpr_ros.fix_quality import place_spacing_m
from vpr_ros.geo import wgs84_to_enu
from vpr_ros.localizer import DescribedFrame, Estimate, Localizer
from vpr_ros.pseudo_queries import pseudo_query, PseudoQueries
from vpr_ros.significance import sign_test

#: GeoWarp fusion weights ``vpr-ros calibrate`` tries (0: global order, 1: GeoWarp order).
FUSION_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0)


def localize_frames(localizer: Localizer, images: Sequence[Any], *,
                    exclude: Sequence[Sequence[int]] | None = None,
                    progress: bool = True, desc: str = 'calibrate',
                    described: Sequence[DescribedFrame] | None = None) -> list[Estimate]:
    """Localize frames in steps of :func:`~vpr_ros.device.read_step` with a tqdm bar.

    ``described``: the frames' :func:`describe_frames`, so only the search, the re-rank and
    the estimate run.
    """
    out = []
    step = read_step()
    for start in tqdm(range(0, len(images), step), disable=not progress, desc=desc,
                      unit='batch'):
        excl = exclude[start:start + step] if exclude is not None else None
        if described is not None:
            out.extend(localizer.localize_described(described[start:start + step],
                                                    exclude=excl))
        else:
            out.extend(localizer.localize_batch(list(images[start:start + step]),
                                                exclude=excl))
    return out


def describe_frames(localizer: Localizer, images: Sequence[Any], *,
                    progress: bool = True) -> list[DescribedFrame]:
    """Describe frames once (:meth:`Localizer.describe_batch`) in steps, with a tqdm bar."""
    out = []
    step = read_step()
    for start in tqdm(range(0, len(images), step), disable=not progress, desc='describe',
                      unit='batch'):
        out.extend(localizer.describe_batch(list(images[start:start + step])))
    return out


def frame_errors(localizer: Localizer, estimates: Sequence[Estimate], truth_lat_lon: np.ndarray, *,
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


def calibration_frames(localizer: Localizer, images: Sequence[Any],
                       truth_lat_lon: np.ndarray, *,
                       exclude: Sequence[Sequence[int]] | None = None,
                       progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Localize frames with known positions: ``(features (N, F), errors_en (N, 2) m)``."""
    estimates = localize_frames(localizer, images, exclude=exclude, progress=progress)
    return frame_errors(localizer, estimates, truth_lat_lon)


def _truth_en(origin: Sequence[float], truth_lat_lon: np.ndarray) -> np.ndarray:
    """East/north (m) of ``(N, 2)`` truth lat/lon in the map frame, ``(N, 2)``."""
    truth = np.asarray(truth_lat_lon, np.float64).reshape(-1, 2)
    if not len(truth):
        return np.zeros((0, 2))
    return np.stack([wgs84_to_enu(lat, lon, 0.0, origin)[:2] for lat, lon in truth])


def per_setting(localizer: Localizer, estimates: Sequence[Estimate], name: str,
                values: Sequence[Any], score: Callable[[Estimate, int], float]) -> np.ndarray:
    """Score every estimate re-derived with ``config.<name>`` set to each of ``values``.

    Returns ``(len(values), len(estimates))`` of ``score(re-derived estimate, frame index)``,
    NaN for frames without candidates; no new forward (:meth:`Localizer.reorder`). The
    localizer's config is restored afterwards.
    """
    saved = localizer.config
    out = np.full((len(values), len(estimates)), np.nan)
    try:
        for v, value in enumerate(values):
            localizer.config = dataclasses.replace(saved, **{name: value})
            for i, est in enumerate(estimates):
                if est.candidates:
                    out[v, i] = score(localizer.reorder(est), i)
    finally:
        localizer.config = saved
    return out


def fit_rerank_weight(localizer: Localizer, estimates: Sequence[Estimate],
                      truth_lat_lon: np.ndarray, right_m: float, *,
                      weights: Sequence[float] = FUSION_WEIGHTS, min_gain: float = 0.01,
                      max_p: float = 0.05, seed: int = 0) -> tuple[float, dict[str, Any]]:
    """Choose the GeoWarp fusion weight on frames with known positions; 0 unless it helps.

    For each weight the estimates are re-ordered (no new forward) and scored by the share of
    frames whose top-1 lies within ``right_m`` of the truth. The weight is chosen on one half
    of the frames and scored on the other, both ways (2-fold, split by frame), and a weight
    above 0 is kept only when its held-out rate beats the global order (weight 0) by
    ``min_gain`` and the held-out frames the two orders disagree on show it (one-sided sign
    test, p at most ``max_p``): re-ranking that cannot show a gain on the map's own data does
    not reorder. Returns ``(weight, report)``.
    """
    weight, report, _ = _fusion_fit(localizer, estimates, truth_lat_lon, right_m, weights,
                                    min_gain, max_p, seed)
    return weight, report


def _fusion_fit(localizer: Localizer, estimates: Sequence[Estimate], truth_lat_lon: np.ndarray,
                right_m: float, weights: Sequence[float], min_gain: float, max_p: float,
                seed: int) -> tuple[float, dict[str, Any], np.ndarray]:
    """:func:`fit_rerank_weight`, and per frame whether the order it delivers is right held out.

    That is the 2-fold held-out order where the weight is kept, else the global order: what
    the choice of the GeoWarp mode compares (:func:`choose_geowarp_mode`).
    """
    truth_en = _truth_en(localizer.map.origin, truth_lat_lon)

    def top_is_right(est: Estimate, i: int) -> float:
        top = localizer.map.positions_enu(est.candidates[0].index)
        return float(np.linalg.norm(top - truth_en[i]) <= right_m)

    # A frame without candidates is never right (NaN == 1 is False).
    right = per_setting(localizer, estimates, 'rerank_weight', [float(w) for w in weights],
                        top_is_right) == 1.0
    rates = right.mean(axis=1)
    halves = np.array_split(np.random.default_rng(seed).permutation(len(estimates)), 2)
    held_out = np.zeros(len(estimates), bool)
    for a, b in ((0, 1), (1, 0)):
        pick = int(np.argmax(right[:, halves[a]].mean(axis=1)))
        held_out[halves[b]] = right[pick, halves[b]]
    best = int(np.argmax(rates))
    plain = list(weights).index(0.0) if 0.0 in weights else int(np.argmin(rates))
    base = float(rates[plain])
    cv_rate = float(held_out.mean())
    # Held out, the chosen weight is one candidate against the global order: no correction
    # for picking the best of the weights is needed (that pick was made on the other half).
    p_value = sign_test(held_out, right[plain])
    gain = weights[best] > 0 and cv_rate >= base + min_gain and rates[best] >= base + min_gain
    keep = gain and p_value <= max_p
    weight = float(weights[best]) if keep else 0.0
    if keep:
        reason = (f'weight {weight:g}: top-1 right place {base:.3f} -> {rates[best]:.3f} '
                  f'(2-fold held out {cv_rate:.3f}, sign test p = {p_value:.2g})')
    elif gain:
        reason = (f'the held-out frames re-ranking changes do not show its gain (global '
                  f'{base:.3f}, held out {cv_rate:.3f}; sign test p = {p_value:.2g} > '
                  f'{max_p:g}): global order kept')
    else:
        reason = (f're-ranking does not raise the right-place rate on these frames by '
                  f'{min_gain:g} (global {base:.3f}, best {rates[best]:.3f} at weight '
                  f'{weights[best]:g}, held out {cv_rate:.3f}): global order kept')
    report = {
        'weight': weight, 'right_place_m': float(right_m), 'frames': int(len(estimates)),
        'right_place_rate': {f'{w:g}': float(r) for w, r in zip(weights, rates)},
        'global_order_rate': base, 'chosen_rate_cross_validated': cv_rate,
        'sign_test_p': p_value, 'max_p': float(max_p), 'reason': reason,
    }
    return weight, report, held_out if keep else right[plain]


def choose_geowarp_mode(delivered: Mapping[str, np.ndarray], *, min_gain: float = 0.01,
                        max_p: float = 0.05) -> tuple[str, dict[str, Any]]:
    """Choose what GeoWarp warps from the right-place rate each mode delivers held out.

    ``delivered[mode]`` says per frame whether the order calibrate would store for that mode
    (its held-out fusion weight, or the global order where re-ranking was not kept) puts a
    right place first. Warping the images (the published method) costs a second backbone
    pass over the warped pairs; warping the feature maps does not, and the two rank alike on
    some data and not on other (Corridor: within 3 of 111 queries; a real indoor set: 0.423
    against 0.372). So image mode is kept only when it delivers ``min_gain`` more on the
    frames and the frames the two disagree on show it (one-sided sign test p at most
    ``max_p``).
    """
    feats, image = (np.asarray(delivered[m], bool) for m in ('features', 'image'))
    rates = {'features': float(feats.mean()), 'image': float(image.mean())}
    p_value = sign_test(image, feats)
    keep = rates['image'] >= rates['features'] + min_gain and p_value <= max_p
    mode = 'image' if keep else 'features'
    verdict = ('image mode kept' if keep else
               'features mode kept (image mode costs a second backbone pass and did not '
               'show a gain)')
    report = {
        'mode': mode, 'right_place_rate_held_out': rates, 'sign_test_p': p_value,
        'min_gain': float(min_gain), 'max_p': float(max_p),
        'reason': (f'{verdict}: right place held out, features {rates["features"]:.3f}, '
                   f'image {rates["image"]:.3f}, sign test p = {p_value:.2g}'),
    }
    return mode, report


def fit_subspacing(localizer: Localizer, estimates: Sequence[Estimate], truth_lat_lon: np.ndarray,
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
    errors = per_setting(localizer, estimates, 'subspacing', modes,
                         lambda est, i: float(np.linalg.norm(np.asarray(est.enu) - truth_en[i])))
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


def pseudo_query_frames(db: Any, count: int, seed: int,
                        map_images: Callable[[int], np.ndarray] | None = None,
                        ) -> tuple[Sequence[np.ndarray], np.ndarray, str]:
    """Pseudo-queries of ``count`` map entries: ``(images, entries, description)``.

    From ``map_images(i)`` (the source images) when given, else from the thumbnails; the
    same seed draws the same entries either way.
    """
    rng = np.random.default_rng(seed)
    count = min(len(db), count)
    chosen = np.sort(rng.choice(len(db), size=count, replace=False))
    if map_images is not None:
        return (PseudoQueries(map_images, chosen, seed), chosen,
                f"{count} pseudo-queries from the map's source images")
    return ([pseudo_query(db.thumbnails(int(i)), rng) for i in chosen], chosen,
            f'{count} pseudo-queries from the map thumbnails')


def calibrate_map(localizer: Localizer, config: CalibrationConfig | None = None, *,
                  queries: tuple[Sequence[Any], np.ndarray] | None = None,
                  map_images: Callable[[int], np.ndarray] | None = None,
                  progress: bool = True) -> tuple[Calibration, dict[str, Any]]:
    """Fit the map's calibration with its localizer; return ``(calibration, report)``.

    Args:
        localizer: the localizer over the map (its GeoWarp included).
        config: sampling and fit settings.
        queries: ``(images, (N, 2) lat/lon)`` of a calibration set; pseudo-queries made from
            the map's own images (:func:`pseudo_query`, the entry itself excluded) when None.
        map_images: ``map_images(i)`` loads entry i's source image as the map was built from
            it (:func:`vpr_ros.mapdb.sources.source_images`); pseudo-queries are then made at
            the camera's resolution, like the queries. Without it, from the thumbnails.
        progress: tqdm bars.

    The report holds the NEES coverage in-sample and 2-fold cross-validated, the place
    spacing (the error floor) and the error quantiles. The localizer's config is left as it
    was; the chosen fusion weight and sub-spacing mode are in the report (and in the map
    once :func:`vpr_ros.calibration.store_calibration` has stored it).
    """
    saved = localizer.config
    try:
        return _calibrate(localizer, config or CalibrationConfig(), queries, map_images,
                          progress)
    finally:
        localizer.config = saved


def _calibrate(localizer: Localizer, config: CalibrationConfig,
               queries: tuple[Sequence[Any], np.ndarray] | None,
               map_images: Callable[[int], np.ndarray] | None,
               progress: bool) -> tuple[Calibration, dict[str, Any]]:
    """:func:`calibrate_map`'s fit; it sets ``localizer.config`` as it goes."""
    db = localizer.map
    pos = db.positions(np.arange(len(db)))
    spacing = place_spacing_m(db.positions_enu(np.arange(len(db))))
    if queries is None:
        if map_images is None and not db.manifest.get('thumbnails'):
            raise MapError(f'{db.path} has no thumbnails to make pseudo-queries from; pass '
                           f'the map source or a calibration set with positions (--queries)')
        images, chosen, source = pseudo_query_frames(db, config.pseudo_queries, config.seed,
                                                     map_images)
        truth = pos[chosen, :2]
        exclude = [[int(i)] for i in chosen]
    else:
        images, truth = queries
        truth = np.asarray(truth, np.float64).reshape(-1, 2)
        exclude = None
        source = f'{len(truth)} calibration frames with positions'
    if localizer.config.rerank_weight < 0 or config.fit_rerank_weight:
        # Not the fusion weight an older calibration stored in the map: a new fit must not
        # depend on it. Without a fit (fit_rerank_weight off) GeoWarp's order, the published
        # method, is the one calibrated and stored below. A weight to fit needs every
        # candidate's GeoWarp score, which w = 0 would not compute.
        localizer.config = dataclasses.replace(localizer.config, rerank_weight=1.0)
    chosen_mode = localizer.config.subspacing
    if chosen_mode == 'auto':
        # Localise with GeoWarp sub-spacing so the route neighbours get scored; every mode is
        # then tried on the same frames without a new forward.
        localizer.config = dataclasses.replace(localizer.config, subspacing='geowarp')
    fuse = localizer.rerank and config.fit_rerank_weight
    warp = localizer.config.geowarp.mode
    # auto: both modes are tried where a fusion fit can tell them apart; otherwise features,
    # not a mode an older calibration stored (the new fit must not depend on it).
    warps = (('features', 'image') if fuse else ('features',)) if warp == 'auto' else (warp,)
    passes = {}
    # The forward is the same in every mode: described once, re-ranked per mode.
    described = describe_frames(localizer, images, progress=progress) if len(warps) > 1 \
        else None
    for name in warps:
        localizer.config = localizer.config.replace(
            geowarp=localizer.config.geowarp.replace(mode=name))
        estimates = localize_frames(localizer, images, exclude=exclude, progress=progress,
                                    desc=f'calibrate ({name})' if len(warps) > 1 else 'calibrate',
                                    described=described)
        fitted = (_fusion_fit(localizer, estimates, truth,
                              config.right_place_spacings * spacing, FUSION_WEIGHTS, 0.01,
                              config.max_p, config.seed) if fuse else None)
        passes[name] = (estimates, fitted)
    warp, mode_choice = warps[0], None
    if len(warps) > 1:
        warp, mode_choice = choose_geowarp_mode({m: f[2] for m, (_, f) in passes.items()},
                                                max_p=config.max_p)
    localizer.config = localizer.config.replace(
        geowarp=localizer.config.geowarp.replace(mode=warp))
    estimates, fitted = passes[warp]
    fusion = None
    if fitted is not None:
        weight, fusion = fitted[0], dict(fitted[1], mode_choice=mode_choice)
        localizer.config = dataclasses.replace(localizer.config, rerank_weight=weight)
    if localizer.rerank:
        # The mode the scores (and so the weight and sigma) were fitted with: the map's for
        # geowarp.mode auto (Localizer.geowarp_mode).
        fusion = dict(fusion or {}, geowarp_mode=warp)
        if fitted is None:
            # Stored, so the order the sigma is fitted on below is the map's, whatever the
            # default for a map without a weight (Localizer.rerank_weight).
            weight = float(localizer.config.rerank_weight)
            fusion.update(weight=weight, reason=f'weight {weight:g} calibrated as set (not '
                                                f'fitted: fit_rerank_weight off)')
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
        'fitted_with': fitted_with(db, localizer.rerank),
        'rerank_fusion': fusion,
        'subspacing': subspacing,
        'geowarp_mode': localizer.config.geowarp.mode,
    }
    cal = dataclasses.replace(cal, info=report)
    return cal, report
