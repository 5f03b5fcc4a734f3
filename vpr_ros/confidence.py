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

"""Confidence features of one retrieval: what the calibrated sigma is a function of.

Defined here, computed here, in one order (:data:`FEATURES`): the localizer calls
:func:`confidence_features` for every frame and ``vpr_ros.calibration`` fits the sigma on
them. A new feature is added here (and the calibration's version bumped).
"""

from __future__ import annotations

import math

import numpy as np

#: The features, in the order of the calibration's fitted weights:
#: ``score`` - the chosen candidate's score (GeoWarp when it was re-ranked, else global);
#: ``global_score`` - the top-1's global descriptor similarity;
#: ``margin`` - top-1 global score minus the best one of a candidate farther than the margin
#: radius (a distinct place that looks as good means ambiguity);
#: ``log_spread`` - log(1 + RMS distance of all candidates to the top-1, m);
#: ``rerank_gain`` - how much GeoWarp raised the top-1 over the retrieval top-1.
FEATURES = ('score', 'global_score', 'margin', 'log_spread', 'rerank_gain')


def confidence_features(glob: np.ndarray, rerank: np.ndarray, order: np.ndarray,
                        dist_m: np.ndarray, margin_radius_m: float) -> dict[str, float]:
    """Return the :data:`FEATURES` of candidates already in final order.

    Args:
        glob: global scores of the candidates, in final order.
        rerank: their GeoWarp scores (NaN where not re-ranked), in final order.
        order: the permutation from retrieval to final order (``order[i]`` is the retrieval
            rank of the i-th final candidate).
        dist_m: each candidate's distance to the top-1 (m).
        margin_radius_m: candidates farther than this count as other places.
    """
    reranked = np.isfinite(rerank)
    far = dist_m > margin_radius_m
    best_far = glob[far].max() if far.any() else glob.min()
    spread = math.sqrt(float(np.mean(dist_m ** 2)))
    gain = float(rerank[0] - rerank[np.argmax(order == 0)]) if reranked[0] else 0.0
    top_score = float(rerank[0]) if reranked[0] else float(glob[0])
    return {'score': top_score, 'global_score': float(glob[0]),
            'margin': float(glob[0] - best_far), 'log_spread': math.log1p(spread),
            'rerank_gain': gain}


def feature_vector(features: dict[str, float]) -> np.ndarray:
    """Return the features of one frame as an array in :data:`FEATURES` order."""
    return np.array([features[f] for f in FEATURES], np.float64)
