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

"""Synthetic geotagged routes for the demo and the tests.

A corridor-like street: two textured walls (façades made of coloured blocks, windows, signs
and noise, different at every place), a ground and a sky, seen by a forward-looking pinhole
camera that moves along the corridor. Two traversals are rendered:

* the *map* pass: frames every ``spacing_m`` metres, neutral light, camera centred;
* the *query* pass: frames between the map frames, other illumination (gain, gamma, colour
  cast), lateral and heading offsets, sensor noise and blur, so it is harder than the map pass.

The corridor is straight for rendering; geographically the route follows a gentle arc from a
geodetic origin, so plots look like a drive. Everything is deterministic by ``seed``.

Convention:
    - images are ``(H, W, 3)`` uint8 RGB;
    - ``s`` is the distance along the route in metres; positions are WGS84 lat/lon (degrees)
      and altitude (metres), converted from local ENU with pymap3d.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pymap3d

from vpr_ros.config import Config, option
from vpr_ros.errors import ConfigError


@dataclass(frozen=True)
class SynthConfig(Config):
    """Shape of the synthetic route."""

    seed: int = option(0, 'random seed: the same seed gives the same route, bit for bit')
    frames: int = option(200, 'frames per traversal', min=2)
    spacing_m: float = option(2.0, 'distance between consecutive map frames (m)', min=0.1)
    image_size: tuple[int, int] = option((240, 320), 'rendered image size (H, W)')
    origin: tuple[float, float, float] = option(
        (47.3769, 8.5417, 408.0), 'geodetic origin of the route (lat deg, lon deg, alt m)')
    heading_deg: float = option(30.0, 'initial heading of the route (deg from north)')
    turn_deg_per_100m: float = option(20.0, 'gentle curvature of the route (deg per 100 m)')
    corridor_width_m: float = option(8.0, 'distance between the two walls (m)', min=2.0)
    wall_height_m: float = option(6.0, 'height of the walls (m)', min=1.0)
    camera_height_m: float = option(1.6, 'camera height above ground (m)', min=0.1)
    fov_deg: float = option(90.0, 'horizontal field of view (deg)', min=20.0, max=150.0)
    query_lateral_m: float = option(0.6, 'max lateral offset of the query pass (m)', min=0.0)
    query_yaw_deg: float = option(5.0, 'max heading offset of the query pass (deg)', min=0.0)
    query_noise: float = option(8.0, 'std of the query pass pixel noise (0-255)', min=0.0)

    def validate(self) -> None:
        h, w = self.image_size
        if h < 16 or w < 16:
            raise ConfigError(f'SynthConfig.image_size: {self.image_size} is too small')


@dataclass(frozen=True)
class SynthFrame:
    """One rendered frame with its ground-truth pose."""

    name: str
    stamp_ns: int
    s_m: float
    lat: float
    lon: float
    alt: float
    image: np.ndarray


_PX_PER_M = 40  # texture resolution of the walls


def _wall_texture(rng: np.random.Generator, length_m: float, height_m: float) -> np.ndarray:
    """Paint a façade strip: coloured blocks, windows and signs, unique along its length."""
    h, w = int(height_m * _PX_PER_M), int(length_m * _PX_PER_M)
    tex = np.empty((h, w, 3), np.uint8)
    x = 0
    while x < w:  # buildings of 3-9 m, each with its own colour and window grid
        bw = int(rng.uniform(3, 9) * _PX_PER_M)
        tex[:, x:x + bw] = rng.integers(60, 220, 3)
        win = rng.integers(0, 120, 3)
        ww, wh = rng.integers(12, 40), rng.integers(16, 50)
        gx, gy = ww + rng.integers(8, 40), wh + rng.integers(10, 40)
        for yy in range(int(rng.integers(10, 40)), h - wh, gy):
            for xx in range(x + int(rng.integers(5, 30)), min(x + bw, w) - ww, gx):
                tex[yy:yy + wh, xx:xx + ww] = win
        for _ in range(int(rng.integers(1, 4))):  # signs and posters
            sw, sh = rng.integers(20, 90), rng.integers(15, 60)
            sx, sy = x + rng.integers(0, max(1, bw - sw)), rng.integers(0, h - sh)
            tex[sy:sy + sh, sx:sx + sw] = rng.integers(0, 256, 3)
        x += bw
    noise = rng.normal(0, 10, (h // 4 + 1, w // 4 + 1, 3))
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(tex + noise, 0, 255).astype(np.uint8)


class SynthRoute:
    """Renders frames anywhere along the corridor; builds the map and query passes."""

    def __init__(self, config: SynthConfig | None = None) -> None:
        self.config = config or SynthConfig()
        c = self.config
        rng = np.random.default_rng(c.seed)
        self.length_m = (c.frames + 2) * c.spacing_m + 80.0  # room for the view ahead
        self._walls = [_wall_texture(rng, self.length_m, c.wall_height_m) for _ in range(2)]
        self._query_rng_seed = int(rng.integers(0, 2**31))

    def render(self, s_m: float, *, lateral_m: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
        """Render the view at distance ``s_m`` along the corridor (neutral light)."""
        c = self.config
        h, w = c.image_size
        f = (w / 2) / math.tan(math.radians(c.fov_deg) / 2)
        u = np.arange(w) - (w - 1) / 2
        ray = np.arctan2(u, f)  # angle of each column's ray from the optical axis
        theta = math.radians(yaw_deg) - ray  # ray heading in the corridor; left of centre = +y
        v = (h - 1) / 2 - np.arange(h)
        half = c.corridor_width_m / 2
        # Horizontal distance to the wall each column's ray hits (left wall y=+half).
        sin_t = np.sin(theta)
        left = sin_t > 0
        dy = np.where(left, half - lateral_m, -half - lateral_m)
        with np.errstate(divide='ignore'):
            t = np.where(np.abs(sin_t) > 1e-6, dy / sin_t, np.inf)
        t = np.clip(t, 0.05, 200.0)
        wall_x = s_m + t * np.cos(theta)  # along-corridor coordinate of the hit (m)
        depth = t * np.cos(ray)  # distance along the optical axis, for the vertical projection
        z = c.camera_height_m + depth[None, :] * (v[:, None] / f)  # height of the hit (m)
        img = np.empty((h, w, 3), np.float32)
        sky = np.array([150, 190, 235], np.float32)
        ground = np.array([90, 90, 95], np.float32)
        img[:] = sky
        below = z < 0
        img[below] = ground * (0.8 + 0.2 * np.clip(-v[:, None] / (h / 2), 0, 1)
                               ).repeat(w, 1)[below][:, None]
        on_wall = (z >= 0) & (z <= c.wall_height_m) & (t[None, :] < 60.0)
        for side, tex in ((True, self._walls[0]), (False, self._walls[1])):
            cols = on_wall & (left[None, :] == side)
            if not cols.any():
                continue
            rows_i, cols_i = np.nonzero(cols)
            tx = np.clip((wall_x[cols_i] * _PX_PER_M).astype(int), 0, tex.shape[1] - 1)
            tz = np.clip(((c.wall_height_m - z[rows_i, cols_i]) * _PX_PER_M).astype(int), 0,
                         tex.shape[0] - 1)
            shade = np.clip(1.15 - 0.01 * t[cols_i], 0.5, 1.0)[:, None]
            img[rows_i, cols_i] = tex[tz, tx] * shade
        return np.clip(img, 0, 255).astype(np.uint8)

    def position(self, s_m: float) -> tuple[float, float, float]:
        """WGS84 lat, lon, alt of the point ``s_m`` metres along the (gently curved) route."""
        c = self.config
        k = math.radians(c.turn_deg_per_100m) / 100.0  # curvature (1/m)
        h0 = math.radians(c.heading_deg)
        if abs(k) < 1e-12:
            east, north = s_m * math.sin(h0), s_m * math.cos(h0)
        else:  # arc of a circle: heading(s) = h0 + k s
            east = (math.cos(h0) - math.cos(h0 + k * s_m)) / k
            north = (math.sin(h0 + k * s_m) - math.sin(h0)) / k
        lat, lon, alt = pymap3d.enu2geodetic(east, north, 0.0, *c.origin)
        return float(lat), float(lon), float(alt)

    def _frame(self, name: str, index: int, s_m: float, image: np.ndarray,
               t0_ns: int) -> SynthFrame:
        lat, lon, alt = self.position(s_m)
        stamp = t0_ns + int(index * 0.5e9)  # 2 Hz
        return SynthFrame(name, stamp, s_m, lat, lon, alt, image)

    def map_pass(self) -> Iterator[SynthFrame]:
        """Yield the mapping traversal: one frame every ``spacing_m`` metres."""
        c = self.config
        for i in range(c.frames):
            s = (i + 1) * c.spacing_m
            yield self._frame(f'map_{i:05d}.png', i, s, self.render(s), 1_700_000_000 * 10**9)

    def query_pass(self) -> Iterator[SynthFrame]:
        """Yield the query traversal: between map frames, other light, offsets, noise, blur."""
        c = self.config
        rng = np.random.default_rng(self._query_rng_seed)
        gain, gamma = rng.uniform(0.6, 0.8), rng.uniform(1.2, 1.5)
        cast = rng.uniform(0.85, 1.15, 3)
        for i in range(c.frames):
            s = (i + 1) * c.spacing_m + rng.uniform(-0.5, 0.5) * c.spacing_m
            s = max(s, 0.1)
            image = self.render(s, lateral_m=rng.uniform(-1, 1) * c.query_lateral_m,
                                yaw_deg=rng.uniform(-1, 1) * c.query_yaw_deg)
            x = (image.astype(np.float32) / 255.0) ** gamma * gain * cast
            x = cv2.GaussianBlur(x, (0, 0), sigmaX=rng.uniform(0.5, 1.2))
            x = x * 255.0 + rng.normal(0, c.query_noise, x.shape)
            image = np.clip(x, 0, 255).astype(np.uint8)
            yield self._frame(f'query_{i:05d}.png', i, s, image, 1_700_100_000 * 10**9)


def write_csv_source(frames: Iterator[SynthFrame], folder: str | Path) -> Path:
    """Write frames as PNGs plus ``images.csv`` (``image,lat,lon,alt``) for ``build-map``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ['image,lat,lon,alt']
    for frame in frames:
        cv2.imwrite(str(folder / frame.name), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        rows.append(f'{frame.name},{frame.lat:.9f},{frame.lon:.9f},{frame.alt:.3f}')
    csv = folder / 'images.csv'
    tmp = csv.with_suffix('.csv.tmp')
    tmp.write_text('\n'.join(rows) + '\n')
    tmp.replace(csv)
    return csv
