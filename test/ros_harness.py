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

"""Helpers for tests with real ROS 2 processes: spawn, stop with a signal, wait for a message."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any, Sequence


def _signal_state(pid: int) -> str:
    """Return the kernel's view of a process's signals (ignored, caught, pending)."""
    fields = ('SigPnd', 'ShdPnd', 'SigIgn', 'SigCgt')
    try:
        with open(f'/proc/{pid}/status') as f:
            return ' '.join(ln.strip() for ln in f if ln.startswith(fields))
    except OSError:
        return 'gone'


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Process:
    """A child process whose combined output is kept in a file (no pipe can fill up).

    The child starts with SIGINT at its default action, as :class:`vpr_ros.demo.processes.Child`
    does: an ignored SIGINT survives ``exec``, and a ``ros2 launch`` started with it ignored
    never sees the SIGINT that should stop it.
    """

    def __init__(self, cmd: Sequence[str], log: Path, *, env: dict | None = None,
                 cwd: Path | None = None) -> None:
        self.cmd = list(cmd)
        self.log = log
        self._log_file = open(log, 'wb')
        self.popen = subprocess.Popen(self.cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                      env=env or dict(os.environ), cwd=cwd,
                                      start_new_session=True, preexec_fn=_default_sigint)

    def output(self) -> str:
        """Everything the process printed so far."""
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors='replace')

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the output (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.popen.poll() is not None:
                return text in self.output()
            time.sleep(0.1)
        return False

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Send ``sig``, wait; kill the whole process group if it does not exit in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                state = _signal_state(self.popen.pid)
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
                self._log_file.close()
                raise AssertionError(f'{self.cmd} ignored signal {sig} for {timeout} s '
                                     f'(its signal masks: {state}):\n{self.output()}')
        self._log_file.close()
        return self.popen.returncode

    def __enter__(self) -> 'Process':
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.popen.poll() is None:
            try:
                self.stop()
            except AssertionError:
                pass


def python_process(code: str, log: Path, **kwargs: Any) -> Process:
    """Run a Python snippet in a new interpreter (same venv, same environment)."""
    return Process([sys.executable, '-c', textwrap.dedent(code)], log, **kwargs)


def wait_for_message(node, msg_type, topic: str, *, timeout: float, qos=10,
                     predicate=None):
    """Spin ``node`` until a message on ``topic`` arrives (and satisfies ``predicate``)."""
    from rclpy.executors import SingleThreadedExecutor

    received = []

    def callback(msg):
        if predicate is None or predicate(msg):
            received.append(msg)

    sub = node.create_subscription(msg_type, topic, callback, qos)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(node)
        executor.shutdown()
        node.destroy_subscription(sub)
    if not received:
        raise TimeoutError(f'no {msg_type.__name__} on {topic} within {timeout} s')
    return received[0]
