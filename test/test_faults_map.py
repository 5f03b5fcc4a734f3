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

"""Fault matrix, maps: hostile manifests and files, concurrent and killed builds.

Every test is one row of the fault matrix of issue 15 (before -> after in its docstring); the
rows that already worked are here too, so that a regression fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

from mapdb_helpers import textured_map, write_csv_source
import numpy as np
import pytest

from vpr_ros import cli
from vpr_ros.errors import ConfigError, MapError, VprError
from vpr_ros.mapdb import build_map, BuildConfig, MapDB
from vpr_ros.mapdb import format as fmt
from vpr_ros.mapdb.build import build_lock, work_dir_for

CFG = BuildConfig(model='tiny-test', device='cpu', batch_size=2, chunk_size=3,
                  thumbnail_size=(16, 16))


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    return textured_map(tmp_path_factory.mktemp('faults_map'), 6, thumbnail_size=(16, 16))


@pytest.fixture
def copy(built, tmp_path):
    target = tmp_path / 'copy.vprmap'
    shutil.copytree(built, target)
    return target


def manifest(path: Path) -> dict:
    return json.loads((path / 'manifest.json').read_text())


def write_manifest(path: Path, data: dict) -> None:
    (path / 'manifest.json').write_text(json.dumps(data))


def relist(path: Path, name: str) -> None:
    """Rewrite the manifest's size and sha256 of ``name``: a deliberate, consistent edit."""
    m = manifest(path)
    m['files'][name] = {'sha256': fmt.sha256_file(path / name),
                        'size': (path / name).stat().st_size}
    write_manifest(path, m)


def run_cli(argv, capsys) -> tuple[int, str]:
    rc = cli.main(argv)
    out = capsys.readouterr()
    assert 'Traceback' not in out.err
    return rc, out.out + out.err


class Payload:
    """Pickled, it runs ``touch <marker>`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


# -- rows that already passed before issue 15 -------------------------------------------------

@pytest.mark.parametrize('name', ['descriptors.npy', 'positions.npy', 'index.faiss',
                                  'model.pt', 'entries.csv'])
def test_corrupt_or_missing_file_is_caught_by_sha256(copy, name):
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(MapError, match=f'{name} is corrupt: sha256 differs'):
        MapDB.open(copy)
    (copy / name).unlink()
    with pytest.raises(MapError, match=f'{name} is missing'):
        MapDB.open(copy, fast=True)


def test_pickle_in_a_numpy_file_never_executes(copy, tmp_path):
    marker = tmp_path / 'pwned'
    np.save(copy / 'positions.npy', np.array([Payload(marker)], dtype=object),
            allow_pickle=True)
    relist(copy, 'positions.npy')
    with pytest.raises(MapError, match='positions.npy is not a readable numpy file'):
        MapDB.open(copy)
    assert not marker.exists()


def test_pickle_in_the_model_checkpoint_never_executes(copy, tmp_path):
    import torch

    marker = tmp_path / 'pwned'
    torch.save({'format': 'vpr_ros', 'payload': Payload(marker)}, copy / 'model.pt')
    relist(copy, 'model.pt')
    db = MapDB.open(copy)
    with pytest.raises(VprError):
        db.load_model(device='cpu')
    assert not marker.exists()


def test_yaml_tags_are_refused(tmp_path):
    marker = tmp_path / 'pwned'
    config = tmp_path / 'build.yaml'
    config.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError):
        BuildConfig.from_yaml(config)
    assert not marker.exists()


# -- manifest as a whole (rows 3, 4, 10) ------------------------------------------------------

@pytest.mark.parametrize('key, name', [
    ('geowarp', '../outside.pt'),
    ('geowarp', '/etc/passwd'),
    ('geowarp', 'sub/geowarp.pt'),
    ('geowarp', '..'),
    ('geowarp', 'unlisted.pt'),          # a file in the map with no size or checksum
    ('thumbnails', '../thumbnails.npy'),
    ('model', '/etc/passwd'),
    ('pca', 'pca.npy'),                  # any section added later is covered too
])
def test_every_file_reference_stays_inside_the_map_and_is_listed(copy, key, name):
    """Row 3. Before: ``geowarp.file`` was opened as given (``../``, absolute, unchecked)."""
    (copy / 'unlisted.pt').write_bytes(b'not checked')
    m = manifest(copy)
    section = m.get(key) or {}
    m[key] = {**section, 'file': name}
    write_manifest(copy, m)
    with pytest.raises(MapError, match=f'{key}.file'):
        MapDB.open(copy, fast=True)


def test_a_listed_file_name_may_not_leave_the_map(copy):
    m = manifest(copy)
    m['files']['../descriptors.npy'] = m['files'].pop('descriptors.npy')
    write_manifest(copy, m)
    with pytest.raises(MapError, match="bad file name '../descriptors.npy'"):
        MapDB.open(copy, fast=True)


def test_geowarp_outside_the_map_is_not_loaded(copy, tmp_path):
    """Row 3: a valid GeoWarp file outside the map, no checksum: refused, not used."""
    from vpr_ros.localizer import Localizer

    m = manifest(copy)
    m['geowarp'] = {'file': str(tmp_path / 'geowarp.pt'), 'backbone': 'x'}
    write_manifest(copy, m)
    with pytest.raises(MapError, match='geowarp.file'):
        Localizer.open(copy, device='cpu')


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf')])
def test_nan_positions_are_refused_even_with_a_rewritten_sha256(copy, capsys, value):
    """Row 4. Before: passed ``--verify``; ``localize`` printed ``FIX lat nan lon nan``."""
    pos = np.load(copy / 'positions.npy')
    pos[2, 0] = value
    np.save(copy / 'positions.npy', pos)
    relist(copy, 'positions.npy')
    with pytest.raises(MapError, match='entry 2 has position'):
        MapDB.open(copy, fast=True)
    rc, out = run_cli(['map', 'info', str(copy), '--verify'], capsys)
    assert rc == 1 and 'positions.npy: entry 2 has position' in out


def test_unknown_altitude_stays_allowed(copy):
    pos = np.load(copy / 'positions.npy')
    pos[:, 2] = np.nan
    np.save(copy / 'positions.npy', pos)
    relist(copy, 'positions.npy')
    assert len(MapDB.open(copy)) == 6


def test_nan_descriptors_are_refused_on_verify(copy):
    desc = np.load(copy / 'descriptors.npy')
    desc[4, 1] = np.nan
    np.save(copy / 'descriptors.npy', desc)
    relist(copy, 'descriptors.npy')
    with pytest.raises(MapError, match='descriptor 4 is not finite'):
        MapDB.open(copy)


def test_files_that_disagree_fail_verify_even_with_rewritten_sha256s(copy, capsys):
    """Before: a map whose index or descriptors a faulty writer produced passed ``verify``."""
    import faiss

    assert run_cli(['map', 'verify', str(copy)], capsys)[0] == 0
    desc = np.load(copy / 'descriptors.npy')
    index = faiss.IndexFlatIP(desc.shape[1])
    index.add(np.ascontiguousarray(desc[::-1]))      # the rows in another order
    faiss.write_index(index, str(copy / 'index.faiss'))
    relist(copy, 'index.faiss')
    MapDB.open(copy)                                 # each file on its own is fine ...
    rc, out = run_cli(['map', 'verify', str(copy)], capsys)
    assert rc == 1 and 'index.faiss: the index does not find the own descriptor' in out
    rc, out = run_cli(['map', 'info', str(copy), '--verify'], capsys)
    assert rc == 1 and 'not built from descriptors.npy' in out
    np.save(copy / 'descriptors.npy', desc * 2.0)    # not unit length
    relist(copy, 'descriptors.npy')
    rc, out = run_cli(['map', 'verify', str(copy)], capsys)
    assert rc == 1 and 'descriptors.npy: descriptor 0 has length 2.0000, not 1' in out


def test_geowarp_features_of_other_entries_fail_verify(copy, capsys):
    """Before: rows of the stored GeoWarp features in the wrong order passed ``verify``."""
    rc, out = run_cli(['map', 'verify', str(copy)], capsys)
    assert rc == 0 and 'the stored GeoWarp features of 6 sampled entries' in out
    name = manifest(copy)['local_features']['file']
    features = np.load(copy / name)
    np.save(copy / name, features[[0, 1, 3, 2, 4, 5]])       # two entries' rows swapped
    relist(copy, name)
    MapDB.open(copy)                                           # the file on its own is fine
    rc, out = run_cli(['map', 'verify', str(copy)], capsys)
    assert rc == 1 and f'{name}: the stored GeoWarp features of entry 2 are not' in out


def test_rows_of_other_images_fail_verify_against_the_source(copy, capsys):
    """Before: rows of another entry in every file a check compares passed ``verify``.

    A writer that puts two entries' descriptors in the wrong order, with an index made from
    them, or their positions, or their thumbnails with the GeoWarp features made from them,
    leaves files that agree with one another: only the source images show it.
    """
    import faiss

    rc, out = run_cli(['map', 'verify', str(copy)], capsys)
    assert rc == 0 and ('the positions, thumbnails and descriptors of 6 sampled entries are '
                        'those of their source images') in out
    swap = [0, 1, 3, 2, 4, 5]
    good = {name: np.load(copy / name) for name in ('descriptors.npy', 'positions.npy',
                                                    'thumbnails.npy')}
    features = manifest(copy)['local_features']['file']
    good[features] = np.load(copy / features)

    def write(arrays: dict) -> None:
        for name, array in arrays.items():
            np.save(copy / name, array)
            relist(copy, name)
        index = faiss.IndexFlatIP(good['descriptors.npy'].shape[1])
        index.add(np.ascontiguousarray(np.load(copy / 'descriptors.npy')))
        faiss.write_index(index, str(copy / 'index.faiss'))
        relist(copy, 'index.faiss')

    for names, what in [(['descriptors.npy'], 'the stored descriptor has cosine'),
                        (['positions.npy'], 'the stored position'),
                        (['thumbnails.npy', features], 'the stored thumbnail differs')]:
        write({name: good[name][swap] for name in names})
        rc, out = run_cli(['map', 'verify', str(copy)], capsys)
        assert rc == 1, (names, out)
        assert f'entry 2 (img/0002.png): {what}' in out and 'build the map again' in out
        write({name: good[name] for name in names})
    assert run_cli(['map', 'verify', str(copy)], capsys)[0] == 0


def test_verify_without_the_source_says_what_it_could_not_check(built, copy, capsys):
    """A robot has the map only: ``verify`` checks the files and says so; ``--source`` checks."""
    source = manifest(built)['source']['path']
    data = manifest(copy)
    data['source']['path'] = str(copy.parent / 'gone.csv')
    write_manifest(copy, data)
    rc, out = run_cli(['map', 'verify', str(copy)], capsys)
    assert rc == 0 and 'not checked against its source images: the map source' in out
    rc, out = run_cli(['map', 'verify', str(copy), '--source', source], capsys)
    assert rc == 0 and 'of 6 sampled entries are those of their source images' in out
    rc, out = run_cli(['map', 'verify', str(copy), '--source', str(copy.parent / 'gone')],
                      capsys)
    assert rc != 0 and 'gone does not exist' in out


def test_adapted_descriptors_that_are_not_the_projection_fail_verify(tmp_path, capsys):
    from vpr_ros.mapdb.adaptation import AdaptConfig

    path = textured_map(tmp_path, 12, thumbnail_size=(16, 16), adapt=AdaptConfig(
        method='pcaw', dims=(4,), validation_queries=10, folds=2))
    assert run_cli(['map', 'verify', str(path)], capsys)[0] == 0
    name = manifest(path)['adaptation']['files']['adapted-descriptors']
    adapted = np.load(path / name)
    np.save(path / name, adapted[[1, 0, *range(2, len(adapted))]])   # two rows swapped
    relist(path, name)
    rc, out = run_cli(['map', 'verify', str(path)], capsys)
    assert rc == 1 and f"{name}: entry 0 is not the adaptation's projection" in out


@pytest.mark.parametrize('text, match', [
    ('NaN', 'not a finite number'),
    ('Infinity', 'not a finite number'),
    ('1e999', 'origin.lat is inf'),
])
def test_every_number_in_the_manifest_is_finite(copy, text, match):
    m = manifest(copy)
    m['origin']['lat'] = '@'
    (copy / 'manifest.json').write_text(json.dumps(m).replace('"@"', text))
    with pytest.raises(MapError, match=match):
        MapDB.open(copy, fast=True)


def test_a_huge_manifest_is_refused_before_parsing(copy):
    """Row 10. Before: a 200 MB manifest cost 2.7 GB to open."""
    with open(copy / 'manifest.json', 'r+b') as f:
        f.truncate(fmt.MAX_MANIFEST_BYTES + 1)   # sparse: no disk, no memory
    with pytest.raises(MapError, match='more than the 16 MiB a manifest may have'):
        MapDB.open(copy, fast=True)


@pytest.mark.parametrize('depth, match', [(100_000, 'nested more than 32 levels'),
                                          (40, 'nested more than 32 levels')])
def test_a_deeply_nested_manifest_is_a_clear_error(copy, capsys, depth, match):
    """Row 10. Before: ``RecursionError`` traceback in the CLI and the node."""
    m = manifest(copy)
    m['calibration'] = '@'
    (copy / 'manifest.json').write_text(
        json.dumps(m).replace('"@"', '[' * depth + ']' * depth))
    with pytest.raises(MapError, match=match):
        MapDB.open(copy, fast=True)
    rc, out = run_cli(['map', 'info', str(copy)], capsys)
    assert rc == 1 and match in out


# -- building (rows 2, 11, and kill -9) ------------------------------------------------------

def test_a_second_build_of_the_same_output_is_refused(tmp_path):
    """Row 2. Before: two builds shared ``.partial/`` and mixed their descriptors."""
    src = write_csv_source(tmp_path / 'src', 6)
    out = tmp_path / 'route.vprmap'
    with build_lock(out):   # another build-map holds it (flock: a separate open file)
        with pytest.raises(MapError, match='is being built by another build-map .process '
                                           f'{os.getpid()}'):
            build_map(src, out, CFG, progress=False)
    assert not out.exists()
    build_map(src, out, CFG, progress=False)   # free again
    assert len(MapDB.open(out)) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ['route.vprmap', 'src']


def test_chunks_of_another_build_are_never_mixed_in(tmp_path):
    """Row 2: a chunk made with other settings in the work directory is refused."""
    src = write_csv_source(tmp_path / 'src', 6)
    other = tmp_path / 'other.vprmap'
    build_map(src, other, CFG.replace(thumbnail_size=(24, 24)), progress=False)
    out = tmp_path / 'route.vprmap'
    work = work_dir_for(out)
    # A build with our settings, stopped after its work directory was made ...
    from vpr_ros.mapdb.build import _job_key
    from vpr_ros.mapdb.work_dir import prepare_work_dir
    from vpr_ros.mapdb.sources import open_source
    from vpr_ros.models.checkpoints import load_model

    model = load_model('tiny-test', device='cpu')
    prepare_work_dir(work, _job_key(open_source(src), str(model.fingerprint()), CFG, 'cpu'))
    # ... and a chunk of a build with other settings that wrote into it meanwhile.
    from vpr_ros.files import save_arrays
    save_arrays(work / 'chunk-000000.npz', descriptors=np.zeros((3, 32), np.float32),
                thumbnails=np.zeros((3, 24, 24, 3), np.uint8), job=np.array('other'))
    with pytest.raises(MapError, match='chunk-000000.npz belongs to another build'):
        build_map(src, out, CFG, model=model, progress=False)
    assert not out.exists()


def test_stale_temporary_folders_are_removed(tmp_path):
    """Row 11. Before: a kill during assembly left ``.route.vprmap.tmp-PID`` for ever."""
    src = write_csv_source(tmp_path / 'src', 6)
    out = tmp_path / 'route.vprmap'
    stale = tmp_path / '.route.vprmap.tmp-999999'
    (stale / 'descriptors.npy').parent.mkdir()
    (stale / 'descriptors.npy').write_bytes(b'half')
    work = work_dir_for(out)
    work.mkdir()
    (work / '.chunk-000001.tmp-999999.npz').write_bytes(b'half')
    build_map(src, out, CFG, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['route.vprmap', 'src']


def _read_only_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / 'ro'
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    # root ignores permissions: use a read-only file system when there is one
    for candidate in (Path('/sys/fs'), Path('/proc/sys')):
        try:
            (candidate / 'vpr_ros_probe').mkdir()
        except OSError:
            return candidate
        (candidate / 'vpr_ros_probe').rmdir()
    pytest.skip('no read-only folder available to root')


def test_a_read_only_output_folder_is_a_clear_error(tmp_path, capsys):
    """Row 11. Before: a ``PermissionError`` traceback."""
    src = write_csv_source(tmp_path / 'src', 4)
    folder = _read_only_folder(tmp_path)
    rc, out = run_cli(['build-map', str(src), '--out', str(folder / 'route.vprmap'),
                       '--model', 'tiny-test', '--device', 'cpu', '--no-progress'], capsys)
    assert rc == 1
    assert f'vpr-ros build-map: error: cannot write in {folder}' in out


@pytest.mark.slow
def test_kill_9_during_build_resumes_bit_identical(tmp_path):
    """``kill -9`` mid-build: the next run resumes (lock released) and equals a fresh build."""
    src = write_csv_source(tmp_path / 'src', 40)
    out = tmp_path / 'route.vprmap'
    argv = [sys.executable, '-m', 'vpr_ros.cli', 'build-map', str(src), '--out', str(out),
            '--model', 'tiny-test', '--device', 'cpu', '--batch-size', '1', '--chunk-size',
            '2', '--thumbnail-size', '16', '16', '--no-progress']
    proc = subprocess.Popen(argv, env=dict(os.environ, OMP_NUM_THREADS='1'),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = work_dir_for(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (work / 'chunk-000002.npz').exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in work.glob('chunk-*.npz'))
    assert not out.exists() and 3 <= len(done) < 20, done
    assert subprocess.run(argv, env=dict(os.environ, OMP_NUM_THREADS='1'),
                          capture_output=True).returncode == 0
    fresh = tmp_path / 'fresh.vprmap'
    assert subprocess.run(argv[:6] + [str(fresh)] + argv[7:],
                          env=dict(os.environ, OMP_NUM_THREADS='1'),
                          capture_output=True).returncode == 0
    for name in ('descriptors.npy', 'positions.npy', 'thumbnails.npy', 'entries.csv',
                 'index.faiss'):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ['fresh.vprmap', 'route.vprmap',
                                                          'src']
