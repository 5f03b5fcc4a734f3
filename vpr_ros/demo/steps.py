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

"""Numbered progress lines of the demo's steps, with the time each took."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator


class Steps:
    """Numbered progress lines with the time of every step (``timings_s``)."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = total
        self.done = 0
        self.timings_s: dict[str, float] = {}
        self.stream = stream or sys.stdout

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, key: str, title: str) -> Iterator[None]:
        self.done += 1
        self.say(f'\n[{self.done}/{self.total}] {title}')
        start = time.perf_counter()
        yield
        took = time.perf_counter() - start
        self.timings_s[key] = round(took, 1)
        self.say(f'[{self.done}/{self.total}] done in {took:.1f} s')
