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

"""GeoWarp: geometry, regression module, trapezoids, losses and re-ranking.

Berton et al., "Viewpoint Invariant Dense Matching for Visual Geolocalization", ICCV 2021,
arXiv 2109.09827; section numbers below are the paper's.
"""

from __future__ import annotations

from kornia.geometry.homography import find_homography_dlt
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from vpr_ros.errors import ConfigError, DataError
from vpr_ros.models.geowarp import (corners_to_homography, correlation, dense_similarity,
                                    GeoWarp, GeoWarpConfig, identity_points, project_points,
                                    warp, WarpingRegression)
from vpr_ros.models.geowarp_losses import (consistency_loss, features_wise_loss, flip_points,
                                           GeoWarpLossConfig, loss_cons, mine_pairs,
                                           random_trapezoids, self_supervised_loss,
                                           self_supervised_pair, swap_pair, total_loss)


def smooth_maps(n, c, h, w, seed=0):
    """Random but spatially smooth maps (bilinear resampling stays accurate on them)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, c, 4, 5, generator=g)
    return F.interpolate(coarse, size=(h, w), mode='bilinear', align_corners=True)


def test_untrained_module_regresses_the_corners():
    model = GeoWarp().eval()
    f_q, f_p = smooth_maps(1, 16, 12, 15), smooth_maps(5, 16, 7, 9, seed=1)
    points_q, points_p = model.regress(f_q, f_p)
    corners = identity_points(5)
    assert torch.equal(points_q, corners) and torch.equal(points_p, corners)
    model.train()  # training-mode BatchNorm needs a batch > 1 and still gives the identity
    assert torch.equal(model.predict(f_p, f_p), identity_points(5).repeat(1, 2, 1))


def test_identity_warp_returns_the_input():
    x = torch.randn(3, 8, 7, 9)
    assert torch.allclose(warp(x, identity_points(3)), x, atol=1e-5)
    resized = warp(x, identity_points(3), (13, 17))
    ref = F.interpolate(x, size=(13, 17), mode='bilinear', align_corners=True)
    assert torch.allclose(resized, ref, atol=1e-5)


@pytest.mark.parametrize('cand_size', [(6, 8), (7, 9)])
def test_warp_pair_equals_warping_each_side_alone(cand_size):
    torch.manual_seed(0)
    module = GeoWarp()
    query, cands = torch.randn(1, 4, 6, 8), torch.randn(3, 4, *cand_size)
    points_q = identity_points(3) + 0.2 * torch.rand(3, 4, 2) - 0.1
    points_p = identity_points(3) + 0.2 * torch.rand(3, 4, 2) - 0.1
    w_q, w_p = module.warp_pair(query, cands, points_q, points_p)
    assert torch.allclose(w_q, warp(query.expand(3, -1, -1, -1), points_q, (6, 8)), atol=1e-6)
    assert torch.allclose(w_p, warp(cands, points_p, (6, 8)), atol=1e-6)
    assert not torch.allclose(w_q[0], w_q[1])       # each pair has its own warp


def test_warp_stretches_the_quadrilateral_over_the_frame():
    h, w = 9, 11
    ramp_x = torch.linspace(-1, 1, w).expand(1, 1, h, w)
    ramp_y = torch.linspace(-1, 1, h)[:, None].expand(1, 1, h, w)
    x = torch.cat([ramp_x, ramp_y], dim=1)
    quad = torch.tensor([[[-0.5, 0.0], [0.5, 0.0], [0.5, 1.0], [-0.5, 1.0]]])
    out = warp(x, quad)
    # The output shows x in [-0.5, 0.5] left to right and y in [0, 1] top to bottom.
    assert torch.allclose(out[0, 0, 0], torch.linspace(-0.5, 0.5, w), atol=1e-5)
    assert torch.allclose(out[0, 1, :, 0], torch.linspace(0.0, 1.0, h), atol=1e-5)


def test_corners_to_homography_maps_the_points_and_agrees_with_kornia():
    g = torch.Generator().manual_seed(3)
    src = identity_points(4) + 0.2 * torch.rand(4, 4, 2, generator=g)
    dst = identity_points(4) * 0.7 + 0.2 * torch.rand(4, 4, 2, generator=g)
    homography = corners_to_homography(src, dst)
    assert homography.shape == (4, 3, 3)
    assert torch.allclose(project_points(homography, src), dst, atol=1e-5)
    dlt = find_homography_dlt(src, dst)
    assert torch.allclose(homography / homography[:, 2:, 2:], dlt / dlt[:, 2:, 2:], atol=1e-4)
    with pytest.raises(DataError, match='points'):
        corners_to_homography(src[:, :3], dst)


def test_trapezoids_satisfy_eq_11():
    k = 0.6
    t_x, t_y, t_z = random_trapezoids(64, k, torch.Generator().manual_seed(0))
    for t in (t_x, t_y, t_z):
        assert t.shape == (64, 4, 2) and t.dtype == torch.float32
        assert torch.equal(t[:, 0, 0], t[:, 3, 0]) and torch.equal(t[:, 1, 0], t[:, 2, 0])
    for t in (t_x, t_y):  # every coordinate within k/2 of the frame, in pixel terms of eq. 11
        inset = 1.0 - t.abs()
        assert (inset >= 0).all() and (inset <= k).all()
    # t_z spans the whole overlap in x, and on its vertical sides the full intersection height.
    assert torch.equal(t_z[:, 0, 0], torch.maximum(t_x[:, 0, 0], t_y[:, 0, 0]))
    assert torch.equal(t_z[:, 1, 0], torch.minimum(t_x[:, 1, 0], t_y[:, 1, 0]))

    def span(t, x):  # top and bottom of trapezoid t at x
        a = (x - t[:, 0, 0]) / (t[:, 1, 0] - t[:, 0, 0])
        top = t[:, 0, 1] + a * (t[:, 1, 1] - t[:, 0, 1])
        return top, t[:, 3, 1] + a * (t[:, 2, 1] - t[:, 3, 1])

    for corner in range(4):
        x, y = t_z[:, corner, 0], t_z[:, corner, 1]
        tops, bots = zip(*(span(t, x) for t in (t_x, t_y)))
        assert all((y >= top - 1e-6).all() and (y <= bot + 1e-6).all()
                   for top, bot in zip(tops, bots))
        edge = torch.maximum(*tops) if corner < 2 else torch.minimum(*bots)
        assert torch.allclose(y, edge, atol=1e-6)  # maximal: on the intersection's boundary
    with pytest.raises(DataError, match='k must be'):
        random_trapezoids(2, 1.5)


def test_self_supervised_targets_locate_the_intersection():
    source = smooth_maps(2, 4, 30, 40)
    t_x, t_y, t_z = random_trapezoids(2, 0.6, torch.Generator().manual_seed(1))
    view_a, view_b, t_a, t_b = self_supervised_pair(source, t_x, t_y, t_z)
    expected = warp(source, t_z)
    for view, target in ((view_a, t_a), (view_b, t_b)):
        # Interior only: a target on the frame edge samples the padding by rounding.
        diff = (warp(view, target) - expected)[..., 1:-1, 1:-1].abs()
        assert diff.mean() < 0.005 and diff.max() < 0.1
        wrong = (warp(view, t_z) - expected)[..., 1:-1, 1:-1].abs()
        assert wrong.mean() > 0.02  # the check tells the frames apart


def test_adam_steps_on_l_ss_decrease_the_loss():
    torch.manual_seed(0)
    model = GeoWarp()
    source = smooth_maps(4, 16, 12, 16, seed=2)
    t_x, t_y, t_z = random_trapezoids(4, 0.6, torch.Generator().manual_seed(2))
    f_a, f_b, t_a, t_b = self_supervised_pair(source, t_x, t_y, t_z)
    optimiser = torch.optim.Adam(model.regression.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = self_supervised_loss(model, f_a, f_b, t_a, t_b)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_l_cons_is_zero_only_for_flip_consistent_predictions():
    g = torch.Generator().manual_seed(4)
    pred = identity_points(3).repeat(1, 2, 1) * 0.8 + 0.1 * torch.randn(3, 8, 2, generator=g)
    consistent = (pred, swap_pair(pred), flip_points(pred), swap_pair(flip_points(pred)))
    assert loss_cons(*consistent).item() == pytest.approx(0.0, abs=1e-12)
    assert torch.equal(flip_points(flip_points(pred)), pred)
    broken = (pred, swap_pair(pred), pred, swap_pair(flip_points(pred)))
    assert loss_cons(*broken).item() > 1e-4
    model = GeoWarp()  # the untrained identity is trivially consistent (§3.4.2)
    f = smooth_maps(4, 8, 7, 9)
    assert consistency_loss(model, f[:2], f[2:]).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_reaches_the_regression_module():
    model = GeoWarp()
    f_q, f_g = smooth_maps(3, 16, 7, 9), smooth_maps(3, 16, 7, 9, seed=5)
    t_x, t_y, t_z = random_trapezoids(3, 0.6, torch.Generator().manual_seed(5))
    f_a, f_b, t_a, t_b = self_supervised_pair(f_q, t_x, t_y, t_z)
    loss = total_loss(GeoWarpLossConfig(), l_ss=self_supervised_loss(model, f_a, f_b, t_a, t_b),
                      l_fw=features_wise_loss(model, f_q, f_g),
                      l_cons=consistency_loss(model, f_q, f_g))
    loss.backward()
    assert model.regression.linear.weight.grad.abs().sum() > 0
    assert model.regression.linear.bias.grad.abs().sum() > 0
    # L_fw alone sends gradient through the warp into the regressed points.
    model.zero_grad()
    features_wise_loss(model, f_q, f_g).backward()
    assert model.regression.linear.bias.grad.abs().sum() > 0
    with pytest.raises(DataError, match='at least one'):
        total_loss(GeoWarpLossConfig())


def _candidates(f_q):
    quad = torch.tensor([[[-0.9, -0.8], [0.85, -0.95], [0.9, 0.9], [-0.8, 0.85]]])
    warped_copy = warp(f_q, quad)
    others = smooth_maps(4, f_q.shape[1], *f_q.shape[-2:], seed=9)
    return torch.cat([others[:2], warped_copy, others[2:]])


def test_rerank_ranks_a_warped_copy_first_in_features_mode():
    model = GeoWarp().eval()
    f_q = smooth_maps(1, 16, 12, 15, seed=7)
    scores = model.rerank_scores(f_q, _candidates(f_q))
    assert scores.shape == (5,) and scores.dtype == torch.float32
    assert scores.argmax().item() == 2
    assert dense_similarity(f_q, f_q).item() == pytest.approx(225.0, abs=1e-2)


def test_rerank_in_image_mode_uses_dense_fn():
    model = GeoWarp(GeoWarpConfig(mode='image')).eval()
    encoder = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    calls = []

    def dense_fn(images):
        calls.append(tuple(images.shape))
        return encoder(images)

    image_q = smooth_maps(1, 3, 24, 30, seed=8)
    images_p = _candidates(image_q)
    with torch.no_grad():
        scores = model.rerank_scores(dense_fn(image_q), dense_fn(images_p), query_image=image_q,
                                     candidate_images=images_p, dense_fn=dense_fn)
    assert calls[-1] == (10, 3, 24, 30)  # one pass over the 5 warped pairs
    assert scores.argmax().item() == 2
    half = GeoWarp(GeoWarpConfig(mode='image', image_scale=0.5)).eval()
    with torch.no_grad():
        half_scores = half.rerank_scores(dense_fn(image_q), dense_fn(images_p),
                                         query_image=image_q, candidate_images=images_p,
                                         dense_fn=dense_fn)
    assert calls[-1] == (10, 3, 12, 15) and half_scores.argmax().item() == 2
    with pytest.raises(DataError, match='image mode needs'):
        model.rerank_scores(dense_fn(image_q), dense_fn(images_p))


@pytest.mark.parametrize('mode', ['features', 'image'])
def test_odd_sizes_and_five_candidates(mode):
    model = GeoWarp(GeoWarpConfig(mode=mode)).eval()
    f_q, f_p = torch.randn(1, 32, 7, 9), torch.randn(5, 32, 9, 7)
    assert correlation(f_q, f_p).shape == (5, 225, 15, 15)
    assert warp(f_p, identity_points(5), (7, 9)).shape == (5, 32, 7, 9)
    images = {}
    if mode == 'image':
        pool = torch.nn.AdaptiveAvgPool2d((7, 9))
        images = {'query_image': torch.rand(1, 3, 21, 27), 'dense_fn': lambda x: pool(x)[:, :1]
                  .expand(-1, 32, -1, -1), 'candidate_images': torch.rand(5, 3, 27, 21)}
    scores = model.rerank_scores(f_q[0], f_p, **images)
    assert scores.shape == (5,) and torch.isfinite(scores).all()


def test_config_and_state_dict_layout():
    with pytest.raises(ConfigError, match='mode'):
        GeoWarpConfig(mode='pixels')
    with pytest.raises(ConfigError, match='k: 1.5 is above the maximum') as exc:
        GeoWarpLossConfig(k=1.5)
    assert exc.value.field == 'k'
    assert GeoWarpConfig().num_reranked == 5
    losses = GeoWarpLossConfig()
    assert (losses.k, losses.t_geo, losses.t_feat) == (0.6, 25.0, 1.2)
    assert (losses.lambda_ss, losses.lambda_fw, losses.lambda_cons) == (1.0, 10.0, 0.1)
    keys = GeoWarp().state_dict()
    # gmberton/geo_warp HomographyRegression (trained configuration) under 'regression.'.
    assert keys['regression.conv.0.weight'].shape == (128, 225, 7, 7)
    assert keys['regression.conv.15.weight'].shape == (64, 64, 5, 5)
    assert keys['regression.linear.weight'].shape == (16, 64)
    assert len(keys) == 44
    assert len(WarpingRegression().state_dict()) == 44
    with pytest.raises(DataError, match=r'\(N, C, h, w\)'):
        correlation(torch.randn(16, 7, 9), torch.randn(1, 16, 7, 9))


def test_mine_pairs_applies_both_thresholds():
    positions_q = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    positions_g = torch.tensor([[10.0, 0.0], [30.0, 0.0], [100.0, 5.0]])
    desc_q = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    desc_g = F.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.0], [-1.0, 0.0]]), dim=1)
    pairs = mine_pairs(positions_q, positions_g, desc_q, desc_g, GeoWarpLossConfig())
    assert pairs.tolist() == [[0, 0]]  # (0, 1) is too far; (1, 2) too different (d^2 = 2)
