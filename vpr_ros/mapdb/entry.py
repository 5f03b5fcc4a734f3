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

"""What every map source yields: :class:`Entry` records, a :class:`SourceReport`, its config.

Shared by the readers (:mod:`vpr_ros.mapdb.sources` for folders and CSV files,
:mod:`vpr_ros.mapdb.bag_source` for rosbag2) and by everything that consumes entries.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.images import load_image

SOURCE_KINDS = ('auto', 'folder', 'csv', 'bag')


@dataclass(frozen=True)
class SourceConfig(Config):
    """How to read a map source."""

    kind: str = option('auto', 'source kind; auto: bag dir, *.csv file or VG image folder',
                       choices=SOURCE_KINDS)
    utm_zone: str = option('', 'UTM zone for VG names that carry none, e.g. 17T (number + '
                               'latitude band)')
    image_topic: str = option('', 'bag image topic (Image or CompressedImage); empty: the '
                                  'only image topic in the bag')
    fix_topic: str = option('', 'bag NavSatFix topic; empty: the only NavSatFix topic')
    fix_tolerance_s: float = option(1.0, 'max time between an image stamp and each GNSS fix '
                                         'it is interpolated from (s)', min=0.0)
    min_spacing_m: float = option(0.0, 'drop entries closer than this to the previous kept '
                                       'one (m); 0 keeps all', min=0.0)
    allow_duplicates: bool = option(False, 'CSV: keep an image listed more than once (with a '
                                           'warning) instead of refusing the CSV')


@dataclass(frozen=True)
class FileImage:
    """Picklable loader of one image file."""

    path: Path

    def __call__(self) -> np.ndarray:
        return load_image(self.path)


@dataclass(frozen=True)
class Entry:
    """One geotagged image of a map source (position in WGS84, altitude NaN if unknown)."""

    name: str
    lat: float
    lon: float
    alt: float
    load: Callable[[], np.ndarray]
    stamp_ns: int | None = None
    heading_deg: float = math.nan


@dataclass
class SourceReport:
    """What a source kept and skipped, for logs and the manifest."""

    kind: str
    path: str
    entries: list[Entry]
    skipped: dict[str, int]

    def summary(self) -> dict[str, Any]:
        return {'kind': self.kind, 'path': self.path, 'entries': len(self.entries),
                'skipped': dict(self.skipped)}


__all__ = ['Entry', 'FileImage', 'SOURCE_KINDS', 'SourceConfig', 'SourceReport']
