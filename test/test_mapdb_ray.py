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

"""build-map --ray on a real Ray cluster: the local build's map, workers or driver killed."""

from __future__ import annotations

import logging
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

from mapdb_helpers import write_csv_source
import numpy as np
import pytest
from ray_helpers import actor_processes, HERE, logged, ray_head, read_log

from vpr_ros.errors import ConfigError, DataError, MapError
from vpr_ros.mapdb import build_map, BuildConfig, MapDB, open_source
from vpr_ros.mapdb.adaptation import AdaptConfig
from vpr_ros.mapdb.build import work_dir_for

N = 24   # 6 chunks of 4
CFG = BuildConfig(model='tiny-test', batch_size=3, chunk_size=4, thumbnail_size=(24, 32),
                  adapt=AdaptConfig(method='none'))
REPO = HERE.parent
#: Tests that run Ray skip where the optional extra is not installed (the robot's install).
NO_RAY = 'the ray extra is not installed (pip install vpr_ros[ray])'


@pytest.fixture(scope='module')
def cluster():
    """Run a real one-node Ray cluster with 2 CPUs: 2 actor worker processes."""
    pytest.importorskip('ray', reason=NO_RAY)
    with ray_head(num_cpus=2, object_store_mb=100) as head:
        yield head


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    return write_csv_source(tmp_path_factory.mktemp('ray') / 'src', N)


@pytest.fixture(scope='module')
def reference(source):
    """Build the source locally (one process): what every Ray build must equal."""
    return MapDB.open(build_map(source, source.parent.parent / 'local.vprmap', CFG,
                                progress=False))


def assert_same_map(got: MapDB, want: MapDB) -> None:
    """Check: same entries in the same order, descriptors within 1e-6, same search."""
    assert got.names == want.names
    np.testing.assert_array_equal(got.positions(np.arange(len(want))),
                                  want.positions(np.arange(len(want))))
    np.testing.assert_allclose(got.descriptors, want.descriptors, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got.thumbnails(np.arange(len(want))),
                                  want.thumbnails(np.arange(len(want))))
    rng = np.random.default_rng(0)
    queries = np.concatenate([want.descriptors,
                              rng.normal(size=(8, want.descriptor_dim)).astype(np.float32)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    (gi, gs), (wi, ws) = got.search(queries, k=5), want.search(queries, k=5)
    np.testing.assert_array_equal(gi, wi)
    np.testing.assert_allclose(gs, ws, atol=1e-5)
    np.testing.assert_array_equal(gi[:len(want), 0], np.arange(len(want)))
    assert got.manifest['index'] == want.manifest['index']
    assert got.manifest['build'] == want.manifest['build']


@pytest.mark.slow   # about 55 s here: cluster start, workers importing torch
def test_ray_build_equals_the_local_build(cluster, source, reference, tmp_path, caplog):
    address, _ = cluster
    log = tmp_path / 'reads.log'
    report = logged(open_source(source), log)
    with caplog.at_level(logging.INFO, logger='vpr_ros.mapdb.distributed'):
        out = build_map(report, tmp_path / 'ray.vprmap', CFG, progress=False, ray=address,
                        ray_actors=5)   # more than fit: the ones that never start are not made
    assert '--ray-actors 5: the cluster has room for 2; using 2' in caplog.text
    assert 'describing on 2 Ray actor(s) (cpu, 1 CPU each)' in caplog.text
    reads = read_log(log)
    assert sorted(name for name, _ in reads) == sorted(reference.names)   # each read once
    pids = {pid for _, pid in reads}
    assert len(pids) == 2 and os.getpid() not in pids   # two worker processes read them
    assert not work_dir_for(out).exists()
    assert_same_map(MapDB.open(out), reference)


@pytest.mark.slow
def test_worker_killed_mid_build_costs_only_its_chunk(cluster, source, reference, tmp_path):
    address, temp_dir = cluster
    log = tmp_path / 'reads.log'
    out = tmp_path / 'ray.vprmap'
    size = CFG.chunk_size
    chunk_of = {name: i // size for i, name in enumerate(reference.names)}
    killed = []

    def kill_a_worker_inside_a_chunk() -> None:
        """SIGKILL a worker early in a chunk, once another chunk is saved.

        The log is read again just before the signal, and the worker must have two images
        (0.5 s) left to read, so that on a loaded machine it cannot finish the chunk between
        the look and the kill.
        """
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if list(work_dir_for(out).glob('chunk-*.npz')):
                for proc in actor_processes(temp_dir, busy=True):
                    mine = [chunk_of[name] for name, pid in read_log(log) if pid == proc.pid]
                    if mine and mine.count(mine[-1]) <= size - 2:
                        proc.send_signal(signal.SIGKILL)
                        killed.append(proc.pid)
                        break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker_inside_a_chunk)
    killer.start()
    try:
        build_map(logged(open_source(source), log, delay_s=0.25), out, CFG, progress=False,
                  ray=address)
    finally:
        killer.join()
    assert killed, 'no worker was caught inside a chunk: nothing was killed'
    pid = killed[0]
    reads = read_log(log)
    # the chunk it was in, from what it read before it died
    mine = [chunk_of[name] for name, p in reads if p == pid]
    chunk = mine[-1]
    assert mine.count(chunk) < size, f'worker {pid} had read all of chunk {chunk} when killed'
    assert sorted({name for name, _ in reads}) == sorted(reference.names)
    assert pid not in {p.pid for p in actor_processes(temp_dir)}
    # the chunk it was describing was described again, whole, by another worker process
    part = set(reference.names[chunk * size:(chunk + 1) * size])
    assert part <= {name for name, p in reads if p != pid}
    # and only that chunk (and at most the one queued behind it) was read twice
    again = len(reads) - N
    assert 1 <= again <= size, again
    assert_same_map(MapDB.open(out), reference)


DRIVER = """
import sys
from pathlib import Path
from ray_helpers import logged
from vpr_ros.mapdb import build_map, open_source
from test_mapdb_ray import CFG
csv, out, log, address = sys.argv[1:]
build_map(logged(open_source(csv), Path(log), delay_s=0.25), out, CFG, progress=False,
          ray=address)
"""


@pytest.mark.slow
def test_driver_killed_mid_build_resumes_from_finished_chunks(cluster, source, reference,
                                                              tmp_path):
    address, _ = cluster
    out = tmp_path / 'ray.vprmap'
    path = os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')])
    env = {**os.environ, 'PYTHONPATH': path}
    driver = subprocess.Popen([sys.executable, '-c', DRIVER, str(source), str(out),
                               str(tmp_path / 'first.log'), address], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    work = work_dir_for(out)
    deadline = time.monotonic() + 180
    while len(list(work.glob('chunk-*.npz'))) < 2:
        assert driver.poll() is None, driver.stdout.read().decode()
        assert time.monotonic() < deadline, 'the driver wrote no 2 chunks in 180 s'
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    driver.stdout.close()
    finished = sorted(work.glob('chunk-*.npz'))
    assert 2 <= len(finished) < N // CFG.chunk_size and not out.exists()
    done_names = {name for p in finished
                  for name in reference.names[int(p.stem[6:]) * 4:int(p.stem[6:]) * 4 + 4]}

    log = tmp_path / 'second.log'
    build_map(logged(open_source(source), log), out, CFG, progress=False, ray=address)
    again = [name for name, _ in read_log(log)]
    assert not done_names & set(again)   # no finished chunk was described again
    assert sorted(again) == sorted(set(reference.names) - done_names)
    assert_same_map(MapDB.open(out), reference)


@pytest.mark.slow
def test_a_bad_image_read_on_a_worker_is_named(cluster, tmp_path):
    address, _ = cluster
    csv = write_csv_source(tmp_path / 'src', 8)
    (tmp_path / 'src' / 'img' / '0005.png').write_bytes(b'not a png')
    with pytest.raises(DataError, match='0005.png.*--skip-bad'):
        build_map(csv, tmp_path / 'a.vprmap', CFG, progress=False, ray=address)
    db = MapDB.open(build_map(csv, tmp_path / 'b.vprmap', CFG.replace(skip_bad=True),
                              progress=False, ray=address))
    assert len(db) == 7 and 'img/0005.png' not in db.names
    assert [s['name'] for s in db.manifest['skipped_images']] == ['img/0005.png']


@pytest.mark.slow
def test_cli_ray_starts_a_local_cluster(source, reference, tmp_path):
    pytest.importorskip('ray', reason=NO_RAY)
    out = tmp_path / 'cli.vprmap'
    cmd = [sys.executable, '-m', 'vpr_ros.cli', 'build-map', str(source), '--out', str(out),
           '--model', 'tiny-test', '--batch-size', '3', '--chunk-size', '4',
           '--thumbnail-size', '24', '32', '--adapt', 'none', '--no-progress',
           '--ray', '--ray-actors', '2']
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert 'describing on 2 Ray actor(s)' in run.stderr
    assert f'map written: {out}' in run.stdout
    got = MapDB.open(out)
    assert got.manifest['build'] == reference.manifest['build']
    assert_same_map(got, reference)


def test_missing_ray_names_the_extra_to_install(source, tmp_path):
    code = ('import sys; sys.modules["ray"] = None\n'   # import ray -> ImportError
            'from vpr_ros.cli import main\n'
            f'sys.exit(main(["build-map", {str(source)!r}, "--out", '
            f'{str(tmp_path / "m.vprmap")!r}, "--ray"]))')
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1, run.stderr
    assert 'build-map --ray needs Ray, which is not installed' in run.stderr
    assert 'pip install vpr_ros[ray]' in run.stderr and 'Traceback' not in run.stderr


def test_a_local_build_never_imports_ray(source, tmp_path):
    code = ('import sys\n'
            'from vpr_ros.cli import main\n'
            f'rc = main(["build-map", {str(source)!r}, "--out", {str(tmp_path / "m")!r}, '
            '"--model", "tiny-test", "--adapt", "none", "--thumbnail-size", "0", "0", '
            '"--no-progress"])\n'
            'assert rc == 0, rc\n'
            'print("ray imported:", "ray" in sys.modules)')
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert 'ray imported: False' in run.stdout


def test_unreachable_or_malformed_address_is_named(source, tmp_path):
    import socket

    pytest.importorskip('ray', reason=NO_RAY)

    with socket.socket() as s:   # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with pytest.raises(MapError, match=f'cannot reach the Ray cluster at 127.0.0.1:{port}: '
                                       'Connection refused'):
        build_map(source, tmp_path / 'a.vprmap', CFG, progress=False, ray=f'127.0.0.1:{port}')
    with pytest.raises(ConfigError, match="--ray 'headnode': expected HOST:PORT"):
        build_map(source, tmp_path / 'b.vprmap', CFG, progress=False, ray='headnode')
    assert not (tmp_path / 'a.vprmap').exists()


def test_cli_ray_actors_needs_ray(source, tmp_path, capsys):
    from vpr_ros.cli import main

    assert main(['build-map', str(source), '--out', str(tmp_path / 'm'),
                 '--ray-actors', '2']) == 1
    assert '--ray-actors needs --ray' in capsys.readouterr().err
    assert main(['build-map', str(source), '--out', str(tmp_path / 'm'), '--ray',
                 '--ray-actors', '-1']) == 1
    assert '--ray-actors -1: must be >= 0' in capsys.readouterr().err
    assert not (tmp_path / 'm').exists()


def test_source_is_read_where_the_workers_run(source):
    """The README promise behind --ray: entries carry paths, not pixels, to the workers."""
    import pickle

    entries = open_source(source).entries
    assert len(pickle.dumps(entries[:4])) < 4 * 600
    assert Path(entries[0].load.path).is_absolute()
