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

"""Validation recall@1/5/10 of a model on a split (benchmark protocol), in every process."""

from __future__ import annotations

import numpy as np
import torch
from vpr_ros.evaluation.recall import recall_from_positives
from vpr_ros.faiss_config import configure_faiss
from vpr_ros.models.descriptor import DescriptorModel
from vpr_ros.training.data import Split
from vpr_ros.training.distributed import DistContext
from vpr_ros.training.mining import describe_set, radius_neighbours

RECALL_VALUES = (1, 5, 10)


def validate(model: DescriptorModel, split: Split, *, positive_m: float, batch_size: int = 32,
             ctx: DistContext | None = None) -> dict[str, float]:
    """Recall@1/5/10 (percent, benchmark protocol) of the queries of ``split`` on its database.

    When the queries are the database images, each query's own image is removed from its
    predictions and its positives.
    """
    import faiss

    ctx = ctx or DistContext(0, 1, torch.device('cpu'))
    db, queries = split.database, split.queries
    kw = {'batch_size': batch_size, 'rank': ctx.rank, 'world_size': ctx.world_size}
    db_desc = describe_set(model, db, range(len(db)), **kw)
    q_desc = db_desc if split.same else describe_set(model, queries, range(len(queries)), **kw)
    k = min(max(RECALL_VALUES) + int(split.same), len(db))
    configure_faiss()
    index = faiss.IndexFlatL2(db_desc.shape[1])
    index.add(np.ascontiguousarray(db_desc, np.float32))
    _, preds = index.search(np.ascontiguousarray(q_desc, np.float32), k)
    if split.same:
        preds = np.stack([np.concatenate([row[row != i], [-1]])[:k - 1]
                          for i, row in enumerate(preds)])
    positives = radius_neighbours(queries.xy, db.xy, positive_m, exclude_self=split.same)
    recalls, _ = recall_from_positives(preds, positives, RECALL_VALUES)
    return {f'R@{n}': r for n, r in zip(RECALL_VALUES, recalls)}
