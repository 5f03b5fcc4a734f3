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

"""DescriptorModel: describe/forward/dense_features, configs, presets, fingerprint, bad input."""

import numpy as np
import pytest
import torch
from vpr_ros.errors import CheckpointError, ConfigError, DataError
from vpr_ros.models.backbones import build_backbone
from vpr_ros.models.descriptor import build_model, DescriptorModel, ModelConfig, PRESETS
from vpr_ros.models.heads import GeM

TINY = PRESETS['tiny-test']


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return build_model(TINY)


def test_presets_exist_and_default_is_effnet_gem():
    default = PRESETS['effnet-lite0-gem']
    assert (default.backbone, default.head, default.pretrained) == \
        ('efficientnet-lite0', 'gem', True)
    assert not PRESETS['tiny-test'].pretrained


@pytest.mark.parametrize('size', [(8, 8), (33, 47), (64, 80), (120, 160), (300, 90)])
def test_describe_any_input_size(tiny, size):
    out = tiny.describe(torch.rand(2, 3, *size))
    assert out.dtype == np.float32 and out.shape == (2, tiny.descriptor_dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_describe_is_eval_no_grad_and_restores_mode(tiny):
    tiny.train()
    x = torch.rand(3, 3, 50, 60)
    a = tiny.describe(x)
    assert tiny.training
    b = tiny.describe(x[:1])  # eval mode: batch statistics do not leak between images
    np.testing.assert_allclose(a[:1], b, atol=1e-5)
    tiny.eval()


def test_forward_has_grad_and_dense_features(tiny):
    x = torch.rand(2, 3, 70, 90)
    out = tiny(x)
    assert out.requires_grad and out.shape == (2, 256)
    dense = tiny.dense_features(x)
    assert dense.shape == (2, 256, 4, 5)  # 64x80 input, ResNet conv4 stride 16


def test_uint8_and_single_image_accepted(tiny):
    img = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    np.testing.assert_allclose(tiny.describe(img), tiny.describe(img.float() / 255), atol=1e-6)


@pytest.mark.parametrize('batch, match', [
    (torch.rand(2, 1, 32, 32), '3 \\(RGB\\) channels'),
    (torch.rand(2, 4, 32, 32), '3 \\(RGB\\) channels'),
    (torch.rand(0, 3, 32, 32), 'empty'),
    (torch.rand(1, 3, 0, 32), 'empty'),
    (torch.full((1, 3, 16, 16), float('nan')), 'NaN'),
    (torch.rand(1, 3, 16, 16) * 255, r'\[0, 1\]'),
    (torch.rand(32, 32), 'shape'),
    (np.zeros((32, 32, 3)), 'torch.Tensor'),
])
def test_bad_input_is_a_clear_error(tiny, batch, match):
    with pytest.raises(DataError, match=match):
        tiny.describe(batch)


def test_huge_image_refused_before_work():
    model = build_model(TINY.replace(max_input_pixels=100 * 100))
    big = torch.zeros(1, 3, 1, 1).expand(1, 3, 200, 300)  # no memory allocated
    with pytest.raises(DataError, match='max_input_pixels'):
        model.describe(big)


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match='valid keys'):
        ModelConfig.from_dict({'backbon': 'resnet18'})
    with pytest.raises(ConfigError, match='not one of'):
        ModelConfig(backbone='resnet34')
    with pytest.raises(ConfigError, match='not one of'):
        ModelConfig(head='mixvpr')
    with pytest.raises(ConfigError, match='resizer needs an output size'):
        ModelConfig(resizer=True, input_size=(0, 0))
    path = tmp_path / 'model.yaml'
    path.write_text('backbone: resnet18\nhead: netvlad\nnetvlad_clusters: 8\n'
                    'pretrained: false\ninput_size: [64, 64]\n')
    cfg = ModelConfig.from_yaml(path)
    assert cfg.input_size == (64, 64) and cfg.netvlad_clusters == 8
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_fingerprint_stable_and_sensitive():
    torch.manual_seed(0)
    a = build_model(TINY)
    torch.manual_seed(0)
    b = build_model(TINY)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    with torch.no_grad():
        b.backbone[6][1].conv2.weight[0, 0, 0, 0] += 1e-4
    assert a.fingerprint() != b.fingerprint()
    with torch.no_grad():
        b.backbone[6][1].conv2.weight[0, 0, 0, 0] -= 1e-4
    b.backbone[1].running_mean += 0  # unchanged buffers keep the hash
    torch.manual_seed(0)
    c = build_model(TINY.replace(input_size=(64, 96)))
    assert c.fingerprint() != a.fingerprint()  # same weights, different architecture config
    torch.manual_seed(0)
    d = build_model(TINY.replace(weights_path='/nowhere.pth'))  # weight source is not hashed
    assert d.fingerprint() == a.fingerprint()


def test_benchmark_key_layout_resnet18_netvlad():
    torch.manual_seed(0)
    model = build_model(TINY.replace(head='netvlad', netvlad_clusters=64))
    keys = list(model.state_dict())
    assert all(k.startswith(('backbone.', 'aggregation.')) for k in keys)
    assert 'backbone.6.1.bn2.running_var' in keys and 'backbone.7.0.conv1.weight' not in keys
    assert model.state_dict()['aggregation.centroids'].shape == (64, 256)
    assert len(keys) == 92  # the benchmark's r18c4 NetVLAD key count
    assert model.descriptor_dim == 16384


@pytest.mark.parametrize('name, channels, stages', [
    ('resnet50', 1024, (256, 512, 1024)),
    ('vgg16', 512, (256, 512, 512)),
    ('efficientnet-lite0', 1280, (40, 112, 1280)),
    ('efficientnet-lite2', 1280, (48, 120, 1280)),
])
def test_backbones_channels_and_stages(name, channels, stages):
    trunk = build_backbone(name).eval()
    assert trunk.out_channels == channels and tuple(trunk.stage_channels) == stages
    with torch.no_grad():
        outs = trunk.forward_stages(torch.rand(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == list(stages)
    assert outs[-1].shape[-2:] == ((2, 3) if name.startswith('efficientnet') else (4, 6))


def test_triplet_attention_and_resizer_in_model():
    torch.manual_seed(0)
    model = build_model(PRESETS['tiny-test-asgeo'])
    keys = model.state_dict()
    assert 'backbone.attention.cw.conv.conv.weight' in keys
    assert 'backbone.0.weight' in keys and 'resizer.fusion.weight' in keys
    out = model.describe(torch.rand(2, 3, 45, 77))
    assert out.shape == (2, 256)
    plain = build_model(TINY)
    plain.backbone.load_state_dict({k[len('backbone.'):]: v for k, v in keys.items()
                                    if k.startswith('backbone.')
                                    and not k.startswith('backbone.attention')}, strict=True)
    # Untrained AS-Geo resizer == plain bilinear; only the attention changes the output.
    x = torch.rand(1, 3, 45, 77)
    plain.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.resizer(x), plain.resizer(x))


@pytest.mark.parametrize('head', ['avg', 'gem', 'gem_fc', 'netvlad', 'crn', 'crn2', 'haf'])
def test_every_head_in_a_model(head):
    torch.manual_seed(0)
    model = build_model(TINY.replace(head=head, netvlad_clusters=8, descriptor_dim=32))
    out = model.describe(torch.rand(2, 3, 30, 41))
    assert out.shape == (2, model.descriptor_dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_missing_imagenet_weights_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(CheckpointError, match='never downloads'):
        build_model(ModelConfig(backbone='resnet18'))
    with pytest.raises(CheckpointError, match='not found'):
        build_model(ModelConfig(backbone='resnet18', weights_path=str(tmp_path / 'x.pth')))


def test_imagenet_weights_from_local_file_and_hub_cache(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    hub = tmp_path / 'hub' / 'checkpoints'
    hub.mkdir(parents=True)
    torch.save(ref.state_dict(), hub / 'resnet18-f37072fd.pth')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    for cfg in (ModelConfig(backbone='resnet18'),
                ModelConfig(backbone='resnet18', weights_path=str(hub / 'resnet18-f37072fd.pth'))):
        model = build_model(cfg)
        assert torch.equal(model.backbone[0].weight, ref.conv1.weight)
        assert torch.equal(model.backbone[6][1].bn2.running_var, ref.layer3[1].bn2.running_var)


def test_model_moves_to_device(device):
    torch.manual_seed(0)
    model = build_model(TINY).to(device)
    out = model.describe(torch.rand(1, 3, 40, 40))  # CPU input moved to the model's device
    assert isinstance(model, DescriptorModel) and out.shape == (1, 256)


def test_same_config_builds_the_same_model():
    import torch

    from vpr_ros.models.descriptor import build_model, PRESETS

    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(PRESETS['tiny-test'])
    b = build_model(PRESETS['tiny-test'])
    assert a.fingerprint() == b.fingerprint()
    assert torch.equal(torch.rand(1), expected)  # the caller's RNG stream is left alone


def test_multi_scale_is_the_power_mean_of_each_scale(tiny):
    # Radenovic et al.'s test-time scales: each scale is described on its own, the unit
    # descriptors are combined by the power mean with GeM's p, and normalised again.
    torch.manual_seed(0)
    multi = build_model(TINY.replace(scales=(1.0, 0.7071, 0.5)))
    assert multi.state_dict().keys() == tiny.state_dict().keys()
    multi.load_state_dict(tiny.state_dict())
    was_training = tiny.training
    tiny.eval()
    multi.eval()
    images = torch.rand(3, 3, 96, 120)
    x = tiny.resize(images)
    h, w = x.shape[-2:]
    with torch.no_grad():
        parts = [tiny.embed(x)] + [
            tiny.embed(torch.nn.functional.interpolate(
                x, size=(round(h * s), round(w * s)), mode='bilinear', align_corners=False,
                antialias=True)) for s in (0.7071, 0.5)]
    p = TINY.gem_p
    want = (sum(d.clamp_min(0) ** p for d in parts) / 3) ** (1 / p)
    want = torch.nn.functional.normalize(want, dim=1).numpy()
    got = multi.describe(images)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, tiny.describe(images), atol=1e-3)   # the scales count
    # The descriptor the localizer takes with GeoWarp's features is the same, and those
    # features are the scale-1 pass's.
    with torch.no_grad():
        desc, local = multi.embed_with_local(multi.resize(images))
        np.testing.assert_allclose(desc.numpy(), got, atol=1e-5)
        np.testing.assert_allclose(local.numpy(), tiny.embed_with_local(x)[1].numpy(),
                                   atol=1e-6)
    # Signed heads are averaged (p = 1); a single scale keeps every existing fingerprint.
    assert ModelConfig(head='netvlad').scale_power == 1.0 and TINY.scale_power == p
    assert 'scales' not in TINY.architecture_dict()
    assert ModelConfig.from_dict({k: v for k, v in TINY.to_dict().items()
                                  if k != 'scales'}) == TINY
    assert multi.fingerprint() != tiny.fingerprint()

    # The scales are combined with the head's own GeM exponent once training has moved it.
    def gem(model):
        return next(m for m in model.aggregation.modules() if isinstance(m, GeM))

    with torch.no_grad():
        gem(tiny).p.fill_(2.0)
        gem(multi).p.fill_(2.0)
        parts = [tiny.embed(x)] + [
            tiny.embed(torch.nn.functional.interpolate(
                x, size=(round(h * s), round(w * s)), mode='bilinear', align_corners=False,
                antialias=True)) for s in (0.7071, 0.5)]
    learnt = (sum(d.clamp_min(0) ** 2.0 for d in parts) / 3) ** 0.5
    np.testing.assert_allclose(multi.describe(images),
                               torch.nn.functional.normalize(learnt, dim=1).numpy(), atol=1e-5)
    with torch.no_grad():
        gem(tiny).p.fill_(p)     # the module's fixture model
    tiny.train(was_training)
    for bad in ((0.7071, 0.5), (1.0, 1.0), (1.0, 0.1), (1.0, 3.0), ()):
        with pytest.raises(ConfigError, match='scales'):
            TINY.replace(scales=bad)


@pytest.mark.parametrize('config', [
    TINY, TINY.replace(scales=(1.0, 0.7071, 0.5)), PRESETS['tiny-test-asgeo'],
    ModelConfig(backbone='efficientnet-lite0', pretrained=False, input_size=(96, 128)),
    ModelConfig(backbone='vgg16', pretrained=False, input_size=(64, 80))],
    ids=['resnet18', 'multi-scale', 'resizer', 'efficientnet', 'vgg16'])
def test_final_stage_from_frozen_maps_gives_the_descriptors(config):
    # Fine-tuning the final stage caches what comes before it; the two halves must make up
    # exactly the forward (every scale of a multi-scale model).
    torch.manual_seed(0)
    model = build_model(config).eval()
    images = torch.rand(2, 3, 90, 120)
    with torch.no_grad():
        maps = model.frozen_features(images)
        got = model.embed_frozen(maps)
        want = model(images)
    assert len(maps) == len(config.scales)
    # the maps are the stride-16 stage's: the final stage is the stride-32 one
    assert maps[0].shape[1] == model.backbone.stage_channels[1]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    multi_stage = build_model(TINY.replace(head='haf'))
    with pytest.raises(ValueError, match='several backbone stages'):
        multi_stage.frozen_features(images)
