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

"""vpr-ros fit-geowarp: fit on a map's own images, resume, attach to the map.

GeoWarp's losses: Berton et al., "Viewpoint Invariant Dense Matching for Visual Geolocalization",
ICCV 2021, arXiv 2109.09827, §3.4.
"""

from __future__ import annotations

import shutil
import warnings

from mapdb_helpers import textured_map
import pytest
import torch
from vpr_ros.cli import main as cli_main
from vpr_ros.errors import MapError
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.mapdb import MapDB
from vpr_ros.models.checkpoints import save_payload
from vpr_ros.models.geowarp import GeoWarp, GEOWARP_FORMAT, GeoWarpConfig, load_geowarp
from vpr_ros.models.geowarp_losses import GeoWarpLossConfig
from vpr_ros.training.geowarp_trainer import fit_geowarp, GeoWarpFitConfig, work_dir_for


@pytest.fixture(scope='module')
def small_map(tmp_path_factory):
    folder = tmp_path_factory.mktemp('gwmap')
    return textured_map(folder, 12)


def _copy(small_map, tmp_path, name='m.vprmap'):
    path = tmp_path / name
    shutil.copytree(small_map, path)
    return path


def _cfg(**changes):
    return GeoWarpFitConfig(batch_size=2, device='cpu', save_every=1).replace(**changes)


def test_fit_attaches_weights_to_the_map(small_map, tmp_path):
    path = _copy(small_map, tmp_path)
    record = fit_geowarp(path, _cfg(iterations=3), progress=False)
    db = MapDB.open(path)                                   # full sha256 verification
    assert db.manifest['geowarp']['file'] == record['file']
    assert record['file'] in db.manifest['files']
    assert record['iterations'] == 3 and record['backbone'] == 'resnet18'
    assert 'fw' in record['losses'] and record['fw_pairs'] > 0
    fitted, extra = load_geowarp(path / record['file'], backbone='resnet18')
    identity = GeoWarp().state_dict()
    assert any(not torch.equal(v, identity[k]) for k, v in fitted.state_dict().items())
    loc = Localizer(db, device='cpu')
    for k, v in loc.geowarp.state_dict().items():
        assert torch.equal(v.cpu(), fitted.state_dict()[k])
    # Fitting again replaces the file; the old one is gone, the map still verifies.
    again = fit_geowarp(path, _cfg(iterations=4), progress=False)
    db = MapDB.open(path)
    assert [n for n in db.manifest['files'] if n.startswith('geowarp-')] == [again['file']]
    assert not (path / record['file']).exists() or record['file'] == again['file']
    work = work_dir_for(path)
    assert (work / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert len((work / 'losses.csv').read_text().splitlines()) == 1 + 4


def test_resume_equals_uninterrupted(small_map, tmp_path):
    straight = _copy(small_map, tmp_path, 'a.vprmap')
    fit_geowarp(straight, _cfg(iterations=4), progress=False)
    resumed = _copy(small_map, tmp_path, 'b.vprmap')
    fit_geowarp(resumed, _cfg(iterations=2), progress=False)
    fit_geowarp(resumed, _cfg(iterations=4), progress=False)      # continues at step 2
    a = torch.load(work_dir_for(straight) / 'state.pt', weights_only=True)
    b = torch.load(work_dir_for(resumed) / 'state.pt', weights_only=True)
    assert a['step'] == b['step'] == 4
    for k, v in a['geowarp'].items():
        assert torch.equal(v, b['geowarp'][k]), k
    assert [r['total'] for r in a['losses']] == [r['total'] for r in b['losses']]
    # restart=True starts from the identity again: the first losses repeat.
    fit_geowarp(resumed, _cfg(iterations=1), restart=True, progress=False)
    c = torch.load(work_dir_for(resumed) / 'state.pt', weights_only=True)
    assert c['losses'][0]['total'] == a['losses'][0]['total']


@pytest.mark.slow
def test_self_supervised_loss_goes_down(small_map, tmp_path):
    path = _copy(small_map, tmp_path)
    fit_geowarp(path, _cfg(iterations=60, batch_size=4, lr=1e-3, use_positions=False,
                           save_every=60), progress=False)
    losses = torch.load(work_dir_for(path) / 'state.pt', weights_only=True)['losses']
    first = sum(r['ss'] for r in losses[:10]) / 10
    last = sum(r['ss'] for r in losses[-10:]) / 10
    assert last < 0.9 * first, (first, last)


def test_map_without_thumbnails_is_refused(tmp_path):
    path = textured_map(tmp_path, 4, name='n.vprmap', thumbnail_size=(0, 0))
    with pytest.raises(MapError, match='without thumbnails'):
        fit_geowarp(path, _cfg(iterations=1), progress=False)


def test_cli(small_map, tmp_path, capsys):
    path = _copy(small_map, tmp_path)
    assert cli_main(['fit-geowarp', str(path), '--iterations', '2', '--batch-size', '2',
                     '--no-positions', '--device', 'cpu', '--no-progress']) == 0
    out = capsys.readouterr().out
    assert 'GeoWarp fitted: 2 steps, losses ss+cons' in out
    assert MapDB.open(path).manifest['geowarp']['losses'] == ['ss', 'cons']
    assert cli_main(['fit-geowarp', str(tmp_path / 'none.vprmap')]) == 1


def test_settings_written_before_the_config_split_keep_loading(tmp_path):
    # Fitting settings were a `geowarp:` section of the fit's YAML (GeoWarpConfig held both
    # re-ranking and fitting fields); they are read from there, with a warning.
    old = tmp_path / 'fit.yaml'
    old.write_text('iterations: 5\ngeowarp: {k: 0.5, lambda_fw: 5.0, mode: image}\n')
    with pytest.warns(FutureWarning) as caught:
        config = GeoWarpFitConfig.from_yaml(old)
    texts = ' | '.join(str(w.message) for w in caught)
    assert (config.iterations, config.losses.k, config.losses.lambda_fw) == (5, 0.5, 5.0)
    assert config.losses.t_geo == GeoWarpLossConfig().t_geo
    assert f'{old}: geowarp.k has moved to losses.k' in texts
    assert 'geowarp is ignored here: how GeoWarp re-ranks is a localizer setting' in texts
    # A localizer YAML with the fitting fields under geowarp: they are ignored, with a warning.
    with pytest.warns(FutureWarning, match="geowarp.k is ignored here: .*fit-geowarp's losses.k"):
        loc = LocalizerConfig.from_dict({'geowarp': {'k': 0.6, 'mode': 'image'}})
    assert loc.geowarp.mode == 'image'
    # A GeoWarp file fitted before the split stores them in its config: it still loads.
    geowarp = GeoWarp(GeoWarpConfig(mode='image'))
    save_payload({'format': GEOWARP_FORMAT, 'version': 1, 'backbone': 'resnet18',
                  'config': {**geowarp.config.to_dict(), 'k': 0.6, 't_geo': 25.0, 't_feat': 1.2,
                             'lambda_ss': 1.0, 'lambda_fw': 10.0, 'lambda_cons': 0.1},
                  'state_dict': geowarp.state_dict(), 'extra': {}}, tmp_path / 'old.pt')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        loaded, _ = load_geowarp(tmp_path / 'old.pt', backbone='resnet18')
    assert loaded.config == GeoWarpConfig(mode='image')
