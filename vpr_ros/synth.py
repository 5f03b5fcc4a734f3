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

A corridor-like street: two textured walls, a ground and a sky, seen by a forward-looking
pinhole camera that moves along the corridor. Every building of a wall has its own material
(brick, plaster, panels), window grid, shop front with a lettered sign, door and posters, so
every place looks different; the walls are sampled through a mip-map pyramid, so the view does
not shimmer with sub-pixel moves (aliasing would make a query differ from the map frame of its
own place as much as a real change of place). Two traversals are rendered:

* the *map* pass: frames every ``spacing_m`` metres, neutral light, camera centred, slight
  sensor noise;
* the *query* pass: frames between the map frames, other illumination (gain, gamma, colour
  cast), lateral and heading offsets (the frame's position includes the lateral one), more
  sensor noise and blur, so it is harder than the map pass; ``query_pass(drive=k)`` renders
  further independent drives (a second drive to calibrate on). A descriptor net pretrained
  on ImageNet only (the default model) is most sensitive to the noise and blur; the defaults
  keep the query pass clearly harder while plain retrieval still localises it
  (bench/synth_retrieval.py, bench/results/synth_retrieval.md).

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
from vpr_ros.files import write_text


@dataclass(frozen=True)
class SynthConfig(Config):
    """Shape of the synthetic route."""

    seed: int = option(0, 'random seed: the same seed gives the same route, bit for bit')
    frames: int = option(200, 'frames per traversal', min=2)
    spacing_m: float = option(2.0, 'distance between consecutive map frames (m)', min=0.1)
    image_size: tuple[int, int] = option(
        (240, 320), 'rendered image size (H, W); the default model works at 240x320')
    origin: tuple[float, float, float] = option(
        (47.3769, 8.5417, 408.0), 'geodetic origin of the route (lat deg, lon deg, alt m)')
    heading_deg: float = option(30.0, 'initial heading of the route (deg from north)')
    turn_deg_per_100m: float = option(20.0, 'gentle curvature of the route (deg per 100 m)')
    corridor_width_m: float = option(8.0, 'distance between the two walls (m)', min=2.0)
    wall_height_m: float = option(
        12.0, 'height of the tallest buildings (m); each is 40-100 % of it', min=1.0)
    fog_m: float = option(
        40.0, 'distance over which the walls fade into haze (m); 0 for clear air', min=0.0)
    camera_height_m: float = option(1.6, 'camera height above ground (m)', min=0.1)
    fov_deg: float = option(90.0, 'horizontal field of view (deg)', min=20.0, max=150.0)
    map_noise: float = option(1.5, 'std of the map pass pixel noise (0-255)', min=0.0)
    query_lateral_m: float = option(0.6, 'max lateral offset of the query pass (m)', min=0.0)
    query_yaw_deg: float = option(5.0, 'max heading offset of the query pass (deg)', min=0.0)
    query_noise: float = option(4.0, 'std of the query pass pixel noise (0-255)', min=0.0)
    query_gain: tuple[float, float] = option(
        (0.85, 0.95), 'range of the query pass exposure gain (drawn once per pass)', min=0.0)
    query_gamma: tuple[float, float] = option(
        (1.05, 1.15), 'range of the query pass gamma (drawn once per pass)', min=0.1)
    query_cast: float = option(
        0.06, 'max colour cast of the query pass (per-channel gain 1 +- this)', min=0.0, max=0.5)
    query_blur: tuple[float, float] = option(
        (0.3, 0.7), 'range of the query pass Gaussian blur sigma (px, drawn per frame)', min=0.0)

    def validate(self) -> None:
        h, w = self.image_size
        if h < 16 or w < 16:
            raise ConfigError(f'SynthConfig.image_size: {self.image_size} is too small')
        for name in ('query_gain', 'query_gamma', 'query_blur'):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f'SynthConfig.{name}: {(lo, hi)} is not a (low, high) range')


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
_MIP_LEVELS = 5  # texture pyramid levels: 40, 20, 10, 5, 2.5 px/m
_LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX,
          cv2.FONT_HERSHEY_COMPLEX)


def _colour(rng: np.random.Generator, lo: int = 30, hi: int = 230) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _material(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """Brick, plaster or panel surface of one building, ``(h, w, 3)`` int16."""
    yy, xx = np.mgrid[0:h, 0:w]
    kind = int(rng.integers(0, 3))
    out = np.empty((h, w, 3), np.int16)
    out[:] = base
    if kind == 0:  # bricks: staggered courses, each brick a little lighter or darker
        bh, bw = int(rng.integers(7, 11)), int(rng.integers(14, 22))
        row = yy // bh
        col = (xx + (row % 2) * (bw // 2)) // bw
        jitter = rng.normal(0, 14, (row.max() + 1, col.max() + 1))
        out += jitter[row, col].astype(np.int16)[..., None]
        mortar = (yy % bh < 2) | ((xx + (row % 2) * (bw // 2)) % bw < 2)
        out[mortar] = np.array(base, np.int16) // 2 + 70
    elif kind == 1:  # panels: large plates with dark seams
        ph, pw = int(rng.integers(30, 60)), int(rng.integers(30, 80))
        jitter = rng.normal(0, 10, (h // ph + 1, w // pw + 1))
        out += jitter[yy // ph, xx // pw].astype(np.int16)[..., None]
        out[(yy % ph < 2) | (xx % pw < 2)] -= 60
    # kind 2: plaster, only the grain and stains added for every wall
    return out


def _building(rng: np.random.Generator, tex: np.ndarray, x0: int, x1: int) -> None:
    """Paint one building of ``tex[:, x0:x1]``: material, windows, shop front, sign, posters."""
    h = tex.shape[0]
    w = x1 - x0
    base = np.array(_colour(rng, 50, 220), np.int16)
    tex[:, x0:x1] = np.clip(_material(rng, h, w, base), 0, 255)
    view = tex[:, x0:x1]  # cv2 draws into this view of the wall
    shop_top = h - int(rng.uniform(2.6, 3.4) * _PX_PER_M)  # ground floor: rows shop_top..h
    # Upper floors: a window grid, every window with its own glass shade or curtain.
    ww, wh = int(rng.integers(14, 36)), int(rng.integers(22, 46))
    gx, gy = ww + int(rng.integers(10, 40)), wh + int(rng.integers(14, 34))
    frame = _colour(rng, 0, 256)
    for y in range(int(rng.integers(6, 24)), shop_top - wh - 8, gy):
        for x in range(int(rng.integers(4, 24)), w - ww - 4, gx):
            glass = _colour(rng, 10, 90) if rng.random() < 0.75 else _colour(rng, 120, 250)
            cv2.rectangle(view, (x - 2, y - 2), (x + ww + 1, y + wh + 1), frame, -1)
            cv2.rectangle(view, (x, y), (x + ww - 1, y + wh - 1), glass, -1)
            if rng.random() < 0.5:  # mullion
                cv2.line(view, (x + ww // 2, y), (x + ww // 2, y + wh - 1), frame, 2)
    # Ground floor: shop front colour, shop windows, a door.
    cv2.rectangle(view, (0, shop_top), (w - 1, h - 1), _colour(rng), -1)
    x = int(rng.integers(4, 30))
    while x < w - 30:
        if rng.random() < 0.35:  # door
            dw = int(rng.integers(36, 56))
            cv2.rectangle(view, (x, h - 88), (x + dw, h - 1), _colour(rng, 0, 160), -1)
            cv2.circle(view, (x + dw - 8, h - 44), 3, _colour(rng, 180, 256), -1)
        else:  # shop window with a reflection gradient
            sw = int(rng.integers(40, 130))
            top, bot = shop_top + int(rng.integers(22, 36)), h - int(rng.integers(12, 30))
            glass = np.array(_colour(rng, 10, 110), np.float32)
            ramp = np.linspace(1.3, 0.7, max(1, min(sw, w - x)))[None, :, None]
            view[top:bot, x:x + sw] = np.clip(glass * ramp, 0, 255).astype(np.uint8)
            dw = sw
        x += dw + int(rng.integers(10, 40))
    # Shop sign: a coloured band with random lettering (a different word at every shop).
    sign_h = int(rng.integers(16, 26))
    sx0, sx1 = int(rng.integers(0, max(1, w // 4))), w - int(rng.integers(0, max(1, w // 4)))
    cv2.rectangle(view, (sx0, shop_top), (sx1, shop_top + sign_h), _colour(rng), -1)
    word = ''.join(rng.choice(list(_LETTERS), int(rng.integers(4, 12))))
    font = _FONTS[int(rng.integers(0, len(_FONTS)))]
    cv2.putText(view, word, (sx0 + 4, shop_top + sign_h - 4), font, sign_h / 30,
                _colour(rng, 0, 256), int(rng.integers(1, 3)), cv2.LINE_AA)
    # Landmarks at any height: posters, colour blocks, a round sign or a drawn scribble.
    for _ in range(int(rng.integers(1, 4))):
        pw, ph = int(rng.integers(16, 70)), int(rng.integers(16, 70))
        px, py = int(rng.integers(0, max(1, w - pw))), int(rng.integers(0, h - ph))
        kind = int(rng.integers(0, 4))
        if kind == 0:  # striped poster
            cv2.rectangle(view, (px, py), (px + pw, py + ph), _colour(rng), -1)
            step = int(rng.integers(4, 12))
            for k in range(0, ph, 2 * step):
                cv2.rectangle(view, (px, py + k), (px + pw, py + k + step - 1), _colour(rng), -1)
        elif kind == 1:  # colour block
            cv2.rectangle(view, (px, py), (px + pw, py + ph), _colour(rng, 0, 256), -1)
        elif kind == 2:  # round sign with a letter
            r = min(pw, ph) // 2
            cv2.circle(view, (px + r, py + r), r, _colour(rng), -1, cv2.LINE_AA)
            cv2.circle(view, (px + r, py + r), r, _colour(rng), 2, cv2.LINE_AA)
            cv2.putText(view, str(rng.choice(list(_LETTERS))), (px + r // 2, py + 3 * r // 2),
                        font, r / 22, _colour(rng), 2, cv2.LINE_AA)
        else:  # scribble (graffiti)
            pts = np.stack([rng.integers(px, px + pw, 6), rng.integers(py, py + ph, 6)], 1)
            cv2.polylines(view, [pts.astype(np.int32)], False, _colour(rng, 0, 256),
                          int(rng.integers(2, 5)), cv2.LINE_AA)
    cv2.line(view, (0, 0), (0, h - 1), (40, 40, 40), 2)  # joint between buildings


def _wall_texture(rng: np.random.Generator, length_m: float,
                  height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint a façade strip of buildings 4-10 m wide, each one different; grain and stains.

    Returns the texture (its top row at ``height_m``) and the roof height (m) of every texture
    column: the skyline differs along the street, a cue that survives changes of light.
    """
    h, w = int(height_m * _PX_PER_M), int(length_m * _PX_PER_M)
    tex = np.zeros((h, w, 3), np.uint8)
    roof = np.empty(w, np.float32)
    x = 0
    while x < w:
        x1 = min(w, x + int(rng.uniform(4, 10) * _PX_PER_M))
        top = int(h * (1 - rng.uniform(0.4, 1.0)))
        _building(rng, tex[top:], x, x1)
        cv2.rectangle(tex, (x, top), (x1 - 1, top + 5), _colour(rng, 20, 200), -1)  # cornice
        roof[x:x1] = (h - top) / _PX_PER_M
        x = x1
    stains = cv2.resize(rng.normal(0, 10, (h // 8 + 1, w // 8 + 1)).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_LINEAR)
    grain = rng.normal(0, 5, (h, w)).astype(np.float32)
    return np.clip(tex + (stains + grain)[..., None], 0, 255).astype(np.uint8), roof


def _pyramid(tex: np.ndarray) -> list[np.ndarray]:
    """Mip-map levels of a wall texture: level ``k`` has ``_PX_PER_M / 2**k`` px/m."""
    levels = [tex]
    for _ in range(_MIP_LEVELS - 1):
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


class SynthRoute:
    """Renders frames anywhere along the corridor; builds the map and query passes."""

    def __init__(self, config: SynthConfig | None = None) -> None:
        self.config = config or SynthConfig()
        c = self.config
        rng = np.random.default_rng(c.seed)
        self.length_m = (c.frames + 2) * c.spacing_m + 80.0  # room for the view ahead
        self._walls, self._roofs = [], []
        for _ in range(2):
            tex, roof = _wall_texture(rng, self.length_m, c.wall_height_m)
            self._walls.append(_pyramid(tex))
            self._roofs.append(roof)
        self._query_rng_seed = int(rng.integers(0, 2**31))
        self._map_rng_seed = int(rng.integers(0, 2**31))
        h, w = c.image_size
        self._f = (w / 2) / math.tan(math.radians(c.fov_deg) / 2)
        self._ray = np.arctan2(np.arange(w) - (w - 1) / 2, self._f)  # each column's ray angle
        self._v = (h - 1) / 2 - np.arange(h)  # each row's offset above the image centre

    def render(self, s_m: float, *, lateral_m: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
        """Render the view at distance ``s_m`` along the corridor (neutral light, no noise)."""
        c = self.config
        h, w = c.image_size
        f, ray, v = self._f, self._ray, self._v
        theta = math.radians(yaw_deg) - ray  # ray heading in the corridor; left of centre = +y
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
        # Texels per pixel across (along the wall) and down each column: the mip level.
        across = np.abs(np.gradient(wall_x)) * _PX_PER_M
        down = depth / f * _PX_PER_M
        level = np.clip(np.round(np.log2(np.maximum(np.maximum(across, down), 1.0))), 0,
                        _MIP_LEVELS - 1).astype(int)
        img = np.empty((h, w, 3), np.float32)
        sky = np.array([150, 190, 235], np.float32)
        ground = np.array([90, 90, 95], np.float32)
        img[:] = sky
        below = z < 0
        img[below] = ground * (0.8 + 0.2 * np.clip(-v[:, None] / (h / 2), 0, 1)
                               ).repeat(w, 1)[below][:, None]
        tx0 = np.clip((wall_x * _PX_PER_M).astype(int), 0, len(self._roofs[0]) - 1)
        roof = np.where(left, self._roofs[0][tx0], self._roofs[1][tx0])
        on_wall = (z >= 0) & (z <= roof[None, :]) & (t[None, :] < 60.0)
        shade = np.clip(1.15 - 0.01 * t, 0.5, 1.0)
        haze = np.clip((t - 8.0) / c.fog_m, 0.0, 0.85) if c.fog_m > 0 else np.zeros_like(t)
        haze_rgb = np.array([175, 190, 205], np.float32)
        for side, pyramid in ((True, self._walls[0]), (False, self._walls[1])):
            cols = on_wall & (left[None, :] == side)
            if not cols.any():
                continue
            rows_i, cols_i = np.nonzero(cols)
            lv = level[cols_i]
            pixels = np.empty((len(rows_i), 3), np.float32)
            for k in np.unique(lv):
                sel = lv == k
                tex = pyramid[k]
                scale = _PX_PER_M / 2**k
                r, q = rows_i[sel], cols_i[sel]
                tx = np.clip((wall_x[q] * scale).astype(int), 0, tex.shape[1] - 1)
                tz = np.clip(((c.wall_height_m - z[r, q]) * scale).astype(int), 0,
                             tex.shape[0] - 1)
                pixels[sel] = tex[tz, tx]
            a = haze[cols_i, None]
            img[rows_i, cols_i] = pixels * shade[cols_i, None] * (1 - a) + haze_rgb * a
        return np.clip(img, 0, 255).astype(np.uint8)

    def position(self, s_m: float, lateral_m: float = 0.0) -> tuple[float, float, float]:
        """WGS84 lat, lon, alt of the point ``s_m`` metres along the (gently curved) route.

        ``lateral_m`` moves the point sideways, to the left of the direction of travel (the
        camera offset of :meth:`render`).
        """
        c = self.config
        k = math.radians(c.turn_deg_per_100m) / 100.0  # curvature (1/m)
        h0 = math.radians(c.heading_deg)
        if abs(k) < 1e-12:
            east, north = s_m * math.sin(h0), s_m * math.cos(h0)
        else:  # arc of a circle: heading(s) = h0 + k s
            east = (math.cos(h0) - math.cos(h0 + k * s_m)) / k
            north = (math.sin(h0 + k * s_m) - math.sin(h0)) / k
        heading = h0 + k * s_m
        east -= lateral_m * math.cos(heading)   # left of travel: the tangent turned 90 deg
        north += lateral_m * math.sin(heading)
        lat, lon, alt = pymap3d.enu2geodetic(east, north, 0.0, *c.origin)
        return float(lat), float(lon), float(alt)

    def _frame(self, name: str, index: int, s_m: float, image: np.ndarray,
               t0_ns: int, lateral_m: float = 0.0) -> SynthFrame:
        lat, lon, alt = self.position(s_m, lateral_m)
        stamp = t0_ns + int(index * 0.5e9)  # 2 Hz
        return SynthFrame(name, stamp, s_m, lat, lon, alt, image)

    def map_pass(self) -> Iterator[SynthFrame]:
        """Yield the mapping traversal: one frame every ``spacing_m`` metres."""
        c = self.config
        rng = np.random.default_rng(self._map_rng_seed)
        for i in range(c.frames):
            s = (i + 1) * c.spacing_m
            image = self.render(s)
            if c.map_noise > 0:
                noisy = image + rng.normal(0, c.map_noise, image.shape).astype(np.float32)
                image = np.clip(noisy, 0, 255).astype(np.uint8)
            yield self._frame(f'map_{i:05d}.png', i, s, image, 1_700_000_000 * 10**9)

    def query_pass(self, drive: int = 0) -> Iterator[SynthFrame]:
        """Yield a query traversal: between map frames, other light, offsets, noise, blur.

        ``drive`` numbers independent query drives of the same street (their own positions,
        light, offsets and noise): drive 0 is the demo's query pass, drive 1 a second drive to
        calibrate the covariance on (``vpr-ros calibrate --queries``).
        """
        c = self.config
        if drive < 0:
            raise ConfigError(f'query_pass: drive must be >= 0, got {drive}')
        rng = np.random.default_rng(self._query_rng_seed if drive == 0 else
                                    [self._query_rng_seed, drive])
        gain, gamma = rng.uniform(*c.query_gain), rng.uniform(*c.query_gamma)
        cast = rng.uniform(1 - c.query_cast, 1 + c.query_cast, 3).astype(np.float32)
        for i in range(c.frames):
            s = (i + 1) * c.spacing_m + rng.uniform(-0.5, 0.5) * c.spacing_m
            s = max(s, 0.1)
            lateral = rng.uniform(-1, 1) * c.query_lateral_m
            image = self.render(s, lateral_m=lateral,
                                yaw_deg=rng.uniform(-1, 1) * c.query_yaw_deg)
            x = (image.astype(np.float32) / 255.0) ** gamma * (gain * cast)
            sigma = rng.uniform(*c.query_blur)
            if sigma > 0:
                x = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma)
            x = x * 255.0 + rng.normal(0, c.query_noise, x.shape)
            image = np.clip(x, 0, 255).astype(np.uint8)
            yield self._frame(f'query_{i:05d}.png', i, s, image, 1_700_100_000 * 10**9,
                              lateral)


def write_csv_source(frames: Iterator[SynthFrame], folder: str | Path) -> Path:
    """Write frames as PNGs plus ``images.csv`` (``image,lat,lon,alt``) for ``build-map``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ['image,lat,lon,alt']
    for frame in frames:
        cv2.imwrite(str(folder / frame.name), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        rows.append(f'{frame.name},{frame.lat:.9f},{frame.lon:.9f},{frame.alt:.3f}')
    return write_text(folder / 'images.csv', '\n'.join(rows) + '\n')
