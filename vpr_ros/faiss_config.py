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

"""FAISS's process-wide search setting, applied by the code that searches, never on import.

FAISS switches a brute-force search from its SIMD loop to BLAS when ``queries x dim`` exceeds
``distance_compute_blas_threshold``. The default (128000) keeps batched 256-D search on the
slow loop: 100 queries x 100k x 256 took 715 ms at the default and 69 ms at 20 (faiss-cpu
1.15.1, 2 threads, IndexFlatIP, k=10); 1 query or 16384-D: no change. The two paths round
differently, so every search of vpr_ros runs with the same setting: the functions that build,
open or search an index call :func:`configure_faiss` first (it is cheap and idempotent).
"""

from __future__ import annotations

#: ``faiss.cvar.distance_compute_blas_threshold`` while vpr_ros searches.
BLAS_THRESHOLD = 20


def configure_faiss() -> None:
    """Set FAISS's BLAS threshold for vpr_ros's searches (:data:`BLAS_THRESHOLD`)."""
    import faiss

    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD


__all__ = ['BLAS_THRESHOLD', 'configure_faiss']
