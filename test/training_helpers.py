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

"""Shared helpers of the training tests: a tiny synthetic route and a small TrainConfig."""

from __future__ import annotations

from pathlib import Path

from vpr_ros.synth import SynthConfig, SynthRoute, write_csv_source
from vpr_ros.training.data import AugmentConfig, DataConfig
from vpr_ros.training.mining import MiningConfig
from vpr_ros.training.train_config import TrainConfig

# 40 frames 2 m apart (78 m): 5 m positives are +-2 frames, 25 m negatives exist everywhere.
ROUTE = SynthConfig(frames=40, spacing_m=2.0, image_size=(48, 64))


def write_route(folder: Path) -> tuple[Path, Path]:
    """Render the map and query passes as CSV sources; return (map_csv, query_csv)."""
    route = SynthRoute(ROUTE)
    return (write_csv_source(route.map_pass(), folder / 'map'),
            write_csv_source(route.query_pass(), folder / 'query'))


def tiny_config(out: Path, database: Path, queries: Path | None = None,
                **changes) -> TrainConfig:
    """Return a TrainConfig that runs in seconds on one CPU core with the tiny-test model."""
    config = TrainConfig(
        model='tiny-test', out_dir=str(out), device='cpu', epochs=2, batch_size=4, lr=1e-4,
        queries_per_epoch=8, val_positive_m=5.0,
        data=DataConfig(database=str(database), queries=str(queries or ''), split_cell_m=20.0,
                        split_gap_m=5.0),
        mining=MiningConfig(negatives=2, batch_negatives=1, cache_refresh=8),
        augment=AugmentConfig())
    return config.replace(**changes) if changes else config
