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

"""Training batches of mined tuples (query, positive, negatives), augmented, per process."""

from __future__ import annotations

import numpy as np
import torch
from vpr_ros.training.data import augment, AugmentConfig, batch_size_for, resize_to, Split
from vpr_ros.training.mining import Triplets


class TupleBatches(torch.utils.data.Dataset):
    """Batch ``b`` of mined tuples as ``(images (N, 3, h, w), xy (N, 2))`` for this process.

    Batch ``b`` holds global tuples ``[b * batch_size, (b + 1) * batch_size)``; process ``rank``
    takes every ``world_size``-th of them. The batch size (H, W) is drawn from
    ``(seed..., b)`` and each tuple's augmentation from ``(seed..., b, tuple)``, so the images do
    not depend on the number of processes or workers.
    """

    def __init__(self, split: Split, triplets: Triplets, batch_size: int,
                 augment_config: AugmentConfig, seed: tuple[int, ...], rank: int = 0,
                 world_size: int = 1) -> None:
        self.split = split
        self.triplets = triplets
        self.batch_size = batch_size
        self.augment = augment_config
        self.seed = tuple(seed)
        self.rank = rank
        self.world_size = world_size
        full, rest = divmod(len(triplets), batch_size)
        self.batches = full + (1 if rest >= world_size else 0)  # every rank needs a tuple

    def __len__(self) -> int:
        return self.batches

    def tuple_ids(self, b: int) -> list[int]:
        """Global tuple indices of batch ``b`` handled by this process."""
        stop = min((b + 1) * self.batch_size, len(self.triplets))
        return list(range(b * self.batch_size, stop))[self.rank::self.world_size]

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Build batch ``b``: per tuple the query, its positive and its negatives."""
        return self._build(b, with_database=True)[:2]

    def query_batch(self, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch ``b`` with the query images only: ``(queries (B, 3, h, w), xy, ids (B, K))``.

        ``ids`` are the database indices of each tuple's positive and negatives, whose images
        :class:`vpr_ros.training.frozen.FrozenMaps` holds already; ``xy`` is ``__getitem__``'s
        and the queries are the same images.
        """
        return self._build(b, with_database=False)

    def _build(self, b: int, with_database: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= b < self.batches:
            raise IndexError(b)
        db, queries = self.split.database, self.split.queries
        ids = self.tuple_ids(b)
        first = queries.image(self.triplets.queries[ids[0]])
        size = batch_size_for(first, self.augment,
                              np.random.default_rng([*self.seed, b]))
        target = self.augment.apply_to
        images, xy, rows = [], [], []
        for t in ids:
            rng = np.random.default_rng([*self.seed, b, t])
            q = int(self.triplets.queries[t])
            q_img = queries.image(q)
            images.append(augment(q_img, size, self.augment, rng) if target != 'none'
                          else resize_to(q_img, size))
            xy.append(queries.xy[q])
            tuple_rows = [int(self.triplets.positives[t]), *self.triplets.negatives[t].tolist()]
            rows.append(tuple_rows)
            for r in tuple_rows:
                if with_database:
                    img = db.image(r)
                    images.append(augment(img, size, self.augment, rng) if target == 'all'
                                  else resize_to(img, size))
                xy.append(db.xy[r])
        return (torch.stack(images), torch.from_numpy(np.stack(xy)),
                torch.as_tensor(rows, dtype=torch.long))
