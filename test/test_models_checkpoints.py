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

"""Checkpoints: our round trip, public benchmark / CosPlace / GeoWarp layouts, mismatches."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from vpr_ros.errors import CheckpointError, ConfigError
from vpr_ros.models.checkpoints import load_model, save_checkpoint
from vpr_ros.models.descriptor import build_model, PRESETS

TINY = PRESETS['tiny-test']
R18_NETVLAD = TINY.replace(head='netvlad', netvlad_clusters=64)


def images(n=2, h=48, w=64, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def torchvision_r18_conv4_benchmark_keys(seed):
    """Independently re-key a torchvision ResNet-18 into the benchmark's conv4 layout."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    index = {'conv1': 0, 'bn1': 1, 'layer1': 4, 'layer2': 5, 'layer3': 6}
    out = {}
    for key, value in net.state_dict().items():
        top = key.split('.')[0]
        if top in index:
            out[f'backbone.{index[top]}{key[len(top):]}'] = value
    return out


def write_yaml(tmp_path, cfg, checkpoint):
    import yaml

    path = tmp_path / 'model.yaml'
    path.write_text(yaml.safe_dump({**cfg.to_dict(), 'checkpoint': str(checkpoint)}))
    return path


def test_round_trip_identical_descriptors_and_fingerprint(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY.replace(head='crn2', netvlad_clusters=8, resizer=True,
                                     triplet_attention=True)).eval()
    with torch.no_grad():  # make the zero-init residual non-trivial
        model.resizer.fusion.weight.normal_(std=0.01)
    path = save_checkpoint(model, tmp_path / 'sub' / 'model.pt', extra={'epoch': 3})
    assert [p.name for p in path.parent.iterdir()] == ['model.pt']  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert raw['format'] == 'vpr_ros.model' and raw['extra'] == {'epoch': 3}
    loaded = load_model(path, device='cpu')
    assert loaded.config == model.config.replace(pretrained=False)
    assert loaded.fingerprint() == model.fingerprint() == raw['fingerprint']
    x = images(2, 50, 70)
    # Loaded for the CPU, the weights are NHWC (faster there): the same layout gives the
    # same bits, the other agrees to rounding.
    conv = next(m for m in loaded.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    nchw = model.describe(x)
    model.to(memory_format=torch.channels_last)
    np.testing.assert_array_equal(loaded.describe(x), model.describe(x))
    np.testing.assert_allclose(loaded.describe(x), nchw, atol=1e-5)


def test_load_model_from_preset_yaml_and_errors(tmp_path):
    assert load_model('tiny-test', device='cpu').config == TINY
    cfg_path = tmp_path / 'm.yaml'
    cfg_path.write_text('backbone: resnet18\npretrained: false\nhead: avg\n')
    assert load_model(cfg_path, device='cpu').config.head == 'avg'
    with pytest.raises(ConfigError, match='effnet-lite0-gem'):
        load_model('effnet-lite9', device='cpu')
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='cannot read'):
        load_model(bad, device='cpu')
    foreign = tmp_path / 'foreign.pth'
    torch.save({'backbone.0.weight': torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match='YAML ModelConfig'):
        load_model(foreign, device='cpu')


def test_benchmark_training_checkpoint_with_module_prefix(tmp_path):
    state = torchvision_r18_conv4_benchmark_keys(seed=1)
    gen = torch.Generator().manual_seed(2)
    centroids = torch.rand(64, 256, generator=gen)
    state['aggregation.centroids'] = centroids
    state['aggregation.conv.weight'] = torch.randn(64, 256, 1, 1, generator=gen)
    ckpt = {'epoch_num': 4, 'recalls': np.zeros(4).tolist(), 'best_r5': 0.5,
            'not_improved_num': 0,
            'model_state_dict': {f'module.{k}': v for k, v in state.items()}}
    torch.save(ckpt, tmp_path / 'last_model.pth')
    model = load_model(write_yaml(tmp_path, R18_NETVLAD, tmp_path / 'last_model.pth'),
                       device='cpu')
    assert torch.equal(model.aggregation.centroids, centroids)
    assert torch.equal(model.backbone[6][1].conv2.weight, state['backbone.6.1.conv2.weight'])
    out = model.describe(images())
    assert out.shape == (2, 16384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    # The model-zoo form (a plain state_dict) loads the same.
    torch.save(state, tmp_path / 'pitt_r18l3_netvlad_full.pth')
    zoo = load_model(write_yaml(tmp_path, R18_NETVLAD, tmp_path / 'pitt_r18l3_netvlad_full.pth'),
                     device='cpu')
    assert zoo.fingerprint() == model.fingerprint()


def test_benchmark_gem_fc_and_cosplace_layouts_agree(tmp_path):
    state = torchvision_r18_conv4_benchmark_keys(seed=3)
    p, w, b = torch.tensor([2.5]), torch.randn(64, 256), torch.randn(64)
    bench = {**state, 'aggregation.0.1.p': p, 'aggregation.1.weight': w,
             'aggregation.1.bias': b}
    cosplace = {**state, 'aggregation.1.p': p, 'aggregation.3.weight': w,
                'aggregation.3.bias': b}
    cfg = TINY.replace(head='gem_fc', descriptor_dim=64)
    torch.save(bench, tmp_path / 'bench.pth')
    torch.save(cosplace, tmp_path / 'cosplace.pth')
    a = build_model(cfg.replace(checkpoint=str(tmp_path / 'bench.pth')))
    c = build_model(cfg.replace(checkpoint=str(tmp_path / 'cosplace.pth')))
    assert a.fingerprint() == c.fingerprint()
    assert float(a.aggregation[1].p.detach()) == 2.5
    assert a.describe(images()).shape == (2, 64)


def test_geowarp_layout_renames_encoder_and_pool(tmp_path):
    state = torchvision_r18_conv4_benchmark_keys(seed=4)
    geowarp = {('encoder.' + k[len('backbone.'):]): v for k, v in state.items()}
    geowarp['pool.centroids'] = torch.rand(64, 256)
    geowarp['pool.conv.weight'] = torch.randn(64, 256, 1, 1)
    torch.save(geowarp, tmp_path / 'resnet18_netvlad.pth')
    model = build_model(R18_NETVLAD.replace(checkpoint=str(tmp_path / 'resnet18_netvlad.pth')))
    assert torch.equal(model.aggregation.conv.weight, geowarp['pool.conv.weight'])
    # Nanne's wrapper with module. after encoder./pool. loads too.
    nanne = {'epoch': 1, 'state_dict': {k.replace('encoder.', 'encoder.module.')
                                        .replace('pool.', 'pool.module.'): v
                                        for k, v in geowarp.items()}}
    torch.save(nanne, tmp_path / 'nanne.pth.tar')
    other = build_model(R18_NETVLAD.replace(checkpoint=str(tmp_path / 'nanne.pth.tar')))
    assert other.fingerprint() == model.fingerprint()


def test_mismatched_checkpoints_are_clear_errors(tmp_path):
    torch.manual_seed(0)
    netvlad = build_model(TINY.replace(head='netvlad', netvlad_clusters=16))
    torch.save({f'module.{k}': v for k, v in netvlad.state_dict().items()}, tmp_path / 'nv.pth')
    with pytest.raises(CheckpointError, match=r'unexpected keys: aggregation.centroids'):
        build_model(TINY.replace(checkpoint=str(tmp_path / 'nv.pth')))  # gem model
    with pytest.raises(CheckpointError, match=r'shape mismatch: aggregation.centroids: '
                                              r'checkpoint \(16, 256\) vs model \(8, 256\)'):
        build_model(TINY.replace(head='netvlad', netvlad_clusters=8,
                                 checkpoint=str(tmp_path / 'nv.pth')))
    with pytest.raises(CheckpointError, match='missing keys: backbone.attention'):
        build_model(TINY.replace(head='netvlad', netvlad_clusters=16, triplet_attention=True,
                                 checkpoint=str(tmp_path / 'nv.pth')))
    with pytest.raises(CheckpointError, match='not found'):
        build_model(TINY.replace(checkpoint=str(tmp_path / 'absent.pth')))
    # Our own file whose config does not match its weights.
    path = save_checkpoint(netvlad, tmp_path / 'ours.pt')
    raw = torch.load(path, weights_only=True)
    raw['config']['netvlad_clusters'] = 32
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match='shape mismatch'):
        load_model(path, device='cpu')
    raw['config']['backbone'] = 'resnet34'
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match='config is invalid'):
        load_model(path, device='cpu')


def test_checkpoint_file_is_weights_only_loadable(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(build_model(TINY), tmp_path / 'm.pt')
    obj = torch.load(Path(path), weights_only=True)
    assert set(obj) == {'format', 'version', 'config', 'state_dict', 'fingerprint', 'extra'}
