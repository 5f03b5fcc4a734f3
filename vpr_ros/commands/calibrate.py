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

"""``vpr-ros calibrate``: fit the map's confidence -> sigma mapping and store it in the map."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vpr_ros.calibrate import calibrate_map
from vpr_ros.calibration import CalibrationConfig, IDEAL_COVERAGE, store_calibration
from vpr_ros.commands._args import (add_device, add_localizer_config, add_progress,
                                    localizer_config, map_source_images)
from vpr_ros.fix_quality import PLACE_SPACING_FLOOR_M
from vpr_ros.localizer import Localizer, LocalizerConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of calibrate."""
    parser.add_argument('map', type=Path, help='the map (*.vprmap) to calibrate')
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument('--queries', type=Path,
                        help='calibration set with positions: VG folder, CSV or rosbag2 '
                        '(default: pseudo-queries made from the map images)')
    frames.add_argument('--source', type=Path,
                        help="the map's source (folder, CSV or rosbag2) to make pseudo-queries "
                        'from at the camera resolution (default: the source the map records; '
                        'its thumbnails when that cannot be read)')
    add_localizer_config(parser)
    parser.add_argument('--pseudo-queries', type=int, help='how many map images to use')
    d = CalibrationConfig()
    parser.add_argument('--tail-share', type=float,
                        help='share of the riskiest frames fitted in a bin of their own, where '
                             f'wrong places gather (default {d.tail_share:g}; 0: none)')
    parser.add_argument('--max-p', type=float,
                        help='keep a GeoWarp fusion weight above 0 only if the held-out frames '
                             'the global and fused orders disagree on show its gain: one-sided '
                             f'sign test p at most this (default {d.max_p:g}; 1: no test)')
    add_device(parser)
    parser.add_argument('--dry-run', action='store_true', help='fit and report, store nothing')
    add_progress(parser)


def main(args: argparse.Namespace) -> int:
    """Calibrate, print the coverage report and store the fit in the manifest."""
    config = CalibrationConfig()
    if args.pseudo_queries:
        config = config.replace(pseudo_queries=args.pseudo_queries)
    if args.tail_share is not None:
        config = config.replace(tail_share=args.tail_share)
    if args.max_p is not None:
        config = config.replace(max_p=args.max_p)
    loc_config = localizer_config(args) or LocalizerConfig()
    localizer = Localizer.open(args.map, loc_config, device=args.device)
    queries = images = None
    if args.queries:
        from vpr_ros.mapdb.sources import open_source

        entries = open_source(args.queries).entries
        queries = (_Lazy(entries), np.array([[e.lat, e.lon] for e in entries]))
    else:
        images = map_source_images(localizer.map, args.source)
    cal, report = calibrate_map(localizer, config, queries=queries, map_images=images,
                                progress=not args.no_progress)
    floor = (' (the floor: most entries share their position with another, as the views of '
             'a place do)' if report['place_spacing_m'] <= PLACE_SPACING_FLOOR_M else '')
    print(f'calibration of {args.map}: {report["source"]}, place spacing '
          f'{report["place_spacing_m"]:.2f} m{floor}')
    err = report['error_m']
    split = (f'; along / cross-track median {err["along_track_median"]:.2f} / '
             f'{err["cross_track_median"]:.2f} m' if err.get('along_track_median') is not None
             else '')
    print(f'  error: median {err["median"]:.2f} m, p95 {err["p95"]:.2f} m{split}')
    for name in ('nees_coverage', 'nees_coverage_cv'):
        if report[name]:
            cells = ', '.join(f'{k} sigma {100 * v:.1f} % '
                              f'(ideal {100 * IDEAL_COVERAGE[int(k)]:.1f})'
                              for k, v in report[name].items())
            print(f'  {name}: {cells}')
    print(f'  sigma knots (m): {", ".join(f"{s:.2f}" for s in cal.knots_sigma)}')
    if cal.knots_ratio:
        print(f'  along/cross-track sigma ratio: '
              f'{", ".join(f"{r:.2f}" for r in cal.knots_ratio)}')
    fusion = report.get('rerank_fusion') or {}
    if fusion.get('mode_choice'):
        print(f'  GeoWarp mode: {fusion["mode_choice"]["reason"]}')
    if fusion.get('reason'):
        print(f'  GeoWarp fusion ({fusion["geowarp_mode"]} mode): {fusion["reason"]}')
    if report.get('subspacing'):
        print(f'  between map frames: {report["subspacing"]["reason"]}')
    if args.dry_run:
        print('dry run: the map is unchanged')
        return 0
    store_calibration(localizer.map, cal, report)
    print(f'calibration stored in {args.map / "manifest.json"}')
    return 0


class _Lazy:
    """Images of source entries, loaded one at a time (a sequence for localize_batch)."""

    def __init__(self, entries) -> None:
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [e.load() for e in self.entries[item]]
        return self.entries[item].load()
