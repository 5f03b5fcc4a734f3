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

"""``vpr-ros play``: publish a rosbag2 at the recorded pace (:mod:`vpr_ros.ros.player`).

rclpy is imported only when the verb runs (the signals are already a stop request by then).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from vpr_ros.bags import PlayConfig
from vpr_ros.commands._args import add_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vpr-ros play``; defaults come from PlayConfig."""
    defaults = PlayConfig()
    parser.add_argument('bag', type=Path, help='rosbag2 directory (mcap or sqlite3)')
    parser.add_argument('--topics', nargs='+', help='topics to play (default: all)')
    parser.add_argument('--rate', type=float, default=defaults.rate, help='speed factor')
    parser.add_argument('--loop', action='store_true', help='play again and again')
    parser.add_argument('--clock', action='store_true',
                        help='publish /clock from the bag times (use_sim_time)')
    parser.add_argument('--restamp', action='store_true',
                        help='shift header stamps to the playback time (latency measurements)')
    parser.add_argument('--qos', choices=('reliable', 'sensor_data'), default=defaults.qos,
                        help='publisher QoS (default reliable)')
    parser.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                        dest='wait_for_subscribers_s',
                        help='wait up to S seconds for a subscriber on every topic first')
    add_progress(parser)


def main(args: argparse.Namespace) -> int:
    """Play the bag until its end (or forever with --loop, until SIGINT)."""
    from vpr_ros.ros.player import play_session

    config = PlayConfig(rate=args.rate, loop=args.loop, clock=args.clock, qos=args.qos,
                        wait_for_subscribers_s=args.wait_for_subscribers_s,
                        restamp=args.restamp)
    count = play_session(args.bag, config, args.topics, progress=not args.no_progress,
                         stop=getattr(args, 'stop', None))
    print(f'played {count} messages from {args.bag}', file=sys.stderr)
    return 0
