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

"""SIGINT/SIGTERM as a request to stop, answered at a safe point (imports nothing heavy).

rclpy's own handlers shut the context down inside the signal, while timers, the worker thread
and the executor's wait set still use it: ``RCLError: failed to initialize wait set: the given
context is not valid``, ``publisher's context is invalid``. Python's default SIGINT handler
raises ``KeyboardInterrupt`` wherever the main thread is, also inside a half-done ``import
torch``. So the processes of this package (the node, ``vpr-ros play`` and ``record``) install
:class:`StopSignals` first thing, tell rclpy not to install its handlers
(:func:`vpr_ros.ros.compat.ros_session`), check :attr:`StopSignals.requested` between steps and
spin in short slices; they then tear down in order (worker, node, executor, context) and exit 0.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Longest wait (s) before a stop request is noticed by a loop spinning in slices.
SPIN_SLICE_S = 0.1


class StopSignals:
    """Turn SIGINT and SIGTERM into a flag; install from the main thread only."""

    def __init__(self) -> None:
        """Start with no request and nothing installed (see :meth:`install`)."""
        self._event = threading.Event()
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @classmethod
    def install(cls) -> 'StopSignals':
        """Return a new instance whose handlers replace the current SIGINT/SIGTERM ones."""
        stop = cls()
        for sig in STOP_SIGNALS:
            stop._previous[sig] = signal.signal(sig, stop._handle)
        return stop

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is None:
            self.signal = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        """True once SIGINT or SIGTERM arrived (or :meth:`request` was called)."""
        return self._event.is_set()

    def request(self) -> None:
        """Ask for a stop from code (e.g. the end of a bag)."""
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until a stop is requested or ``timeout`` passes; return :attr:`requested`."""
        return self._event.wait(timeout)

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
