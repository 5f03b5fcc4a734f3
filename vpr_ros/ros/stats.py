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

"""Counters, rates and latency percentiles of the node, for ``/diagnostics``.

Thread-safe: the subscription callback, the worker thread and the diagnostics timer all report
here. Rates and "recent" counts cover a sliding window; latencies are the last ``latencies``
frames. Times come from a monotonic clock (never the ROS clock, which follows a bag under
``use_sim_time``).

Frames lost in transport (a best-effort subscription drops what the network or the queue cannot
take) never reach the node, so they cannot be counted; :class:`TransportLoss` estimates them
from gaps in the header stamps of the frames that did arrive.
"""

from __future__ import annotations

from collections import deque
import math
import threading
import time
from typing import Any, Callable

import numpy as np


class TransportLoss:
    """Camera frames that never arrived, estimated from the header stamps of those that did.

    The camera period is the median of the recent stamp differences that are within 1.5x of the
    smallest one (one frame apart); a difference of ``n`` periods means ``n - 1`` frames lost.
    Stamps that go back (a bag restarting) restart the estimate; a gap over
    ``max(pause_s, 5 periods)`` is a pause of the camera, not a loss.
    """

    def __init__(self, history: int = 200, pause_s: float = 1.0) -> None:
        self._deltas: deque[int] = deque(maxlen=history)
        self._last: int | None = None
        self._pause_ns = int(pause_s * 1e9)
        self.lost = 0

    def period_ns(self) -> float:
        """Return the camera period estimate (ns), NaN before two stamps."""
        if not self._deltas:
            return math.nan
        d = np.asarray(self._deltas)
        return float(np.median(d[d <= 1.5 * d.min()]))

    def rate_hz(self) -> float:
        """Return the camera frame rate estimate (Hz), NaN before two stamps."""
        period = self.period_ns()
        return 1e9 / period if period > 0 else math.nan

    def add(self, stamp_ns: int) -> int:
        """Take the stamp of a received frame; return the frames lost just before it."""
        last, self._last = self._last, stamp_ns
        if stamp_ns <= 0 or last is None or last <= 0:
            return 0
        dt = stamp_ns - last
        if dt <= 0:
            if dt < 0:
                self._deltas.clear()
            return 0
        self._deltas.append(dt)
        period = self.period_ns()
        if dt > max(self._pause_ns, 5 * period):
            return 0
        lost = max(0, round(dt / period) - 1)
        self.lost += lost
        return lost


class FrameStats:
    """What happened to the frames: received, dropped, processed, published, bad, failed."""

    def __init__(self, window_s: float = 5.0, latencies: int = 500,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._events: dict[str, deque] = {k: deque() for k in (
            'received', 'published', 'fix', 'bad', 'error', 'lost')}
        self.transport = TransportLoss()
        self._latency_ms: deque[float] = deque(maxlen=latencies)
        self._localize_ms: deque[float] = deque(maxlen=latencies)
        self.counts = dict.fromkeys(('frames_received', 'frames_dropped', 'frames_processed',
                                     'fixes', 'no_fixes', 'published', 'bad_frames', 'errors'),
                                    0)
        self.last: dict[str, Any] = {'score': float('nan'), 'sigma_m': float('nan'),
                                     'status': '', 'bad_frame': '', 'error': ''}
        self._last_input = None

    def _event(self, kind: str, now: float) -> None:
        events = self._events[kind]
        events.append(now)
        while events and events[0] < now - self.window_s:
            events.popleft()

    def received(self, dropped: bool, stamp_ns: int = 0) -> int:
        """Count an image and return how many have come; ``dropped``: it replaced one not taken.

        ``stamp_ns``: its header stamp, for the frames lost in transport (0: unknown).
        """
        now = self._clock()
        with self._lock:
            self.counts['frames_received'] += 1
            self.counts['frames_dropped'] += int(dropped)
            self._last_input = now
            self._event('received', now)
            for _ in range(min(self.transport.add(int(stamp_ns)), 1000)):
                self._event('lost', now)
            return self.counts['frames_received']

    def dropped(self) -> None:
        """Count a frame prepared for the localizer and replaced by a newer one (pipeline)."""
        with self._lock:
            self.counts['frames_dropped'] += 1

    def processed(self, latency_ms: float, status: str, score: float, sigma_m: float,
                  published: bool, localize_ms: float = math.nan) -> None:
        """Count a frame the localizer finished (``status`` 'fix' or 'no_fix').

        ``latency_ms``: message received -> published; ``localize_ms``: the part spent in
        ``Localizer.localize()``.
        """
        now = self._clock()
        with self._lock:
            self.counts['frames_processed'] += 1
            self.counts['fixes' if status == 'fix' else 'no_fixes'] += 1
            self._latency_ms.append(float(latency_ms))
            self._localize_ms.append(float(localize_ms))
            self.last.update(score=float(score), sigma_m=float(sigma_m), status=status)
            if status == 'fix':
                self._event('fix', now)
            if published:
                self.counts['published'] += 1
                self._event('published', now)

    def bad_frame(self, reason: str) -> None:
        """Count a frame that could not be decoded (unknown encoding, empty data, wrong step)."""
        with self._lock:
            self.counts['bad_frames'] += 1
            self.last['bad_frame'] = reason
            self._event('bad', self._clock())

    def error(self, reason: str) -> None:
        """Count a frame the localizer raised on."""
        with self._lock:
            self.counts['errors'] += 1
            self.last['error'] = reason
            self._event('error', self._clock())

    def _rate(self, kind: str, now: float) -> float:
        events = self._events[kind]
        recent = sum(1 for t in events if t >= now - self.window_s)
        span = min(self.window_s, now - self._start)
        return recent / span if span > 0 else 0.0

    def _recent(self, kind: str, now: float) -> int:
        return sum(1 for t in self._events[kind] if t >= now - self.window_s)

    def _loss_pct(self, now: float) -> float:
        lost, got = self._recent('lost', now), self._recent('received', now)
        return 100.0 * lost / (lost + got) if lost + got else math.nan

    def snapshot(self) -> dict[str, Any]:
        """Return every counter, the rates (Hz), latency p50/p95 (ms) and the last results."""
        now = self._clock()
        with self._lock:
            lat = np.array(self._latency_ms) if self._latency_ms else None
            loc = np.array(self._localize_ms) if self._localize_ms else None
            return {
                **self.counts,
                'input_rate_hz': self._rate('received', now),
                'output_rate_hz': self._rate('published', now),
                'latency_p50_ms': float(np.percentile(lat, 50)) if lat is not None else math.nan,
                'latency_p95_ms': float(np.percentile(lat, 95)) if lat is not None else math.nan,
                'localize_p50_ms': float(np.nanpercentile(loc, 50))
                if loc is not None and np.isfinite(loc).any() else math.nan,
                'input_age_s': (now - self._last_input) if self._last_input is not None
                else math.inf,
                'recent_fixes': self._recent('fix', now),
                'recent_bad_frames': self._recent('bad', now),
                'recent_errors': self._recent('error', now),
                'camera_rate_hz': self.transport.rate_hz(),
                'frames_lost_transport': self.transport.lost,
                'transport_loss_pct': self._loss_pct(now),
                'last_score': self.last['score'], 'last_sigma_m': self.last['sigma_m'],
                'last_status': self.last['status'], 'last_bad_frame': self.last['bad_frame'],
                'last_error': self.last['error'],
            }
