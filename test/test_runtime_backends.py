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

"""ONNX export and inference backends (issue 18, items 1-2) on a real ``tiny-test`` map.

The export is verified against torch before it is written; every backend must give the same
Estimate (same candidates, positions equal, sigma within 1 %); a missing, corrupted or foreign
export is a clear error (or, for ``auto``, a logged fall-back to torch).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys

from mapdb_helpers import texture, textured_map
import numpy as np
import pytest
from vpr_ros.cli import main as cli_main
from vpr_ros.errors import MapError
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import MapDB
from vpr_ros.runtime import export, onnx_record
from vpr_ros.runtime.backends import BackendError, select_runtime

pytestmark = pytest.mark.slow      # one export (three graphs) takes about a minute

N = 16


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Build and export a tiny map once (the tests copy it before changing it)."""
    path = textured_map(tmp_path_factory.mktemp('exported'), N)
    assert cli_main(['export', str(path)]) == 0
    return path


def _copy(path, tmp_path):
    return shutil.copytree(path, tmp_path / path.name)


def test_export_is_verified_and_listed_with_its_sha256(exported, capsys):
    db = MapDB.open(exported)                          # every sha256 checks out
    record = db.manifest[export.KEY]['fp32']
    assert record['model_fingerprint'] == db.manifest['model']['fingerprint']
    assert record['opset'] == export.OPSET and record['precision'] == 'fp32'
    for part in export.PARTS:
        name = record[f'{part}_file']
        assert name.startswith('onnx-fp32-') and name in db.manifest['files']
    v = record['verification']
    assert v['descriptor_min_cosine'] >= 0.9999
    assert v['rerank_max_abs_diff'] <= 1e-3
    assert v['top1_identical'] and v['images'] > 0
    assert onnx_record.export_status(db) == {'fp32': 'ok'}


def test_every_backend_gives_the_same_estimate(exported):
    db = MapDB.open(exported)
    model = db.load_model('cpu')
    torch_loc = Localizer(db, model, LocalizerConfig(backend='torch'))
    ort_loc = Localizer(MapDB.open(exported), model, LocalizerConfig(backend='onnxruntime'))
    auto = Localizer(MapDB.open(exported), model, LocalizerConfig())
    assert (torch_loc.runtime.name, ort_loc.runtime.name) == ('torch', 'onnxruntime')
    assert auto.runtime.name == 'onnxruntime' and 'auto' in auto.runtime.reason
    assert ort_loc.runtime.info()['providers'] == 'CPUExecutionProvider'
    # On the CPU the regression runs where it was faster; both are compared below.
    assert ort_loc.regression_backend in ('torch', 'onnxruntime')
    assert f'GeoWarp regression in {ort_loc.regression_backend} (' in ort_loc.runtime.reason
    assert torch_loc.regression_backend == 'torch'
    images = [texture(i) for i in range(N)] + [np.flipud(texture(3)).copy()]
    for mode, regression in (('features', 'torch'), ('features', 'onnxruntime'),
                             ('image', 'fastest')):
        cfg = LocalizerConfig().geowarp.replace(mode=mode)
        # Weight 1: GeoWarp scores every re-ranked candidate, not just the top-1.
        a = Localizer(db, model, LocalizerConfig(backend='torch', geowarp=cfg, rerank_weight=1.0))
        b = Localizer(MapDB.open(exported), model,
                      LocalizerConfig(backend='onnxruntime', geowarp=cfg, rerank_weight=1.0))
        if regression == 'onnxruntime':
            b.geowarp.regression = b.runtime.regression()
        elif regression == 'torch':
            b.geowarp.regression = a.geowarp.regression
        for ea, eb in zip(a.localize_batch(images), b.localize_batch(images)):
            assert [c.index for c in ea.candidates] == [c.index for c in eb.candidates]
            assert (eb.lat, eb.lon) == pytest.approx((ea.lat, ea.lon), abs=1e-7)   # 1 cm
            assert eb.alt == pytest.approx(ea.alt, abs=0.01)
            assert eb.sigma_m == pytest.approx(ea.sigma_m, rel=0.01)
            np.testing.assert_allclose([c.score for c in eb.candidates],
                                       [c.score for c in ea.candidates], atol=1e-4)
            np.testing.assert_allclose([c.rerank_score for c in eb.candidates],
                                       [c.rerank_score for c in ea.candidates], atol=1e-3)
    est = ort_loc.localize(texture(5))
    assert est.timings['forward'] > 0 and est.timings['resize'] == 0.0   # resizer in the graph


def test_backend_cli_flag(exported, capsys):
    code = cli_main(['localize', str(exported / '..' / 'src' / 'img' / '0004.png'), '--map',
                     str(exported), '--backend', 'onnxruntime', '--device', 'cpu', '--json'])
    assert code in (0, 3)
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out['candidates'][0]['index'] == 4


def test_a_backend_that_cannot_run_is_a_clear_error(exported, tmp_path, monkeypatch, caplog):
    db = MapDB.open(exported)
    model = db.load_model('cpu')
    with pytest.raises(BackendError, match='tensorrt needs an NVIDIA GPU'):
        select_runtime('tensorrt', db, model)
    plain = textured_map(tmp_path / 'plain', 4)
    with pytest.raises(BackendError, match='has no ONNX fp32 export: run vpr-ros export'):
        Localizer.open(plain, LocalizerConfig(backend='onnxruntime'), device='cpu')
    assert Localizer.open(plain, device='cpu').runtime.name == 'torch'   # auto, no export
    # onnxruntime not installed: named when asked for, a fall-back for auto.
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(BackendError, match='onnxruntime is not installed'):
        select_runtime('onnxruntime', db, model)
    with caplog.at_level(logging.WARNING):
        runtime = select_runtime('auto', db, model)
    assert runtime.name == 'torch' and 'onnxruntime is not installed' in caplog.text


def test_a_corrupted_onnx_file_is_refused(exported, tmp_path, caplog):
    path = _copy(exported, tmp_path)
    name = MapDB.open(path).manifest[export.KEY]['fp32']['geowarp_file']
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(data))
    with pytest.raises(MapError, match=f'{name} is corrupt'):
        MapDB.open(path)
    db = MapDB.open(path, fast=True)                  # sizes only: the backend checks sha256
    model = db.load_model('cpu')
    with pytest.raises(MapError, match=f'{name} is corrupt'):
        select_runtime('onnxruntime', db, model)


def test_an_export_of_another_model_or_geowarp_is_refused(exported, tmp_path, caplog):
    path = _copy(exported, tmp_path)
    db = MapDB.open(path)
    onnx = json.loads(json.dumps(db.manifest[export.KEY]))
    onnx['fp32']['model_fingerprint'] = 'f' * 64
    db.update_manifest(**{export.KEY: onnx})
    db = MapDB.open(path)
    model = db.load_model('cpu')
    with pytest.raises(BackendError, match='export was made for model ffff'):
        select_runtime('onnxruntime', db, model)
    with caplog.at_level(logging.WARNING):
        assert select_runtime('auto', db, model).name == 'torch'
    assert 'export was made for model' in caplog.text
    assert onnx_record.export_status(db)['fp32'].startswith('the ONNX export was made for model')
    # A GeoWarp fitted after the export: the exported regression is stale.
    onnx['fp32']['model_fingerprint'] = db.manifest['model']['fingerprint']
    onnx['fp32']['geowarp_sha256'] = '0' * 64
    db.update_manifest(**{export.KEY: onnx})
    with pytest.raises(BackendError, match='another GeoWarp'):
        select_runtime('onnxruntime', MapDB.open(path), model)


def test_a_failed_verification_writes_nothing(exported, tmp_path, monkeypatch, capsys):
    path = _copy(exported, tmp_path)
    before = (path / 'manifest.json').read_text()
    files = sorted(p.name for p in path.iterdir())
    monkeypatch.setitem(export.MIN_COSINE, 'fp32', 1.5)      # no export can pass
    assert cli_main(['export', str(path)]) == 1
    assert 'descriptor export (fp32): cosine to torch' in capsys.readouterr().err
    assert (path / 'manifest.json').read_text() == before
    assert sorted(p.name for p in path.iterdir()) == files
    assert not list(path.parent.glob('.export-*'))


def test_fp16_export_is_verified_and_kept_beside_fp32(exported, tmp_path):
    path = _copy(exported, tmp_path)
    assert cli_main(['export', str(path), '--fp16']) == 0
    db = MapDB.open(path)
    onnx = db.manifest[export.KEY]
    assert set(onnx) == {'fp32', 'fp16'}                      # the fp32 export is kept
    assert onnx['fp16']['verification']['descriptor_min_cosine'] >= 0.999
    assert onnx['fp16']['verification']['rerank_max_abs_diff'] <= 5e-3
    assert onnx_record.export_status(db) == {'fp32': 'ok', 'fp16': 'ok'}
    # The CPU backend runs the fp32 graphs; fp16 is for the CUDA execution provider.
    assert select_runtime('onnxruntime', db, db.load_model('cpu')).precision == 'fp32'


def test_export_of_a_map_without_thumbnails_is_a_clear_error(tmp_path, capsys):
    path = textured_map(tmp_path, 3, thumbnail_size=(0, 0))
    assert cli_main(['export', str(path)]) == 1
    assert 'was built without thumbnails' in capsys.readouterr().err
    assert export.KEY not in MapDB.open(path).manifest


def test_onnx_runtime_takes_the_query_features_from_the_descriptor_graph(tmp_path):
    """Thumbnails at the model's input size: the exported graph's second output, no extra pass."""
    path = textured_map(tmp_path, N, thumbnail_size=(64, 80))   # tiny-test's input size
    assert cli_main(['export', str(path)]) == 0
    db = MapDB.open(path)
    record = db.manifest[export.KEY]['fp32']
    assert record['verification']['descriptor_local_max_abs_diff'] <= 1e-3
    model = db.load_model('cpu')
    config = LocalizerConfig(sequence_check=False, rerank_weight=1.0)   # all p scored
    a = Localizer(db, model, config.replace(backend='torch'))
    b = Localizer(MapDB.open(path), model, config.replace(backend='onnxruntime'))
    assert a.local_from_forward and b.local_from_forward and b.runtime.forward_local
    calls = []
    session = b.runtime.sessions['local_features']

    class Counting:
        def __getattr__(self, name):
            return getattr(session, name)

        def run(self, *args, **kwargs):
            calls.append(1)
            return session.run(*args, **kwargs)

    b.runtime.sessions['local_features'] = Counting()
    images = [texture(i) for i in range(N)]
    for ea, eb in zip(a.localize_batch(images), b.localize_batch(images)):
        assert [c.index for c in ea.candidates] == [c.index for c in eb.candidates]
        np.testing.assert_allclose([c.rerank_score for c in eb.candidates],
                                   [c.rerank_score for c in ea.candidates], atol=1e-3)
    assert calls == []                                 # one ONNX pass per frame


def test_a_multi_scale_model_exports_and_runs_as_in_torch(tmp_path):
    """The scales (shrunk, antialiased) are inside the exported graph: ONNX = torch."""
    import yaml
    from vpr_ros.models.descriptor import PRESETS

    spec = tmp_path / 'tiny-ms.yaml'
    config = PRESETS['tiny-test'].replace(scales=(1.0, 0.7071, 0.5))
    spec.write_text(yaml.safe_dump(config.to_dict()))
    path = textured_map(tmp_path, N, model=str(spec))
    db = MapDB.open(path)
    model = db.load_model('cpu')
    assert model.config.scales == (1.0, 0.7071, 0.5)
    assert cli_main(['export', str(path)]) == 0
    record = MapDB.open(path).manifest[export.KEY]['fp32']
    assert record['verification']['descriptor_local_max_abs_diff'] <= 1e-3
    a = Localizer(MapDB.open(path), model, LocalizerConfig(backend='torch',
                                                           sequence_check=False))
    b = Localizer(MapDB.open(path), model, LocalizerConfig(backend='onnxruntime',
                                                           sequence_check=False))
    images = [texture(i) for i in range(N)]
    for i, (ea, eb) in enumerate(zip(a.localize_batch(images), b.localize_batch(images))):
        assert ea.candidates[0].index == eb.candidates[0].index == i
        np.testing.assert_allclose([c.score for c in eb.candidates],
                                   [c.score for c in ea.candidates], atol=1e-3)
