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

"""The ``vpr-ros`` command: a thin argparse front over the core.

Each verb is a module ``vpr_ros/commands/<verb>.py`` with ``add_arguments(parser)`` and
``main(args) -> int``; the CLI only parses, turns arguments into configs, and calls the library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

import vpr_ros
from vpr_ros.errors import VprError

# verb -> one-line help. The verb's module is vpr_ros/commands/<verb>.py ('-' -> '_'); it is
# imported only when its verb runs, so `vpr-ros --help` stays fast and a broken optional part
# cannot break the others.
COMMANDS: dict[str, str] = {
    'doctor': 'print versions and the device that device: auto picks',
    'build-map': 'build a map (*.vprmap) from a VG image folder, a CSV or a rosbag2',
    'map': 'inspect a map: map info route.vprmap',
    'adapt': "learn the map's descriptor whitening, kept only if it helps on held-out places",
    'describe': 'global descriptors of images to a .npy file',
    'play': 'publish a rosbag2 with rclpy at the recorded pace',
    'record': 'record topics into a rosbag2 (mcap or sqlite3)',
    'eval': 'recall@N of a model on a VG or VPR-Bench dataset (benchmark protocol)',
    'localize': 'positions of images against a map (text or JSON)',
    'fit-geowarp': 'fit GeoWarp re-ranking on the map images and store it in the map',
    'export': "export the map's networks to ONNX (verified against torch) for ONNX Runtime "
              'and TensorRT',
    'calibrate': 'fit the confidence -> covariance calibration of a map and store it',
    'eval-bag': 'score recorded fixes against a truth NavSatFix topic: metrics, plots, report',
    'demo': 'synthetic route -> map -> node on a bag -> evaluation report',
    'train': 'train a descriptor model on geotagged images (triplets, hard negatives)',
}
# Commands that run until SIGINT/SIGTERM: the signals become a stop request before their module
# (rclpy, rosbags) is imported, so a signal at any moment ends them cleanly (vpr_ros.ros.stop).
STOPPABLE = frozenset({'play', 'record'})


def command_module(verb: str) -> str:
    """Return the module of a verb: ``build-map`` -> ``vpr_ros.commands.build_map``."""
    return f'vpr_ros.commands.{verb.replace("-", "_")}'


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog='vpr-ros', description='Visual place recognition for ROS 2 robots.')
    parser.add_argument('--version', action='version', version=f'vpr_ros {vpr_ros.__version__}')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, help_text in COMMANDS.items():
        # No -h here: the full parser built in main() answers it, with the command's options.
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
        # Options are added lazily below, once we know which command runs.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vpr-ros`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Find the command first, then let its module add its options and parse again.
    known, _ = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 2
    stop = None
    if known.command in STOPPABLE:
        from vpr_ros.ros.stop import StopSignals

        stop = StopSignals.install()
    module = importlib.import_module(command_module(known.command))
    full = argparse.ArgumentParser(prog=f'vpr-ros {known.command}',
                                   description=COMMANDS[known.command])
    full.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    module.add_arguments(full)
    rest = argv[argv.index(known.command) + 1:]
    args = full.parse_args(rest)
    args.verbose = args.verbose or known.verbose
    if stop is not None:
        args.stop = stop
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger('faiss.loader').setLevel(logging.WARNING)  # chatty about CPU features
    try:
        return int(module.main(args) or 0)
    except VprError as exc:
        print(f'vpr-ros {known.command}: error: {exc}', file=sys.stderr)
        return 1
    except OSError as exc:  # read-only folder, disk full, ...: one line naming the file
        where = f': {exc.filename}' if exc.filename else ''
        print(f'vpr-ros {known.command}: error: {exc.strerror or exc}{where}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'vpr-ros {known.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
