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

"""Compact maps (format v2): convert, open memory-mapped, merge, append, verify."""

from __future__ import annotations

import json
from pathlib import Path
import shutil

from mapdb_helpers import route, texture, write_csv_source
import numpy as np
import pytest

from vpr_ros import cli
from vpr_ros.errors import MapError
from vpr_ros.images import to_tensor
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import build_map, BuildConfig, MapDB
from vpr_ros.mapdb import format as fmt
from vpr_ros.mapdb.adaptation import adapt_map, AdaptConfig, fit_pca
from vpr_ros.mapdb.compact import (append_to_map, convert_map, map_projection, merge_maps,
                                   write_compact)
from vpr_ros.mapdb.database import check_consistency
from vpr_ros.mapdb.format import entry_file_bytes
from vpr_ros.mapdb.index import IndexConfig

N = 24


def _build(folder: Path, csv: Path, name: str = 'route.vprmap') -> Path:
    config = BuildConfig(model='tiny-test', device='cpu', thumbnail_size=(32, 48),
                         adapt=AdaptConfig(method='none'), index=IndexConfig(kind='flat'))
    return build_map(csv, folder / name, config, progress=False)


def _half_csv(src: Path, rows: slice, name: str) -> Path:
    lines = (src / 'route.csv').read_text().splitlines()
    path = src / name
    path.write_text('\n'.join([lines[0], *lines[1:][rows]]) + '\n')
    return path


@pytest.fixture(scope='module')
def maps(tmp_path_factory):
    """Build a v1 map of N textured images, and v1 maps of its two halves."""
    root = tmp_path_factory.mktemp('compact')
    csv = write_csv_source(root / 'src', N)
    union = _build(root, csv)
    a = _build(root, _half_csv(root / 'src', slice(0, N // 2), 'a.csv'), 'a.vprmap')
    b = _build(root, _half_csv(root / 'src', slice(N // 2, N), 'b.csv'), 'b.vprmap')
    return root, union, a, b


def _queries(model, n=N):
    import torch

    images = [np.ascontiguousarray(np.roll(texture(i), 3, axis=1)) for i in range(n)]
    with torch.inference_mode():
        return np.asarray(model.describe(torch.stack([to_tensor(x) for x in images])))


def test_pca_projection_keeps_inner_products_in_the_map_span():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((5, 64)).astype(np.float32)
    p = fit_pca(x, 32)                       # rank 20 <= 32: lossless on the map's span
    assert p.matrix.shape == (32, 64) and not p.mean.any()
    px, pq = p.apply(x), p.apply(q, normalise=False)
    np.testing.assert_allclose(pq @ px.T, q @ x.T, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(px, axis=1), 1, atol=1e-6)


def test_convert_keeps_search_results_and_shrinks(maps, tmp_path):
    root, union, _, _ = maps
    out = convert_map(union, tmp_path / 'v2.vprmap', dim=64)
    v1, v2 = MapDB.open(union), MapDB.open(out)
    model = v1.load_model('cpu')
    assert v2.format_version == 2 and v1.format_version == 1
    assert v2.manifest['descriptors']['dtype'] == 'float16'
    assert v2.manifest['descriptors']['input_dim'] == 256 == v2.descriptor_dim
    assert v2.manifest['descriptors']['dim'] == 64 and v2.projection.method == 'pca'
    assert v2.manifest['index']['factory'] == 'SQfp16'
    assert isinstance(v2.descriptors, np.memmap) and v2.descriptors.dtype == np.float16
    assert not (tmp_path / 'v2.vprmap').with_name('.v2.vprmap.tmp').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['v2.vprmap']
    size = {db: sum(entry_file_bytes(db.manifest['files'], N).values()) for db in (v1, v2)}
    assert size[v2] < size[v1] / 3, size   # per-entry files; the projection is per map
    np.testing.assert_array_equal(v2.positions(np.arange(N)), v1.positions(np.arange(N)))
    assert v2.names == v1.names and v2.stamps == v1.stamps
    q = _queries(model)
    i1, s1 = v1.search(q, 5)
    i2, s2 = v2.search(q, 5)
    np.testing.assert_array_equal(i1[:, 0], i2[:, 0])
    # 24 entries < 64 dims: the projection is lossless on the map's span; the query loses
    # its part outside it, which scales all its scores alike (+ float16 rounding).
    ratio = np.sort(s2, axis=1) / np.sort(s1, axis=1)
    assert np.ptp(ratio, axis=1).max() < 1e-3 and (ratio >= 1).all()
    thumbs1, thumbs2 = v1.thumbnails(np.arange(N)), v2.thumbnails(np.arange(N))
    assert thumbs2.shape == thumbs1.shape == (N, 32, 48, 3)
    # JPEG q90 (4:2:0) on a noise texture, the worst case; another entry differs far more.
    assert np.abs(thumbs2.astype(int) - thumbs1).mean() < 18
    assert np.abs(thumbs2.astype(int) - np.roll(thumbs1, 1, axis=0)).mean() > 40
    # The localizer (GeoWarp features from the JPEG thumbnails) finds the same top-1.
    config = LocalizerConfig()
    images = [np.roll(texture(i), 3, axis=1) for i in range(0, N, 3)]
    e1 = Localizer(v1, model, config).localize_batch(images)
    e2 = Localizer(MapDB.open(out), model, config).localize_batch(images)
    assert [e.candidates[0].index for e in e1] == [e.candidates[0].index for e in e2]
    # Sub-spacing between route neighbours uses GeoWarp scores (from JPEG thumbnails now):
    # positions agree within 5e-6 deg (< 0.4 m; entries are 5 m apart).
    np.testing.assert_allclose([[e.lat, e.lon] for e in e2], [[e.lat, e.lon] for e in e1],
                               atol=5e-6)
    assert cli.main(['map', 'verify', str(out)]) == 0
    with pytest.raises(MapError, match='already format v2'):
        convert_map(out)
    with pytest.raises(MapError, match='compact .v2. map'):
        adapt_map(v2, AdaptConfig(method='pcaw'))


def test_convert_in_place_is_atomic_and_cli(maps, tmp_path, capsys):
    _, union, _, _ = maps
    path = tmp_path / 'm.vprmap'
    shutil.copytree(union, path)
    assert cli.main(['map', 'convert', str(path), '--dim', '64']) == 0
    text = capsys.readouterr().out
    assert 'vprmap v2' in text and 'per entry' in text, text
    assert '64-D float16 (projected from 256-D by pca)' in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.vprmap']
    assert MapDB.open(path).format_version == 2
    # Corruption is found by map verify (sha256), not only by size.
    data = bytearray((path / 'thumbnails-jpeg.npy').read_bytes())
    data[-5] ^= 0xFF
    (path / 'thumbnails-jpeg.npy').write_bytes(bytes(data))
    assert cli.main(['map', 'verify', str(path)]) == 1
    assert 'thumbnails-jpeg.npy is corrupt' in capsys.readouterr().err


def test_merge_of_halves_equals_the_union(maps, tmp_path):
    root, union, a, b = maps
    merged = merge_maps([a, b], tmp_path / 'ab.vprmap')
    u, m = MapDB.open(union), MapDB.open(merged)
    assert m.format_version == 1 and len(m) == N
    assert m.names == u.names
    np.testing.assert_allclose(np.asarray(m.descriptors), np.asarray(u.descriptors), atol=1e-6)
    np.testing.assert_array_equal(m.positions(np.arange(N)), u.positions(np.arange(N)))
    np.testing.assert_array_equal(m.thumbnails(np.arange(N)), u.thumbnails(np.arange(N)))
    assert m.manifest['index']['kind'] == u.manifest['index']['kind']
    q = _queries(u.load_model('cpu'))
    np.testing.assert_array_equal(m.search(q, 3)[0], u.search(q, 3)[0])
    # v2: the halves stored with the union's projection merge into the union's v2 map.
    u2 = convert_map(union, tmp_path / 'u2.vprmap')
    proj = MapDB.open(u2).projection
    a2 = convert_map(a, tmp_path / 'a2.vprmap', projection=proj)
    b2 = convert_map(b, tmp_path / 'b2.vprmap', projection=proj)
    assert cli.main(['map', 'merge', str(a2), str(b2), '--out', str(tmp_path / 'm2.vprmap')]) \
        == 0
    m2, u2db = MapDB.open(tmp_path / 'm2.vprmap'), MapDB.open(u2)
    np.testing.assert_allclose(np.asarray(m2.descriptors, np.float32),
                               np.asarray(u2db.descriptors, np.float32), atol=1e-3)
    assert m2.names == u2db.names
    np.testing.assert_array_equal(m2.search(q, 3)[0], u2db.search(q, 3)[0])
    np.testing.assert_array_equal(m2.thumbnails(np.arange(N)), u2db.thumbnails(np.arange(N)))
    for written in (m, m2):      # the merged files agree with one another
        check_consistency(written)
    # Different projections (each half fitted its own) or formats are refused by name.
    a3 = convert_map(a, tmp_path / 'a3.vprmap')
    with pytest.raises(MapError, match='different projections'):
        merge_maps([a3, b2], tmp_path / 'x.vprmap')
    with pytest.raises(MapError, match='format v2.*v1: convert'):
        merge_maps([a2, b], tmp_path / 'x.vprmap')
    with pytest.raises(MapError, match='exists already'):
        merge_maps([a2, b2], tmp_path / 'm2.vprmap')


def test_verify_checks_kept_geowarp_features_against_the_jpeg_thumbnails(
        maps, tmp_path, capsys):
    from vpr_ros.runtime.map_features import check_local_features

    _, union, _, _ = maps
    out = convert_map(union, tmp_path / 'kept.vprmap', keep_features=True)
    db = MapDB.open(out)
    # Made from the thumbnails before JPEG: not equal to the JPEG's, but each its own.
    assert check_local_features(db, sample=N) == N
    assert cli.main(['map', 'verify', str(out)]) == 0
    name = db.manifest['local_features']['file']
    features = np.load(out / name)
    np.save(out / name, np.roll(features, 1, axis=0))           # every row one entry late
    manifest = json.loads((out / 'manifest.json').read_text())
    manifest['files'][name] = {'sha256': fmt.sha256_file(out / name),
                               'size': (out / name).stat().st_size}
    (out / 'manifest.json').write_text(json.dumps(manifest))
    assert cli.main(['map', 'verify', str(out)]) == 1
    assert f'{name}: the stored GeoWarp features of entry ' in capsys.readouterr().err
    with pytest.raises(MapError, match=r'features of entry 0 are not those of its thumbnail'):
        check_local_features(MapDB.open(out), sample=N)


def test_merge_refuses_another_model(maps, tmp_path):
    _, _, a, b = maps
    other = tmp_path / 'b.vprmap'
    shutil.copytree(b, other)
    manifest = json.loads((other / 'manifest.json').read_text())
    manifest['model']['fingerprint'] = '0' * 16
    (other / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(MapError, match='different models'):
        merge_maps([a, other], tmp_path / 'x.vprmap')
    assert not (tmp_path / 'x.vprmap').exists()


def test_append_describes_only_the_new_drive(maps, tmp_path):
    root, union, a, _ = maps
    u2 = MapDB.open(convert_map(union, tmp_path / 'u2.vprmap'))
    a2 = convert_map(a, tmp_path / 'a2.vprmap', projection=u2.projection)
    before = np.asarray(MapDB.open(a2).descriptors).copy()
    csv_b = root / 'src' / 'b.csv'
    assert cli.main(['map', 'append', str(a2), str(csv_b)]) == 0
    db = MapDB.open(a2)
    assert len(db) == N and db.names == u2.names
    np.testing.assert_array_equal(np.asarray(db.descriptors[:N // 2]), before)
    np.testing.assert_allclose(np.asarray(db.descriptors, np.float32),
                               np.asarray(u2.descriptors, np.float32), atol=1e-3)
    np.testing.assert_array_equal(db.positions(np.arange(N)), u2.positions(np.arange(N)))
    q = _queries(db.load_model('cpu'))
    np.testing.assert_array_equal(db.search(q, 3)[0], u2.search(q, 3)[0])
    assert db.manifest['source']['appended'][0]['path'].endswith('b.csv')
    assert cli.main(['map', 'verify', str(a2)]) == 0     # the appended index finds them all
    with pytest.raises(MapError, match='format v1: convert it first'):
        append_to_map(a, csv_b)


def test_write_compact_from_arrays_opens_memory_mapped(tmp_path, maps):
    """The bench path: a map written straight from arrays, IVF index read memory-mapped."""
    _, union, _, _ = maps
    rng = np.random.default_rng(0)
    n, d = 3000, 256
    x = rng.standard_normal((n, d)).astype(np.float32)
    v1 = MapDB.open(union)
    proj = map_projection(v1, 16)
    pos = route(n)
    out = write_compact(tmp_path / 'big.vprmap', descriptors=proj.apply(x), positions=pos,
                        entries=[[f'{i}', '', ''] for i in range(n)], projection=proj,
                        model_file=union / 'model.pt', manifest=dict(v1.manifest),
                        index_config=IndexConfig(kind='ivfpq', pq_m=8, target_recall=0.9))
    db = MapDB.open(out, fast=True)
    assert db._names is None                      # entries.csv is read on first use
    assert db.manifest['index']['kind'] == 'ivfpq' and db.manifest['thumbnails'] is None
    import faiss
    invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(db.index.index).invlists)
    assert 'OnDisk' in type(invlists).__name__  # IO_FLAG_MMAP: lists stay in the file
    idx, _ = db.search(x[:20] + 0.01 * rng.standard_normal((20, d)).astype(np.float32), 1)
    assert (idx[:, 0] == np.arange(20)).mean() >= 0.9
    assert db.names[5] == '5' and db.stamps[5] is None
