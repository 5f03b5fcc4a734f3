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
place supports itself, so the check recovers after a real jump (a gap, a kidnapped robot).
With no remembered frame that had a candidate (the first one, or after ``window_s`` without
frames) nothing can check the position: with ``confirm_first`` (the default) it is not
supported, so the first fix of a drive is one a second frame agreed with. The first fix is
the one a robot is most likely to trust for good (``navsat_transform`` of robot_localization
takes its datum from it), and a wrong first place would also make the next, right frames look
like jumps.

The same memory also keeps the last published fixes, for a finer check of what passes: a
*motion check* (:meth:`SequenceCheck.motion_offset`) fits a constant velocity to them (least
squares over the last ``track_frames`` fixes) and measures how far the new position is from
where that track puts the robot now, in sigmas of the fix and of the track's own scatter. A
confusion with a place a few entries along the route is within reach of the coarse check but
far off the track; the localizer then widens the covariance by that offset (``Sigma + r r^T``,
so the offset itself lies inside one sigma), which is what an EKF's innovation gate would
otherwise have to catch.
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
    first: bool = False   # nothing remembered (with a candidate) to check it against


class SequenceCheck:
    """The remembered frames of one drive; :meth:`step` checks and remembers a frame."""

    def __init__(self, frames: int = 5, support: int = 2, max_speed_mps: float = 15.0,
                 margin_m: float = 10.0, window_s: float = 5.0,
                 confirm_first: bool = True) -> None:
        """Keep ``frames`` frames, at most ``window_s`` old; need ``support`` of them.

        ``confirm_first``: a frame with nothing remembered is not supported (a later frame
        that agrees with it is); False lets it pass unchecked.
        """
        self.frames = frames
        self.support = support
        self.confirm_first = confirm_first
        self.max_speed_mps = max_speed_mps
        self.margin_m = margin_m
        self.window_s = window_s
        self.track_frames = 5
        self._history: deque[tuple[int, np.ndarray]] = deque()
        self._track: deque[tuple[int, np.ndarray]] = deque()

    def reset(self) -> None:
        """Forget every frame (a new drive, or time going backwards)."""
        self._history.clear()
        self._track.clear()

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
        self._expire(stamp_ns)
        pos = np.asarray(position_en, np.float64).reshape(2)
        support, dists = 0, []
        for stamp, points in self._history:
            if not len(points):
                continue                  # a frame without a candidate cannot vouch either way
            reach = self.max_speed_mps * (stamp_ns - stamp) / 1e9 + self.margin_m
            dist = float(np.min(np.linalg.norm(points - pos, axis=1)))
            dists.append(dist)
            support += dist <= reach
        # Only frames with evidence count: a remembered frame without a finite candidate
        # cannot support anything, so counting it would refuse every frame after it.
        first = not dists
        required = 1 if first and self.confirm_first else min(self.support, len(dists))
        jump = float(np.median(dists)) if dists else 0.0
        verdict = Verdict(support >= required, support, required, jump, first)
        points = np.asarray(candidates_en, np.float64).reshape(-1, 2)
        self._history.append((stamp_ns, points[np.isfinite(points).all(axis=1)]))
        while len(self._history) > self.frames:
            self._history.popleft()
        return verdict

    def _expire(self, stamp_ns: int) -> None:
        for memory in (self._history, self._track):
            while memory and (stamp_ns - memory[0][0]) / 1e9 > self.window_s:
                memory.popleft()

    def remember_fix(self, stamp_ns: int, position_en: np.ndarray) -> None:
        """Add a published fix to the track the motion check predicts from."""
        self._track.append((int(stamp_ns), np.asarray(position_en, np.float64).reshape(2)))
        while len(self._track) > self.track_frames:
            self._track.popleft()

    def motion_offset(self, stamp_ns: int, position_en: np.ndarray, cov_en: np.ndarray,
                      gate: float) -> np.ndarray | None:
        """Return the position's offset (m) from the track of the last fixes, if beyond ``gate``.

        The track is a constant velocity fitted to the remembered fixes (at least 3, within
        ``window_s``); the offset is judged against ``cov_en`` (2x2, the fix's covariance)
        plus the track's scatter (the fit's residual variance) and the uncertainty of the
        line where it is extrapolated to. None: on the track, or too few fixes to say.
        """
        stamp_ns = int(stamp_ns)
        if self._track and stamp_ns < self._track[-1][0]:
            self.reset()
        self._expire(stamp_ns)
        if len(self._track) < 3 or gate <= 0:
            return None
        dt = np.array([(t - stamp_ns) / 1e9 for t, _ in self._track])
        points = np.stack([p for _, p in self._track])
        design = np.stack([np.ones_like(dt), dt], axis=1)
        coef, *_ = np.linalg.lstsq(design, points, rcond=None)
        scatter = float(np.sum((points - design @ coef) ** 2)) / max(1, 2 * (len(dt) - 2))
        # The new position deviates from the line as the old ones did (scatter), and the
        # line itself is uncertain where it is extrapolated to (now): 1/n + lever arm.
        lever = 1.0 / len(dt) + dt.mean() ** 2 / max(float(np.sum((dt - dt.mean()) ** 2)),
                                                     1e-12)
        offset = np.asarray(position_en, np.float64).reshape(2) - coef[0]
        spread = np.asarray(cov_en, np.float64)[:2, :2] + scatter * (1.0 + lever) * np.eye(2)
        if float(offset @ np.linalg.solve(spread, offset)) <= gate * gate:
            return None
        return offset
