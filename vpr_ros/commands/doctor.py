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

"""``vpr-ros doctor``: report the versions and the device this installation would use."""

from __future__ import annotations

import argparse
import sys

from vpr_ros import doctor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Doctor takes no options."""


def main(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when a required part (torch, faiss, rclpy) is missing."""
    report = doctor.collect()
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f'{key:<{width}}  {value}')
    missing = [k for k in ('torch', 'faiss', 'rclpy') if report[k].startswith('NOT AVAILABLE')]
    if missing:
        print(f'missing required parts: {", ".join(missing)}', file=sys.stderr)
        return 1
    return 0
