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

"""Training data: place split, sources with positions, augmentations, batch building."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import write_route
from vpr_ros.errors import DataError
from vpr_ros.mapdb.sources import open_source
from vpr_ros.training.data import (augment, AugmentConfig, batch_size_for, DataConfig,
                                   load_data, make_data, nearest_distance, split_by_place)
from vpr_ros.training.mining import MiningConfig, plan_queries
from vpr_ros.training.train_config import TrainConfig


@pytest.fixture(scope='module')
def route(tmp_path_factory):
    return write_route(tmp_path_factory.mktemp('route'))


def test_split_is_by_place_with_a_gap():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 400, (2000, 2))
    config = DataConfig(val_fraction=0.25, split_cell_m=50.0, split_gap_m=25.0)
    train, val = split_by_place(xy, config, seed=3)
    assert not (train & val).any()
    cells = [tuple(c) for c in np.floor(xy / 50.0).astype(int)]
    val_cells = {c for c, v in zip(cells, val) if v}
    # whole cells: every image of a validation cell is a validation image
    assert all(v for c, v in zip(cells, val) if c in val_cells)
    assert len(val_cells) == round(0.25 * 64)
    # no training image within split_gap_m of a validation image, so no place is in both
    assert nearest_distance(xy[train], xy[val]).min() >= 25.0
    left_out = ~train & ~val
    assert left_out.any() and (nearest_distance(xy[left_out], xy[val]) < 25.0).all()
    again = split_by_place(xy, config, seed=3)
    assert (again[0] == train).all() and (again[1] == val).all()
    other = split_by_place(xy, config, seed=4)
    assert not (other[1] == val).all()


def test_load_data_from_csv_sources(route):
    map_csv, query_csv = route
    config = DataConfig(database=str(map_csv), queries=str(query_csv), split_cell_m=20.0,
                        split_gap_m=5.0)
    data = load_data(config, seed=0)
    assert not data.train.same and not data.val.same
    assert len(data.train.database) + len(data.val.database) + \
        data.report['left_out_in_gap'] <= 80
    # positions are metres along the route: 2 m apart for the map pass
    step = np.linalg.norm(np.diff(data.train.database.xy, axis=0), axis=1)
    assert np.median(step) == pytest.approx(2.0, abs=0.05)
    gap = nearest_distance(np.concatenate([data.train.database.xy, data.train.queries.xy]),
                           np.concatenate([data.val.database.xy, data.val.queries.xy]))
    assert gap.min() >= 5.0
    image = data.train.queries.image(0)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8


def test_queries_without_positives_are_reported(route, caplog):
    map_csv, _ = route
    entries = open_source(map_csv).entries
    # second traversal whose first 6 frames lie 1 km away (no positive within 5 m)
    far = [e.__class__(e.name, e.lat + (0.009 if i < 6 else 0.0), e.lon, e.alt, e.load)
           for i, e in enumerate(entries)]
    data = make_data(entries, far, DataConfig(val_fraction=0.0))
    with caplog.at_level(logging.WARNING):
        plan = plan_queries(data.train, MiningConfig())
    assert len(plan.dropped_no_positive) == 6
    assert len(plan.queries) == len(entries) - 6
    assert '6 of 40 training queries have no database image within 5.0 m' in caplog.text
    assert entries[0].name in caplog.text
    # nobody has a positive: a clear error, not an empty training run
    nowhere = [e.__class__(e.name, e.lat + 0.009, e.lon, e.alt, e.load) for e in entries]
    data = make_data(entries, nowhere, DataConfig(val_fraction=0.0))
    with pytest.raises(DataError, match=r'no usable training query: 40 of 40 have no '
                                        r'positive within positive_m=5.0 m'):
        plan_queries(data.train, MiningConfig())


def test_augment_is_deterministic_and_sized():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    config = AugmentConfig(perspective_p=1.0, hue=0.05)
    a = augment(image, (50, 70), config, np.random.default_rng([1, 2]))
    b = augment(image, (50, 70), config, np.random.default_rng([1, 2]))
    c = augment(image, (50, 70), config, np.random.default_rng([1, 3]))
    assert a.shape == (3, 50, 70) and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    sizes = {batch_size_for(image, config, np.random.default_rng(s)) for s in range(20)}
    assert len(sizes) > 10  # arbitrary sizes reach the resizer (AS-Geo)
    assert all(36 <= h <= 84 and 48 <= w <= 112 for h, w in sizes)
    native = AugmentConfig(apply_to='none')
    assert batch_size_for(image, native, np.random.default_rng(0)) == (60, 80)


def test_example_config_is_the_defaults():
    path = Path(__file__).resolve().parents[1] / 'config' / 'train.yaml'
    assert TrainConfig.from_yaml(path) == TrainConfig()
