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

"""Aggregation heads: unit norm on tiny/odd maps, batched NetVLAD == loop, CRN vs CRN2 size."""

import math

import numpy as np
import pytest
import torch
from vpr_ros.errors import ConfigError
from vpr_ros.models.heads import (AvgHead, build_head, CRN, CRN2, gem, GeMFCHead, GeMHead,
                                  HAF, HEADS, init_netvlad, NetVLAD, netvlad_aggregate,
                                  netvlad_aggregate_loop)

C = 32
STAGES = (8, 16, C)


class Cfg:
    """Duck-typed model config with the head options."""

    gem_p = 3.0
    gem_l2 = 'before_pool'
    descriptor_dim = 24
    netvlad_clusters = 8
    haf_dim = 16


def head_input(name, h, w, n=2):
    if HEADS[name].multiscale:
        return [torch.randn(n, c, h * s, w * s) for c, s in zip(STAGES, (4, 2, 1))]
    return torch.randn(n, C, h, w)


@pytest.mark.parametrize('size', [(1, 1), (7, 9), (15, 20)])
@pytest.mark.parametrize('name', sorted(HEADS))
def test_heads_unit_norm_any_size(name, size, device):
    torch.manual_seed(0)
    head = build_head(name, C, STAGES, Cfg()).to(device)
    x = head_input(name, *size)
    x = [t.to(device) for t in x] if isinstance(x, list) else x.to(device)
    for mode in (head.train, head.eval):
        mode()
        out = head(x)
        assert out.shape == (2, head.out_dim)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.norm(dim=1), torch.ones(2, device=device))


@pytest.mark.parametrize('name', sorted(HEADS))
def test_heads_backpropagate(name):
    torch.manual_seed(0)
    head = build_head(name, C, STAGES, Cfg())
    x = head_input(name, 5, 6)
    leaves = x if isinstance(x, list) else [x]
    for t in leaves:
        t.requires_grad_(True)
    head(x).sum().backward()
    used = leaves[-2:] if name == 'gem_stages' else leaves      # pools the last two stages
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in used)
    trainable = [p for p in head.parameters() if p.requires_grad]
    if trainable:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_unknown_head_lists_choices():
    with pytest.raises(ConfigError, match='gem_fc'):
        build_head('vlad', C, STAGES, Cfg())


def test_gem_matches_formula_and_p1_is_average():
    x = torch.rand(2, 4, 5, 7) + 0.1
    expected = x.pow(3).mean(dim=(2, 3), keepdim=True).pow(1 / 3)
    torch.testing.assert_close(gem(x, 3.0), expected)
    torch.testing.assert_close(gem(x, 1.0), x.mean(dim=(2, 3), keepdim=True))
    assert (gem(x, 50.0) <= x.amax(dim=(2, 3), keepdim=True) + 1e-5).all()


def test_gem_stages_is_two_gem_heads_concatenated():
    torch.manual_seed(0)
    head = build_head('gem_stages', C, STAGES, Cfg())
    assert head.out_dim == STAGES[1] + STAGES[2]
    x = head_input('gem_stages', 5, 6)
    gem_head = GeMHead(1)
    parts = [gem_head(t) for t in x[1:]]        # L2, GeM p=3, L2: the gem head per stage
    want = torch.cat(parts, dim=1) / math.sqrt(2.0)
    torch.testing.assert_close(head(x), want)
    assert sorted(head.state_dict()) == ['pools.0.p', 'pools.1.p']


def test_gem_head_key_layouts():
    assert list(GeMHead(C).state_dict()) == ['1.p']  # benchmark l2=before_pool
    assert list(GeMHead(C, l2='after_pool').state_dict()) == ['0.p']
    assert sorted(GeMFCHead(C, 24).state_dict()) == ['1.p', '3.bias', '3.weight']  # CosPlace
    assert list(AvgHead(C).state_dict()) == []
    assert sorted(NetVLAD(C, 8).state_dict()) == ['centroids', 'conv.weight']


def test_netvlad_batched_equals_per_cluster_loop():
    torch.manual_seed(1)
    head = NetVLAD(C, clusters=8).double()
    x = torch.nn.functional.normalize(torch.randn(3, C, 7, 9, dtype=torch.float64), dim=1)
    assign = head.soft_assign(x)
    fast = netvlad_aggregate(x.flatten(2), assign, head.centroids)
    slow = netvlad_aggregate_loop(x.flatten(2), assign, head.centroids)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    # And the CRN path (mask-weighted assignment) too.
    crn = CRN(C, clusters=8).double()
    mask = crn.weight_mask(x)
    torch.testing.assert_close(
        netvlad_aggregate(x.flatten(2), assign * mask, crn.centroids),
        netvlad_aggregate_loop(x.flatten(2), assign * mask, crn.centroids), rtol=0, atol=1e-12)


def test_crn_masks_have_feature_size_on_odd_maps():
    x = torch.randn(2, C, 7, 9)
    assert CRN(C, 8).crn(x).shape == (2, 1, 7, 9)
    assert CRN2(C, 8).crn(x).shape == (2, 1, 7, 9)
    assert CRN(C, 8).crn(torch.randn(1, C, 1, 1)).shape == (1, 1, 1, 1)


def test_crn_vs_crn2_parameter_counts():
    """CRN2's mask net has ~245k parameters vs ~529k for CRN (C=256).

    Gambino, Pierro, Grillo, "Visual Geo-Localization" (student project report), §4.2.
    """
    crn, crn2 = CRN(256, 64), CRN2(256, 64)
    n_crn, n_crn2 = crn.mask_parameters(), crn2.mask_parameters()
    print(f'CRN mask parameters: {n_crn}, CRN2: {n_crn2}')
    assert n_crn == 32 * 256 * 9 + 32 * 256 * 25 + 20 * 256 * 49 + 32 + 32 + 20 + 84 + 1
    assert math.isclose(n_crn, 529e3, rel_tol=0.01)
    assert math.isclose(n_crn2, 245e3, rel_tol=0.01)
    # NetVLAD parameters are shared; only the mask net differs.
    assert sum(p.numel() for p in crn.parameters()) - n_crn == \
        sum(p.numel() for p in crn2.parameters()) - n_crn2


def test_haf_fusion_weights_sum_to_one_and_weight_distances():
    torch.manual_seed(0)
    head = HAF(STAGES, dim=16)
    with torch.no_grad():
        head.fusion.copy_(torch.tensor([0.0, 1.0, 2.0]))
    w = head.fusion_weights()
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    a, b = head(head_input('haf', 3, 4, n=1)), head(head_input('haf', 3, 4, n=1))
    parts_a, parts_b = a.view(3, 16) / w.sqrt()[:, None], b.view(3, 16) / w.sqrt()[:, None]
    weighted = (w * ((parts_a - parts_b) ** 2).sum(dim=1)).sum()
    torch.testing.assert_close(((a - b) ** 2).sum(), weighted)


def test_init_netvlad_kmeans_assigns_to_centres():
    rng = np.random.default_rng(0)
    centres = np.eye(C, dtype=np.float32)[:8]  # well separated: k-means must find them
    labels = rng.integers(0, 8, 2000)
    descs = centres[labels] + 0.05 * rng.normal(size=(2000, C)).astype(np.float32)
    head = NetVLAD(C, clusters=8)
    alpha = init_netvlad(head, descs, niter=20)
    assert alpha > 0 and math.isclose(head.alpha, alpha)
    x = torch.from_numpy(descs[:200]).T.reshape(1, C, 200, 1)
    assign = head.soft_assign(torch.nn.functional.normalize(x, dim=1))[0]  # K, 200
    found = assign.argmax(dim=0).numpy()
    # k-means clusters are a relabelling of the true ones: one-to-one on these points.
    pairs = set(zip(labels[:200].tolist(), found.tolist()))
    assert len(pairs) == 8
    assert assign.max(dim=0).values.mean() > 0.9  # alpha makes the assignment nearly hard


def test_init_netvlad_from_feature_maps_and_bad_input():
    head = NetVLAD(C, clusters=4)
    init_netvlad(head, torch.randn(3, C, 6, 6), niter=5)
    assert torch.isfinite(head.centroids).all()
    with pytest.raises(ConfigError, match='descriptors'):
        init_netvlad(head, np.zeros((10, C + 1), np.float32))
