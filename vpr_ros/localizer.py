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

"""One image in, one position with an honest covariance out.

``Localizer(map, model, config).localize(image)``: global descriptor -> top-k from the map's
FAISS index -> GeoWarp re-ranking of the top |P| -> position (re-ranked top-1, or the
score-weighted mean of the candidates near it) -> confidence features -> calibrated sigma
(``vpr_ros.calibration``) -> :class:`Estimate`. GeoWarp: Berton et al., "Viewpoint Invariant
Dense Matching for Visual Geolocalization", ICCV 2021, arXiv 2109.09827 (re-ranking: §3.2).

GeoWarp works at the size of the map's thumbnails: the query is shrunk to that size, and the
dense features are the backbone's stride-16 map of the small images (``local_features``), so
re-ranking costs a fraction of one descriptor forward. Candidate features are kept in a
bounded LRU cache: consecutive frames of a drive retrieve the same places.

Why one module of this size: it is the one-frame pipeline and its config, read top to bottom
in the order a frame goes through it. The concepts it uses live elsewhere: confidence features
(:mod:`vpr_ros.confidence`), the sigma model (:mod:`vpr_ros.calibration`), route geometry and
sub-spacing (:mod:`vpr_ros.fix_quality`), the sequence check's memory (:mod:`vpr_ros.sequence`),
GeoWarp (:mod:`vpr_ros.models.geowarp`), inference backends (:mod:`vpr_ros.runtime`).
"""

from __future__ import annotations

from collections import OrderedDict
import dataclasses
from dataclasses import dataclass, field
import functools
import logging
import math
from pathlib import Path
import time
from typing import Any, Sequence

import numpy as np
import torch

from vpr_ros.calibration import (calibration_problem, fitted_with, stored_calibration,
                                 stored_geowarp_mode, stored_rerank_weight, stored_subspacing)
from vpr_ros.confidence import confidence_features, feature_vector
from vpr_ros.config import Config, option
from vpr_ros.device import forward_batch
from vpr_ros.errors import DataError, MapError, VprError
from vpr_ros.fix_quality import RouteGeometry, subspacing_along
from vpr_ros.geo import enu_to_wgs84
from vpr_ros.images import check_rgb, load_image, resize_to, to_tensor
from vpr_ros.mapdb.database import MapDB
from vpr_ros.models.geowarp import GeoWarp, GeoWarpConfig, load_geowarp
from vpr_ros.models.resizer import BilinearResizer
from vpr_ros.runtime.backends import BACKENDS, faster_regression, select_runtime
from vpr_ros.sequence import SequenceCheck

log = logging.getLogger(__name__)

FIX = 'fix'
NO_FIX = 'no_fix'
ESTIMATORS = ('top1', 'weighted')
SUBSPACING = ('auto', 'off', 'geowarp', 'global')
SEQUENCE_ACTIONS = ('no_fix', 'inflate')


@dataclass(frozen=True)
class LocalizerConfig(Config):
    """How an image becomes a position estimate."""

    backend: str = option('auto', 'inference backend: torch, onnxruntime (the ONNX export '
                          'of the map, vpr-ros export), tensorrt (ONNX Runtime TensorRT, fp16, '
                          'NVIDIA), or auto: the fastest available (torch when the map has no '
                          'export)', choices=BACKENDS)
    top_k: int = option(10, 'candidates retrieved from the index', min=1, max=1000)
    rerank: bool = option(True, 'GeoWarp re-ranking of the first geowarp.num_reranked '
                          'candidates (needs map thumbnails)')
    # One regression direction: the published test code averages W(q, p) and W(p, q), which
    # doubles the costliest step (bench/bench_localize.py) for little gain (bench/README.md).
    geowarp: GeoWarpConfig = option(GeoWarpConfig(mode='auto', symmetric=False),
                                    'GeoWarp re-ranking (Berton et al., ICCV 2021)')
    rerank_weight: float = option(
        -1.0, 'weight w of the GeoWarp score in the re-ranked order, score = (1 - w) global + '
              'w GeoWarp: 1 orders by GeoWarp alone, 0 keeps the global order; -1 takes the '
              'weight vpr-ros calibrate validated on the map (0, the global order, on an '
              'uncalibrated map)',
        min=-1.0, max=1.0, runtime=True)
    estimator: str = option('top1', 'position: the re-ranked top-1, or the score-weighted '
                            'mean of the candidates within cluster_radius_m of it',
                            choices=ESTIMATORS, runtime=True)
    subspacing: str = option('auto', 'top1 estimator: place the query between the top-1 '
                             'and its route neighbours (map entries behind and ahead of it): '
                             'the vertex of a parabola through their GeoWarp scores (geowarp; '
                             'the neighbours get scored when they were not re-ranked; global '
                             'scores without re-ranking) or global scores (global); off snaps '
                             'to the top-1; auto takes what vpr-ros calibrate validated on '
                             'the map (off when it has no such choice)',
                             choices=SUBSPACING, runtime=True)
    cluster_radius_m: float = option(25.0, 'weighted estimator: candidates this close to the '
                                     'top-1 are averaged', min=0.0, runtime=True)
    weight_temperature: float = option(0.02, 'weighted estimator: softmax temperature on '
                                       'normalised scores', min=1e-4, runtime=True)
    margin_radius_m: float = option(25.0, 'confidence: the margin compares the top-1 with '
                                    'the best candidate farther than this', min=0.0)
    max_sigma_m: float = option(30.0, 'STATUS_NO_FIX when the calibrated horizontal sigma '
                                'is larger than this (m)', min=0.0, runtime=True)
    uncalibrated_sigma_m: float = option(15.0, 'sigma used when the map has no calibration '
                                         '(run vpr-ros calibrate)', min=0.01, runtime=True)
    sigma_up_m: float = option(10.0, 'vertical sigma when the map has altitudes: VPR does '
                               'not observe height', min=0.01, runtime=True)
    unknown_alt_sigma_m: float = option(1000.0, 'vertical sigma when the map has no '
                                        'altitude (then the altitude is the map origin one)',
                                        min=0.01, runtime=True)
    sequence_check: bool = option(
        True, 'sequence check of stamped frames (the node, eval-bag --map): a position that '
        'fewer than sequence_support of the last sequence_frames frames had a top candidate '
        'within max_speed_mps * dt + sequence_margin_m of is an outlier', runtime=True)
    sequence_frames: int = option(5, 'sequence check: frames remembered', min=1,
                                  runtime=True)
    sequence_support: int = option(2, 'sequence check: remembered frames that must agree',
                                   min=1, runtime=True)
    sequence_candidates: int = option(1, 'sequence check: top candidates of each frame that '
                                      'count as its evidence (more: more permissive)', min=1,
                                      runtime=True)
    max_speed_mps: float = option(15.0, 'sequence check: fastest motion of the robot (m/s)',
                                  min=0.0, runtime=True)
    sequence_margin_m: float = option(10.0, 'sequence check: distance allowed on top of '
                                      'max_speed_mps * dt (m)', min=0.0, runtime=True)
    sequence_window_s: float = option(5.0, 'sequence check: frames older than this are '
                                      'forgotten (s)', min=0.0, runtime=True)
    sequence_confirm_first: bool = option(
        True, 'sequence check: the first frame of a drive (nothing remembered within '
        'sequence_window_s) is NO_FIX until a next frame agrees with it, so no first fix is '
        'unchecked; false: it passes unchecked (cameras slower than 1 / sequence_window_s)',
        runtime=True)
    sequence_action: str = option('no_fix', 'sequence check: an outlier becomes NO_FIX, or '
                                  'keeps its place with a sigma inflated to its jump '
                                  '(inflate)', choices=SEQUENCE_ACTIONS, runtime=True)
    motion_gate: float = option(
        5.0, 'sequence check: a fix farther than this many sigmas from the constant-velocity '
        'track of the last motion_frames fixes gets its covariance widened by that offset '
        '(0: off)', min=0.0, runtime=True)
    motion_frames: int = option(5, 'sequence check: fixes the motion track is fitted to',
                                min=3, runtime=True)
    feature_cache: int = option(4096, 'candidate GeoWarp features kept in memory (entries) '
                                'when the map has no stored ones', min=0)


@dataclass(frozen=True)
class Candidate:
    """One retrieved map entry, in final (re-ranked) order."""

    index: int
    name: str
    lat: float
    lon: float
    alt: float
    score: float           # global descriptor similarity (cosine)
    rerank_score: float    # GeoWarp dense similarity / 225 (NaN when not re-ranked)


@dataclass
class Estimate:
    """A position with its covariance; ``status`` is :data:`FIX` or :data:`NO_FIX`."""

    lat: float
    lon: float
    alt: float
    cov_enu: np.ndarray                 # (3, 3) m^2, row-major east/north/up
    status: str
    score: float                        # the confidence score of the chosen candidate
    sigma_m: float                      # horizontal sigma: the larger axis of cov_enu's ellipse
    candidates: tuple[Candidate, ...]
    features: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)   # milliseconds per stage
    reason: str = ''
    track_enu: tuple[float, float] = (math.nan, math.nan)   # local route direction (unit)
    route_scores: dict[int, float] = field(default_factory=dict)  # GeoWarp of route neighbours
    enu: tuple[float, float] = (math.nan, math.nan)   # east/north (m) in the map's ENU frame

    @property
    def ok(self) -> bool:
        """True when the estimate is a fix."""
        return self.status == FIX

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict (``vpr-ros localize --json``)."""
        return {'lat': self.lat, 'lon': self.lon, 'alt': self.alt, 'status': self.status,
                'sigma_m': self.sigma_m, 'score': self.score,
                'cov_enu': np.asarray(self.cov_enu).tolist(), 'reason': self.reason,
                'features': dict(self.features), 'timings_ms': dict(self.timings),
                'track_enu': list(self.track_enu), 'enu': list(self.enu),
                'route_scores': {str(k): v for k, v in self.route_scores.items()},
                'candidates': [vars(c) for c in self.candidates]}


@dataclass
class DescribedFrame:
    """A frame after the forward: what :meth:`Localizer.localize_described` needs."""

    descriptor: np.ndarray              # (D,) the global descriptor
    small: np.ndarray | None            # the frame at the map's thumbnail size (re-ranking)
    local: torch.Tensor | None          # GeoWarp features from the forward, when it made them
    timings: dict[str, float]           # decode / resize / forward milliseconds


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: int, value: torch.Tensor) -> None:
        if self.size <= 0:
            return
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class Localizer:
    """Retrieval + GeoWarp re-ranking + calibrated covariance over one map."""

    def __init__(self, map_db: MapDB, model: Any = None, config: LocalizerConfig | None = None,
                 *, geowarp: GeoWarp | None = None, device: str = 'auto') -> None:
        """Wrap an open map.

        Args:
            map_db: the map (``MapDB.open``).
            model: the descriptor model; the one stored in the map when None. A model that
                did not make the map is a :class:`MapError`.
            config: settings; defaults otherwise.
            geowarp: a fitted GeoWarp; the map's (``vpr-ros fit-geowarp``) when None, else
                an untrained one (identity warp: plain dense re-ranking).
            device: torch device for the map's model when ``model`` is None.
        """
        self.config = config or LocalizerConfig()
        if len(map_db) == 0:
            raise MapError(f'{map_db.path}: the map is empty')
        self.map = map_db
        # MapDB.open(fast=True) reads the entry names on first use: read them now, so that the
        # first frame does not wait for a big map's names, nor reads those of a map written at
        # the same path since (vpr-ros map append or convert while the node runs).
        self.names = map_db.names
        if model is None:
            model = map_db.load_model(device)
        else:
            from vpr_ros.mapdb.database import check_model
            check_model(map_db.path, map_db.manifest, model)
        self.model = model.eval()
        self.device = self.model.device
        self.thumb_size = map_db.thumbnail_size or (0, 0)
        self.rerank = self.config.rerank and self.thumb_size[0] > 0
        if self.config.rerank and not self.rerank:
            log.warning('%s has no thumbnails: GeoWarp re-ranking is off', map_db.path)
        self._cache = _LRU(self.config.feature_cache)
        # Candidates' GeoWarp features stored in the map (float16): no backbone pass per
        # candidate, so a first visit costs what a revisit costs.
        self.stored_features = None
        if self.rerank:
            from vpr_ros.runtime.map_features import load_local_features
            self.stored_features = load_local_features(map_db)
        self.geowarp = (geowarp or self._map_geowarp()).to(self.device).eval()
        self.geowarp.config = self.config.geowarp.replace(mode=self.geowarp_mode)
        if self.rerank and geowarp is None:
            # The map's GeoWarp sees only thumbnail-size maps: fold its first conv (exact).
            from vpr_ros.runtime.fold import FoldedRegression
            self.geowarp.regression = FoldedRegression(self.geowarp.regression,
                                                       self._dense_size())
        #: torch, ONNX Runtime or TensorRT (``vpr_ros.runtime.backends``).
        self.runtime = select_runtime(self.config.backend, map_db, self.model, self.device)
        #: Where GeoWarp's regression runs: ``torch`` or the runtime's name.
        self.regression_backend = 'torch'
        regression = self.runtime.regression()
        if regression is not None and geowarp is not None:
            log.warning('a GeoWarp other than the one of the map was given: its '
                        'regression runs in torch')
        elif regression is not None and self.device.type == 'cuda':
            self.geowarp.regression = regression
            self.regression_backend = self.runtime.name
        elif regression is not None and self.rerank:
            # On the CPU, oneDNN can run the folded torch stack faster than the export.
            pairs = self.config.geowarp.num_reranked * (2 if self.config.geowarp.symmetric
                                                        else 1)
            name, ms = faster_regression({'torch': self.geowarp.regression,
                                          self.runtime.name: regression}, pairs)
            if name != 'torch':
                self.geowarp.regression = regression
            self.regression_backend = name
            self.runtime.reason += ('; GeoWarp regression in ' + name + ' (' + ', '.join(
                f'{k} {v:.1f} ms' for k, v in ms.items()) + f' for {pairs})')
        self.calibration = stored_calibration(map_db.manifest)
        #: Why the map's calibration does not fit the scores this localizer computes (GeoWarp
        #: fitted again, descriptors adapted, re-ranking on/off), or None; it is still used.
        #: The shells say it (``vpr-ros localize``, the node), as they say a map is uncalibrated.
        self.calibration_problem = None if self.calibration is None else calibration_problem(
            self.calibration.info, fitted_with(map_db, self.rerank))
        # The query's GeoWarp features come from its descriptor pass (no second backbone pass)
        # when the model's plain resize makes exactly the map's thumbnail size.
        resizer = self.model.resizer
        self.local_from_forward = bool(
            self.rerank and self.runtime.forward_local and
            isinstance(resizer, BilinearResizer) and resizer.aspect == 'stretch' and
            tuple(resizer.size) == tuple(self.thumb_size))

    @functools.cached_property
    def route(self) -> RouteGeometry:
        """Route neighbours and local direction of the map's entries (built on first use)."""
        return RouteGeometry(self.map.positions_enu(np.arange(len(self.map))))

    @functools.cached_property
    def sequence(self) -> SequenceCheck:
        """The sequence check's memory of the last stamped frames (``localize(stamp_ns=)``)."""
        return SequenceCheck()

    @property
    def rerank_weight(self) -> float:
        """Weight of the GeoWarp score in the order: the config's, else the map's validated one.

        An uncalibrated map keeps the global order: nothing has shown that GeoWarp's order
        is better on it, and on real images of another kind it can be worse (a held-out
        indoor set: right place 0.37 re-ranked against 0.40 global). A calibration that
        stored no weight (older ones, or ``fit_rerank_weight`` off) was fitted on GeoWarp's
        order, so that order stays with it.
        """
        if self.config.rerank_weight >= 0:
            return float(self.config.rerank_weight)
        weight = stored_rerank_weight(self.map.manifest)
        if weight is not None:
            return weight
        return 0.0 if self.calibration is None else 1.0

    @property
    def geowarp_mode(self) -> str:
        """What GeoWarp warps: the config's mode, else the one calibrate fitted the map with.

        A calibration (its fusion weight and sigma) holds for the scores of the mode it saw,
        so ``auto`` follows the map; features, the fast path, when the map has no choice.
        """
        if self.config.geowarp.mode != 'auto':
            return self.config.geowarp.mode
        mode = stored_geowarp_mode(self.map.manifest)
        return mode if mode in ('image', 'features') else 'features'

    @property
    def subspacing(self) -> str:
        """The sub-spacing mode in use: the config's, else the one calibrate validated (or off)."""
        if self.config.subspacing != 'auto':
            return self.config.subspacing
        mode = stored_subspacing(self.map.manifest)
        return mode if mode in SUBSPACING[1:] else 'off'

    def _num_scored(self, weight: float) -> int:
        """Candidates GeoWarp scores: |P|, or only the top-1 when its score is all that counts.

        At fusion ``weight`` 0 the order is the global one, and with the top-1 estimator the
        estimate reads only the top-1's GeoWarp score (the confidence's ``score``; its
        ``rerank_gain`` is 0 either way): scoring the others would change nothing, at |P|
        times the cost. This is the weight calibrate stores where re-ranking does not help.
        """
        if weight == 0.0 and self.config.estimator == 'top1':
            return 1
        return self.config.geowarp.num_reranked

    def reorder(self, estimate: Estimate) -> Estimate:
        """Recompute order, position and confidence of an estimate with the current settings.

        Uses the candidates' stored global and GeoWarp scores (no forward, no re-ranking):
        ``vpr-ros calibrate`` tries fusion weights this way.
        """
        if not estimate.candidates:
            return estimate
        cands = sorted(estimate.candidates, key=lambda c: -c.score)   # retrieval order
        idx = np.array([c.index for c in cands])
        glob = np.array([c.score for c in cands], np.float64)
        rerank = np.array([c.rerank_score for c in cands], np.float64)
        order = (fused_order(glob, rerank, self.rerank_weight) if np.isfinite(rerank).any()
                 else np.arange(len(idx)))
        return self._estimate(idx, glob, rerank, order, dict(estimate.timings),
                              estimate.route_scores)

    @classmethod
    def open(cls, map_path: str | Path,  # noqa: A003 - mirrors MapDB.open
             config: LocalizerConfig | None = None, *,
             device: str = 'auto', fast: bool = False) -> 'Localizer':
        """Open a map and its stored model; ``fast`` skips the sha256 checks (huge maps)."""
        return cls(MapDB.open(map_path, fast=fast), config=config, device=device)

    def _dense_size(self) -> tuple[int, int]:
        """Size of the GeoWarp dense maps of a thumbnail (the stored features', else one pass)."""
        if self.stored_features is not None:
            return tuple(int(v) for v in self.stored_features.shape[-2:])
        with torch.inference_mode():
            probe = torch.zeros(1, 3, *self.thumb_size, device=self.device)
            return tuple(int(v) for v in self.model.local_features(probe).shape[-2:])

    def _map_geowarp(self) -> GeoWarp:
        path = self.map.geowarp_path
        if path is None:
            return GeoWarp(self.config.geowarp)
        geowarp, _ = load_geowarp(path, backbone=self.model.config.backbone,
                                  config=self.config.geowarp)
        return geowarp

    def set_config(self, config: LocalizerConfig) -> None:
        """Apply new settings; only ``runtime`` fields may differ (thresholds, estimator)."""
        fixed = [f for f in config.field_specs() if not f.runtime and
                 getattr(config, f.name, None) != getattr(self.config, f.name, None)]
        if fixed:
            names = ', '.join(f.name for f in fixed)
            raise VprError(f'cannot change {names} while running; restart with the new value')
        self.config = config

    # -- one frame -----------------------------------------------------------------------

    def localize(self, image: Any, *, exclude: Sequence[int] = (),
                 stamp_ns: int | None = None) -> Estimate:
        """Localize one image.

        ``image`` is a path, an ``(H, W, 3)`` uint8 RGB array or a ``(3, H, W)`` float tensor
        in [0, 1]; ``exclude`` leaves map entries out (calibration with the map's own images).
        ``stamp_ns`` (the image's stamp) puts the frame through the sequence check, whose
        memory (:attr:`sequence`) spans the calls; unstamped frames are not checked.
        """
        estimate = self.localize_batch([image], exclude=[exclude])[0]
        if stamp_ns is not None:
            estimate = self.sequence_step(estimate, stamp_ns)
        return estimate

    def localize_batch(self, images: Sequence[Any], *,
                       exclude: Sequence[Sequence[int]] | None = None,
                       batch_size: int = 0,
                       stamps_ns: Sequence[int] | None = None) -> list[Estimate]:
        """Localize many images (offline use): descriptors are computed in batches.

        ``batch_size`` 0: the fastest for the device (:func:`vpr_ros.device.forward_batch`).
        ``stamps_ns`` (one per image, in drive order) run the sequence check as ``localize``.
        """
        batch_size = forward_batch(self.device, batch_size, self.model)
        images = list(images)
        if exclude is not None and len(exclude) != len(images):
            raise DataError(f'exclude: {len(exclude)} lists for {len(images)} images')
        if stamps_ns is not None and len(stamps_ns) != len(images):
            raise DataError(f'stamps_ns: {len(stamps_ns)} stamps for {len(images)} images')
        out: list[Estimate] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            excl = exclude[start:start + batch_size] if exclude is not None else [()] * len(chunk)
            out.extend(self._localize_chunk(chunk, excl))
        if stamps_ns is not None:
            out = [self.sequence_step(e, t) for e, t in zip(out, stamps_ns)]
        return out

    def sequence_step(self, estimate: Estimate, stamp_ns: int) -> Estimate:
        """Put one stamped estimate through the sequence check (``sequence_check`` config).

        An outlier becomes NO_FIX (``sequence_action: no_fix``) or keeps its place with the
        covariance scaled so its larger sigma reaches the jump (``inflate``; still NO_FIX
        above ``max_sigma_m``). The frame's candidates are remembered either way. A fix that
        passes goes through the motion check (``motion_gate``) and, if still a fix, joins the
        track the next ones are checked against.
        """
        cfg = self.config
        if not cfg.sequence_check or not estimate.candidates:
            return estimate
        seq = self.sequence
        seq.frames, seq.support = cfg.sequence_frames, cfg.sequence_support
        seq.max_speed_mps, seq.margin_m = cfg.max_speed_mps, cfg.sequence_margin_m
        seq.window_s = cfg.sequence_window_s
        seq.confirm_first = cfg.sequence_confirm_first
        seq.track_frames = cfg.motion_frames
        top = [c.index for c in estimate.candidates[:cfg.sequence_candidates]]
        verdict = seq.step(stamp_ns, np.asarray(estimate.enu),
                           self.map.positions_enu(np.array(top)))
        if not estimate.ok:
            return estimate
        if verdict.supported:
            estimate = self._motion_check(estimate, stamp_ns)
            if estimate.ok:
                seq.remember_fix(stamp_ns, np.asarray(estimate.enu))
            return estimate
        why = ('sequence: first frame, nothing remembered to check it against (a next frame '
               'that agrees gets the fix)' if verdict.first else
               f'sequence: {verdict.support} of {verdict.required} recent frames agree, '
               f'{verdict.jump_m:.0f} m from their candidates')
        if cfg.sequence_action == 'no_fix':
            return dataclasses.replace(estimate, status=NO_FIX, reason=why)
        scale = max(1.0, verdict.jump_m / max(estimate.sigma_m, 1e-9))
        cov = np.array(estimate.cov_enu, np.float64)
        cov[:2, :2] *= scale ** 2
        return self._widened(estimate, cov, estimate.sigma_m * scale, why)

    def _widened(self, estimate: Estimate, cov: np.ndarray, sigma: float,
                 why: str) -> Estimate:
        """Return the estimate with a wider covariance; NO_FIX when sigma passes max_sigma_m."""
        status = NO_FIX if sigma > self.config.max_sigma_m else FIX
        return dataclasses.replace(estimate, cov_enu=cov, sigma_m=sigma, status=status,
                                   reason=why)

    def _motion_check(self, estimate: Estimate, stamp_ns: int) -> Estimate:
        """Widen the covariance of a fix that is off the track of the last fixes.

        ``Sigma + r r^T`` with ``r`` the offset from the constant-velocity prediction: the
        direction of the offset gets its length added, the other is kept, so the fix stays
        honest about a confusion with a neighbouring place. Above ``max_sigma_m``: NO_FIX.
        """
        cfg = self.config
        cov = np.array(estimate.cov_enu, np.float64)
        offset = self.sequence.motion_offset(stamp_ns, np.asarray(estimate.enu), cov[:2, :2],
                                             cfg.motion_gate)
        if offset is None:
            return estimate
        cov[:2, :2] += np.outer(offset, offset)
        why = (f'motion: {np.linalg.norm(offset):.1f} m off the track of the last fixes, '
               f'covariance widened')
        return self._widened(estimate, cov, _horizontal_sigma(cov[:2, :2]), why)

    def sequence_filter(self, estimates: Sequence[Estimate],
                        stamps_ns: Sequence[int]) -> list[Estimate]:
        """Run the sequence check over a whole drive with a fresh memory (offline, benches)."""
        saved = self.__dict__.pop('sequence', None)
        try:
            return [self.sequence_step(e, t) for e, t in zip(estimates, stamps_ns)]
        finally:
            self.__dict__.pop('sequence', None)
            if saved is not None:
                self.__dict__['sequence'] = saved

    def _prepare(self, image: Any, i: int) -> tuple[torch.Tensor, np.ndarray | None]:
        if isinstance(image, (str, Path)):
            image = load_image(image)
        if isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise DataError(f'image {i}: expected a (3, H, W) tensor, got '
                                f'{tuple(image.shape)}')
            array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
            array = array.astype(np.uint8)
            tensor = image.float()
        else:
            array = check_rgb(image, where=f'image {i}')
            tensor = to_tensor(array)
        small = None
        if self.rerank:
            h, w = self.thumb_size
            small = resize_to(array, (h, w))
        return tensor, small

    def prepare(self, image: Any) -> tuple[torch.Tensor, np.ndarray | None, float]:
        """Decode and shrink one image for :meth:`localize_prepared` (a pipeline's first stage).

        Returns ``(tensor, thumbnail-size array or None, milliseconds)``; DataError on bad input.
        """
        t0 = time.perf_counter()
        tensor, small = self._prepare(image, 0)
        return tensor, small, (time.perf_counter() - t0) * 1e3

    def localize_prepared(self, prepared: tuple[torch.Tensor, np.ndarray | None, float], *,
                          stamp_ns: int | None = None) -> Estimate:
        """Localize an image made ready by :meth:`prepare` (possibly on another thread).

        ``stamp_ns`` puts the frame through the sequence check, as :meth:`localize`.
        """
        tensor, small, decode_ms = prepared
        estimate = self._localize_prepared([(tensor, small)], [()], decode_ms / 1e3)[0]
        if stamp_ns is not None:
            estimate = self.sequence_step(estimate, stamp_ns)
        return estimate

    def _localize_chunk(self, images: Sequence[Any], exclude: Sequence[Sequence[int]],
                        ) -> list[Estimate]:
        return self.localize_described(self._describe_chunk(images), exclude=exclude)

    def _describe_chunk(self, images: Sequence[Any], first: int = 0) -> list[DescribedFrame]:
        """Decode and describe one forward batch; ``first``: the index of its first image."""
        t0 = time.perf_counter()
        prepared = [self._prepare(image, first + i) for i, image in enumerate(images)]
        return self._describe_prepared(prepared, time.perf_counter() - t0)

    def describe_batch(self, images: Sequence[Any], *,
                       batch_size: int = 0) -> list[DescribedFrame]:
        """Decode and describe images for :meth:`localize_described` (offline use).

        The forward does not depend on the re-rank settings, so frames described once can be
        localised under several of them: ``calibrate`` compares the GeoWarp modes this way.
        """
        batch_size = forward_batch(self.device, batch_size, self.model)
        images = list(images)
        out: list[DescribedFrame] = []
        for start in range(0, len(images), batch_size):
            out.extend(self._describe_chunk(images[start:start + batch_size], start))
        return out

    def localize_described(self, described: Sequence[DescribedFrame], *,
                           exclude: Sequence[Sequence[int]] | None = None) -> list[Estimate]:
        """Search, re-rank and estimate frames :meth:`describe_batch` made, as configured now."""
        if exclude is not None and len(exclude) != len(described):
            raise DataError(f'exclude: {len(exclude)} lists for {len(described)} frames')
        exclude = exclude if exclude is not None else [()] * len(described)
        return [self._finish(d.descriptor, d.small, e, dict(d.timings), d.local)
                for d, e in zip(described, exclude)]

    def _localize_prepared(self, prepared: Sequence[tuple[torch.Tensor, np.ndarray | None]],
                           exclude: Sequence[Sequence[int]], decode_s: float,
                           ) -> list[Estimate]:
        return self.localize_described(self._describe_prepared(prepared, decode_s),
                                       exclude=exclude)

    def _describe_prepared(self, prepared: Sequence[tuple[torch.Tensor, np.ndarray | None]],
                           decode_s: float) -> list[DescribedFrame]:
        with torch.inference_mode():
            by_size: dict[tuple[int, ...], list[int]] = {}
            for i, (tensor, _) in enumerate(prepared):
                by_size.setdefault(tuple(tensor.shape), []).append(i)
            descriptors = np.empty((len(prepared), self.model.descriptor_dim), np.float32)
            local: list[torch.Tensor | None] = [None] * len(prepared)
            resize_s = forward_s = 0.0
            for indices in by_size.values():
                batch = torch.stack([prepared[i][0] for i in indices]).to(self.device)
                if self.local_from_forward:
                    descriptors[indices], maps, r_s, f_s = \
                        self.runtime.describe_with_local(batch)
                    for i, m in zip(indices, maps):
                        local[i] = m.unsqueeze(0)
                else:
                    descriptors[indices], r_s, f_s = self.runtime.describe(batch)
                resize_s += r_s
                forward_s += f_s
        n = len(prepared)
        timings = {'decode': decode_s * 1e3 / n, 'resize': resize_s * 1e3 / n,
                   'forward': forward_s * 1e3 / n}
        return [DescribedFrame(descriptors[i], prepared[i][1], local[i], timings)
                for i in range(n)]

    def _finish(self, descriptor: np.ndarray, small: np.ndarray | None,
                exclude: Sequence[int], timings: dict[str, float],
                local: torch.Tensor | None = None) -> Estimate:
        cfg = self.config
        t0 = time.perf_counter()
        excluded = {int(e) for e in exclude}
        k = min(len(self.map), cfg.top_k + len(excluded))
        indices, scores = self.map.search(descriptor[None], k)
        keep = [(int(j), float(s)) for j, s in zip(indices[0], scores[0])
                if j >= 0 and int(j) not in excluded][:cfg.top_k]
        t1 = time.perf_counter()
        timings['search'] = (t1 - t0) * 1e3
        if not keep:
            return self._no_fix('the index returned no candidates', timings)
        idx = np.array([j for j, _ in keep])
        glob = np.array([s for _, s in keep])
        rerank = np.full(len(idx), np.nan)
        order = np.arange(len(idx))
        # The query's GeoWarp features, once per frame (from the forward when it made them).
        query: dict[str, torch.Tensor] = {} if local is None else {'dense': local}
        if self.rerank and small is not None:
            # One read per frame: the count scored and the order agree even when the
            # node's localizer.rerank_weight parameter changes meanwhile.
            weight = self.rerank_weight
            p = min(self._num_scored(weight), len(idx))
            rerank[:p] = self._rerank_scores(small, idx[:p], query) / 225.0
            order = fused_order(glob, rerank, weight)
        route_scores = {}
        if self.rerank and small is not None and self.subspacing == 'geowarp' and \
                cfg.estimator == 'top1':
            # Sub-spacing needs GeoWarp scores of the top-1's route neighbours.
            top = int(idx[order[0]])
            done = {int(j) for j in idx[np.isfinite(rerank)]}
            need = [int(j) for j in (self.route.prev[top], self.route.next[top])
                    if j >= 0 and int(j) not in done and int(j) not in excluded]
            if need:
                route_scores = dict(zip(need, map(float, self._rerank_scores(
                    small, np.array(need), query) / 225.0)))
        t2 = time.perf_counter()
        timings['rerank'] = (t2 - t1) * 1e3
        estimate = self._estimate(idx, glob, rerank, order, timings, route_scores)
        timings['estimate'] = (time.perf_counter() - t2) * 1e3
        return estimate

    def _rerank_scores(self, small: np.ndarray, idx: np.ndarray,
                       memo: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        """Return the GeoWarp scores of candidates ``idx``.

        ``memo`` keeps the query's features between the calls of one frame (the re-ranked
        candidates, then the route neighbours).
        """
        memo = {} if memo is None else memo
        with torch.inference_mode():
            if 'image' not in memo:
                memo['image'] = to_tensor(small).unsqueeze(0).to(self.device)
            if 'dense' not in memo:
                memo['dense'] = self.runtime.local_features(memo['image'])
            query, query_dense = memo['image'], memo['dense']
            cand_dense = self._candidate_features(idx)
            if self.geowarp_mode == 'image':
                thumbs = torch.stack([to_tensor(t) for t in self.map.thumbnails(idx)])
                scores = self.geowarp.rerank_scores(
                    query_dense, cand_dense, query_image=query,
                    candidate_images=thumbs.to(self.device),
                    dense_fn=self.runtime.local_features, mode='image')
            else:
                scores = self.geowarp.rerank_scores(query_dense, cand_dense, mode='features')
        return scores.float().cpu().numpy().astype(np.float64)

    def _candidate_features(self, idx: np.ndarray) -> torch.Tensor:
        if self.stored_features is not None:
            rows = np.asarray(self.stored_features[np.asarray(idx, np.int64)], np.float32)
            return torch.from_numpy(rows).to(self.device)
        found: dict[int, torch.Tensor] = {}
        for j in map(int, idx):
            if j in self._cache:
                found[j] = self._cache[j]
                self._cache.move_to_end(j)
        missing = [int(j) for j in idx if int(j) not in found]
        if missing:
            thumbs = torch.stack([to_tensor(t) for t in self.map.thumbnails(missing)])
            dense = self.runtime.local_features(thumbs.to(self.device))
            for j, d in zip(missing, dense):
                found[j] = d
                self._cache.put(j, d)
        return torch.stack([found[int(j)] for j in idx])

    def _estimate(self, idx: np.ndarray, glob: np.ndarray, rerank: np.ndarray,
                  order: np.ndarray, timings: dict[str, float],
                  route_scores: dict[int, float] | None = None) -> Estimate:
        """Position, altitude, confidence and covariance of candidates put in ``order``."""
        cfg = self.config
        idx, glob, rerank = idx[order], glob[order], rerank[order]
        pos = self.map.positions(idx)
        enu = self.map.positions_enu(idx)
        dist = np.linalg.norm(enu - enu[0], axis=1)
        route_scores = dict(route_scores or {})
        track = self.route.direction[int(idx[0])]
        xy, weights, near = self._position(idx, enu, dist, glob, rerank, route_scores, track)
        alt, alt_known = _altitude(pos, weights, near, self.map.origin[2])
        features = confidence_features(glob, rerank, order, dist, cfg.margin_radius_m)
        cov, sigma = self._covariance(features, track, alt_known)
        status, reason = FIX, ''
        if not math.isfinite(sigma) or sigma > cfg.max_sigma_m:
            status = NO_FIX
            reason = f'sigma {sigma:.1f} m > max_sigma_m {cfg.max_sigma_m:g} m'
        # Up: the height-0 surface the entries' east/north are measured on (positions_enu).
        lat, lon, _ = enu_to_wgs84(xy[0], xy[1], -self.map.origin[2], self.map.origin)
        candidates = tuple(
            Candidate(int(j), self.names[int(j)], float(p[0]), float(p[1]), float(p[2]),
                      float(g), float(r))
            for j, p, g, r in zip(idx, pos, glob, rerank))
        top_score = features['score']
        return Estimate(float(lat), float(lon), alt, cov, status, top_score, sigma,
                        candidates, features, timings, reason,
                        (float(track[0]), float(track[1])), route_scores,
                        (float(xy[0]), float(xy[1])))

    def _position(self, idx: np.ndarray, enu: np.ndarray, dist: np.ndarray, glob: np.ndarray,
                  rerank: np.ndarray, route_scores: dict[int, float], track: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """East/north of the estimate, the candidates' weights in it, and the near mask.

        The top-1 (moved between its route neighbours when sub-spacing is on), or the
        softmax-weighted mean of the candidates within ``cluster_radius_m`` of it.
        """
        cfg = self.config
        reranked = np.isfinite(rerank)
        near = dist <= cfg.cluster_radius_m
        if cfg.estimator == 'weighted':
            s = np.where(reranked, rerank, glob)
            if reranked.any():
                near &= reranked       # only compare scores of one kind
            w = np.exp((s - s[near].max()) / cfg.weight_temperature) * near
        else:
            w = (np.arange(len(idx)) == 0).astype(np.float64)
        xy = (enu * w[:, None]).sum(axis=0) / w.sum()
        subspacing = self.subspacing
        if cfg.estimator == 'top1' and subspacing != 'off':
            geowarp = subspacing == 'geowarp' and bool(reranked[0])
            along = subspacing_along(self.route, idx, rerank if geowarp else glob,
                                     route_scores if geowarp else None)
            if along:
                xy = enu[0] + along * track
        return xy, w, near

    def _covariance(self, features: dict[str, float], track: np.ndarray,
                    alt_known: bool) -> tuple[np.ndarray, float]:
        """ENU covariance (3, 3) and horizontal sigma (the larger axis, what max_sigma_m bounds).

        Along/cross-track from the map's calibration, rotated into ENU; the uncalibrated
        sigma when the map has none.
        """
        cfg = self.config
        if self.calibration is not None:
            cov_en = self.calibration.covariance_en(feature_vector(features), track)
        else:
            cov_en = np.eye(2) * cfg.uncalibrated_sigma_m ** 2
        sigma = _horizontal_sigma(cov_en)
        cov = np.zeros((3, 3))
        cov[:2, :2] = cov_en
        cov[2, 2] = (cfg.sigma_up_m if alt_known else cfg.unknown_alt_sigma_m) ** 2
        return cov, sigma

    def _no_fix(self, reason: str, timings: dict[str, float]) -> Estimate:
        lat, lon, alt = self.map.origin
        big = self.config.unknown_alt_sigma_m ** 2
        return Estimate(lat, lon, alt, np.diag([big, big, big]), NO_FIX, float('nan'),
                        float('inf'), (), {}, timings, reason, enu=(0.0, 0.0))


def _horizontal_sigma(cov_en: np.ndarray) -> float:
    """Return the larger axis of a 2x2 covariance's ellipse (what ``max_sigma_m`` bounds)."""
    if not np.isfinite(cov_en).all():
        return math.inf
    return math.sqrt(float(np.linalg.eigvalsh(cov_en)[-1]))


def _altitude(pos: np.ndarray, weights: np.ndarray, near: np.ndarray,
              origin_alt: float) -> tuple[float, bool]:
    """Altitude of an estimate and whether it is known (the map origin's when not).

    The position's weights over the candidates that have an altitude; else the mean of the
    near ones that have one.
    """
    has_alt = np.isfinite(pos[:, 2])
    if (weights * has_alt).sum() > 0:
        alt = float((np.nan_to_num(pos[:, 2]) * weights * has_alt).sum() /
                    (weights * has_alt).sum())
    elif (near & has_alt).any():
        alt = float(pos[near & has_alt, 2].mean())
    else:
        return float(origin_alt), False
    return alt, True


def fused_order(glob: np.ndarray, rerank: np.ndarray, weight: float) -> np.ndarray:
    """Order candidates: re-ranked ones by ``(1 - w) global + w GeoWarp``, the others after.

    ``rerank`` is NaN for candidates that were not re-ranked (they keep the retrieval order
    after the re-ranked ones); ``weight`` 1 is the published GeoWarp order, 0 the global one.
    """
    done = np.isfinite(rerank)
    p = int(done.sum())
    fused = (1.0 - weight) * glob[:p] + weight * rerank[:p]
    return np.concatenate([np.argsort(-fused, kind='stable'), np.arange(p, len(glob))])


def localize(images: Any, map_path: str | Path, *, config: LocalizerConfig | None = None,
             device: str = 'auto') -> Estimate | list[Estimate]:
    """Localize one image (path, array, tensor) or a list of them against a map file."""
    localizer = Localizer.open(map_path, config, device=device)
    if isinstance(images, (str, Path, np.ndarray, torch.Tensor)):
        return localizer.localize(images)
    return localizer.localize_batch(list(images))


def uncalibrated_order(localizer: Localizer) -> str:
    """Return the uncalibrated-map warning's note on the order, when it is the global one."""
    if localizer.rerank and localizer.rerank_weight == 0.0 and localizer.config.rerank_weight < 0:
        return ' and GeoWarp does not reorder the candidates'
    return ''


def calibration_warning(localizer: Localizer, name: str | Path) -> str | None:
    """Return what a user must hear about the map ``name``'s calibration, or None when it fits.

    Every shell that localises (the node, ``localize``, ``eval --map``, ``eval-bag --map``)
    says the same: an uncalibrated map gives a fixed sigma (and keeps the global order), and a
    calibration fitted on other scores no longer describes the errors.
    """
    if localizer.calibration is None:
        return (f'{name} is not calibrated: every fix has the fixed sigma '
                f'{localizer.config.uncalibrated_sigma_m:g} m{uncalibrated_order(localizer)} '
                f'(run vpr-ros calibrate)')
    if localizer.calibration_problem:
        return f'{name}: {localizer.calibration_problem}'
    return None


#: What reports record as ``calibration`` when :func:`calibration_warning` has nothing to say.
CALIBRATION_FITS = 'fits the map'


def calibration_record(localizer: Localizer, name: str | Path) -> str:
    """Return the calibration line of a report: the warning, or :data:`CALIBRATION_FITS`."""
    return calibration_warning(localizer, name) or CALIBRATION_FITS


__all__ = ['CALIBRATION_FITS', 'calibration_record', 'calibration_warning', 'Candidate',
           'Estimate', 'FIX', 'fused_order', 'localize', 'Localizer', 'LocalizerConfig', 'NO_FIX',
           'uncalibrated_order']
