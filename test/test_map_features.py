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

"""GeoWarp features stored in the map (issue 18, item 3): cold re-ranking equals warm.

Real ``tiny-test`` maps; the thumbnail size is not the default, so the stored shape must come
from the map.
"""

from __future__ import annotations

import logging
import time

from mapdb_helpers import texture, textured_map
import numpy as np
import pytest
import torch
from vpr_ros.errors import MapError
from vpr_ros.images import to_tensor
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import MapDB
from vpr_ros.runtime import map_features
from vpr_ros.runtime.backends import faster_regression

N = 12
THUMB = (64, 96)


@pytest.fixture(scope='module')
def feat_map(tmp_path_factory):
    return textured_map(tmp_path_factory.mktemp('featmap'), N, thumbnail_size=THUMB)


@pytest.fixture(scope='module')
def model(feat_map):
    return MapDB.open(feat_map).load_model('cpu')


def test_build_stores_float16_features_at_the_thumbnail_size(feat_map, model):
    db = MapDB.open(feat_map)
    record = db.manifest[map_features.KEY]
    assert record['file'] in db.manifest['files']                 # listed with its sha256
    assert record['thumbnail'] == list(THUMB)
    assert record['model_fingerprint'] == db.manifest['model']['fingerprint']
    stored = map_features.load_local_features(db)
    assert stored.dtype == np.float16
    thumbs = torch.stack([to_tensor(t) for t in db.thumbnails(np.arange(N))])
    with torch.inference_mode():
        dense = model.local_features(thumbs).numpy()
    assert stored.shape == dense.shape == (N, dense.shape[1], THUMB[0] // 16, THUMB[1] // 16)
    np.testing.assert_allclose(stored.astype(np.float32), dense, rtol=2e-3, atol=2e-3)


def test_cold_rerank_uses_stored_features_and_matches_computed_ones(feat_map, model):
    config = LocalizerConfig(rerank_weight=1.0)          # every re-ranked candidate scored
    stored = Localizer(MapDB.open(feat_map), model, config)
    computed = Localizer(MapDB.open(feat_map), model, config)
    computed.stored_features = None                    # the on-the-fly path, as before
    for i in (0, 5, 11):
        a, b = stored.localize(texture(i)), computed.localize(texture(i))
        assert [c.index for c in a.candidates] == [c.index for c in b.candidates]
        ra = np.array([c.rerank_score for c in a.candidates[:5]])
        rb = np.array([c.rerank_score for c in b.candidates[:5]])
        np.testing.assert_allclose(ra, rb, atol=1e-3)
        assert a.candidates[0].index == i
    assert len(stored._cache) == 0                       # no candidate ever went through the net
    assert len(computed._cache) > 0


def test_stale_features_are_ignored_then_refreshed(tmp_path, caplog):
    path = textured_map(tmp_path, 6)
    db = MapDB.open(path)
    record = dict(db.manifest[map_features.KEY], model_fingerprint='0' * 64)
    db.update_manifest(**{map_features.KEY: record})
    assert not map_features.is_current(MapDB.open(path))
    with caplog.at_level(logging.WARNING):
        loc = Localizer.open(path, device='cpu')
    assert loc.stored_features is None
    assert 'made with model 000' in caplog.text
    assert loc.localize(texture(3)).candidates[0].index == 3      # still re-ranks
    assert map_features.ensure_local_features(MapDB.open(path))
    assert map_features.is_current(MapDB.open(path))
    assert not map_features.ensure_local_features(MapDB.open(path))   # nothing to do
    assert Localizer.open(path, device='cpu').stored_features is not None


def test_a_corrupted_features_file_is_refused(tmp_path):
    path = textured_map(tmp_path, 4)
    name = MapDB.open(path).manifest[map_features.KEY]['file']
    data = bytearray((path / name).read_bytes())
    data[-3] ^= 0xFF
    (path / name).write_bytes(bytes(data))
    with pytest.raises(MapError, match=name):
        MapDB.open(path)


def test_fit_geowarp_adds_features_to_a_map_that_lacks_them(tmp_path):
    from vpr_ros.training.geowarp_trainer import fit_geowarp, GeoWarpFitConfig

    path = textured_map(tmp_path, 6)
    MapDB.open(path).update_manifest(**{map_features.KEY: {}})
    assert not map_features.is_current(MapDB.open(path))
    fit_geowarp(path, GeoWarpFitConfig(iterations=2, batch_size=2, device='cpu'),
                progress=False)
    assert map_features.is_current(MapDB.open(path))


@pytest.mark.parametrize('size', [(6, 8), (4, 6), (15, 15), (3, 20)])
def test_folded_regression_equals_the_published_one(size):
    from vpr_ros.models.geowarp import correlation, WarpingRegression
    from vpr_ros.runtime.fold import channel_groups, FoldedRegression

    torch.manual_seed(0)
    regression = WarpingRegression().eval()
    torch.nn.init.normal_(regression.linear.weight, std=0.1)        # not the identity warp
    for m in regression.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.running_mean, -0.1, 0.1)
    folded = FoldedRegression(regression, size).eval()
    keep, _ = channel_groups(*size)
    assert len(keep) <= 225 and (len(keep) < 225) == (min(size) < 15)
    if size == (6, 8):
        assert len(keep) == 135                   # 96x128 thumbnails, stride 16: 40 % less
    f_q, f_p = torch.randn(1, 32, *size), torch.randn(5, 32, *size)
    corr = correlation(f_q, f_p)
    with torch.no_grad():
        np.testing.assert_allclose(folded(corr).numpy(), regression(corr).numpy(), atol=2e-5)
        back = correlation(f_p, f_q)                # the other direction folds the same way
        np.testing.assert_allclose(folded(back).numpy(), regression(back).numpy(), atol=2e-5)


def test_query_features_come_from_the_descriptor_pass_at_the_model_input_size(tmp_path):
    """Thumbnails at the model's input size: one backbone pass per frame, the same scores."""
    from vpr_ros.images import resize_to

    path = textured_map(tmp_path, N, thumbnail_size=(64, 80))    # tiny-test's input size
    db = MapDB.open(path)
    loc = Localizer(db, db.load_model('cpu'),
                    LocalizerConfig(sequence_check=False, rerank_weight=1.0))   # all p scored
    assert loc.local_from_forward
    calls = []
    dense = loc.runtime.local_features
    loc.runtime.local_features = lambda x: calls.append(len(x)) or dense(x)
    query = texture(5)
    estimate = loc.localize(query)
    assert calls == []                                 # no second pass over the query
    assert estimate.candidates[0].index == 5
    idx = np.array([c.index for c in estimate.candidates if np.isfinite(c.rerank_score)])
    assert len(idx) == loc.config.geowarp.num_reranked
    # A separate pass over the query's thumbnail (uint8, as the map's) scores alike.
    separate = loc._rerank_scores(resize_to(query, (64, 80)), idx) / 225.0
    forward = [c.rerank_score for c in estimate.candidates if np.isfinite(c.rerank_score)]
    np.testing.assert_allclose(forward, separate, atol=5e-3)
    assert calls == [1]
    # Thumbnails of another size than the model's input: the query gets its own pass.
    other = Localizer(MapDB.open(textured_map(tmp_path / 'b', N, thumbnail_size=THUMB)),
                      db.load_model('cpu'), LocalizerConfig(sequence_check=False))
    assert not other.local_from_forward


def test_resize_to_matches_the_model_resize_and_enlarges_smoothly():
    """Enlarged thumbnails are what the model's resizer makes; shrunk ones are area averages."""
    from vpr_ros.images import resize_to
    from vpr_ros.models.resizer import bilinear_resize

    import cv2

    image = texture(3, (120, 160))
    out = resize_to(image, (240, 320))                   # enlarging: the model's resize
    assert out.shape == (240, 320, 3) and out.dtype == np.uint8
    ref = bilinear_resize(to_tensor(image)[None], (240, 320))[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(out.astype(float) - ref).max() <= 0.5 + 1e-3
    small = resize_to(image, (60, 80))                   # shrinking: area averaging, as before
    np.testing.assert_array_equal(small, cv2.resize(image, (80, 60),
                                                    interpolation=cv2.INTER_AREA))
    big = resize_to(image, (240, 320)).astype(int)
    # Enlarging interpolates: a 2x nearest-neighbour copy would repeat every column.
    assert np.abs(np.diff(big, axis=1)).mean() > 0 and (big[:, 1::2] != big[:, ::2]).any()
    assert resize_to(image, (120, 160)) is image


def test_faster_regression_picks_the_faster_module_and_times_both():
    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.02)
            return x.mean()

    class Fast(torch.nn.Module):
        def forward(self, x):
            return x.mean()

    name, ms = faster_regression({'slow': Slow(), 'fast': Fast()}, 4)
    assert name == 'fast' and set(ms) == {'slow', 'fast'}
    assert ms['slow'] >= 20.0 > ms['fast']
    name, _ = faster_regression({'fast': Fast(), 'slow': Slow()}, 4)
    assert name == 'fast'
