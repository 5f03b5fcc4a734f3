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

"""``vpr-ros build-map`` and ``vpr-ros map info`` end to end on a tiny CSV source."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

from mapdb_helpers import have_real_models, test_model, write_csv_source
import pytest

from vpr_ros import cli
from vpr_ros.mapdb import MapDB

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model(monkeypatch):
    model = test_model(monkeypatch)
    if not have_real_models():  # the stand-in cannot be named on the command line yet
        import vpr_ros.mapdb.build as build
        monkeypatch.setattr(build, '_load_model', lambda config, given: given or model)
    return model


def test_a_map_of_views_sharing_positions_is_pointed_at_fine_tuning(tmp_path, model, capsys):
    src = write_csv_source(tmp_path / 'src', 8)
    lines = src.read_text().splitlines()
    rows = [line.split(',') for line in lines[1:]]
    # Four places, two views each at the place's coordinate (a place-labelled set).
    shared = [','.join([r[0]] + rows[2 * (i // 2)][1:]) for i, r in enumerate(rows)]
    src.write_text('\n'.join([lines[0]] + shared) + '\n')
    out = tmp_path / 'places.vprmap'
    assert cli.main(['build-map', str(src), '--model', 'tiny-test', '--out', str(out),
                     '--device', 'cpu', '--thumbnail-size', '16', '24', '--no-progress']) == 0
    text = capsys.readouterr().out
    assert len(MapDB.open(out, model=model)) == 8
    assert f'vpr-ros adapt {out} --finetune may raise recall' in text


def test_build_map_and_info(tmp_path, model, capsys):
    src = write_csv_source(tmp_path / 'src', 8)
    out = tmp_path / 'route.vprmap'
    argv = ['build-map', str(src), '--model', 'tiny-test', '--out', str(out), '--index',
            'flat', '--batch-size', '3', '--chunk-size', '5', '--device', 'cpu',
            '--thumbnail-size', '16', '24', '--min-spacing', '9', '--no-progress']
    assert cli.main(argv) == 0
    assert f'map written: {out}' in capsys.readouterr().out
    db = MapDB.open(out, model=model)
    assert len(db) == 4  # 5 m spacing thinned to 10 m
    assert db.manifest['build']['batch_size'] == 3
    assert db.manifest['source']['skipped'] == {'closer_than_min_spacing': 4}
    assert db.thumbnails(0).shape == (16, 24, 3)

    assert 'share their position' not in capsys.readouterr().out     # a route: no hint
    assert cli.main(argv) == 1  # refuses to overwrite
    assert 'exists already, not overwriting (use --overwrite)' in capsys.readouterr().err

    assert cli.main(['map', 'info', str(out), '--verify']) == 0
    text = capsys.readouterr().out
    for expected in ('entries       4', 'route length  30.0 m', 'index         flat',
                     f'fingerprint {model.fingerprint()}', 'verified (sha256)',
                     'thumbnails    16x24 (1152 B per entry)', 'descriptors.npy',
                     'lat 47.376900 .. 47.377116'):
        assert expected in text, text

    (out / 'positions.npy').write_bytes(b'x')
    assert cli.main(['map', 'info', str(out)]) == 1
    assert 'positions.npy has 1 bytes' in capsys.readouterr().err


def test_console_script(tmp_path):
    """The installed command runs in a fresh process (real model preset when it exists)."""
    if not have_real_models():
        pytest.skip('vpr_ros.models (tiny-test preset) not available yet')
    src = write_csv_source(tmp_path / 'src', 4)
    out = tmp_path / 'r.vprmap'
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    run = subprocess.run([sys.executable, '-m', 'vpr_ros.cli', 'build-map', str(src),
                          '--model', 'tiny-test', '--out', str(out), '--device', 'cpu'],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, '-m', 'vpr_ros.cli', 'map', 'info', str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and 'entries       4' in run.stdout, run.stderr
