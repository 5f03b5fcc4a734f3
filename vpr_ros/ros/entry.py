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
"""

from __future__ import annotations

import functools
import sys
from typing import Sequence

from vpr_ros.ros.stop import StopSignals

LIFECYCLE_FLAG = '--lifecycle'
AUTOSTART_FLAG = '--autostart'


def localizer(args: Sequence[str] | None = None) -> int:
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


if __name__ == '__main__':
    sys.exit(localizer())
