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

"""End to end: train on a tiny synthetic route, checkpoints build-map loads, resume, DDP."""

import csv
import logging
import os
from pathlib import Path
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from training_helpers import ROUTE, tiny_config, write_route
from vpr_ros import cli
from vpr_ros.mapdb.database import MapDB
from vpr_ros.models.checkpoints import load_model, read_checkpoint
from vpr_ros.synth import SynthRoute, write_csv_source
from vpr_ros.training.data import AugmentConfig, DataConfig, load_data
from vpr_ros.training.model_setup import freeze_all_but_last, init_netvlad_from_data
from vpr_ros.training.trainer import train
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def route(tmp_path_factory):
    torch.set_num_threads(1)
    return write_route(tmp_path_factory.mktemp('route'))


def _weights(path):
    return read_checkpoint(path)['state_dict']


@pytest.mark.slow
def test_training_reduces_loss_and_build_map_loads_the_checkpoint(route, tmp_path):
    map_csv, query_csv = route
    config = tiny_config(tmp_path / 'run', map_csv, query_csv, epochs=3, lr=3e-4,
                         queries_per_epoch=16)
    result = train(config, progress=False)
    losses = [row['loss'] for row in result.history if row['epoch'] > 0]
    assert [row['epoch'] for row in result.history] == [0, 1, 2, 3]
    assert losses[-1] < losses[0]
    for row in result.history:
        assert 0 <= row['R@1'] <= row['R@5'] <= row['R@10'] <= 100
    # metrics.csv: one row per epoch, epoch 0 = the starting model; a PNG beside it
    with open(tmp_path / 'run' / 'metrics.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['epoch'] for r in rows] == ['0', '1', '2', '3'] and rows[0]['loss'] == ''
    assert float(rows[3]['loss']) == pytest.approx(losses[-1])
    assert (tmp_path / 'run' / 'metrics.png').read_bytes()[:4] == b'\x89PNG'
    # both checkpoints are ordinary model files; the weights changed
    start = load_model('tiny-test', device='cpu')
    trained = load_model(result.last, device='cpu')
    assert trained.fingerprint() != start.fingerprint()
    assert read_checkpoint(result.last)['extra']['train']['epoch'] == 3
    # build-map takes the checkpoint, and the map opens with the trained model
    out = tmp_path / 'route.vprmap'
    assert cli.main(['build-map', str(map_csv), '--out', str(out), '--model',
                     str(result.best), '--device', 'cpu', '--no-progress']) == 0
    best = load_model(result.best, device='cpu')
    db = MapDB.open(out, model=best)
    assert db.descriptors.shape == (40, best.descriptor_dim)


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(route, tmp_path):
    map_csv, query_csv = route
    whole = train(tiny_config(tmp_path / 'whole', map_csv, query_csv, epochs=2),
                  progress=False)
    train(tiny_config(tmp_path / 'part', map_csv, query_csv, epochs=1), progress=False)
    resumed = train(tiny_config(tmp_path / 'part', map_csv, query_csv, epochs=2,
                                resume=str(tmp_path / 'part' / 'last.pt')), progress=False)
    a, b = _weights(whole.last), _weights(resumed.last)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r['loss'] for r in whole.history[1:]] == [r['loss'] for r in resumed.history[1:]]
    # the runs trained (so equal weights are not just the untouched start)
    start = load_model('tiny-test', device='cpu').state_dict()
    assert not torch.equal(a['backbone.0.weight'], start['backbone.0.weight'])


def test_netvlad_kmeans_init_from_training_features(route, tmp_path):
    map_csv, _ = route
    model_yaml = tmp_path / 'netvlad.yaml'
    model_yaml.write_text(yaml.safe_dump({'backbone': 'resnet18', 'pretrained': False,
                                          'input_size': [64, 80], 'head': 'netvlad',
                                          'netvlad_clusters': 8}))
    model = load_model(str(model_yaml), device='cpu')
    before = model.aggregation.centroids.detach().clone()
    data = load_data(DataConfig(database=str(map_csv), val_fraction=0.0))
    alpha = init_netvlad_from_data(model, data.train, 10, np.random.default_rng(0))
    head = model.aggregation
    assert not torch.allclose(before, head.centroids)
    normed = torch.nn.functional.normalize(head.centroids, dim=1)
    assert torch.allclose(head.conv.weight[:, :, 0, 0], alpha * normed, atol=1e-4)


def test_cli_reports_queries_without_positives(route, tmp_path, capsys):
    map_csv, _ = route
    far = tmp_path / 'far.csv'
    with open(map_csv) as f:
        rows = list(csv.DictReader(f))
    lines = ['image,lat,lon']
    for row in rows:
        image = Path(map_csv).parent / row['image']
        (tmp_path / row['image']).write_bytes(image.read_bytes())
        lines.append(f"{row['image']},{float(row['lat']) + 0.01},{row['lon']}")
    far.write_text('\n'.join(lines) + '\n')
    rc = cli.main(['train', '--database', str(map_csv), '--queries', str(far), '--model',
                   'tiny-test', '--device', 'cpu', '--out-dir', str(tmp_path / 'run')])
    assert rc == 1
    err = capsys.readouterr().err
    assert 'no usable training query: 40 of 40 have no positive within positive_m=5.0 m' in err


@pytest.mark.slow
def test_ddp_two_processes_gloo_matches_one_process(route, tmp_path):
    """torchrun, 2 CPU processes (gloo), same results as one process with the same batch."""
    map_csv, query_csv = route
    config = tiny_config(tmp_path / 'ddp', map_csv, query_csv, epochs=1, lr=1e-3)
    # Only what DDP changes may differ: no within-batch negatives (they see half a batch), and
    # negatives / the single positive chosen by position, since random-init descriptors are
    # so close that describing in other batch shapes could reorder hard negatives.
    config = config.replace(mining=config.mining.replace(batch_negatives=0, mode='random',
                                                         positive_m=1.0))
    path = tmp_path / 'train.yaml'
    path.write_text(yaml.safe_dump(config.to_dict()))
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    run = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
         '2', '-m', 'vpr_ros.cli', 'train', '--config', str(path), '--no-progress'],
        env=env, capture_output=True, text=True, timeout=480)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'last checkpoint:' in run.stdout
    assert 'process 2 of 2' in run.stderr
    single = train(config.replace(out_dir=str(tmp_path / 'single')), progress=False)
    a, b = _weights(tmp_path / 'ddp' / 'last.pt'), _weights(single.last)
    start = load_model('tiny-test', device='cpu').state_dict()

    def distance(x, y):
        return float(torch.cat([(x[k].float() - y[k].float()).flatten() for k in x]).norm())

    # DDP averages the two halves' gradients: the same steps as one process, up to rounding
    # (which Adam magnifies for parameters whose gradient is ~0, hence a norm, not a max)
    print(f'|ddp - single| = {distance(a, b):.3g}, |ddp - start| = {distance(a, start):.3g}')
    assert distance(a, b) < 0.02 * distance(a, start)


def _last_only(route, out, **changes):
    map_csv, query_csv = route
    changes = {'train_layers': 'last', 'epochs': 1,
               'augment': AugmentConfig(size_scale=(1.0, 1.0)), **changes}
    return tiny_config(out, map_csv, query_csv, **changes)


@pytest.mark.parametrize('backbone', ['resnet18', 'efficientnet-lite0'])
def test_final_stage_training_on_cached_frozen_outputs_equals_recomputing_them(
        route, tmp_path, caplog, backbone, vpr_ros_logs_propagate):
    # train_layers last (adapt --finetune on a CPU): the frozen layers' outputs of the
    # database images are computed once; the run must be the one that recomputes them
    # (EfficientNet: with the same stochastic-depth masks in the trained blocks).
    model = tmp_path / 'model.yaml'
    model.write_text(yaml.safe_dump({'backbone': backbone, 'pretrained': False,
                                     'input_size': [64, 80]}))
    with caplog.at_level(logging.INFO, logger='vpr_ros.training'):
        cached = train(_last_only(route, tmp_path / 'cached', model=str(model)),
                       progress=False)
    assert 'outputs of 27 images cached' in caplog.text  # the training split's
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='vpr_ros.training'):
        plain = train(_last_only(route, tmp_path / 'plain', model=str(model),
                                 frozen_cache_mb=0), progress=False)
    assert 'frozen layers run for every image: frozen_cache_mb is 0' in caplog.text
    a, b = _weights(cached.last), _weights(plain.last)
    start = load_model(str(model), device='cpu').state_dict()
    trained = [k for k in a if not torch.equal(a[k], start[k])]
    assert trained and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k not in trained)
    # Float rounding differs between the two passes, and Adam turns a rounding difference in
    # a near-zero gradient into a step of up to lr: compare with how far training moved.
    moved = sum(float((a[k] - start[k]).double().norm() ** 2) for k in trained) ** 0.5
    apart = sum(float((a[k] - b[k]).double().norm() ** 2) for k in trained) ** 0.5
    assert apart < 0.01 * moved, (apart, moved)
    assert cached.history[-1]['loss'] == pytest.approx(plain.history[-1]['loss'], rel=1e-4)


def test_resume_with_stochastic_depth_equals_uninterrupted_run(route, tmp_path):
    # EfficientNet drops blocks at random while it trains: a resumed run must draw the masks
    # the uninterrupted one drew (the trainer seeds torch per chunk of batches), and start
    # from the same cached frozen outputs.
    model = tmp_path / 'model.yaml'
    model.write_text(yaml.safe_dump({'backbone': 'efficientnet-lite0', 'pretrained': False,
                                     'input_size': [64, 80]}))
    whole = train(_last_only(route, tmp_path / 'whole', model=str(model), epochs=2),
                  progress=False)
    train(_last_only(route, tmp_path / 'part', model=str(model), epochs=1), progress=False)
    resumed = train(_last_only(route, tmp_path / 'part', model=str(model), epochs=2,
                               resume=str(tmp_path / 'part' / 'last.pt')), progress=False)
    a, b = _weights(whole.last), _weights(resumed.last)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r['loss'] for r in whole.history[1:]] == [r['loss'] for r in resumed.history[1:]]
    start = load_model(str(model), device='cpu').state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)


def test_frozen_outputs_are_recomputed_when_they_would_change_or_not_fit(
        route, tmp_path, caplog, vpr_ros_logs_propagate):
    # more than the memory allowed (resnet18's 27 stride-8 maps: 1.1 MiB)
    with caplog.at_level(logging.INFO, logger='vpr_ros.training'):
        train(_last_only(route, tmp_path / 'small', frozen_cache_mb=1), progress=False)
    assert re.search(r'outputs for 27 images need \d+ MiB, more than frozen_cache_mb 1',
                     caplog.text)
    # sizes drawn per batch change the frozen outputs
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='vpr_ros.training'):
        train(_last_only(route, tmp_path / 'sizes', augment=AugmentConfig()), progress=False)
    assert 'batches are drawn at random sizes' in caplog.text
    assert 'cached' not in caplog.text
    # queries of another size: a batch is drawn at its query's size, not the cached one
    other = write_csv_source(SynthRoute(ROUTE.replace(image_size=(56, 72))).query_pass(),
                             tmp_path / 'other')
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='vpr_ros.training'):
        result = train(_last_only((route[0], other), tmp_path / 'other-run'), progress=False)
    assert 'frozen layers run for every image: the training images have 2 sizes' in caplog.text
    assert np.isfinite(result.history[-1]['loss'])


def test_final_stage_training_leaves_the_frozen_layers_and_their_statistics_alone(
        route, tmp_path):
    # The AS-Geo resizer's BatchNorm is outside the backbone: before, it ran on batch
    # statistics and moved its running means while its weights were "frozen".
    result = train(_last_only(route, tmp_path / 'run', model='tiny-test-asgeo', lr=1e-3),
                   progress=False)
    model = load_model('tiny-test-asgeo', device='cpu')
    start = model.state_dict()
    freeze_all_but_last(model)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    after = _weights(result.last)
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed and changed <= trained, sorted(changed - trained)[:5]
