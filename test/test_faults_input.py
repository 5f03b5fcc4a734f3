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

"""Fault matrix, inputs: empty, corrupt and huge images, broken CSVs, truncated bags.

Every command that reads images (build-map, localize, describe, eval, eval-bag) answers with
an error that names the file, never a traceback; build-map ``--skip-bad`` and localize go on
with the good images. One test per row of issue 15 (before -> after in the docstrings).
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import struct
import zlib

import cv2
from mapdb_helpers import route, texture, textured_map, write_bag, write_csv_source
import numpy as np
import pytest

from vpr_ros import cli
from vpr_ros.errors import DataError
from vpr_ros.images import load_image, MAX_IMAGE_PIXELS
from vpr_ros.mapdb import MapDB, open_source


def run_cli(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    assert 'Traceback' not in out.err
    return rc, out.out, out.err


def png_header(width: int, height: int) -> bytes:
    """Return a PNG that declares ``width`` x ``height`` and holds no pixels (a decoder bomb)."""
    ihdr = b'IHDR' + struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    iend = b'IEND'
    return (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + ihdr
            + struct.pack('>I', zlib.crc32(ihdr)) + struct.pack('>I', 0) + iend
            + struct.pack('>I', zlib.crc32(iend)))


@pytest.fixture(scope='module')
def small_map(tmp_path_factory):
    return textured_map(tmp_path_factory.mktemp('faults_input'), 6, thumbnail_size=(16, 16))


@pytest.fixture
def bad_images(tmp_path):
    """Return a folder: an empty file, garbage, a 12000x12000 header and two good images."""
    folder = tmp_path / 'imgs'
    folder.mkdir()
    (folder / 'empty.png').write_bytes(b'')
    (folder / 'garbage.jpg').write_bytes(b'this is not a jpeg')
    (folder / 'huge.png').write_bytes(png_header(12000, 12000))
    for i in (1, 3):
        cv2.imwrite(str(folder / f'good{i}.png'), cv2.cvtColor(texture(i), cv2.COLOR_RGB2BGR))
    return folder


# -- rows 5 and 6: empty and huge images, in every command ------------------------------------

def test_empty_corrupt_and_huge_files_are_data_errors_naming_the_file(bad_images):
    """Rows 5 and 6. Before: ``cv2.error`` traceback; 12000x12000 took 10-14 s and 4 GB."""
    with pytest.raises(DataError, match=r'image .*empty.png is empty \(0 bytes\)'):
        load_image(bad_images / 'empty.png')
    with pytest.raises(DataError, match=r'cannot decode image .*garbage.jpg'):
        load_image(bad_images / 'garbage.jpg')
    with pytest.raises(DataError, match=r'image .*huge.png is 12000x12000 pixels, more than '
                                        r'the limit of 64 MP'):
        load_image(bad_images / 'huge.png')
    assert MAX_IMAGE_PIXELS == 64_000_000
    with pytest.raises(DataError, match=r'good1.png is 64x64 pixels, more than the limit'):
        load_image(bad_images / 'good1.png', max_pixels=64 * 63)
    assert load_image(bad_images / 'good1.png').shape == (64, 64, 3)


def test_empty_and_huge_messages_are_data_errors():
    from types import SimpleNamespace

    from vpr_ros.image_codec import msg_to_rgb

    with pytest.raises(DataError, match=r"compressed image \(format 'jpeg'\) is empty"):
        msg_to_rgb(SimpleNamespace(format='jpeg', data=b''))
    with pytest.raises(DataError, match='12000x12000 pixels'):
        msg_to_rgb(SimpleNamespace(format='png', data=png_header(12000, 12000)))
    with pytest.raises(DataError, match='12000x12000 pixels is over the limit'):
        msg_to_rgb(SimpleNamespace(encoding='rgb8', height=12000, width=12000, step=36000,
                                   is_bigendian=0, data=b''))


def test_localize_reports_bad_images_and_localises_the_good_ones(
        small_map, bad_images, capsys):
    """Row 7. Before: one bad image stopped ``localize``: no output for the good ones."""
    images = [bad_images / n for n in ('good1.png', 'empty.png', 'garbage.jpg', 'huge.png',
                                       'good3.png')]
    rc, out, err = run_cli(['localize', '--map', small_map, '--device', 'cpu', '--json',
                            '--no-rerank', *images], capsys)
    assert rc == 4
    rows = [json.loads(line) for line in out.splitlines()]
    assert [Path(r['image']).name for r in rows] == [p.name for p in images]
    assert [('error' in r) for r in rows] == [False, True, True, True, False]
    assert 'is empty (0 bytes)' in rows[1]['error'] and '12000x12000' in rows[3]['error']
    assert rows[0]['status'] in ('fix', 'no_fix') and rows[4]['status'] in ('fix', 'no_fix')
    assert '3 of 5 image(s) could not be read' in err


def test_describe_names_the_empty_file(bad_images, tmp_path, capsys):
    rc, _, err = run_cli(['describe', bad_images / 'good1.png', bad_images / 'empty.png',
                          '--model', 'tiny-test', '--device', 'cpu', '--out',
                          tmp_path / 'd.npy'], capsys)
    assert rc == 1 and 'empty.png is empty (0 bytes)' in err


def test_eval_names_the_empty_file(tmp_path, capsys):
    for role in ('database', 'queries'):
        (tmp_path / role).mkdir()
        for i in range(3):
            name = f'@{500000 + 30 * i:.2f}@5000000.00@32@T@@@@@@@@@{role}{i}@.png'
            cv2.imwrite(str(tmp_path / role / name), texture(i))
    empty = tmp_path / 'queries' / '@500000.00@5000000.00@32@T@@@@@@@@@empty@.png'
    empty.write_bytes(b'')
    rc, _, err = run_cli(['eval', '--database_folder', tmp_path / 'database',
                          '--queries_folder', tmp_path / 'queries', '--model', 'tiny-test',
                          '--device', 'cpu', '--no-progress'], capsys)
    assert rc == 1 and f'{empty} is empty (0 bytes)' in err


def test_eval_bag_counts_an_empty_compressed_frame_and_goes_on(small_map, tmp_path, capsys):
    pos = route(6)
    t0 = 1_700_000_000 * 10**9
    frames = [(t0 + i * 10**9, texture(i)) for i in range(6)]
    fixes = [(t0 + i * 10**9, *map(float, pos[i]), 0) for i in range(6)]
    bag = write_bag(tmp_path / 'drive', frames, fixes, compressed=True, empty_frames=(2,),
                    image_topic='/camera/image_raw/compressed', fix_topic='/gnss/fix')
    config = tmp_path / 'localizer.yaml'
    config.write_text('rerank: false\n')   # 64x64 frames are too small for GeoWarp
    rc, out, err = run_cli(['eval-bag', bag, '--map', small_map, '--images',
                            '/camera/image_raw/compressed', '--truth', '/gnss/fix', '--out',
                            tmp_path / 'report', '--device', 'cpu', '--no-progress',
                            '--localizer-config', config], capsys)
    assert rc == 0, err
    metrics = json.loads((tmp_path / 'report' / 'metrics.json').read_text())
    assert metrics['offline']['frames_undecodable'] == 1, metrics['offline']
    assert metrics['offline']['frames_localized'] == 5


# -- row 7: build-map --skip-bad ------------------------------------------------------------

def _source_with_bad_images(folder: Path) -> Path:
    csv = write_csv_source(folder, 6)
    (folder / 'img/0002.png').write_bytes(b'')
    (folder / 'img/0004.png').write_bytes(b'not a png')
    return csv


def test_one_bad_image_stops_build_map_with_a_hint(tmp_path, capsys):
    csv = _source_with_bad_images(tmp_path / 'src')
    rc, _, err = run_cli(['build-map', csv, '--out', tmp_path / 'r.vprmap', '--model',
                          'tiny-test', '--device', 'cpu', '--no-progress'], capsys)
    assert rc == 1
    assert 'img/0002.png is empty (0 bytes) (build-map --skip-bad leaves out' in err


def test_build_map_skip_bad_leaves_out_and_lists_bad_images(tmp_path, capsys):
    """Row 7. Before: one bad image stopped the whole build; no report of skipped files."""
    csv = _source_with_bad_images(tmp_path / 'src')
    out = tmp_path / 'r.vprmap'
    argv = ['build-map', csv, '--out', out, '--model', 'tiny-test', '--device', 'cpu',
            '--chunk-size', '2', '--batch-size', '2', '--no-progress']
    assert run_cli(argv, capsys)[0] == 1   # stops at 0002, leaving chunk 0 to resume from
    rc, text, _ = run_cli(argv + ['--skip-bad'], capsys)
    assert rc == 0
    assert 'skipped 2 image(s) that could not be read' in text
    assert 'img/0002.png: image' in text and 'is empty (0 bytes)' in text
    db = MapDB.open(out)
    assert db.names == ['img/0000.png', 'img/0001.png', 'img/0003.png', 'img/0005.png']
    np.testing.assert_array_equal(db.positions([2])[0], route(6)[3])
    m = db.manifest
    assert [s['name'] for s in m['skipped_images']] == ['img/0002.png', 'img/0004.png']
    assert 'cannot decode image' in m['skipped_images'][1]['error']
    assert m['source']['skipped'] == {'unreadable_image': 2}
    assert m['source']['entries'] == 4


def test_chunks_of_a_skip_bad_run_do_not_skip_silently(tmp_path):
    """A run without --skip-bad that resumes a --skip-bad run stops at the first bad image."""
    from vpr_ros.mapdb import build_map, BuildConfig
    from vpr_ros.mapdb.sources import Entry

    csv = _source_with_bad_images(tmp_path / 'src')
    config = BuildConfig(model='tiny-test', device='cpu', chunk_size=1, batch_size=1,
                         thumbnail_size=(16, 16))
    report = open_source(csv)
    loads = []

    def interrupting(load):
        def run():
            loads.append(1)
            if len(loads) > 4:
                raise KeyboardInterrupt   # killed once chunk 2 (0002, left out) is saved
            return load()
        return run
    report.entries = [Entry(e.name, e.lat, e.lon, e.alt, interrupting(e.load))
                      for e in report.entries]
    out = tmp_path / 'r.vprmap'
    with pytest.raises(KeyboardInterrupt):
        build_map(report, out, config.replace(skip_bad=True), progress=False)
    shutil.copy(csv.parent / 'img/0003.png', csv.parent / 'img/0004.png')   # 0004 repaired
    with pytest.raises(DataError, match=r'img/0002.png: image .* is empty .*--skip-bad'):
        build_map(csv, out, config, progress=False)
    assert len(MapDB.open(build_map(csv, out, config.replace(skip_bad=True),
                                    progress=False))) == 5


# -- rows 5 and 8: CSV files --------------------------------------------------------------

@pytest.mark.parametrize('edit, match', [
    (lambda lines: lines[:3] + [lines[3] + ',extra'] + lines[4:],
     r'route.csv:4: 5 fields, the header has 4'),
    (lambda lines: lines[:2] + [lines[2].rsplit(',', 2)[0]] + lines[3:],
     r'route.csv:3: 2 fields, the header has 4'),
    (lambda lines: lines[:4] + [lines[1]] + lines[4:],
     r"route.csv:5: image 'img/0000.png' is listed already on line 2 \(duplicate rows"),
])
def test_ragged_or_duplicate_csv_rows_name_the_line(tmp_path, edit, match):
    """Rows 5 and 8. Before: ``TypeError`` traceback; duplicates were accepted silently."""
    csv = write_csv_source(tmp_path, 4)
    csv.write_text('\n'.join(edit(csv.read_text().splitlines())) + '\n')
    with pytest.raises(DataError, match=match):
        open_source(csv)


@pytest.mark.parametrize('image, lat, match', [
    ('../outside.png', None, 'leaves the CSV folder'),
    ('/etc/hostname', None, 'leaves the CSV folder'),
    (None, 'nan', r'route.csv:3: .*lat'),
    (None, '91.0', r'route.csv:3: .*lat'),
])
def test_csv_paths_stay_inside_and_positions_are_valid(tmp_path, image, lat, match):
    """Already handled before issue 15 (kept as a regression test)."""
    csv = write_csv_source(tmp_path / 'src', 3)
    (tmp_path / 'outside.png').write_bytes((tmp_path / 'src/img/0000.png').read_bytes())
    lines = csv.read_text().splitlines()
    fields = lines[2].split(',')
    fields[0] = image or fields[0]
    fields[1] = lat or fields[1]
    lines[2] = ','.join(fields)
    csv.write_text('\n'.join(lines) + '\n')
    with pytest.raises(DataError, match=match):
        open_source(csv)


def test_non_utf8_csv_names_the_line(tmp_path, capsys):
    csv = write_csv_source(tmp_path, 4)
    lines = csv.read_bytes().splitlines()
    lines[3] = lines[3].replace(b'img/', b'im\xe9/')
    csv.write_bytes(b'\n'.join(lines) + b'\n')
    rc, _, err = run_cli(['build-map', csv, '--out', tmp_path / 'r.vprmap', '--model',
                          'tiny-test', '--device', 'cpu', '--no-progress'], capsys)
    assert rc == 1 and 'route.csv:4: not UTF-8 text (byte 0xe9)' in err


def test_allow_duplicates_keeps_them_with_a_warning(tmp_path, caplog):
    from vpr_ros.mapdb import SourceConfig

    csv = write_csv_source(tmp_path, 3)
    csv.write_text(csv.read_text() + csv.read_text().splitlines()[1] + '\n')
    report = open_source(csv, SourceConfig(allow_duplicates=True))
    assert [e.name for e in report.entries] == [
        'img/0000.png', 'img/0001.png', 'img/0002.png', 'img/0000.png']
    assert "route.csv:5: image 'img/0000.png' is listed already on line 2" in caplog.text


# -- row 13: a truncated mcap bag --------------------------------------------------------------

@pytest.mark.parametrize('compressed', [False, True])
def test_a_truncated_mcap_bag_gives_its_readable_part(tmp_path, caplog, compressed):
    """Row 13. Before: ``File end magic is invalid``, nothing of the bag was used."""
    n = 20
    pos = route(n)
    t0 = 1_700_000_000 * 10**9
    frames = [(t0 + i * 10**8, texture(i)) for i in range(n)]
    fixes = [(t0 + i * 10**8, *map(float, pos[i]), 0) for i in range(n)]
    bag = write_bag(tmp_path / 'full', frames, fixes, storage='mcap', compressed=compressed)
    cut = tmp_path / 'cut'
    shutil.copytree(bag, cut)
    mcap = next(cut.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:int(len(data) * 0.6)])
    full = open_source(bag)
    report = open_source(cut)
    assert 0 < len(report.entries) < len(full.entries)
    for a, b in zip(report.entries, full.entries):
        assert (a.name, a.lat, a.lon) == (b.name, b.lat, b.lon)
        np.testing.assert_array_equal(a.load(), b.load())
    assert 'is truncated (no footer): reading its complete records' in caplog.text
