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

"""Recall@N protocol on a hand-made example, and the VPR-Bench ground-truth readers."""

from __future__ import annotations

import numpy as np
import pytest
from vpr_ros.errors import DataError
from vpr_ros.evaluation import recall

DB = np.array([[0, 0], [10, 0], [20, 0], [30, 0], [100, 0]], float) + [584000.0, 4476000.0]
QUERIES = np.array([[0, 0], [55, 0], [130, 0], [12, 0], [95, 0]], float) + [584000.0, 4476000.0]
PREDICTIONS = np.array([[0, 4, 3],     # positives {0,1,2}: hit at rank 1
                        [4, 3, 0],     # positive {3} at exactly 25.0 m: hit at rank 2
                        [4, 3, 2],     # no positive within 25 m: a failure that still counts
                        [4, -1, -1],   # FAISS "no result" never matches
                        [3, 2, 4]])    # positive {4}: hit at rank 3


def test_positives_are_inclusive_radius_neighbours():
    positives = recall.positives_within(QUERIES, DB, 25.0)
    assert [p.tolist() for p in positives] == [[0, 1, 2], [3], [], [0, 1, 2, 3], [4]]


def test_recall_hand_made_example():
    result = recall.recall_at_n(QUERIES, DB, PREDICTIONS, recall_values=(1, 2, 3))
    # hits at N: q0 from 1, q1 from 2, q4 from 3; divided by all 5 queries
    assert result.recalls == pytest.approx((20.0, 40.0, 60.0))
    assert result.num_queries == 5
    assert result.num_queries_without_positives == 1
    assert str(result) == 'R@1: 20.0, R@2: 40.0, R@3: 60.0'
    assert result.as_dict() == pytest.approx({1: 20.0, 2: 40.0, 3: 60.0})


def test_recall_threshold_and_default_values():
    tight = recall.recall_at_n(QUERIES, DB, PREDICTIONS, recall_values=(1, 2, 3),
                               threshold=24.9)
    assert tight.recalls == pytest.approx((20.0, 20.0, 40.0))  # q1 loses its 25.0 m positive
    assert tight.num_queries_without_positives == 2
    # N beyond the predictions' width uses all of them (like preds[:N])
    wide = recall.recall_at_n(QUERIES, DB, PREDICTIONS)
    assert wide.recall_values == (1, 5, 10, 20)
    assert wide.recalls == pytest.approx((20.0, 60.0, 60.0, 60.0))


def test_recall_errors():
    with pytest.raises(DataError, match='predictions must be'):
        recall.recall_at_n(QUERIES, DB, PREDICTIONS[:3])
    with pytest.raises(DataError, match='increasing positive integers'):
        recall.recall_at_n(QUERIES, DB, PREDICTIONS, recall_values=(5, 1))
    with pytest.raises(DataError, match=r'query_utm must be \(N, 2\)'):
        recall.recall_at_n(QUERIES[:, 0], DB, PREDICTIONS)


def test_corridor_ground_truth_loads(shared_data):
    gt = recall.load_vprbench_csv(shared_data / 'corridor' / 'ground_truth.csv')
    assert len(gt.query_names) == 111 and len(gt.ref_names) == 111
    assert gt.query_names[0] == '0000000.jpg' and gt.ref_names[-1] == '0000110.jpg'
    assert gt.positives[0].tolist() == [0, 1, 2]
    assert gt.positives[50].tolist() == [48, 49, 50, 51, 52]
    assert sum(len(p) == 5 for p in gt.positives) == 107
    # identity retrieval finds every query at rank 1; a one-off shift at rank 1 too
    identity = np.arange(111)[:, None]
    assert recall.recall_from_positives(identity, gt.positives, (1,)) == ((100.0,), 0)
    far = (np.arange(111)[:, None] + 3) % 111
    recalls, _ = recall.recall_from_positives(far, gt.positives, (1,))
    assert recalls[0] == 0.0
    # the pickled upstream file says the same, but only when pickle is allowed explicitly
    npy = shared_data / 'corridor' / 'ground_truth_new.npy'
    with pytest.raises(DataError, match='pickled object array'):
        recall.load_vprbench_npy(npy)
    upstream = recall.load_vprbench_npy(npy, allow_pickle=True)
    assert [p.tolist() for p in upstream] == [p.tolist() for p in gt.positives]


def test_vprbench_csv_errors(tmp_path):
    (tmp_path / 'gt.csv').write_text('query,ref_matches\nq.jpg,a.jpg;zz.jpg\n')
    with pytest.raises(DataError, match=r"gt.csv:2: reference\(s\) \['zz.jpg'\]"):
        recall.load_vprbench_csv(tmp_path / 'gt.csv', ref_names=['a.jpg'])
    with pytest.raises(DataError, match='no ref/ folder'):
        recall.load_vprbench_csv(tmp_path / 'gt.csv')
    (tmp_path / 'bad.csv').write_text('image,lat\n')
    with pytest.raises(DataError, match='expected the header query,ref_matches'):
        recall.load_vprbench_csv(tmp_path / 'bad.csv', ref_names=['a.jpg'])
