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

"""AS-Geo resizer (untrained == bilinear, exactly) and triplet attention."""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from vpr_ros.models.attention import TripletAttention, z_pool
from vpr_ros.models.resizer import ASGeoResizer, BilinearResizer, fit_aspect


@pytest.mark.parametrize('in_size', [(37, 53), (96, 128), (240, 320), (9, 200)])
def test_untrained_resizer_is_exactly_bilinear(in_size, device):
    torch.manual_seed(0)
    resizer = ASGeoResizer((64, 80)).to(device)
    x = torch.randn(2, 3, *in_size, device=device)
    expected = F.interpolate(x, size=(64, 80), mode='bilinear', align_corners=False,
                             antialias=True)
    for mode in (resizer.train, resizer.eval):
        mode()
        out = resizer(x)
        assert out.shape == (2, 3, 64, 80)
        assert torch.equal(out, expected)
    assert torch.equal(BilinearResizer((64, 80))(x), expected)


def test_trained_resizer_differs_and_learns():
    torch.manual_seed(0)
    resizer = ASGeoResizer((32, 40))
    x = torch.randn(2, 3, 50, 70)
    resizer(x).sum().backward()
    assert resizer.fusion.weight.grad.abs().sum() > 0  # the residual can learn
    with torch.no_grad():
        resizer.fusion.weight.normal_(std=0.1)
    assert not torch.allclose(resizer(x), BilinearResizer((32, 40))(x))


def test_aspect_modes():
    x = torch.arange(2 * 3 * 40 * 100, dtype=torch.float32).view(2, 3, 40, 100)
    crop = fit_aspect(x, (60, 80), 'crop')  # 3:4 from 40x100: keep 40x53 centre
    assert crop.shape[-2:] == (40, 53)
    assert torch.equal(crop, x[..., :, 23:76])
    pad = fit_aspect(x, (60, 80), 'pad')
    assert pad.shape[-2:] == (75, 100)
    assert torch.equal(pad[..., 17:57, :], x) and pad[..., :17, :].abs().sum() == 0
    assert fit_aspect(x, (60, 80), 'stretch') is x
    tall = fit_aspect(torch.ones(1, 3, 100, 20), (60, 80), 'pad')
    assert tall.shape[-2:] == (100, 133)
    for mode in ('stretch', 'pad', 'crop'):
        assert ASGeoResizer((60, 80), mode)(x).shape == (2, 3, 60, 80)
    with pytest.raises(ValueError, match='aspect'):
        fit_aspect(x, (60, 80), 'squash')


def test_native_size_bilinear_is_identity():
    x = torch.rand(1, 3, 33, 47)
    assert BilinearResizer((0, 0))(x) is x


def test_triplet_attention_layout_and_shapes():
    torch.manual_seed(0)
    att = TripletAttention()
    keys = sorted(att.state_dict())
    assert 'cw.conv.conv.weight' in keys and 'hw.conv.bn.running_var' in keys
    assert att.state_dict()['hc.conv.conv.weight'].shape == (1, 2, 7, 7)
    for shape in [(2, 8, 5, 7), (2, 64, 1, 1), (2, 3, 16, 9)]:
        x = torch.randn(*shape, requires_grad=True)
        out = att(x)
        assert out.shape == x.shape
        out.sum().backward()
        assert torch.isfinite(x.grad).all()


def test_z_pool_is_max_then_mean():
    x = torch.randn(2, 5, 3, 4)
    pooled = z_pool(x)
    assert torch.equal(pooled[:, 0], x.amax(dim=1))
    torch.testing.assert_close(pooled[:, 1], x.mean(dim=1))


def test_triplet_attention_matches_reference_formula():
    torch.manual_seed(0)
    att = TripletAttention().eval()
    x = torch.randn(2, 4, 6, 5)

    def gate(module, t):
        y = F.conv2d(torch.cat([t.max(1, keepdim=True)[0], t.mean(1, keepdim=True)], 1),
                     module.conv.conv.weight, padding=3)
        bn = module.conv.bn
        y = (y - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
            bn.running_var.view(1, -1, 1, 1) + bn.eps) * bn.weight.view(1, -1, 1, 1) + \
            bn.bias.view(1, -1, 1, 1)
        return t * torch.sigmoid(y)

    expected = (gate(att.cw, x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
                + gate(att.hc, x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
                + gate(att.hw, x)) / 3
    torch.testing.assert_close(att(x), expected)
