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

"""Sequence check: a robot cannot jump, so an isolated far-away place is not a fix.

Single-image place recognition now and then picks a wrong place that looks alike, hundreds of
metres off, with a confidence that does not tell it apart. Consecutive frames of a drive
disagree about such a place: :class:`SequenceCheck` keeps the top candidates of the last
frames (their map positions and stamps) and counts how many of those frames *support* the new
position, i.e. had a top candidate within reach of it: ``max_speed_mps * dt + margin_m``. A
position supported by fewer than ``support`` of the remembered frames is an outlier (the
localizer then reports NO_FIX or inflates the covariance). A run of frames that agree on a new
place supports itself, so the check recovers after a real jump (a gap, a kidnapped robot);
with no remembered frame (the first one, or after ``window_s`` without frames) nothing can be
checked and the position passes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Verdict:
    """How the remembered frames see a new position."""

    supported: bool
    support: int          # remembered frames with a top candidate within reach
    required: int         # how many were needed
    jump_m: float         # median over remembered frames of the distance to their nearest
    #                       candidate: how far the position is from the drive (0: none)


class SequenceCheck:
    """The remembered frames of one drive; :meth:`step` checks and remembers a frame."""

    def __init__(self, frames: int = 5, support: int = 2, max_speed_mps: float = 15.0,
                 margin_m: float = 10.0, window_s: float = 5.0) -> None:
        """Keep ``frames`` frames, at most ``window_s`` old; need ``support`` of them."""
        self.frames = frames
        self.support = support
        self.max_speed_mps = max_speed_mps
        self.margin_m = margin_m
        self.window_s = window_s
        self._history: deque[tuple[int, np.ndarray]] = deque()

    def reset(self) -> None:
        """Forget every frame (a new drive, or time going backwards)."""
        self._history.clear()

    def __len__(self) -> int:
        return len(self._history)

    def step(self, stamp_ns: int, position_en: np.ndarray,
             candidates_en: np.ndarray) -> Verdict:
        """Check ``position_en`` (m) against the remembered frames, then remember this frame.

        ``candidates_en`` ``(k, 2)`` are the map positions of this frame's top candidates
        (the evidence later frames are checked against).
        """
        stamp_ns = int(stamp_ns)
        if self._history and stamp_ns < self._history[-1][0]:
            self.reset()
        while self._history and (stamp_ns - self._history[0][0]) / 1e9 > self.window_s:
            self._history.popleft()
        pos = np.asarray(position_en, np.float64).reshape(2)
        support, dists = 0, []
        for stamp, points in self._history:
            if not len(points):
                continue
            reach = self.max_speed_mps * (stamp_ns - stamp) / 1e9 + self.margin_m
            dist = float(np.min(np.linalg.norm(points - pos, axis=1)))
            dists.append(dist)
            support += dist <= reach
        required = min(self.support, len(self._history))
        jump = float(np.median(dists)) if dists else 0.0
        verdict = Verdict(support >= required, support, required, jump)
        points = np.asarray(candidates_en, np.float64).reshape(-1, 2)
        self._history.append((stamp_ns, points[np.isfinite(points).all(axis=1)]))
        while len(self._history) > self.frames:
            self._history.popleft()
        return verdict
