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

"""Building maps: every source kind, search of map images, resume, atomicity, overwrite."""

from __future__ import annotations

import csv
import logging
import shutil

from mapdb_helpers import (describe_files, route, test_model, texture, write_bag,
                           write_csv_source)
import numpy as np
from pyproj import Transformer
import pytest

from vpr_ros.errors import MapError
from vpr_ros.mapdb import build_map, BuildConfig, MapDB, open_source
from vpr_ros.mapdb.build import work_dir_for
from vpr_ros.mapdb.sources import Entry
from vpr_ros.models.descriptor import PRESETS

CFG = BuildConfig(batch_size=2, chunk_size=4, thumbnail_size=(24, 32))


@pytest.fixture
def model(monkeypatch):
    return test_model(monkeypatch)


def test_csv_build_search_top1(tmp_path, model):
    path = write_csv_source(tmp_path / 'src', 10)
    out = build_map(path, tmp_path / 'route.vprmap', CFG, model=model, progress=False)
    names = sorted(p.name for p in out.iterdir())
    # Each entry's GeoWarp features are stored too, under a content-addressed name.
    features = [n for n in names if n.startswith('local-features-') and n.endswith('.npy')]
    assert len(features) == 1
    assert [n for n in names if n not in features] == [
        'descriptors.npy', 'entries.csv', 'index.faiss', 'manifest.json', 'model.pt',
        'positions.npy', 'thumbnails.npy']
    assert not work_dir_for(out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp dirs left
    db = MapDB.open(out, model=model)
    assert len(db) == 10 and db.descriptor_dim == model.descriptor_dim
    queries = describe_files(model, sorted((tmp_path / 'src' / 'img').glob('*.png')))
    indices, scores = db.search(queries, k=3)
    assert indices.shape == (10, 3)
    np.testing.assert_array_equal(indices[:, 0], np.arange(10))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    np.testing.assert_array_equal(db.positions(indices[:, 0]), route(10))
    assert db.names[3] == 'img/0003.png' and db.stamps[3] is None
    thumbs = db.thumbnails(indices[:2])
    assert thumbs.shape == (2, 3, 24, 32, 3) and thumbs.dtype == np.uint8
    m = db.manifest
    assert m['entries'] == 10 and m['calibration'] == {} and m['altitude_known']
    assert m['thumbnails']['bytes_per_entry'] == 24 * 32 * 3
    assert m['model']['fingerprint'] == model.fingerprint()
    assert m['extent']['route_length_m'] == pytest.approx(45.0, rel=1e-2)


def test_vg_folder_build(tmp_path, model):
    utm = [(584310.52 + 7 * i, 4477349.03 + 5 * i) for i in range(5)]
    import cv2
    (tmp_path / 'db').mkdir()
    for i, (e, n) in enumerate(utm):
        cv2.imwrite(str(tmp_path / 'db' / f'@{e:.2f}@{n:.2f}@17@T@@.jpg'), texture(i))
    db = MapDB.open(build_map(tmp_path / 'db', tmp_path / 'vg.vprmap', CFG, model=model,
                              progress=False))
    to_utm = Transformer.from_crs('EPSG:4326', 'EPSG:32617', always_xy=True)
    e2, n2 = to_utm.transform(db.positions(np.arange(5))[:, 1], db.positions(np.arange(5))[:, 0])
    np.testing.assert_allclose(np.stack([e2, n2], 1), np.array(utm), atol=0.01)
    assert np.isnan(db.positions(0)[2]) and not db.manifest['altitude_known']
    assert db.origin[2] == 0.0


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_bag_build(tmp_path, model, storage):
    s = 1_000_000_000
    fixes = [(i * s, 47.0 + i * 1e-4, 8.0, 400.0, -1 if i == 4 else 0) for i in range(8)]
    frames = [(i * s + s // 2, texture(i)) for i in range(7)]
    bag = write_bag(tmp_path / 'bag', frames, fixes, storage=storage)
    out = build_map(bag, tmp_path / 'bag.vprmap', CFG, model=model, progress=False)
    db = MapDB.open(out)
    # frames at 3.5 and 4.5 s touch the NO_FIX at 4 s
    assert db.manifest['source']['skipped'] == {'gnss_no_fix': 2}
    np.testing.assert_allclose(db.positions(np.arange(5))[:, 0],
                               47.0 + np.array([0.5, 1.5, 2.5, 5.5, 6.5]) * 1e-4, atol=1e-12)
    assert db.stamps == [s // 2, 3 * s // 2, 5 * s // 2, 11 * s // 2, 13 * s // 2]
    assert db.names[0] == f'/cam/image@{s // 2}'
    # map verify reads the sampled frames from the bag again: they are what the map holds
    from vpr_ros.mapdb.sources import check_against_source
    assert check_against_source(db, model=model).endswith(
        'of 5 sampled entries are those of their source images')


class _FailingLoad:
    """Loader that counts calls and raises once the budget is used up (a killed build)."""

    def __init__(self, load, counter, budget):
        self.load, self.counter, self.budget = load, counter, budget

    def __call__(self):
        self.counter.append(1)
        if self.budget is not None and len(self.counter) > self.budget:
            raise KeyboardInterrupt('simulated kill')
        return self.load()


def _wrap(report, counter, budget):
    report.entries = [Entry(e.name, e.lat, e.lon, e.alt, _FailingLoad(e.load, counter, budget),
                            e.stamp_ns, e.heading_deg) for e in report.entries]
    return report


def test_interrupted_build_resumes(tmp_path, model, caplog):
    path = write_csv_source(tmp_path / 'src', 10)
    out = tmp_path / 'route.vprmap'
    calls = []
    with pytest.raises(KeyboardInterrupt):
        build_map(_wrap(open_source(path), calls, budget=6), out, CFG, model=model,
                  progress=False)
    work = work_dir_for(out)
    assert not out.exists()
    assert sorted(p.name for p in work.iterdir()) == ['chunk-000000.npz', 'job.json']
    assert not list(tmp_path.rglob('manifest.json'))  # manifest only in finished maps

    calls.clear()
    with caplog.at_level(logging.INFO, logger='vpr_ros.mapdb.build'):
        build_map(_wrap(open_source(path), calls, budget=None), out, CFG, model=model,
                  progress=False)
    assert len(calls) == 6  # chunk 0 (entries 0-3) was not described again
    assert 'resuming' in caplog.text and not work.exists()

    fresh = build_map(path, tmp_path / 'fresh.vprmap', CFG, model=model, progress=False)
    a, b = MapDB.open(out), MapDB.open(fresh)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)
    np.testing.assert_array_equal(a.positions(np.arange(10)), b.positions(np.arange(10)))
    np.testing.assert_array_equal(a.thumbnails(np.arange(10)), b.thumbnails(np.arange(10)))
    assert (out / 'entries.csv').read_text() == (fresh / 'entries.csv').read_text()
    assert a.names == b.names


def test_stale_work_dir_is_discarded(tmp_path, model):
    path = write_csv_source(tmp_path / 'src', 6)
    out = tmp_path / 'route.vprmap'
    with pytest.raises(KeyboardInterrupt):
        build_map(_wrap(open_source(path), [], budget=5), out, CFG, model=model,
                  progress=False)
    other = CFG.replace(thumbnail_size=(16, 16))  # another job: old chunks must not be used
    db = MapDB.open(build_map(path, out, other, model=model, progress=False))
    assert db.thumbnails(0).shape == (16, 16, 3)


def test_overwrite(tmp_path, model):
    path = write_csv_source(tmp_path / 'src', 4)
    out = build_map(path, tmp_path / 'r.vprmap', CFG, model=model, progress=False)
    with pytest.raises(MapError, match='exists already, not overwriting'):
        build_map(path, out, CFG, model=model, progress=False)
    shutil.copy(path.parent / 'img/0000.png', path.parent / 'img/extra.png')
    with open(path, 'a', newline='') as f:
        csv.writer(f).writerow(['img/extra.png', 47.5, 8.5, 400.0])
    build_map(path, out, CFG, model=model, overwrite=True, progress=False)
    assert len(MapDB.open(out)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ['r.vprmap', 'src']


def test_one_loader_for_all_chunks_equals_chunk_by_chunk(tmp_path, model):
    """describe_chunks (one DataLoader, worker processes) gives extract_chunk's results."""
    from vpr_ros.mapdb.describe import describe_chunks, extract_chunk

    entries = open_source(write_csv_source(tmp_path / 'src', 11)).entries
    got = list(describe_chunks(model, entries, [0, 2], chunk_size=4, batch_size=3,
                               thumbnail_size=(16, 16), num_workers=1))
    assert [c for c, _ in got] == [0, 2]
    for c, result in got:
        want = extract_chunk(model, entries[c * 4:(c + 1) * 4], batch_size=3,
                             thumbnail_size=(16, 16))
        np.testing.assert_array_equal(result.descriptors, want.descriptors)
        np.testing.assert_array_equal(result.thumbnails, want.thumbnails)
    assert len(got[1][1].descriptors) == 3  # the last chunk is short


def test_auto_batch_is_small_on_a_cpu_and_changes_no_descriptor(tmp_path):
    """batch_size 0: 16 images per forward on a GPU; on a CPU two 240x320 inputs' pixels."""
    from types import SimpleNamespace

    from vpr_ros.device import forward_batch
    from vpr_ros.mapdb.describe import extract_chunk
    from vpr_ros.models.descriptor import build_model

    def sized(name):
        return SimpleNamespace(config=PRESETS[name])

    assert [forward_batch('cpu', 0, sized(name)) for name in
            ('effnet-lite0-gem', 'effnet-lite0-gem-ms', 'effnet-lite0-gem-360')] == [2, 2, 1]
    assert (forward_batch('cuda:0', 0, sized('effnet-lite0-gem')), forward_batch('cpu'),
            forward_batch('cpu', 5)) == (16, 2, 5)
    model = build_model(PRESETS['tiny-test'].replace(input_size=(240, 320))).eval()
    entries = open_source(write_csv_source(tmp_path / 'src', 5)).entries
    seen = []
    hook = model.aggregation.register_forward_pre_hook(
        lambda _, inputs: seen.append(len(inputs[0])))
    try:
        auto = extract_chunk(model, entries, thumbnail_size=(16, 16))
    finally:
        hook.remove()
    assert seen == [2, 2, 1]                # the real model, fed in pairs on this CPU
    fixed = extract_chunk(model, entries, batch_size=5, thumbnail_size=(16, 16))
    np.testing.assert_allclose(auto.descriptors, fixed.descriptors, atol=1e-5)
    assert BuildConfig().batch_size == 0


def test_auto_model_follows_the_rows_the_camera_gives(caplog):
    from vpr_ros.models import AUTO_MODEL, model_for_rows, resolve_model

    small = 'effnet-lite0-gem-ms'      # enlarged below 360 rows: multi-scale
    assert model_for_rows(120) == model_for_rows(359) == small
    assert PRESETS[small].scales == (1.0, 0.7071, 0.5)
    assert PRESETS[small].input_size == (240, 320)
    assert model_for_rows(360) == model_for_rows(1080) == 'effnet-lite0-gem-360'

    class Image:
        def __init__(self, shape):
            self.name, self.shape, self.loads = f'{shape}', shape, 0

        def load(self):
            self.loads += 1
            if self.shape is None:
                raise OSError('truncated')
            return np.zeros((*self.shape, 3), np.uint8)

    wide = Image((360, 640))
    assert resolve_model(AUTO_MODEL, [wide]) == 'effnet-lite0-gem-360'
    assert resolve_model(AUTO_MODEL, [Image((240, 320))]) == small
    # A named model is used as given; its images are not even read.
    assert resolve_model('resnet18-gem', [wide]) == 'resnet18-gem' and wide.loads == 1
    # The rows the model is given: 480x640 shrunk to a longer side of 320 is 240 rows.
    assert resolve_model(AUTO_MODEL, [Image((480, 640))], resize_max=320) == small
    assert resolve_model(AUTO_MODEL, [Image((480, 640))], resize_max=600) == \
        'effnet-lite0-gem-360'
    # An unreadable first image is passed over; none readable falls back, with a warning.
    assert resolve_model(AUTO_MODEL, [Image(None), Image((720, 1280))]) == \
        'effnet-lite0-gem-360'
    with caplog.at_level(logging.WARNING, logger='vpr_ros.models'):
        assert resolve_model(AUTO_MODEL, [Image(None)] * 3) == small
    assert 'no readable image' in caplog.text


@pytest.mark.parametrize('rows, preset, input_size', [
    (360, 'effnet-lite0-gem-360', [360, 480]), (240, 'effnet-lite0-gem-ms', [240, 320])])
def test_build_map_default_model_is_chosen_from_the_source_images(
        tmp_path, rows, preset, input_size):
    import cv2

    from vpr_ros.cli import main as cli_main

    (tmp_path / 'img').mkdir()
    lines = ['image,lat,lon']
    for i, (lat, lon, _) in enumerate(route(3)):
        image = cv2.resize(texture(i), (rows * 4 // 3, rows), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(tmp_path / 'img' / f'{i}.png'), image)
        lines.append(f'img/{i}.png,{float(lat)!r},{float(lon)!r}')
    (tmp_path / 'map.csv').write_text('\n'.join(lines) + '\n')
    out = tmp_path / 'm.vprmap'
    assert cli_main(['build-map', str(tmp_path / 'map.csv'), '--out', str(out), '--adapt',
                     'none', '--thumbnail-size', '24', '32', '--device', 'cpu',
                     '--no-progress']) == 0
    db = MapDB.open(out)
    assert db.manifest['build']['model'] == preset
    loaded = db.load_model('cpu').config
    assert list(loaded.input_size) == input_size
    assert loaded.scales == PRESETS[preset].scales
