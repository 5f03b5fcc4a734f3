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

"""Row-vector helpers shared by descriptors, GeoWarp features and synthetic maps."""

from __future__ import annotations

from typing import Any

import numpy as np


def unit_rows(x: Any, dtype: Any = np.float32) -> np.ndarray:
    """Return ``x`` as ``dtype`` with each row (last axis) scaled to unit length.

    Rows of zeros stay zero (the norm is floored at 1e-12) rather than turning into NaN, which
    FAISS would then rank arbitrarily.
    """
    x = np.asarray(x, dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
