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

"""``vpr-ros record``: record topics into a rosbag2 (:mod:`vpr_ros.ros.recorder`).

rclpy is imported only when the verb runs (the signals are already a stop request by then).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from vpr_ros.bags import RecordConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vpr-ros record``; defaults come from RecordConfig."""
    defaults = RecordConfig()
    parser.add_argument('out', type=Path, help='rosbag2 directory to create (must not exist)')
    parser.add_argument('--topics', nargs='+', help='topics to record (default: all)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default=defaults.storage,
                        help='storage plugin (default mcap)')
    parser.add_argument('--qos', choices=('auto', 'reliable', 'best_effort'),
                        default=defaults.qos, help='subscription reliability (default auto)')


def main(args: argparse.Namespace) -> int:
    """Record until SIGINT/SIGTERM, then print what was written."""
    from vpr_ros.ros.recorder import record_session

    def log(text: str) -> None:
        print(text, flush=True)

    counts = record_session(args.out, args.topics,
                            RecordConfig(storage=args.storage, qos=args.qos), log=log,
                            stop=getattr(args, 'stop', None))
    total = sum(counts.values())
    detail = ', '.join(f'{t}: {n}' for t, n in sorted(counts.items()))
    print(f'recorded {total} messages into {args.out} ({detail})', file=sys.stderr, flush=True)
    return 0
