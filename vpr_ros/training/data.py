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

"""Training data: geotagged images from map sources, split by place, and augmentations.

Sources are the ones ``build-map`` reads (VG folder, CSV, rosbag2; :mod:`vpr_ros.mapdb.sources`).
A training set has a *database* and *queries*, as in the benchmark (Gambino et al. §4): either a
second traversal of the same area (``queries:``), or the database images querying each other
(an image is never its own positive).

The train/val split is by **place**, not by frame: the area is cut into square cells of
``split_cell_m``, whole cells go to validation, and training images closer than
``split_gap_m`` to any validation image are left out, so no place is seen in both.

Augmentations follow Gambino et al. §5.3 (colour jitter; random resized crop and small
rotations / perspective for the geometric part). Every batch is drawn at its own random size
around the native one, so the AS-Geo resizer learns from arbitrary input sizes rather than
from one fixed size. All randomness comes from an explicit ``numpy.random.Generator``, so a
batch is the same whatever process or worker builds it (resume and DDP rely on that).

Papers: M. Gambino, M. Pierro, F. Grillo, "Visual Geo-Localization" (student project report on
ResNet-18 heads, no arXiv id); H. Lu et al., "AS-Geo: Arbitrary-Sized Image Geolocalization
with Learnable Geometric Enhancement Resizer" (2022).

Convention: positions are local metres ``xy = (east, north)`` around ``TrainData.origin``
(WGS84 lat/lon/alt); images are ``(H, W, 3)`` uint8 RGB on disk and ``(3, H, W)`` float in
[0, 1] as tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from vpr_ros.config import Config, option
from vpr_ros.errors import ConfigError, DataError
from vpr_ros.geo import wgs84_to_enu
from vpr_ros.images import check_rgb, thumbnail
from vpr_ros.mapdb.entry import Entry, SourceConfig
from vpr_ros.mapdb.sources import open_source

log = logging.getLogger(__name__)

AUGMENT_TARGETS = ('queries', 'all', 'none')


@dataclass(frozen=True)
class DataConfig(Config):
    """Where the training images come from and how they are split."""

    database: str = option('', 'geotagged training images: VG folder, CSV or rosbag2')
    queries: str = option('', 'optional second traversal of the same area used as queries; '
                              'empty: the database images query each other')
    source: SourceConfig = option(SourceConfig(), 'how the sources are read (as build-map)')
    val_fraction: float = option(0.2, 'share of the split cells held out for validation',
                                 min=0.0, max=0.9)
    split_cell_m: float = option(50.0, 'side of the square cells that go whole to train or '
                                       'val (m)', min=0.1)
    split_gap_m: float = option(25.0, 'training images closer than this to a validation '
                                      'image are left out (m)', min=0.0)
    resize_max: int = option(0, 'shrink images so the longer side is at most this (0: '
                                'native size)', min=0)
    cache_images: bool = option(True, 'keep decoded images in memory (small data sets)')


@dataclass(frozen=True)
class AugmentConfig(Config):
    """Training augmentations (Gambino et al. §5.3) and input-size jitter (AS-Geo)."""

    apply_to: str = option('queries', 'augmented images: queries (benchmark), all, none',
                           choices=AUGMENT_TARGETS)
    brightness: float = option(0.3, 'colour jitter: brightness factor range 1 +- this',
                               min=0.0, max=1.0)
    contrast: float = option(0.3, 'colour jitter: contrast factor range 1 +- this',
                             min=0.0, max=1.0)
    saturation: float = option(0.3, 'colour jitter: saturation factor range 1 +- this',
                               min=0.0, max=1.0)
    hue: float = option(0.0, 'colour jitter: hue shift range +- this', min=0.0, max=0.5)
    crop_scale: tuple[float, float] = option(
        (0.7, 1.0), 'random resized crop: range of the kept area fraction')
    crop_ratio: tuple[float, float] = option(
        (0.85, 1.18), 'random resized crop: range of the aspect change')
    rotation_deg: float = option(5.0, 'small rotations up to +- this (deg)', min=0.0,
                                 max=45.0)
    perspective: float = option(0.1, 'perspective distortion scale (0: off)', min=0.0,
                                max=0.5)
    perspective_p: float = option(0.5, 'probability of the perspective distortion',
                                  min=0.0, max=1.0)
    blur_sigma: float = option(0.0, 'Gaussian blur (motion, focus): sigma up to this, in pixels '
                                    'of the output size (0: off)', min=0.0, max=10.0)
    blur_p: float = option(0.5, 'probability of the blur', min=0.0, max=1.0)
    size_scale: tuple[float, float] = option(
        (0.6, 1.4), 'each batch is drawn at the native size times a factor in this range '
                    '(arbitrary-size input for the AS-Geo resizer); (1, 1): native size')

    def validate(self) -> None:
        """Check the ranges are ordered and positive."""
        for name in ('crop_scale', 'crop_ratio', 'size_scale'):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f'AugmentConfig.{name}: expected 0 < low <= high, got '
                                  f'{(lo, hi)}')
        if self.crop_scale[1] > 1.0:
            raise ConfigError(f'AugmentConfig.crop_scale: at most 1, got {self.crop_scale}')


class ImageSet:
    """Images with local positions; decodes lazily and optionally keeps them in memory."""

    def __init__(self, names: Sequence[str], xy: np.ndarray,
                 loaders: Sequence[Callable[[], np.ndarray]], *, resize_max: int = 0,
                 cache: bool = True) -> None:
        self.names = list(names)
        self.xy = np.asarray(xy, np.float64).reshape(-1, 2)
        self.loaders = list(loaders)
        if not len(self.names) == len(self.xy) == len(self.loaders):
            raise DataError('ImageSet: names, positions and loaders differ in length')
        self.resize_max = resize_max
        self.cache = cache
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        """Return image ``i`` as ``(H, W, 3)`` uint8 RGB."""
        i = int(i)
        if i in self._images:
            return self._images[i]
        image = check_rgb(self.loaders[i](), where=self.names[i])
        if self.resize_max:
            image = thumbnail(image, self.resize_max)
        if self.cache:
            self._images[i] = image
        return image

    def subset(self, indices: Sequence[int]) -> 'ImageSet':
        """Return the images ``indices`` as a new set (sharing the decoded cache)."""
        idx = [int(i) for i in indices]
        out = ImageSet([self.names[i] for i in idx], self.xy[idx],
                       [self.loaders[i] for i in idx], resize_max=self.resize_max,
                       cache=self.cache)
        out._images = {j: self._images[i] for j, i in enumerate(idx) if i in self._images}
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state['_images'] = {}  # DataLoader workers decode their own copies
        return state


@dataclass
class Split:
    """Database and queries of one split; ``same``: the queries are the database images."""

    database: ImageSet
    queries: ImageSet
    same: bool

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class TrainData:
    """Train and validation splits and the geodetic origin of their local positions."""

    train: Split
    val: Split | None
    origin: tuple[float, float, float]
    report: dict[str, Any] = field(default_factory=dict)


def entries_xy(entries: Sequence[Entry], origin: Sequence[float]) -> np.ndarray:
    """Return ``(N, 2)`` east/north metres of ``entries`` around ``origin`` (altitude ignored)."""
    lat = np.array([e.lat for e in entries], np.float64)
    lon = np.array([e.lon for e in entries], np.float64)
    enu = wgs84_to_enu(lat, lon, np.zeros_like(lat), (origin[0], origin[1], 0.0))
    return enu[:, :2]


def _place_cells(xy: np.ndarray, cell_m: float) -> list[tuple[int, int]]:
    return [(int(c[0]), int(c[1])) for c in np.floor(xy / cell_m)]


def nearest_distance(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Distance (m) from each of ``points`` (N, 2) to the nearest of ``others`` (M, 2)."""
    out = np.full(len(points), np.inf)
    if len(others) == 0:
        return out
    for start in range(0, len(points), 1024):
        chunk = points[start:start + 1024]
        d2 = ((chunk[:, None, :] - others[None, :, :]) ** 2).sum(-1)
        out[start:start + 1024] = np.sqrt(d2.min(axis=1))
    return out


def split_by_place(xy: np.ndarray, config: DataConfig, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(train, val)`` over ``xy`` (N, 2): whole cells to val, a gap between.

    Images in neither mask lie within ``split_gap_m`` of a validation image.
    """
    cells = _place_cells(xy, config.split_cell_m)
    unique = sorted(set(cells))
    n_val = 0
    if config.val_fraction > 0 and len(unique) >= 2:
        n_val = min(len(unique) - 1, max(1, round(config.val_fraction * len(unique))))
    order = np.random.default_rng(seed).permutation(len(unique))
    val_cells = {unique[i] for i in order[:n_val]}
    val = np.array([c in val_cells for c in cells], bool)
    train = ~val
    if val.any() and config.split_gap_m > 0:
        train &= nearest_distance(xy, xy[val]) >= config.split_gap_m
    return train, val


def _image_set(entries: Sequence[Entry], xy: np.ndarray, mask: np.ndarray,
               config: DataConfig) -> ImageSet:
    idx = np.flatnonzero(mask)
    return ImageSet([entries[i].name for i in idx], xy[idx], [entries[i].load for i in idx],
                    resize_max=config.resize_max, cache=config.cache_images)


def make_data(database: Sequence[Entry], queries: Sequence[Entry] | None = None,
              config: DataConfig | None = None, *, seed: int = 0) -> TrainData:
    """Build the train/val splits from map-source entries (``queries`` None: same images)."""
    config = config or DataConfig()
    database = list(database)
    if not database:
        raise DataError('the training database has no images')
    same = not queries
    queries = database if same else list(queries)
    first = database[0]
    origin = (first.lat, first.lon, 0.0 if math.isnan(first.alt) else first.alt)
    db_xy = entries_xy(database, origin)
    q_xy = db_xy if same else entries_xy(queries, origin)
    all_xy = db_xy if same else np.concatenate([db_xy, q_xy])
    train, val = split_by_place(all_xy, config, seed)
    n = len(database)
    db_train, db_val = train[:n], val[:n]
    q_train, q_val = (db_train, db_val) if same else (train[n:], val[n:])
    train_db = _image_set(database, db_xy, db_train, config)
    train_q = train_db if same else _image_set(queries, q_xy, q_train, config)
    train_split = Split(train_db, train_q, same)
    val_split = None
    if db_val.any() and q_val.any():
        val_db = _image_set(database, db_xy, db_val, config)
        val_split = Split(val_db, val_db if same else _image_set(queries, q_xy, q_val, config),
                          same)
    report = {'database': n, 'queries': len(queries), 'same': same,
              'train_database': int(db_train.sum()), 'train_queries': int(q_train.sum()),
              'val_database': int(db_val.sum()) if val_split else 0,
              'val_queries': int(q_val.sum()) if val_split else 0,
              'left_out_in_gap': int((~train & ~val).sum())}
    if len(train_split.database) == 0 or len(train_split.queries) == 0:
        raise DataError(f'no training images left after the place split ({report}); lower '
                        'val_fraction or split_gap_m')
    log.info('training data: %s', report)
    return TrainData(train_split, val_split, origin, report)


def load_data(config: DataConfig, *, seed: int = 0) -> TrainData:
    """Open the configured sources and split them by place."""
    if not config.database:
        raise ConfigError('DataConfig.database: give the training images (VG folder, CSV or '
                          'rosbag2)')
    database = open_source(config.database, config.source).entries
    queries = open_source(config.queries, config.source).entries if config.queries else None
    return make_data(database, queries, config, seed=seed)


# ---------------------------------------------------------------- images -> batches

def to_float(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def resize_to(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Plain (unaugmented) image as a float tensor of ``size`` = (H, W)."""
    from torchvision.transforms.v2 import functional as TF  # noqa: N812 - see augment

    x = to_float(image)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return TF.resize(x, list(size), antialias=True)


def augment(image: np.ndarray, size: tuple[int, int], config: AugmentConfig,
            rng: np.random.Generator) -> torch.Tensor:
    """Gambino et al.'s augmentations of one image, drawn from ``rng``, output ``size`` = (H, W).

    Random resized crop (area ``crop_scale``, aspect change ``crop_ratio``), small rotation,
    optional perspective distortion, then brightness / contrast / saturation / hue jitter and
    an optional Gaussian blur.
    """
    # torchvision is imported here, not with the module: it takes seconds, and the configs
    # defined here are read by commands that never augment (vpr-ros adapt without --finetune).
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF  # noqa: N812 - torchvision convention

    x = to_float(image)
    h, w = x.shape[-2:]
    area = h * w * rng.uniform(*config.crop_scale)
    ratio = math.exp(rng.uniform(math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])))
    ch = int(min(h, max(1, round(math.sqrt(area / ratio)))))
    cw = int(min(w, max(1, round(math.sqrt(area * ratio)))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    x = TF.resized_crop(x, top, left, ch, cw, list(size), antialias=True)
    if config.rotation_deg > 0:
        angle = float(rng.uniform(-config.rotation_deg, config.rotation_deg))
        x = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
    if config.perspective > 0 and rng.uniform() < config.perspective_p:
        oh, ow = size
        dx, dy = config.perspective * ow / 2, config.perspective * oh / 2
        start = [[0, 0], [ow - 1, 0], [ow - 1, oh - 1], [0, oh - 1]]
        jitter = rng.uniform(0, 1, (4, 2)) * [dx, dy]
        sign = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        end = (np.array(start) + sign * jitter).round().astype(int).tolist()
        x = TF.perspective(x, start, end, interpolation=InterpolationMode.BILINEAR)
    for amount, fn in ((config.brightness, TF.adjust_brightness),
                       (config.contrast, TF.adjust_contrast),
                       (config.saturation, TF.adjust_saturation)):
        if amount > 0:
            x = fn(x, float(rng.uniform(1 - amount, 1 + amount)))
    if config.hue > 0:
        x = TF.adjust_hue(x, float(rng.uniform(-config.hue, config.hue)))
    if config.blur_sigma > 0 and rng.uniform() < config.blur_p:
        sigma = float(rng.uniform(0.1, config.blur_sigma))
        kernel = 2 * math.ceil(3 * sigma) + 1
        x = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    return x.clamp_(0.0, 1.0)


def batch_size_for(image: np.ndarray, config: AugmentConfig,
                   rng: np.random.Generator) -> tuple[int, int]:
    """Return the (H, W) of a training batch: the native size times a random factor (AS-Geo)."""
    h, w = image.shape[:2]
    if config.apply_to == 'none':
        return int(h), int(w)
    scale = float(rng.uniform(*config.size_scale))
    return max(8, round(h * scale)), max(8, round(w * scale))
