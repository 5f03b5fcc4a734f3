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

"""Inference off the executor thread, latest frame wins.

The subscription callback only puts the message into a :class:`LatestSlot`; one worker thread
takes the newest frame, localises it and publishes. A frame that arrives while another is
waiting replaces it (a drop, counted), so the node never builds a backlog: the latency stays one
inference, whatever the camera rate.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable


class LatestSlot:
    """A one-item mailbox: :meth:`put` replaces an item not yet taken."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self.closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; return True when it replaced one nobody took (a dropped frame)."""
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """Wait for an item and return it; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self.closed, timeout):
                return None
            if self.closed:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake the taker for good; items still waiting are discarded."""
        with self._cond:
            self.closed = True
            self._item, self._full = None, False
            self._cond.notify_all()


class Worker:
    """One thread running ``process(item)`` on the newest item of a :class:`LatestSlot`.

    With ``prepare``, a second thread runs ``prepare(item)`` (decode, resize) on the newest
    frame while the first localises the previous one, and hands its result over through a
    second :class:`LatestSlot`: the next frame is ready when the localizer is, and a frame
    prepared but overtaken by a newer one is dropped (``on_drop``), so there is still no
    backlog. ``prepare`` returns None for a frame it dropped itself (a bad frame).
    """

    def __init__(self, process: Callable[[Any], None],
                 on_error: Callable[[BaseException], None], name: str = 'vpr_worker', *,
                 prepare: Callable[[Any], Any] | None = None,
                 on_drop: Callable[[], None] | None = None) -> None:
        self.slot = LatestSlot()
        self._process = process
        self._on_error = on_error
        self._prepare = prepare
        self._on_drop = on_drop
        self._ready = LatestSlot() if prepare is not None else None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._prep_thread = (threading.Thread(target=self._run_prepare, name=f'{name}_prepare',
                                              daemon=True) if prepare is not None else None)

    def start(self) -> None:
        """Start the thread(s)."""
        self._thread.start()
        if self._prep_thread is not None:
            self._prep_thread.start()

    def submit(self, item: Any) -> bool:
        """Hand over a frame; True when it displaced a frame not yet processed."""
        return self.slot.put(item)

    def _call(self, fn: Callable[[Any], Any], item: Any) -> Any:
        try:
            return fn(item)
        except Exception as exc:  # noqa: B902 - one bad frame must not end the node
            try:
                self._on_error(exc)
            except Exception as handler_exc:  # noqa: B902 - nor a failing error handler
                print(f'{threading.current_thread().name}: error handler failed on '
                      f'{type(exc).__name__}: {type(handler_exc).__name__}: {handler_exc}',
                      file=sys.stderr, flush=True)
        return None

    def _run_prepare(self) -> None:
        while not self.slot.closed:
            item = self.slot.take()
            if item is None:
                continue
            ready = self._call(self._prepare, item)
            if ready is not None and self._ready.put(ready) and self._on_drop is not None:
                self._on_drop()

    def _run(self) -> None:
        source = self._ready if self._ready is not None else self.slot
        while not source.closed:
            item = source.take()
            if item is None:
                continue
            self._call(self._process, item)

    def stop(self, timeout: float = 10.0) -> bool:
        """Close the slot(s) and join the threads (after the frame in progress); True if joined."""
        self.slot.close()
        if self._ready is not None:
            self._ready.close()
        threads = [t for t in (self._thread, self._prep_thread) if t is not None]
        for t in threads:
            if t.is_alive():
                t.join(timeout)
        return not any(t.is_alive() for t in threads)

    @property
    def alive(self) -> bool:
        """True while the thread(s) run."""
        return self._thread.is_alive() and (self._prep_thread is None
                                            or self._prep_thread.is_alive())
