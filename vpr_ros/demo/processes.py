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

"""The demo's child processes: own process group, output to a log file, stopped with SIGINT.

The node, the recorder and the player are the commands a user types, started as children so
that a stuck one can be stopped (SIGINT, then SIGTERM, then SIGKILL to its whole group).
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Sequence

from vpr_ros.errors import DataError


def _default_sigint() -> None:
    """Undo an inherited SIG_IGN for SIGINT (a background job of a non-interactive shell).

    Python installs its KeyboardInterrupt handler only when SIGINT is not ignored at start, so
    without this a demo started with ``&`` from a script gives children that ignore SIGINT.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    """A child in its own process group, output to a log file, stopped with SIGINT.

    ``ros2 launch`` must be stopped with SIGINT (SIGTERM can leave its node running,
    ros2/launch#666); what ignores it gets SIGTERM, then SIGKILL, sent to the whole group.
    """

    def __init__(self, name: str, cmd: Sequence[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log = log
        self._file = open(log, 'wb')
        self.popen = subprocess.Popen(self.cmd, stdout=self._file, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True,
                                      preexec_fn=_default_sigint)

    def output(self) -> str:
        if not self._file.closed:
            self._file.flush()
        return self.log.read_text(errors='replace')

    def tail(self, lines: int = 25) -> str:
        return '\n'.join(self.output().splitlines()[-lines:])

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_for_output(self, text: str, timeout_s: float) -> None:
        """Wait until ``text`` appears; a DataError with the log tail on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if not self.running():
                raise DataError(f'{self.name} exited with {self.popen.returncode} before '
                                f'"{text}" (log {self.log}):\n{self.tail()}')
            if time.monotonic() > deadline:
                raise DataError(f'{self.name}: no "{text}" within {timeout_s:.0f} s (log '
                                f'{self.log}):\n{self.tail()}')
            time.sleep(0.2)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float) -> int:
        """SIGINT the leader and wait; then SIGTERM, then SIGKILL the group. Return the exit code.

        SIGINT goes to the leader only: ``ros2 launch`` forwards it to its node and relays the
        node's last log lines (a SIGINT to the whole group lets the launch stop relaying
        before the node's shutdown summary is written).
        """
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0),
                            (signal.SIGKILL, 5.0)):
            if not self.running():
                break
            if sig == signal.SIGINT:
                self.popen.send_signal(sig)
            else:
                self._signal(sig)
            try:
                self.popen.wait(wait_s)
            except subprocess.TimeoutExpired:
                print(f'{self.name} ignored {signal.Signals(sig).name} for {wait_s:.0f} s',
                      file=sys.stderr)
        if self.running():  # pragma: no cover - SIGKILL cannot be ignored
            self.popen.wait()
        # Children of the group that outlived their parent (a node after its launch) go too.
        self._signal(signal.SIGKILL)
        self._file.close()
        return self.popen.returncode


def child_env() -> dict[str, str]:
    """Return the environment of the children: ours, localhost-only discovery by default."""
    env = dict(os.environ)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('PYTHONUNBUFFERED', '1')
    return env
