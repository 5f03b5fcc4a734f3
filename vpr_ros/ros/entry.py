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

"""The ``localizer`` executable: stop handlers first, then the heavy imports, then the node.

Importing the node pulls in torch and rclpy (seconds); a SIGINT or SIGTERM in that time must
still be a clean exit 0, so the handlers are installed before (:mod:`vpr_ros.ros.stop`).
``--lifecycle`` (the launch file's ``lifecycle:=true``) runs the managed variant
(:mod:`vpr_ros.ros.lifecycle_node`); ``--autostart`` configures and activates it at once.

Once the node has stopped in order, the process ends at once (:func:`end_process`): the
interpreter's own teardown of torch, FAISS, OpenCV and DDS took 1.3 s on an idle two-core
machine and several times that under load, while ``ros2 launch`` escalates to SIGTERM 5 s after
its SIGINT and reports the node as failed.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import NoReturn, Sequence

from vpr_ros.ros.stop import StopSignals

LIFECYCLE_FLAG = '--lifecycle'
AUTOSTART_FLAG = '--autostart'


def localizer(args: Sequence[str] | None = None) -> NoReturn:
    """Be the ``localizer`` executable: :func:`run_localizer`, then :func:`end_process`."""
    end_process(run_localizer(args))


def run_localizer(args: Sequence[str] | None = None) -> int:
    """Run the localizer node (``--lifecycle``: the managed node) until SIGINT/SIGTERM."""
    stop = StopSignals.install()
    argv = list(sys.argv if args is None else args)
    managed, autostart = LIFECYCLE_FLAG in argv, AUTOSTART_FLAG in argv
    argv = [a for a in argv if a not in (LIFECYCLE_FLAG, AUTOSTART_FLAG)]
    if managed:
        from vpr_ros.ros.lifecycle_node import main
        run = functools.partial(main, autostart=autostart)
    else:
        from vpr_ros.ros.localizer_node import main as run
    return 0 if stop.requested else run(argv, stop=stop)


def end_process(code: int) -> NoReturn:
    """Exit with ``code`` now, skipping the interpreter's teardown (see the module docstring).

    Only call it once everything of ours has stopped: the worker joined, node and executor
    destroyed, ROS context shut down (which flushes the ROS log files). What it still does by
    hand: destroy the ROS context, so that the DDS participant leaves the graph in an orderly
    way, and flush Python's standard streams.
    """
    rclpy = sys.modules.get('rclpy')
    if rclpy is not None:
        context = rclpy.get_default_context()
        if context.handle is not None and not context.ok():
            context.destroy()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to save
            pass
    os._exit(code)


if __name__ == '__main__':
    localizer()
