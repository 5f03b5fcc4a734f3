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

"""``vpr-ros eval-bag``: score recorded fixes against ground truth; write metrics and a report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vpr_ros.evaluation.bag_eval import evaluate_bag
from vpr_ros.evaluation.metrics import EvalConfig
from vpr_ros.evaluation.report import write_report

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of eval-bag; metric defaults come from EvalConfig."""
    defaults = EvalConfig()
    parser.add_argument('bag', type=Path, help='rosbag2 directory (mcap or sqlite3)')
    parser.add_argument('--fix', default='/vpr/fix', help='NavSatFix topic to score')
    parser.add_argument('--truth', default='/gnss/fix', help='ground-truth NavSatFix topic')
    parser.add_argument('--frames', default='auto',
                        help='camera topic whose frames are the queries: auto (the only image '
                        'topic), a topic, or none (count fix messages)')
    parser.add_argument('--out', type=Path,
                        help='output folder (default: BAG.eval beside the bag)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.add_argument('--config', type=Path, help='YAML with EvalConfig fields')
    parser.add_argument('--thresholds', type=float, nargs='+', dest='thresholds_m',
                        help=f'recall distances in m (default {list(defaults.thresholds_m)})')
    parser.add_argument('--max-speed', type=float, dest='max_speed_mps',
                        help=f'plausible speed for the jump rate (default '
                        f'{defaults.max_speed_mps} m/s)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Turn the command line into a validated EvalConfig."""
    config = EvalConfig.from_yaml(args.config) if args.config else EvalConfig()
    changes = {n: getattr(args, n) for n in ('thresholds_m', 'max_speed_mps')
               if getattr(args, n) is not None}
    return config.replace(**changes) if changes else config


def main(args: argparse.Namespace) -> int:
    """Evaluate, write the output folder and print the headline numbers."""
    config = config_from_args(args)
    bag = args.bag.parent if args.bag.is_file() else args.bag
    out = args.out or bag.parent / f'{bag.name}.eval'
    result = evaluate_bag(bag, fix_topic=args.fix, truth_topic=args.truth,
                          frames=None if args.frames == 'none' else args.frames,
                          config=config, progress=not args.no_progress)
    inputs = {'bag': str(bag.resolve()), 'fix_topic': result.fix_topic,
              'truth_topic': result.truth_topic, 'frames_topic': result.frames_topic}
    write_report(result.evaluation, out, inputs, overwrite=args.overwrite)
    m = result.evaluation.metrics
    err = m['horizontal_error_m']
    recall = ', '.join(f'R@{d}m {"-" if v is None else f"{100 * v:.1f}"}%'
                       for d, v in m['recall'].items())
    median = '-' if err['median'] is None else f'{err["median"]:.2f}'
    p95 = '-' if err['p95'] is None else f'{err["p95"]:.2f}'
    print(f'{m["counts"]["valid_fixes"]} valid of {m["counts"]["fix_messages"]} fixes; '
          f'median {median} m, p95 {p95} m; {recall}')
    print(f'report written: {out / "report.md"}')
    return 0
