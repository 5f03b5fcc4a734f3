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

"""``vpr-ros demo``: synthetic route -> map -> node on a bag -> evaluation report.

The steps are :func:`vpr_ros.demo.run.run_demo`'s (README command 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr_ros.commands._args import add_config, add_device, add_progress, load_config, override
from vpr_ros.demo.config import DemoConfig, LAUNCHERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vpr-ros demo``; defaults come from DemoConfig."""
    d = DemoConfig()
    parser.add_argument('--out', type=Path, default=Path('vpr_demo'),
                        help='output folder (default ./vpr_demo); a rerun replaces the demo '
                        'files in it')
    parser.add_argument('--frames', type=int, help=f'frames per pass of the synthetic route '
                        f'(default {d.synth.frames}; {d.synth.spacing_m:g} m apart, 2 Hz)')
    parser.add_argument('--seed', type=int, help=f'synthetic route seed (default {d.synth.seed})')
    parser.add_argument('--map', type=Path, dest='map_path',
                        help='your map (*.vprmap): skip rendering, build, GeoWarp, calibration')
    parser.add_argument('--bag', type=Path,
                        help='your drive (rosbag2 with --image-topic and --truth-topic; needs '
                        '--map) instead of the synthetic query pass')
    parser.add_argument('--image-topic', help=f'camera topic (default {d.image_topic})')
    parser.add_argument('--truth-topic', help=f'truth NavSatFix topic (default {d.truth_topic})')
    add_config(parser, 'DemoConfig')
    add_device(parser, default=None)
    parser.add_argument('--geowarp-iterations', type=int,
                        help=f'GeoWarp fit steps (default {d.geowarp_iterations})')
    parser.add_argument('--rate', type=float, help='playback speed factor (default 1)')
    parser.add_argument('--launcher', choices=LAUNCHERS,
                        help='launch (ros2 launch), direct (node process) or auto (default)')
    add_progress(parser)


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """Turn the command line into a validated DemoConfig."""
    config = load_config(DemoConfig, args.config)
    synth = {k: v for k, v in (('frames', args.frames), ('seed', args.seed)) if v is not None}
    if synth:
        config = config.replace(synth=config.synth.replace(**synth))
    return override(config, args, ('image_topic', 'truth_topic', 'device', 'geowarp_iterations',
                                   'rate', 'launcher'))


def main(args: argparse.Namespace) -> int:
    """Run the demo (errors are VprErrors that name the failing step's log)."""
    from vpr_ros.demo.run import run_demo

    run_demo(args.out, config_from_args(args), map_path=args.map_path, bag=args.bag,
             progress=not args.no_progress)
    return 0
