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

"""Atomic writes (vpr_ros.files): round trips, failures keep the old file, unique temporaries."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys
import threading

import numpy as np
import pytest

from vpr_ros import files


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_bytes_text_json_round_trip(tmp_path):
    assert files.write_bytes(tmp_path / 'a.bin', b'\x00\xff') == tmp_path / 'a.bin'
    assert (tmp_path / 'a.bin').read_bytes() == b'\x00\xff'
    files.write_text(tmp_path / 'a.txt', 'héllo\nworld')
    assert (tmp_path / 'a.txt').read_text(encoding='utf-8') == 'héllo\nworld'
    data = {'b': [1, 2.5, None], 'a': 'x'}
    files.write_json(tmp_path / 'a.json', data)
    text = (tmp_path / 'a.json').read_text()
    assert text == json.dumps(data, indent=2) + '\n'   # key order kept, final newline
    assert json.loads(text) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.bin', 'a.json', 'a.txt']


def test_arrays_round_trip_without_pickle(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    files.save_array(tmp_path / 'x.npy', x)
    np.testing.assert_array_equal(np.load(tmp_path / 'x.npy', allow_pickle=False), x)
    files.save_arrays(tmp_path / 'xy.npz', x=x, y=np.array('job'))
    with np.load(tmp_path / 'xy.npz', allow_pickle=False) as z:
        np.testing.assert_array_equal(z['x'], x)
        assert str(z['y']) == 'job'
    with pytest.raises(ValueError, match='allow_pickle'):
        files.save_array(tmp_path / 'x.npy', np.array([{'a': 1}], dtype=object))
    np.testing.assert_array_equal(np.load(tmp_path / 'x.npy'), x)   # old file intact


def test_new_files_get_umask_permissions_not_private(tmp_path):
    files.write_bytes(tmp_path / 'a', b'1')
    assert (tmp_path / 'a').stat().st_mode & 0o777 == 0o666 & ~_umask()
    with files.staged_dir(tmp_path / 'd') as d:
        (d / 'f').write_bytes(b'1')
    assert (tmp_path / 'd').stat().st_mode & 0o777 == 0o777 & ~_umask()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failing_writer_keeps_the_old_file_and_no_temporary(tmp_path):
    target = files.write_bytes(tmp_path / 'map.bin', b'old')

    def half(f):
        f.write(b'new, but')
        raise RuntimeError('disk on fire')

    with pytest.raises(RuntimeError, match='disk on fire'):
        files.write_with(target, half)
    assert target.read_bytes() == b'old'
    assert _names(tmp_path) == ['map.bin']
    with pytest.raises(KeyboardInterrupt):
        with files.staged(target) as tmp:
            tmp.write_bytes(b'new')
            raise KeyboardInterrupt
    assert target.read_bytes() == b'old'
    assert _names(tmp_path) == ['map.bin']


@pytest.mark.parametrize('bad, error', [({'a': object()}, TypeError),
                                        ({'a': float('nan')}, ValueError)])
def test_json_that_cannot_be_written_touches_nothing(tmp_path, bad, error):
    target = files.write_json(tmp_path / 'manifest.json', {'ok': 1})
    with pytest.raises(error):
        files.write_json(target, bad)
    assert json.loads(target.read_text()) == {'ok': 1}
    assert _names(tmp_path) == ['manifest.json']


def test_killed_writer_leaves_the_old_file_and_a_findable_temporary(tmp_path):
    """A process killed mid-write leaves the old target and a findable ``.<stem>.tmp-*``."""
    target = files.write_bytes(tmp_path / 'model.pt', b'old')
    code = ('import os, sys\nfrom vpr_ros import files\n'
            'def write(f):\n    f.write(b"half"); f.flush(); os._exit(9)\n'
            'files.write_with(sys.argv[1], write)\n')
    assert subprocess.run([sys.executable, '-c', code, str(target)]).returncode == 9
    assert target.read_bytes() == b'old'
    left = [p for p in tmp_path.iterdir() if p != target]
    assert len(left) == 1 and left[0].name.startswith('.model.tmp-')
    assert left[0].name.endswith('.pt') and left[0].read_bytes() == b'half'


def test_two_writers_never_share_a_temporary(tmp_path):
    target = tmp_path / 'out.json'
    with files.staged(target) as first, files.staged(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text('1')
        second.write_text('2')
    assert target.read_text() == '1'   # the outer block ends last, so its content wins
    assert _names(tmp_path) == ['out.json']


def test_concurrent_writers_leave_one_complete_version(tmp_path):
    target = tmp_path / 'a.npy'
    versions = [np.full(100_000, i, np.int64) for i in range(6)]
    errors = []

    def writer(x):
        try:
            for _ in range(5):
                files.save_array(target, x)
        except Exception as exc:  # noqa: B902 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(x,)) for x in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = np.load(target)
    assert len(got) == 100_000 and len(set(got.tolist())) == 1
    assert _names(tmp_path) == ['a.npy']


def test_directory_is_replaced_as_a_whole(tmp_path):
    target = tmp_path / 'route.vprmap'
    with files.staged_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith('.route.vprmap.tmp-')
        (tmp / 'a').write_text('v1')
        (tmp / 'sub').mkdir()
        (tmp / 'sub' / 'b').write_text('v1')
    assert (target / 'sub' / 'b').read_text() == 'v1'
    with pytest.raises(FileExistsError, match='not overwriting'):
        with files.staged_dir(target) as tmp:
            (tmp / 'a').write_text('v2')
    with files.staged_dir(target, overwrite=True) as tmp:
        (tmp / 'a').write_text('v2')
    assert _names(target) == ['a'] and (target / 'a').read_text() == 'v2'
    assert _names(tmp_path) == ['route.vprmap']


def test_directory_write_creates_missing_parents(tmp_path):
    target = tmp_path / 'maps' / 'v2' / 'route.vprmap'
    with files.staged_dir(target) as tmp:
        (tmp / 'a').write_text('v1')
    assert (target / 'a').read_text() == 'v1'
    assert _names(target.parent) == ['route.vprmap']


def test_failing_directory_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / 'report'
    with files.staged_dir(target) as tmp:
        (tmp / 'metrics.json').write_text('old')
    with pytest.raises(RuntimeError, match='plot failed'):
        with files.staged_dir(target, overwrite=True) as tmp:
            (tmp / 'metrics.json').write_text('new')
            raise RuntimeError('plot failed')
    assert (target / 'metrics.json').read_text() == 'old'
    assert _names(tmp_path) == ['report']


def test_replace_dir_keeps_a_backup_when_asked(tmp_path):
    target, new, backup = tmp_path / 'map', tmp_path / 'new', tmp_path / 'map.backup'
    for folder, text in ((target, 'old'), (new, 'new')):
        folder.mkdir()
        (folder / 'f').write_text(text)
    files.replace_dir(new, target, overwrite=True, backup=backup)
    assert (target / 'f').read_text() == 'new' and (backup / 'f').read_text() == 'old'
    assert _names(tmp_path) == ['map', 'map.backup']
