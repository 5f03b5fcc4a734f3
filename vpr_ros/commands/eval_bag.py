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

"""``vpr-ros eval-bag``: score fixes against ground truth; write metrics and a report.

Live mode (``--fix``, the default): the fixes the node published, recorded in the bag.
Offline mode (``--map``): the localizer runs here on the bag's camera frames, no ROS needed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import sys

from vpr_ros.commands._args import (add_backend, add_config, add_device, add_localizer_config,
                                    add_progress, load_config, localizer_config, override)
from vpr_ros.device import BATCH_HELP
from vpr_ros.errors import ConfigError, MapError
from vpr_ros.evaluation.bag_eval import evaluate_bag, evaluate_bag_offline
from vpr_ros.evaluation.metrics import EvalConfig
from vpr_ros.evaluation.report import write_report

log = logging.getLogger(__name__)

LIVE_FIX_TOPIC = '/vpr/fix'
DEFAULT_BATCH = 0
OFFLINE_ONLY = ('images', 'localizer_config', 'device', 'backend', 'batch_size')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of eval-bag; metric defaults come from EvalConfig."""
    defaults = EvalConfig()
    parser.add_argument('bag', type=Path, help='rosbag2 directory (mcap or sqlite3)')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--fix', help=f'live mode: the NavSatFix topic the node published '
                      f'(default {LIVE_FIX_TOPIC})')
    mode.add_argument('--map', type=Path,
                      help='offline mode: run the localizer of this map (*.vprmap) on the '
                      "bag's images instead of reading recorded fixes")
    parser.add_argument('--truth', default='/gnss/fix', help='ground-truth NavSatFix topic')
    parser.add_argument('--frames',
                        help='live mode: camera topic whose frames are the queries: auto (the '
                        'only image topic, default), a topic, or none (count fix messages)')
    parser.add_argument('--images',
                        help='offline mode: Image or CompressedImage topic to localize '
                        '(default: the only image topic)')
    add_localizer_config(parser, when='offline mode: ')
    add_device(parser, default=None, when='offline mode: ')
    add_backend(parser, when='offline mode: ')
    parser.add_argument('--batch-size', type=int,
                        help=f'offline mode: images per forward pass (default {BATCH_HELP})')
    parser.add_argument('--out', type=Path,
                        help='output folder (default: BAG.eval beside the bag)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    add_config(parser, 'EvalConfig')
    parser.add_argument('--thresholds', type=float, nargs='+', dest='thresholds_m',
                        help=f'recall distances in m (default {list(defaults.thresholds_m)})')
    parser.add_argument('--max-speed', type=float, dest='max_speed_mps',
                        help=f'plausible speed for the jump rate (default '
                        f'{defaults.max_speed_mps} m/s)')
    add_progress(parser)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Turn the command line into a validated EvalConfig."""
    return override(load_config(EvalConfig, args.config), args, ('thresholds_m', 'max_speed_mps'))


def main(args: argparse.Namespace) -> int:
    """Evaluate, write the output folder and print the headline numbers."""
    config = config_from_args(args)
    bag = args.bag.parent if args.bag.is_file() else args.bag
    out = args.out or bag.parent / f'{bag.name}.eval'
    if args.map is None:
        given = [f'--{n.replace("_", "-")}' for n in OFFLINE_ONLY
                 if getattr(args, n) is not None]
        if given:
            raise ConfigError(f'{", ".join(given)} only apply to the offline mode (--map)')
        frames = args.frames or 'auto'
        result = evaluate_bag(bag, fix_topic=args.fix or LIVE_FIX_TOPIC,
                              truth_topic=args.truth,
                              frames=None if frames == 'none' else frames,
                              config=config, progress=not args.no_progress)
        inputs = {'mode': 'live', 'bag': str(bag.resolve()), 'fix_topic': result.fix_topic,
                  'truth_topic': result.truth_topic, 'frames_topic': result.frames_topic}
    else:
        if args.frames is not None:
            raise ConfigError('--frames is for the live mode; offline, every frame of '
                              '--images is a query')
        from vpr_ros.localizer import CALIBRATION_FITS

        result = _offline(args, bag, config)
        inputs = {'mode': 'offline (localizer run on the bag images)',
                  'bag': str(bag.resolve()), 'map': str(args.map.resolve()),
                  'images_topic': result.frames_topic, 'truth_topic': result.truth_topic,
                  'device': result.offline['device'],
                  'batch_size': result.offline['batch_size'],
                  'calibration': result.offline.get('calibration')}
        if inputs['calibration'] not in (None, CALIBRATION_FITS):
            print(f'warning: {inputs["calibration"]}', file=sys.stderr)
        if args.localizer_config:
            inputs['localizer_config'] = str(args.localizer_config.resolve())
    write_report(result.evaluation, out, inputs, overwrite=args.overwrite)
    m = result.evaluation.metrics
    err = m['horizontal_error_m']
    recall = ', '.join(f'R@{d}m {"-" if v is None else f"{100 * v:.1f}"}%'
                       for d, v in m['recall'].items())
    median = '-' if err['median'] is None else f'{err["median"]:.2f}'
    p95 = '-' if err['p95'] is None else f'{err["p95"]:.2f}'
    print(f'{m["counts"]["valid_fixes"]} valid of {m["counts"]["fix_messages"]} fixes; '
          f'median {median} m, p95 {p95} m; {recall}')
    lat = m['latency']
    if lat['kind'] == 'processing':
        print(f'localizer processing time per frame p50 {lat["p50_ms"]:.1f} ms, p95 '
              f'{lat["p95_ms"]:.1f} ms (offline; not the live latency)')
    print(f'report written: {out / "report.md"}')
    return 0


def _offline(args: argparse.Namespace, bag: Path, config: EvalConfig):
    """Check the options, then evaluate with a localizer opened only once the bag checks out."""
    from vpr_ros.localizer import Localizer, LocalizerConfig

    if not args.map.is_dir():
        raise MapError(f'{args.map}: no such map (a *.vprmap folder from build-map)')
    loc_config = localizer_config(args) or LocalizerConfig()
    batch = DEFAULT_BATCH if args.batch_size is None else args.batch_size
    if batch < 0:
        raise ConfigError(f'--batch-size must be 0 (auto) or more, got {batch}')
    return evaluate_bag_offline(
        bag, lambda: Localizer.open(args.map, loc_config, device=args.device or 'auto'),
        image_topic=args.images, truth_topic=args.truth, config=config, batch_size=batch,
        progress=not args.no_progress)
