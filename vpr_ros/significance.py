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

"""Did a step help? Paired tests on the frames a step changes, before it is kept.

A step that learns from the map (such as the descriptor projection of
:mod:`vpr_ros.mapdb.adaptation`) is scored on held-out frames against what it replaces, and
most of those frames come out the same either way. Only the frames the two disagree on
carry evidence, so the test is McNemar's exact sign test on them.
"""

from __future__ import annotations

import math

import numpy as np


def sign_test(candidate: np.ndarray, plain: np.ndarray) -> float:
    """One-sided exact sign test (McNemar) that ``candidate`` is right more often than ``plain``.

    Only the queries the two disagree on count: ``b`` that the candidate alone gets right,
    ``c`` that only the plain descriptors do. Returns ``P(X >= b)`` for ``X ~ Bin(b + c, 1/2)``
    (1 when they never disagree). A gain of two pseudo-queries in 200 passes ``min_gain``
    but not this (p = 0.25).
    """
    a, p = np.asarray(candidate, bool), np.asarray(plain, bool)
    b, c = int((a & ~p).sum()), int((~a & p).sum())
    n = b + c
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, k) for k in range(b, n + 1)) / 2 ** n)


__all__ = ['sign_test']
