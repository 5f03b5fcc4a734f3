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

"""vpr_ros.describe and the ``vpr-ros describe`` command."""

import json

import cv2
import numpy as np
import pytest
import torch
import vpr_ros
from vpr_ros.cli import main as cli_main
from vpr_ros.errors import DataError
from vpr_ros.images import to_tensor


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 50), (40, 50), (61, 33)]):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = tmp_path / f'img{i}.png'
        cv2.imwrite(str(path), img[:, :, ::-1])
        paths.append(path)
    return paths


def test_describe_paths_arrays_tensors_agree(image_files):
    out = vpr_ros.describe(image_files, model='tiny-test', device='cpu')
    assert out.shape == (3, 256) and out.dtype == np.float32
    single = vpr_ros.describe(image_files[2], model='tiny-test', device='cpu')
    assert single.shape == (256,)
    np.testing.assert_allclose(single, out[2], atol=1e-6)
    arr = cv2.imread(str(image_files[0]))[:, :, ::-1].copy()
    np.testing.assert_allclose(vpr_ros.describe(arr, model='tiny-test', device='cpu'), out[0],
                               atol=1e-6)
    batch = torch.stack([to_tensor(cv2.imread(str(p))[:, :, ::-1].copy())
                         for p in image_files[:2]])
    np.testing.assert_allclose(vpr_ros.describe(batch, model='tiny-test', device='cpu'),
                               out[:2], atol=1e-6)


def test_describe_bad_input():
    with pytest.raises(DataError, match='no images'):
        vpr_ros.describe([], model='tiny-test', device='cpu')
    with pytest.raises(DataError, match='image 1'):
        vpr_ros.describe([np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.uint8)],
                         model='tiny-test', device='cpu')
    with pytest.raises(DataError, match='not found'):
        vpr_ros.describe('/nonexistent.jpg', model='tiny-test', device='cpu')


def test_cli_describe_writes_npy_and_sidecar(image_files, tmp_path, capsys):
    out = tmp_path / 'd' / 'desc.npy'
    argv = ['describe', *map(str, image_files), '--model', 'tiny-test', '--out', str(out),
            '--device', 'cpu']
    assert cli_main(argv) == 0
    desc = np.load(out)
    assert desc.shape == (3, 256)
    np.testing.assert_allclose(
        desc, vpr_ros.describe(image_files, model='tiny-test', device='cpu'), atol=1e-6)
    meta = json.loads(out.with_suffix('.json').read_text())
    assert meta['shape'] == [3, 256] and len(meta['fingerprint']) == 64
    assert cli_main(argv) == 1  # refuses to overwrite
    assert 'exists already' in capsys.readouterr().err
    assert cli_main([*argv, '--overwrite']) == 0
    assert cli_main(['describe', str(image_files[0]), '--model', 'nope', '--out',
                     str(tmp_path / 'x.npy')]) == 1
    assert 'presets' in capsys.readouterr().err
    # The batch size changes no descriptor; a negative one is a clear error.
    assert cli_main([*argv, '--overwrite', '--batch-size', '1']) == 0
    np.testing.assert_allclose(np.load(out), desc, atol=1e-6)
    assert cli_main([*argv, '--overwrite', '--batch-size', '-1']) == 1
    assert '--batch-size must be 0 (auto) or more' in capsys.readouterr().err
