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

"""Descriptors with the structure of a real route, for index benchmarks, tests and tuning.

Isotropic random vectors are a poor stand-in for VPR descriptors (every model here, like the
CNN models of the papers it follows, gives consecutive frames global descriptors that are
nearly equal): a query whose true neighbours are nearly tied makes "recall vs exact" measure
noise. Here a map of ``n`` frames along a route is the sum of

* a direction shared by every descriptor (unrelated places still have cosine ~0.15),
* an appearance type per route segment (segments of ~200 frames; types repeat along the
  route, so distant places can look alike: perceptual aliasing),
* a smooth walk along the route (correlation length ``corr_frames``; neighbours have
  cosine ~0.9),
* a little per-frame noise,

and a query is a map descriptor moved to a chosen cosine similarity with its source frame
(0.7-0.9, what a trained model gives a revisit under other conditions), partly towards other
map descriptors and partly isotropically.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from vpr_ros.vectors import unit_rows


def route_descriptors(n: int, d: int = 256, *, seed: int = 0, corr_frames: float = 8.0,
                      segment_frames: float = 200.0, chunk: int = 512) -> np.ndarray:
    """Return ``(n, d)`` float32 unit descriptors of ``n`` consecutive frames of a route."""
    out = np.empty((n, d), np.float32)
    start = 0
    for block in iter_route_descriptors(n, d, seed=seed, corr_frames=corr_frames,
                                        segment_frames=segment_frames, chunk=chunk):
        out[start:start + len(block)] = block
        start += len(block)
    return out


def iter_route_descriptors(n: int, d: int = 256, *, seed: int = 0, corr_frames: float = 8.0,
                           segment_frames: float = 200.0, chunk: int = 512,
                           ) -> Iterator[np.ndarray]:
    """Yield :func:`route_descriptors` in ``chunk``-row blocks, for maps larger than memory.

    The blocks concatenate to exactly ``route_descriptors(n, d, ...)`` with the same arguments.
    """
    rng = np.random.default_rng(seed)
    shared = unit_rows(rng.standard_normal(d), np.float64)
    types = unit_rows(rng.standard_normal((max(4, n // 2000), d)), np.float64)
    lengths = rng.geometric(1.0 / segment_frames, size=n // max(1, int(segment_frames)) + 8)
    while lengths.sum() < n:
        lengths = np.concatenate([lengths, rng.geometric(1.0 / segment_frames, size=64)])
    segment_type = np.repeat(rng.integers(0, len(types), len(lengths)), lengths)[:n]
    rho = float(np.exp(-1.0 / corr_frames))
    lag = np.subtract.outer(np.arange(chunk), np.arange(chunk))
    gain = np.where(lag >= 0, rho ** np.maximum(lag, 0), 0.0) * np.sqrt(1.0 - rho * rho)
    decay = rho ** np.arange(1, chunk + 1)[:, None]
    walk = unit_rows(rng.standard_normal(d), np.float64)
    for start in range(0, n, chunk):  # AR(1) walk, one block at a time: stationary, unit norm
        m = min(chunk, n - start)
        z = rng.standard_normal((m, d)) / np.sqrt(d)
        steps = gain[:m, :m] @ z + decay[:m] * walk
        walk = steps[-1]
        noise = rng.standard_normal((m, d)) / np.sqrt(d)
        x = 0.5 * shared + 0.6 * types[segment_type[start:start + m]] + steps + 0.3 * noise
        yield unit_rows(x, np.float64).astype(np.float32)


def perturb(x: np.ndarray, cos: np.ndarray | float, rng: np.random.Generator,
            pool: np.ndarray | None = None) -> np.ndarray:
    """Move unit rows ``x`` to exactly cosine ``cos`` with themselves (float32, unit rows).

    The change is half isotropic noise, half the direction of another row of ``pool`` (if
    given): a query under other conditions looks partly like other places of the map.
    """
    x = np.atleast_2d(np.asarray(x, np.float64))
    cos = np.broadcast_to(np.asarray(cos, np.float64), (len(x),))[:, None]
    u = rng.standard_normal(x.shape) / np.sqrt(x.shape[1])
    if pool is not None and len(pool):
        other = np.asarray(pool[np.sort(rng.integers(0, len(pool), len(x)))], np.float64)
        u = unit_rows(u, np.float64) + unit_rows(other - x, np.float64)
    u -= np.sum(u * x, axis=1, keepdims=True) * x
    q = cos * x + np.sqrt(1.0 - cos * cos) * unit_rows(u, np.float64)
    return unit_rows(q, np.float64).astype(np.float32)


def route_queries(db: np.ndarray, count: int, *, seed: int = 1,
                  cos_range: tuple[float, float] = (0.7, 0.9)) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` queries of map ``db``: ``(queries (count, D), source frame (count,))``."""
    rng = np.random.default_rng(seed)
    source = np.sort(rng.choice(len(db), size=min(count, len(db)), replace=False))
    cos = rng.uniform(*cos_range, size=len(source))
    return perturb(np.asarray(db[source]), cos, rng, pool=db), source
