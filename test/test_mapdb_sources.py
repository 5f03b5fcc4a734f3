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

"""Map sources: VG folders (UTM names), CSV files and rosbag2 (sqlite3 and mcap) bags."""

from __future__ import annotations

import math

import cv2
from mapdb_helpers import route, texture, write_bag, write_csv_source
import numpy as np
from pyproj import Transformer
import pytest

from vpr_ros.errors import DataError
from vpr_ros.mapdb.bag_source import locate
from vpr_ros.mapdb.sources import open_source, parse_vg_name, SourceConfig

S = 1_000_000_000


def _save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


class TestVgFolder:
    UTM = [(584310.52, 4477349.03), (584320.27, 4477351.90), (584333.01, 4477360.44)]

    def test_feature(self, tmp_path):
        # both layouts: '@17T@' and the benchmark's '@17@T@lat@lon@...'
        names = [f'@{self.UTM[0][0]}@{self.UTM[0][1]}@17T@x@.jpg',
                 f'@{self.UTM[1][0]}@{self.UTM[1][1]}@17@T@40.44@-79.99@pano@@.jpg',
                 f'@{self.UTM[2][0]}@{self.UTM[2][1]}@17@T@@.png']
        for i, name in enumerate(names):
            _save(tmp_path / 'db' / name, texture(i))
        report = open_source(tmp_path / 'db')
        assert report.kind == 'folder' and len(report.entries) == 3
        to_utm = Transformer.from_crs('EPSG:4326', 'EPSG:32617', always_xy=True)
        by_east = {e.name.split('@')[1]: e for e in report.entries}
        for east, north in self.UTM:
            entry = by_east[str(east)]
            e2, n2 = to_utm.transform(entry.lon, entry.lat)
            assert abs(e2 - east) < 0.01 and abs(n2 - north) < 0.01  # < 1 cm round trip
            assert math.isnan(entry.alt)
        assert report.entries[0].load().shape == (64, 64, 3)

    def test_exception(self, tmp_path):
        with pytest.raises(DataError, match='--utm-zone'):
            parse_vg_name('@584310.52@4477349.03@@.jpg')
        with pytest.raises(DataError, match='without a latitude band'):
            parse_vg_name('@584310.52@4477349.03@17@@.jpg')
        assert parse_vg_name('@1.5@2.5@@.jpg', '17T') == (1.5, 2.5, '17T')
        with pytest.raises(DataError, match='not a VG-format'):
            parse_vg_name('photo.jpg')
        with pytest.raises(DataError, match='not a number'):
            parse_vg_name('@east@2.5@17T@.jpg')
        (tmp_path / 'empty').mkdir()
        with pytest.raises(DataError, match='no images'):
            open_source(tmp_path / 'empty')

    def test_utm_zone_option(self, tmp_path):
        _save(tmp_path / 'db' / f'@{self.UTM[0][0]}@{self.UTM[0][1]}@.jpg', texture(0))
        report = open_source(tmp_path / 'db', SourceConfig(utm_zone='17T'))
        assert report.entries[0].lat == pytest.approx(40.443, abs=1e-3)


class TestCsv:
    def test_feature(self, tmp_path):
        path = write_csv_source(tmp_path, 5)
        report = open_source(path)
        pos = route(5)
        got = np.array([[e.lat, e.lon, e.alt] for e in report.entries])
        np.testing.assert_array_equal(got, pos)
        assert report.entries[3].name == 'img/0003.png'
        assert np.array_equal(report.entries[3].load(), texture(3))

    def test_no_alt_and_heading(self, tmp_path):
        _save(tmp_path / 'a.png', texture(0))
        (tmp_path / 'r.csv').write_text('lat,lon,image,heading,note\n47.1,8.2,a.png,90,x\n')
        (entry,) = open_source(tmp_path / 'r.csv').entries
        assert (entry.lat, entry.lon, entry.heading_deg) == (47.1, 8.2, 90.0)
        assert math.isnan(entry.alt)

    @pytest.mark.parametrize('row,match', [
        ('../outside.png,47,8', 'leaves the CSV folder'),
        ('/etc/passwd,47,8', 'leaves the CSV folder'),
        ('sub/../../outside.png,47,8', 'leaves the CSV folder'),
        ('missing.png,47,8', 'not found'),
        ('a.png,95,8', 'out of range'),
        ('a.png,nan,8', 'finite'),
        ('a.png,north,8', 'not a number'),
    ])
    def test_exception(self, tmp_path, row, match):
        folder = tmp_path / 'maps'
        _save(folder / 'a.png', texture(0))
        _save(tmp_path / 'outside.png', texture(1))
        (folder / 'r.csv').write_text(f'image,lat,lon\n{row}\n')
        with pytest.raises(DataError, match=match):
            open_source(folder / 'r.csv')

    def test_bad_header(self, tmp_path):
        (tmp_path / 'r.csv').write_text('file,lat,lon\nx.png,1,2\n')
        with pytest.raises(DataError, match=r"missing column\(s\) \['image'\]"):
            open_source(tmp_path / 'r.csv')

    def test_min_spacing(self, tmp_path):
        path = write_csv_source(tmp_path, 6)  # 5 m apart
        report = open_source(path, SourceConfig(min_spacing_m=9.0))
        names = [e.name for e in report.entries]
        assert names == ['img/0000.png', 'img/0002.png', 'img/0004.png']
        assert report.skipped == {'closer_than_min_spacing': 3}


def _fixes(n, status=0, period=S):
    return [(i * period, 47.0 + i * 1e-4, 8.0 + i * 2e-4, 400.0 + i, status) for i in range(n)]


class TestBag:
    @pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
    @pytest.mark.parametrize('compressed', [False, True])
    def test_feature(self, tmp_path, storage, compressed):
        frames = [(i * S + S // 4, texture(i)) for i in range(4)]
        bag = write_bag(tmp_path / 'bag', frames, _fixes(5), storage=storage,
                        compressed=compressed)
        report = open_source(bag)
        assert report.kind == 'bag' and report.skipped == {}
        assert [e.stamp_ns for e in report.entries] == [s for s, _ in frames]
        e = report.entries[2]  # a quarter of the way from fix 2 to fix 3
        assert e.lat == pytest.approx(47.0 + 2.25e-4, abs=1e-12)
        assert e.lon == pytest.approx(8.0 + 4.5e-4, abs=1e-12)
        assert e.alt == pytest.approx(402.25)
        assert np.array_equal(e.load(), texture(2))

    def test_unsynchronised_and_missing_gnss(self, tmp_path):
        fixes = _fixes(10)
        fixes[3] = (*fixes[3][:4], -1)            # NO_FIX at t=3 s
        fixes[6] = (*fixes[6][:4], -2)            # UNKNOWN (Kilted default) at t=6 s
        del fixes[8]                              # GNSS gap: no fix at t=8 s
        frames = [(i * S + S // 5, texture(i)) for i in range(10)]  # at 0.2, 1.2, ... 9.2 s
        bag = write_bag(tmp_path / 'bag', frames, fixes)
        report = open_source(bag, SourceConfig(fix_tolerance_s=0.9))
        kept = [e.stamp_ns // S for e in report.entries]
        # 2.2 and 3.2 would use the NO_FIX at 3 s, 5.2 and 6.2 the UNKNOWN at 6 s: skipped.
        # 7.2 has only the fix at 7 s within 0.9 s, 8.2 only the one at 9 s, 9.2 only 9 s.
        assert kept == [0, 1, 4, 7, 8, 9]
        assert report.skipped == {'gnss_no_fix': 4}
        eight = report.entries[4]
        assert eight.lat == pytest.approx(47.0 + 9e-4)  # the fix at 9 s, held

        with pytest.raises(DataError, match="no usable entries.*'no_gnss_in_tolerance': 10"):
            open_source(bag, SourceConfig(fix_tolerance_s=0.1))

    def test_topics(self, tmp_path):
        bag = write_bag(tmp_path / 'bag', [(S, texture(0))], _fixes(3))
        with pytest.raises(DataError, match="image topic '/nope' not in the bag"):
            open_source(bag, SourceConfig(image_topic='/nope'))
        assert len(open_source(bag, SourceConfig(image_topic='/cam/image',
                                                 fix_topic='/gps/fix')).entries) == 1


def test_locate_rules():
    stamps = np.array([0, 10, 20], np.int64)
    pos = np.array([[0.0, 179.9, 0.0], [1.0, -179.9, 10.0], [2.0, -179.8, 20.0]])
    valid = np.array([True, True, False])
    p, why = locate(5, stamps, pos, valid, tolerance_ns=5)
    assert why == '' and p[0] == pytest.approx(0.5) and abs(p[1]) == pytest.approx(180.0)
    assert locate(10, stamps, pos, valid, tolerance_ns=0)[0][0] == 1.0
    assert locate(15, stamps, pos, valid, tolerance_ns=5) == (None, 'gnss_no_fix')
    assert locate(5, stamps, pos, valid, tolerance_ns=4) == (None, 'no_gnss_in_tolerance')
    assert locate(-3, stamps, pos, valid, tolerance_ns=4)[0][0] == 0.0


def test_entry_images_load_map_entries_as_the_build_saw_them(tmp_path):
    """Checked as RGB and shrunk to the build's resize_max: what pseudo-queries are made of."""
    from mapdb_helpers import textured_map
    from vpr_ros.mapdb import MapDB
    from vpr_ros.mapdb.sources import entry_images, source_entries, source_images

    db = MapDB.open(textured_map(tmp_path, 6, resize_max=32))
    entries, _ = source_entries(db, None)
    load = entry_images(db, entries)                       # the map's resize_max (32)
    assert load(2).shape == (32, 32, 3)
    assert np.array_equal(load(2), source_images(db)(2))
    assert entry_images(db, entries, 0)(2).shape == (64, 64, 3)   # full size
    assert np.array_equal(entry_images(db, entries, 0)(2), texture(2))

    class Grey:
        def load(self):
            return np.zeros((8, 8), np.uint8)

    with pytest.raises(DataError, match=f'map entry {db.names[1]}'):
        entry_images(db, [entries[0], Grey()])(1)
