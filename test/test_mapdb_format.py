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

"""The map format: checksums, versions, missing manifest, wrong model, manifest updates."""

from __future__ import annotations

import json
import shutil

from mapdb_helpers import make_model, test_model, write_csv_source
import numpy as np
import pytest

from vpr_ros.errors import MapError
from vpr_ros.mapdb import build_map, BuildConfig, MapDB
from vpr_ros.mapdb import format as fmt

FILES = ['descriptors.npy', 'positions.npy', 'entries.csv', 'index.faiss', 'model.pt',
         'thumbnails.npy']


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    model = test_model(mp)
    tmp = tmp_path_factory.mktemp('fmt')
    path = write_csv_source(tmp / 'src', 6)
    out = build_map(path, tmp / 'route.vprmap', BuildConfig(thumbnail_size=(16, 16)),
                    model=model, progress=False)
    yield out, model
    mp.undo()


@pytest.fixture
def copy(built, tmp_path):
    out, model = built
    target = tmp_path / 'copy.vprmap'
    shutil.copytree(out, target)
    return target, model


def _manifest(path):
    return json.loads((path / 'manifest.json').read_text())


@pytest.mark.parametrize('name', FILES)
def test_flipped_byte(copy, name):
    path, _ = copy
    f = path / name
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(MapError, match=f'{name} is corrupt: sha256'):
        MapDB.open(path)
    MapDB.open(path, fast=True)  # sizes only: a flipped byte passes (documented)


@pytest.mark.parametrize('name', FILES)
def test_truncated_or_missing(copy, name):
    path, _ = copy
    f = path / name
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(MapError, match=f'{name} has .* bytes, the manifest says'):
        MapDB.open(path, fast=True)
    f.unlink()
    with pytest.raises(MapError, match=f'{name} is missing'):
        MapDB.open(path)


def test_missing_manifest(copy):
    path, _ = copy
    (path / 'manifest.json').unlink()
    with pytest.raises(MapError, match='manifest.json is missing.*not a finished map'):
        MapDB.open(path)
    with pytest.raises(MapError, match='not a directory'):
        MapDB.open(path / 'nope.vprmap')


@pytest.mark.parametrize('change,match', [
    ({'format_version': 3}, 'format version 3.*reads versions 1, 2.*newer vpr_ros'),
    ({'format_version': 0}, 'format version 0.*rebuild the map'),
    ({'format': 'other'}, 'not a vpr_ros map manifest'),
])
def test_wrong_version(copy, change, match):
    path, _ = copy
    manifest = _manifest(path)
    manifest.update(change)
    (path / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(MapError, match=match):
        MapDB.open(path)
    (path / 'manifest.json').write_text('{not json')
    with pytest.raises(MapError, match='manifest.json is not readable JSON'):
        MapDB.open(path)


def test_wrong_model(copy):
    path, model = copy
    MapDB.open(path, model=model)
    other = make_model(seed=1)
    with pytest.raises(MapError, match='manifest.json: the map was built with model'):
        MapDB.open(path, model=other)


def test_embedded_model(copy):
    pytest.importorskip('vpr_ros.models.checkpoints')
    path, model = copy
    db = MapDB.open(path)
    assert db.load_model('cpu').fingerprint() == model.fingerprint()


def test_update_manifest(copy):
    path, _ = copy
    db = MapDB.open(path)
    db.update_manifest(calibration={'kind': 'bins', 'sigma_m': [3.0, 10.0]})
    assert _manifest(path)['calibration']['sigma_m'] == [3.0, 10.0]
    assert MapDB.open(path).manifest['calibration'] == db.manifest['calibration']
    assert not [p for p in path.iterdir() if p.name.startswith('.')]
    with pytest.raises(MapError, match=r"keys \['files'\] .* cannot be updated"):
        db.update_manifest(files={})


def test_shape_mismatch_is_caught(copy):
    path, _ = copy
    np.save(path / 'positions.npy', np.zeros((6, 2)), allow_pickle=False)
    manifest = _manifest(path)
    manifest['files'] = fmt.file_records(path)
    (path / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(MapError, match=r'positions.npy: float64 \(6, 2\), expected'):
        MapDB.open(path)
