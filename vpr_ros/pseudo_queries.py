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

"""Query-like views of map images, for when no queries with known positions are at hand.

``vpr-ros calibrate`` (without ``--queries``) and the adaptation's held-out check localise the
map's own images, each with its own entry left out; a random homography and photometric
change make them look less like the entry they came from. Made from the map's source images
they keep the camera's resolution, as real queries do; made from the stored thumbnails
(96x128 by default) they are enlarged to the model's input and look blurrier than any query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from vpr_ros.models.geowarp import identity_points, warp


def pseudo_query(thumbnail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make a query-like view of a map image: a random homography and photometric change.

    The corners move by up to 10 % of the frame (kornia homography via GeoWarp's ``warp``),
    then gain, gamma, blur and noise vary, so the map's own images stand in for real queries
    when no calibration set with positions is given.
    """
    image = torch.from_numpy(np.array(thumbnail)).permute(2, 0, 1).float()[None] / 255.0
    points = identity_points(1) + torch.from_numpy(rng.uniform(-0.1, 0.1, (1, 4, 2))).float()
    view = warp(image, points)[0].permute(1, 2, 0).numpy()
    view = np.clip(rng.uniform(0.6, 1.4) * view, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    view = (view * 255.0).astype(np.float32)
    if rng.random() < 0.5:
        view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.3, 1.0))
    view += rng.normal(0.0, rng.uniform(1.0, 6.0), view.shape).astype(np.float32)
    return np.clip(view, 0, 255).astype(np.uint8)


class PseudoQueries(Sequence):
    """Pseudo-queries of map ``entries``, each made from ``load(entry)`` when it is read.

    A few hundred source images at the camera's resolution need not sit in memory at once.
    Each view draws from its own generator (``seed``, entry), so reading in any order, or
    twice, gives the same images.
    """

    def __init__(self, load: Callable[[int], np.ndarray], entries: Sequence[int],
                 seed: int) -> None:
        self.load = load
        self.entries = [int(i) for i in entries]
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        entry = self.entries[item]
        return pseudo_query(self.load(entry), np.random.default_rng([self.seed, entry]))
