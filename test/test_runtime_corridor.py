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

"""Issue 18 on real data (Corridor, 111 refs 1 m apart, 111 queries, default model).

1. GeoWarp features stored in the map (float16) re-rank like features computed on the fly:
   R@1 with re-ranking within one query.
2. The ONNX export, in ONNX Runtime, gives the same Estimate as torch for every query: same
   top-1, positions equal, sigma within 1 % (calibrated map).
"""

from __future__ import annotations

from pathlib import Path
import sys

import numpy as np
import pytest
from vpr_ros.calibrate import calibrate_map
from vpr_ros.calibration import CalibrationConfig, store_calibration
from vpr_ros.images import load_image
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import MapDB
from vpr_ros.runtime.export import export_map
from vpr_ros.training.geowarp_trainer import fit_geowarp, GeoWarpFitConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))
from corridor_localize import build_corridor_map, corridor_truth, evaluate  # noqa: E402, I100

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def corridor(shared_data, tmp_path_factory):
    """Build the Corridor map (GeoWarp fitted briefly, calibrated); return it and the queries."""
    refs, queries, positives, ref_ll = corridor_truth(shared_data / 'corridor')
    truth = np.array([ref_ll[sorted(p)].mean(axis=0) for p in positives])
    images = [load_image(p) for p in queries]
    path = build_corridor_map(tmp_path_factory.mktemp('corridor'), refs, ref_ll)
    fit_geowarp(path, GeoWarpFitConfig(iterations=6, batch_size=8, device='cpu'),
                progress=False)
    model = MapDB.open(path).load_model('cpu')
    loc = Localizer(MapDB.open(path), model, LocalizerConfig(backend='torch'))
    cal, report = calibrate_map(loc, CalibrationConfig(pseudo_queries=150), progress=False)
    store_calibration(MapDB.open(path), cal, report)
    return path, model, images, positives, truth


@pytest.mark.timeout(2400)      # on a loaded 2-core machine the map alone takes minutes
def test_stored_features_keep_the_recall(corridor):
    path, model, images, positives, truth = corridor
    torch_cfg = LocalizerConfig(backend='torch')
    stored = Localizer(MapDB.open(path), model, torch_cfg)
    computed = Localizer(MapDB.open(path), model, torch_cfg)
    assert stored.stored_features is not None
    computed.stored_features = None                 # features from the thumbnails, fp32
    r_stored = evaluate(stored, images, positives, truth)
    r_computed = evaluate(computed, images, positives, truth)
    print(f'corridor: stored features {r_stored}\ncomputed {r_computed}')
    assert abs(r_stored['R@1'] - r_computed['R@1']) * len(images) <= 1 + 1e-9
    assert r_stored['R@1'] >= 0.7


@pytest.mark.timeout(2400)
def test_onnxruntime_gives_the_torch_estimate(corridor):
    path, model, images, positives, truth = corridor
    export_map(path)
    torch_loc = Localizer(MapDB.open(path), model, LocalizerConfig(backend='torch'))
    ort = Localizer(MapDB.open(path), model, LocalizerConfig(backend='onnxruntime'))
    assert ort.runtime.name == 'onnxruntime'
    a, b = torch_loc.localize_batch(images), ort.localize_batch(images)
    same_top1 = [ea.candidates[0].index == eb.candidates[0].index for ea, eb in zip(a, b)]
    assert all(same_top1), f'{same_top1.count(False)} queries changed their top-1'
    for ea, eb in zip(a, b):
        assert (eb.lat, eb.lon) == pytest.approx((ea.lat, ea.lon), abs=1e-7)   # 1 cm
        assert eb.sigma_m == pytest.approx(ea.sigma_m, rel=0.01)
        assert ea.status == eb.status
