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

"""GPS weak supervision: positives, cached hard negatives, within-batch negatives."""

import numpy as np
import pytest
import torch
from training_helpers import write_route
from vpr_ros.models.checkpoints import load_model
from vpr_ros.training.data import DataConfig, load_data
from vpr_ros.training.mining import (batch_hard_negatives, describe_set, MiningConfig,
                                     plan_queries, radius_neighbours, refresh_and_mine)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    map_csv, query_csv = write_route(tmp_path_factory.mktemp('route'))
    data = load_data(DataConfig(database=str(map_csv), queries=str(query_csv),
                                val_fraction=0.0))
    return data.train, load_model('tiny-test', device='cpu')


def test_radius_neighbours_inclusive_and_excluding_self():
    db = np.array([[0.0, 0.0], [5.0, 0.0], [5.0001, 0.0], [30.0, 0.0]])
    found = radius_neighbours(db, db, 5.0, exclude_self=True)
    assert found[0].tolist() == [1]             # exactly 5 m is a positive, 5.0001 m is not
    assert found[1].tolist() == [0, 2]
    assert found[3].tolist() == []
    assert radius_neighbours(db[:1], db, 5.0)[0].tolist() == [0, 1]


def test_mined_negatives_are_far_and_harder_than_random(setup):
    split, model = setup
    config = MiningConfig(negatives=5, cache_refresh=40)
    plan = plan_queries(split, config)
    rows = np.arange(len(plan.queries))
    hard = refresh_and_mine(model, split, plan, rows, config, np.random.default_rng(0))
    rand = refresh_and_mine(model, split, plan, rows, config.replace(mode='random'),
                            np.random.default_rng(0))
    assert len(hard) == len(plan.queries) and hard.negatives.shape == (len(hard), 5)
    db, queries = split.database, split.queries
    q_xy = queries.xy[hard.queries]
    geo = np.linalg.norm(db.xy[hard.negatives] - q_xy[:, None, :], axis=-1)
    assert geo.min() > 25.0
    assert np.linalg.norm(db.xy[hard.positives] - q_xy, axis=-1).max() <= 5.0
    q_desc = describe_set(model, queries, range(len(queries)))
    db_desc = describe_set(model, db, range(len(db)))

    def neg_dist(t):
        return np.linalg.norm(db_desc[t.negatives] - q_desc[t.queries][:, None, :], axis=-1)

    assert (hard.queries == rand.queries).all()
    # per query the mined negatives are at least as close as random ones, and closer overall
    assert (neg_dist(hard).mean(axis=1) <= neg_dist(rand).mean(axis=1) + 1e-6).all()
    assert neg_dist(hard).mean() < 0.98 * neg_dist(rand).mean()
    # the hardest negative of each query is the descriptor-closest image beyond 25 m
    for q, negs in zip(hard.queries[:10], hard.negatives[:10]):
        far = np.flatnonzero(np.linalg.norm(db.xy - queries.xy[q], axis=1) > 25.0)
        d = np.linalg.norm(db_desc[far] - q_desc[q], axis=1)
        assert negs[0] == far[np.argmin(d)]
    # the best positive is the descriptor-closest of the GPS positives
    for i, q in enumerate(hard.queries[:10]):
        pos = plan.positives[int(np.flatnonzero(plan.queries == q)[0])]
        d = np.linalg.norm(db_desc[pos] - q_desc[q], axis=1)
        assert hard.positives[i] == pos[np.argmin(d)]


def test_partial_cache_keeps_positives(setup):
    split, model = setup
    config = MiningConfig(negatives=3, cache_size=10)
    plan = plan_queries(split, config)
    mined = refresh_and_mine(model, split, plan, np.arange(6), config,
                             np.random.default_rng(1))
    assert len(mined) == 6
    for i, q in enumerate(mined.queries):
        assert mined.positives[i] in plan.positives[i]
        assert q == plan.queries[i]


def test_batch_hard_negatives_far_other_tuples_and_hardest():
    # two tuples of 3 rows (query, positive, negative); positions in metres along x
    xy = torch.tensor([[0.0, 0], [2, 0], [100, 0], [30, 0], [31, 0], [200, 0]])
    desc = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0], [1, 0.1], [0, 1], [1, 0.2], [1, 0.05], [-1, 0]]), dim=1)
    idx = batch_hard_negatives(desc, xy, group_size=3, k=2, negative_m=25.0)
    # query 0: rows 3, 4 (other tuple, > 25 m); row 4 is closer in descriptor space
    assert idx[0].tolist() == [4, 3]
    # query 3 (at 30 m): rows 0, 1 are > 25 m away; own tuple rows never chosen
    assert idx[1].tolist() == [1, 0]
    idx = batch_hard_negatives(desc, xy, group_size=3, k=4, negative_m=25.0)
    assert idx[0].tolist()[3] == -1  # only 3 rows of the other tuple exist
