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

"""``vpr-ros adapt --finetune``: training on the map's own drive, the held-out gate, the swap."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from mapdb_helpers import textured_map
import numpy as np
import pytest
import torch
from vpr_ros.errors import DataError
from vpr_ros.mapdb import MapDB
from vpr_ros.mapdb.adaptation import AdaptConfig
from vpr_ros.mapdb.finetune import finetune_map, FinetuneConfig, resolve_layers
from vpr_ros.models.backbones import build_backbone, final_stage
from vpr_ros.models.descriptor import build_model, ModelConfig
from vpr_ros.training.data import augment, AugmentConfig
from vpr_ros.training.model_setup import freeze_all_but_last, set_train_mode

QUICK = {'epochs': 2, 'validation_queries': 24, 'lr': 1e-4, 'batch_size': 2, 'negatives': 3}


def test_final_stage_follows_the_local_stage_only_on_efficientnet():
    eff = build_backbone('efficientnet-lite0')
    modules, after_local = final_stage(eff)
    assert after_local
    assert modules[-2] is eff._conv_head and modules[-1] is eff._bn1
    assert modules[0] is eff._blocks[eff.taps[-1] + 1]
    res = build_backbone('resnet18')
    modules, after_local = final_stage(res)
    assert not after_local                 # ResNet's last stage is GeoWarp's layer3
    assert modules == [res._modules['6']]


def test_training_the_last_stage_leaves_the_rest_and_the_local_features_alone():
    model = build_model(ModelConfig(pretrained=False, input_size=(64, 80)))
    n = freeze_all_but_last(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert any(name.startswith('aggregation.') for name in trainable)
    assert any(name.startswith('backbone._conv_head') for name in trainable)
    assert not any(name.startswith('backbone._conv_stem') for name in trainable)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 80, generator=gen)
    model.eval()
    local = model.local_features(x).detach().clone()
    before = model(x).detach()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    set_train_mode(model, freeze_bn=True)          # as the trainer: BatchNorm statistics fixed
    # Descriptors are unit vectors: a loss of their norm would have no gradient.
    (model(x) * torch.randn(before.shape, generator=gen)).sum().backward()
    optimiser.step()
    model.eval()
    assert torch.equal(model.local_features(x).detach(), local)     # GeoWarp unaffected
    assert not torch.allclose(model(x).detach(), before)


def test_blur_augmentation_is_drawn_and_reproducible():
    image = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    sharp = AugmentConfig(apply_to='all', brightness=0, contrast=0, saturation=0,
                          crop_scale=(1, 1), crop_ratio=(1, 1), rotation_deg=0, perspective=0)
    blurred = sharp.replace(blur_sigma=3.0, blur_p=1.0)
    a = augment(image, (60, 80), sharp, np.random.default_rng(1))
    b = augment(image, (60, 80), blurred, np.random.default_rng(1))
    c = augment(image, (60, 80), blurred, np.random.default_rng(1))
    assert torch.equal(b, c)
    # Blur removes high frequencies: neighbouring pixels differ less.
    assert (b.diff(dim=-1).abs().mean() < 0.7 * a.diff(dim=-1).abs().mean())


def test_auto_layers_are_last_on_a_cpu_and_all_on_a_gpu():
    assert resolve_layers('auto', torch.device('cpu')) == 'last'
    assert resolve_layers('auto', torch.device('cuda', 0)) == 'all'
    assert resolve_layers('all', torch.device('cpu')) == 'all'


@pytest.fixture(scope='module')
def tiny_map(tmp_path_factory):
    return textured_map(tmp_path_factory.mktemp('finetune'), 48,
                        adapt=AdaptConfig(method='none'))


def _vpr_ros(*args):
    return subprocess.run([sys.executable, '-m', 'vpr_ros.cli', *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_finetune_cli_replaces_the_map_when_it_helps_and_keeps_a_backup(tiny_map, tmp_path):
    path = tmp_path / 'm.vprmap'
    shutil.copytree(tiny_map, path)
    before = MapDB.open(path)
    proc = _vpr_ros('adapt', path, '--finetune', '--epochs', '3', '--lr', '1e-4',
                    '--validation-queries', '24', '--min-gain', '-1', '--max-p', '1',
                    '--no-progress',
                    '--json', tmp_path / 'ft.json')
    assert proc.returncode == 0, proc.stderr
    assert 'held-out places' in proc.stdout and 'fine-tuned' in proc.stdout
    assert 'the old map is' in proc.stdout
    out = json.loads((tmp_path / 'ft.json').read_text())
    assert out['kept'] and out['report']['layers'] == 'last'
    losses = [row['loss'] for row in out['report']['history']]
    assert len(losses) == 3 and losses[-1] < losses[0]          # training lowers its loss
    after = MapDB.open(path)                                      # verifies every sha256
    assert after.manifest['model']['fingerprint'] != before.manifest['model']['fingerprint']
    assert after.names == before.names
    np.testing.assert_array_equal(after.positions(np.arange(len(after))),
                                  before.positions(np.arange(len(before))))
    assert not np.allclose(np.asarray(after.descriptors), np.asarray(before.descriptors))
    record = after.manifest['finetune']
    assert record['parent_fingerprint'] == before.manifest['model']['fingerprint']
    assert record['held_out_after']['recall@1'] == out['after']['recall@1']
    # The map's new descriptors are its new model's: describing an entry again agrees.
    model = after.load_model('cpu')
    from vpr_ros.images import load_image, to_tensor
    image = load_image(tiny_map.parent / 'src' / 'img' / '0005.png')
    desc = model.describe(to_tensor(image)[None])
    np.testing.assert_allclose(desc[0], after.descriptors[5], atol=1e-5)
    assert not (tmp_path / 'm.vprmap.finetune').exists()          # the model is in the map
    backups = list(tmp_path.glob('m.vprmap.before-finetune-*'))
    assert len(backups) == 1
    assert MapDB.open(backups[0]).manifest['model']['fingerprint'] == \
        before.manifest['model']['fingerprint']


@pytest.mark.slow
def test_finetune_that_does_not_help_leaves_the_map_and_resumes(tiny_map, tmp_path):
    path = tmp_path / 'm.vprmap'
    shutil.copytree(tiny_map, path)
    fingerprint = MapDB.open(path).manifest['model']['fingerprint']
    files = sorted(p.name for p in path.iterdir())
    config = FinetuneConfig(**QUICK, min_gain=2.0)                 # no gain can reach it
    first = finetune_map(path, config, device='cpu', progress=False)
    assert not first.kept and 'keeps its model' in first.reason
    assert first.after['queries'] == first.before['queries'] > 0
    assert MapDB.open(path).manifest['model']['fingerprint'] == fingerprint
    assert sorted(p.name for p in path.iterdir()) == files
    assert not list(tmp_path.glob('*.before-finetune-*'))
    work = tmp_path / 'm.vprmap.finetune'
    assert (work / 'train' / 'last.pt').is_file() and not (work / 'm.vprmap').exists()
    # The same command again continues from the finished training: same model, same numbers.
    again = finetune_map(path, config, device='cpu', progress=False)
    assert again.report['history'] == first.report['history']
    assert again.after == first.after and again.before == first.before
    # Any gain, but evidence no model can give (p <= 0): the sign test alone refuses it.
    strict = finetune_map(path, config.replace(min_gain=-1.0, max_p=0.0), device='cpu',
                          progress=False)
    assert not strict.kept and 'sign test' in strict.reason
    assert 0.0 < strict.report['sign_test_p'] <= 1.0 and strict.after == first.after
    assert MapDB.open(path).manifest['model']['fingerprint'] == fingerprint


def test_finetune_needs_the_map_source(tiny_map, tmp_path):
    path = tmp_path / 'm.vprmap'
    shutil.copytree(tiny_map, path)
    with pytest.raises(DataError, match='does not exist'):
        finetune_map(path, FinetuneConfig(**QUICK), source=tmp_path / 'nowhere.csv',
                     progress=False)
    other = tmp_path / 'other.csv'
    (tmp_path / 'img').mkdir()
    shutil.copy(tiny_map.parent / 'src' / 'img' / '0000.png', tmp_path / 'img' / 'other.png')
    other.write_text('image,lat,lon\nimg/other.png,45.0,7.0\n')
    with pytest.raises(DataError, match='does not hold'):
        finetune_map(path, FinetuneConfig(**QUICK), source=other, progress=False)
    proc = _vpr_ros('adapt', path, '--finetune', '--source', tmp_path / 'nowhere.csv')
    assert proc.returncode != 0 and 'does not exist' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_radii_that_leave_no_tuple_fail_before_training_and_name_the_options(
        tiny_map, tmp_path, caplog):
    """Before: a site smaller than 25 m failed in the trainer, naming a setting with no option."""
    path = tmp_path / 'm.vprmap'
    shutil.copytree(tiny_map, path)
    # The 48 entries span 235 m: beyond 300 m there is no negative for any of them.
    proc = _vpr_ros('adapt', path, '--finetune', '--negative-radius', 300)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert 'nothing to fine-tune on' in proc.stderr
    assert '--negative-radius (300 m) set them' in proc.stderr and 'spans' in proc.stderr
    assert not (tmp_path / 'm.vprmap.finetune').exists()
    assert MapDB.open(path).manifest['model'] == MapDB.open(tiny_map).manifest['model']
    # Beyond 150 m, the middle third of the route has no negative: a warning, and training goes on.
    from vpr_ros.mapdb.finetune import _check_tuples
    from vpr_ros.training.data import ImageSet, Split
    from vpr_ros.training.mining import MiningConfig

    db = MapDB.open(path)
    enu = db.positions_enu(np.arange(len(db)))
    images = ImageSet(db.names, enu, [None] * len(db))
    with caplog.at_level('WARNING', logger='vpr_ros.mapdb.finetune'):
        _check_tuples(path, Split(images, images, True),
                      MiningConfig(positive_m=6.0, negative_m=150.0), enu)
    assert 'of 48 training images have no positive or no negative' in caplog.text
    caplog.clear()
    with caplog.at_level('WARNING', logger='vpr_ros.mapdb.finetune'):
        _check_tuples(path, Split(images, images, True), MiningConfig(positive_m=6.0), enu)
    assert not caplog.text


@pytest.mark.slow
def test_a_second_drive_decides_the_finetuning(tiny_map, tmp_path):
    path = tmp_path / 'm.vprmap'
    shutil.copytree(tiny_map, path)
    fingerprint = MapDB.open(path).manifest['model']['fingerprint']
    # The second drive: every other map image again at its own position, so the map's own
    # model finds each at rank 1 (recall 1.0 before).
    src = tiny_map.parent / 'src'
    rows = (src / 'route.csv').read_text().splitlines()
    drive = tmp_path / 'drive'
    shutil.copytree(src / 'img', drive / 'img')
    (drive / 'drive.csv').write_text('\n'.join([rows[0], *rows[1::2]]) + '\n')
    frames = len(rows[1::2])
    out = tmp_path / 'ft.json'
    proc = _vpr_ros('adapt', path, '--finetune', '--queries', drive / 'drive.csv', '--epochs',
                    '1', '--lr', '1e-4', '--validation-queries', '12', '--min-gain', '-1',
                    '--max-p', '1', '--dry-run', '--no-progress', '--json', out)
    assert proc.returncode == 0, proc.stderr
    assert 'second drive' in proc.stdout and 'held-out places' in proc.stdout
    result = json.loads(out.read_text())
    report = result['report']
    assert report['decided_by'] == 'second-drive' and report['drive']['before']['queries'] == \
        frames
    assert result['before'] == report['drive']['before']
    assert result['before']['recall@1'] == 1.0 and result['before']['recall@5'] == 1.0
    assert report['held_out_before']['queries'] > 0          # still reported beside it
    assert 'second-drive recall@1' in report['reason'] and 'dry run' in report['reason']
    assert MapDB.open(path).manifest['model']['fingerprint'] == fingerprint
    # Without --finetune the same drive decides the projection (dry run: nothing stored).
    proc = _vpr_ros('adapt', path, '--queries', drive / 'drive.csv', '--dims', '16', '32',
                    '--dry-run', '--json', tmp_path / 'adapt.json')
    assert proc.returncode == 0, proc.stderr
    assert f'on the second drive {drive / "drive.csv"}: {frames} frames' in proc.stdout
    adapt = json.loads((tmp_path / 'adapt.json').read_text())
    assert adapt['report']['decided_by'] == 'second-drive'
    assert adapt['report']['drive_frames'] == frames and adapt['report']['pseudo_queries'] == 0
    plain = next(r for r in adapt['validation'] if r['method'] == 'none')
    assert plain['queries'] == frames and plain['recall@1'] == 1.0     # the images themselves
