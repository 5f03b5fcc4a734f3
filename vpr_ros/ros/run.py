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

"""Run one node in this process: ROS session, executor, spin until stopped, teardown in order.

Both localizer executables (:mod:`vpr_ros.ros.localizer_node` and the managed
:mod:`vpr_ros.ros.lifecycle_node`) differ only in how their node starts and closes. The rest
is here, once: the stop request (:mod:`vpr_ros.ros.stop`) is checked before the node is built,
a :class:`~vpr_ros.errors.VprError` while building or starting it is one line on stderr and
exit 1, and the teardown runs in order (node's own close, executor, node) whatever happened.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence, TypeVar

from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from vpr_ros.errors import VprError
from vpr_ros.ros.compat import ros_session, spin_until_stopped
from vpr_ros.ros.stop import StopSignals

N = TypeVar('N', bound=Node)
ERROR_PREFIX = 'vpr_ros localizer: error:'


def run_node(make_node: Callable[[], N], *, args: Sequence[str] | None, stop: StopSignals,
             start: Callable[[N], str | None] | None = None,
             close: Callable[[N], None] | None = None) -> int:
    """Build a node, spin it until SIGINT/SIGTERM, tear it down; return the exit code.

    Args:
        make_node: builds the node (inside the ROS session); a VprError is exit 1.
        args: the process's ROS arguments (``rclpy.init(args=...)``).
        stop: the process's stop request, installed before the heavy imports.
        start: run once the node is in the executor; returns an error message (exit 1) or
            None (spin).
        close: the node's own teardown, before the executor shuts down.

    Returns:
        0 after a stop request or an external shutdown, 1 on a configuration error.
    """
    try:
        with ros_session(args):
            if stop.requested:
                return 0
            try:
                node = make_node()
            except VprError as exc:
                print(f'{ERROR_PREFIX} {exc}', file=sys.stderr)
                return 1
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            try:
                problem = start(node) if start is not None else None
                if problem is not None:
                    print(f'{ERROR_PREFIX} {problem}', file=sys.stderr)
                    return 1
                spin_until_stopped(executor, stop)
            finally:
                if close is not None:
                    close(node)
                executor.shutdown()
                node.destroy_node()
    except ExternalShutdownException:
        pass
    return 0


__all__ = ['run_node']
