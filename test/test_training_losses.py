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

"""Triplet margin loss and HAF's detection-term loss.

Triplet margin loss as in Gambino, Pierro, Grillo, "Visual Geo-Localization" (student project
report), eq. 5; HAF: Yan et al., "Hierarchical Attention Fusion for Geo-Localization", ICASSP
2021, arXiv 2102.09186.
"""

import pytest
import torch
from vpr_ros.models.descriptor import build_model, PRESETS
from vpr_ros.training.losses import (batch_loss, detection_distance, LossConfig,
                                     triplet_terms)
from vpr_ros.training.model_setup import TrainForward


def test_triplet_terms_values():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.6, 0.8]])                   # ||q - p|| = sqrt(0.8)
    n = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])    # sqrt(2), 2
    terms = triplet_terms(q, p, n, margin=0.6)
    expected = torch.relu(torch.tensor([0.8 ** 0.5 - 2 ** 0.5 + 0.6, 0.8 ** 0.5 - 2 + 0.6]))
    assert torch.allclose(terms[0], expected)
    assert terms[0, 0] > 0 and terms[0, 1] == 0


def test_batch_loss_layout_and_batch_negatives():
    # one tuple: q, p, n (K=1); rows 0..2
    desc = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.1], [0.9, 0.5]]), dim=1)
    config = LossConfig(margin=0.3, haf_weight=0.0)
    out = batch_loss(desc, 1, config)
    d_pos, d_neg = (desc[0] - desc[1]).norm(), (desc[0] - desc[2]).norm()
    assert out['loss'] == pytest.approx(float(torch.relu(d_pos - d_neg + 0.3)))
    # a -1 within-batch negative adds no term, a real one is averaged in
    same = batch_loss(desc, 1, config, batch_negatives=torch.tensor([[-1]]))
    assert same['loss'] == pytest.approx(float(out['loss']))
    both = batch_loss(desc, 1, config, batch_negatives=torch.tensor([[1]]))
    extra = torch.relu(d_pos - (desc[0] - desc[1]).norm() + 0.3)
    assert both['loss'] == pytest.approx(float((out['loss'] + extra) / 2))


def test_detection_distance_formula():
    torch.manual_seed(0)
    k_q, k_r = torch.randn(3, 16), torch.randn(3, 16)
    s_q, s_r = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.0, 0.1, 3.0])
    w = s_q * s_r / (s_q * s_r).sum()
    expected = sum(w[c] * (k_q[c] - k_r[c]).norm() for c in range(3))
    assert detection_distance(k_q, s_q, k_r, s_r) == pytest.approx(float(expected), rel=1e-6)
    assert detection_distance(k_q, s_q, k_q, s_r) == 0


def test_haf_training_forward_matches_model_and_loss_trains_attention():
    model = build_model(PRESETS['tiny-test'].replace(head='haf', haf_dim=16)).train()
    forward = TrainForward(model, haf_parts=True)
    images = torch.rand(2 * 4, 3, 40, 56)  # two tuples (q, p, 2 negatives)
    desc, parts, scores = forward(images)
    assert parts.shape == (8, 3, 16) and scores.shape == (8, 3) and (scores > 0).all()
    assert torch.allclose(desc, model(images), atol=1e-5)
    out = batch_loss(desc, 2, LossConfig(margin=0.5, haf_margin=0.5), haf=(parts, scores))
    assert out['haf'] > 0
    out['haf'].backward()
    grad = model.aggregation.attention[0][0].weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the detection scores get trained
