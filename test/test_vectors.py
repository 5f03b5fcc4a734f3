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

"""unit_rows: unit-length rows in the asked dtype, zero rows kept at zero."""

import numpy as np

from vpr_ros.vectors import unit_rows


def test_rows_become_unit_length_in_the_asked_dtype_and_zero_rows_stay_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    out = unit_rows(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=1e-6)
    assert unit_rows(x, np.float64).dtype == np.float64
    one = unit_rows(np.array([0.0, 2.0]), np.float64)      # a single vector: its last axis
    np.testing.assert_array_equal(one, [0.0, 1.0])
    stack = unit_rows(np.full((2, 3, 4), 2.0))             # any leading axes
    np.testing.assert_allclose(np.linalg.norm(stack, axis=-1), 1.0, rtol=1e-6)
