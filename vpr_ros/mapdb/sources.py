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

"""Where map entries come from: a VG-format folder, a CSV, or a rosbag2 (see ``bag_source``).

A source is a list of :class:`~vpr_ros.mapdb.entry.Entry` records (:mod:`vpr_ros.mapdb.entry`,
shared with the bag reader): a name, an optional stamp, a WGS84 position and a picklable
``load()`` that reads the image only when it is needed, so a source of a million images costs
a few hundred bytes per entry until the builder reads its pixels.

Formats:
    - **VG folder** (the deep-visual-geo-localization benchmark convention): image files named
      ``@utm_east@utm_north@zone@...@.jpg``; the zone is either ``17T`` in one field or
      ``17@T`` in two (number, latitude band); see :mod:`vpr_ros.geo` for the band convention.
      Names without a zone need ``SourceConfig.utm_zone``. Files are taken in sorted order
      from the folder and its sub-folders.
    - **CSV** with a header ``image,lat,lon[,alt][,heading]`` (any column order, extra columns
      ignored); image paths are relative to the CSV's folder and must stay inside it.
    - **rosbag2** directory (sqlite3 or mcap): see :mod:`vpr_ros.mapdb.bag_source`.

A built map records its source; :func:`source_entries` and :func:`source_images` read it back
in map order (fine-tuning, and pseudo-queries at the camera's resolution).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from vpr_ros.errors import DataError
from vpr_ros.geo import check_lat_lon, haversine_m, utm_to_wgs84
from vpr_ros.images import check_rgb, IMAGE_SUFFIXES, thumbnail
from vpr_ros.mapdb.entry import Entry, FileImage, SourceConfig, SourceReport

log = logging.getLogger(__name__)


def _float(value: str, *, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f'{where}: {value!r} is not a number') from None


def parse_vg_name(name: str, utm_zone: str = '') -> tuple[float, float, str]:
    """Parse ``@east@north@zone@...`` into ``(easting, northing, zone)``; zone as ``'17T'``."""
    fields = name.split('@')
    if len(fields) < 4 or fields[0] != '':
        raise DataError(f'{name}: not a VG-format name (@utm_east@utm_north@zone@...@.ext)')
    east = _float(fields[1], where=name)
    north = _float(fields[2], where=name)
    zone = fields[3].strip() if len(fields) > 3 else ''
    if zone.isdigit() and len(fields) > 4 and len(fields[4].strip()) == 1 \
            and fields[4].strip().isalpha():
        zone += fields[4].strip()  # benchmark layout: @number@band@
    if not zone or zone.isdigit() or not zone[:-1].strip().isdigit():
        if not utm_zone:
            got = f'zone {zone!r} without a latitude band' if zone else 'no UTM zone'
            raise DataError(f'{name}: {got}; give the zone, e.g. --utm-zone 17T')
        zone = utm_zone
    return east, north, zone


def folder_source(folder: Path, config: SourceConfig) -> SourceReport:
    """List the VG-format images of ``folder`` (sorted, recursive) with their positions."""
    files = sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file())
    if not files:
        raise DataError(f'no images ({", ".join(IMAGE_SUFFIXES)}) found in {folder}')
    parsed = [parse_vg_name(p.name, config.utm_zone) for p in files]
    entries = []
    for zone in sorted({z for _, _, z in parsed}):
        idx = [i for i, (_, _, z) in enumerate(parsed) if z == zone]
        lat, lon = utm_to_wgs84([parsed[i][0] for i in idx], [parsed[i][1] for i in idx], zone)
        for j, i in enumerate(idx):
            check_lat_lon(float(lat[j]), float(lon[j]), where=str(files[i]))
            entries.append((i, Entry(str(files[i].relative_to(folder)), float(lat[j]),
                                     float(lon[j]), math.nan, FileImage(files[i]))))
    entries.sort(key=lambda item: item[0])
    return SourceReport('folder', str(folder), [e for _, e in entries], {})


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Return the header and ``(line number, row)`` of each row of a UTF-8 CSV.

    A :class:`DataError` names the line of bytes that are not UTF-8, of malformed quoting and
    of a row whose field count differs from the header's.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f'cannot read {path}: {exc.strerror}') from None
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b'\n') + 1
        raise DataError(f'{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save '
                        f'the CSV as UTF-8') from None
    reader = csv.reader(io.StringIO(text, newline=''))
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        header = next(reader, None)
        if header is None:
            return [], []
        header = [h.strip() for h in header]
        for fields in reader:
            if not fields:
                continue   # a blank line
            if len(fields) != len(header):
                raise DataError(f'{path}:{reader.line_num}: {len(fields)} fields, the header '
                                f'has {len(header)} ({",".join(header)})')
            rows.append((reader.line_num, dict(zip(header, fields))))
    except csv.Error as exc:
        raise DataError(f'{path}:{reader.line_num}: malformed CSV: {exc}') from None
    return header, rows


def csv_source(path: Path, config: SourceConfig) -> SourceReport:
    """Read ``image,lat,lon[,alt][,heading]`` rows; image paths must stay in the CSV's folder.

    An image listed twice is refused (``allow_duplicates``: kept, with a warning).
    """
    root = path.parent.resolve()
    header, rows = read_csv_rows(path)
    if not rows:
        raise DataError(f'{path}: no rows (expected a header image,lat,lon[,alt][,heading])')
    missing = {'image', 'lat', 'lon'} - set(header)
    if missing:
        raise DataError(f'{path}: missing column(s) {sorted(missing)}; header must have '
                        f'image,lat,lon and may have alt,heading')
    entries = []
    seen: dict[Path, int] = {}
    for line, row in rows:
        where = f'{path}:{line}'
        image = (row['image'] or '').strip()
        if not image:
            raise DataError(f'{where}: empty image path')
        target = (root / image).resolve()
        if not target.is_relative_to(root):
            raise DataError(f'{where}: image path {image!r} leaves the CSV folder {root}')
        if not target.is_file():
            raise DataError(f'{where}: image {image!r} not found')
        if target in seen:
            text = f'{where}: image {image!r} is listed already on line {seen[target]}'
            if not config.allow_duplicates:
                raise DataError(f'{text} (duplicate rows; --allow-duplicates keeps them)')
            log.warning('%s; kept (allow_duplicates)', text)
        seen.setdefault(target, line)
        lat = _float(row['lat'], where=where)
        lon = _float(row['lon'], where=where)
        check_lat_lon(lat, lon, where=where)
        alt = _float(row['alt'], where=where) if (row.get('alt') or '').strip() else math.nan
        heading = (_float(row['heading'], where=where) if (row.get('heading') or '').strip()
                   else math.nan)
        entries.append(Entry(image, lat, lon, alt, FileImage(target), heading_deg=heading))
    return SourceReport('csv', str(path), entries, {})


def thin(entries: list[Entry], min_spacing_m: float) -> tuple[list[Entry], int]:
    """Keep an entry only if it is ``min_spacing_m`` or more from the last kept one."""
    if min_spacing_m <= 0 or not entries:
        return list(entries), 0
    kept = [entries[0]]
    for entry in entries[1:]:
        last = kept[-1]
        if float(haversine_m(last.lat, last.lon, entry.lat, entry.lon)) >= min_spacing_m:
            kept.append(entry)
    return kept, len(entries) - len(kept)


def detect_kind(path: Path) -> str:
    """Guess the source kind of ``path``: bag directory, CSV file or image folder."""
    if path.is_file():
        if path.suffix.lower() == '.csv':
            return 'csv'
        if path.suffix.lower() in ('.mcap', '.db3'):
            return 'bag'
        raise DataError(f'{path}: not a CSV, a bag or a folder of images')
    if path.is_dir():
        return 'bag' if (path / 'metadata.yaml').is_file() else 'folder'
    raise DataError(f'map source not found: {path}')


def open_source(path: str | Path, config: SourceConfig | None = None) -> SourceReport:
    """Read the entries of a map source, thinned by ``config.min_spacing_m``."""
    config = config or SourceConfig()
    path = Path(path)
    kind = detect_kind(path) if config.kind == 'auto' else config.kind
    if kind == 'folder':
        report = folder_source(path, config)
    elif kind == 'csv':
        report = csv_source(path, config)
    else:
        from vpr_ros.mapdb.bag_source import bag_source
        report = bag_source(path, config)
    report.entries, thinned = thin(report.entries, config.min_spacing_m)
    if thinned:
        report.skipped['closer_than_min_spacing'] = thinned
    if not report.entries:
        raise DataError(f'{path}: no usable entries (skipped: {report.skipped})')
    return report


def source_entries(db: Any, source: str | Path | None) -> tuple[list[Any], str]:
    """Return the source entries in map order (the recorded source unless ``source`` is given)."""
    recorded = (db.manifest.get('source') or {}).get('path')
    path = source or recorded
    if not path:
        raise DataError(f'{db.path} does not record its source; give it with --source')
    if not Path(path).exists():
        raise DataError(f'the map source {path} does not exist; give the folder, CSV or bag '
                        'the map was built from with --source')
    build = db.manifest.get('build') or {}
    config = SourceConfig.from_dict(build.get('source') or {}, where='build.source')
    by_name = {e.name: e for e in open_source(path, config).entries}
    missing = [n for n in db.names if n not in by_name]
    if missing:
        raise DataError(f'{path} does not hold {len(missing)} of the {len(db)} map entries '
                        f'(e.g. {missing[0]!r}); give the source the map was built from')
    return [by_name[n] for n in db.names], str(path)


def source_images(db: Any, source: str | Path | None = None) -> Callable[[int], Any]:
    """Return ``load(i)``: map entry i's source image as the build saw it.

    The source is the one the map records unless ``source`` is given, and images are shrunk to
    the build's ``resize_max``, so pseudo-queries made from them have the camera's resolution
    as the map was described at. A :class:`DataError` when the source cannot be read or does
    not hold the map's entries.
    """
    entries, _ = source_entries(db, source)
    return entry_images(db, entries)


def entry_images(db: Any, entries: Sequence[Any], resize_max: int | None = None,
                 ) -> Callable[[int], Any]:
    """Return ``load(i)``: ``entries[i]`` (map entry i, already open) as the build saw it.

    The image is checked as RGB and shrunk to ``resize_max`` (default: the map's build
    setting), so every reader of a map's source images (adapt's and calibrate's
    pseudo-queries, the fine-tuner) gets them as the map was described.
    """
    if resize_max is None:
        resize_max = int((db.manifest.get('build') or {}).get('resize_max') or 0)

    def load(i: int) -> Any:
        image = check_rgb(entries[i].load(), where=f'map entry {db.names[i]}')
        return thumbnail(image, resize_max) if resize_max else image
    return load


#: ``map verify``: a sampled entry's stored descriptor and the one its source image gives again
#: must have at least this cosine (v1 stores float32; v2 the float16 projection).
SAME_DESCRIPTOR = {1: 0.999, 2: 0.99}
#: ... and its thumbnail may differ by this much (largest absolute difference of uint8 values)
#: where the map stores the very pixels (v1); a JPEG thumbnail (v2) must be closer to its own
#: image's than to any other sampled entry's.
SAME_PIXELS = 1
#: ... and its position by this much (degrees of latitude and longitude, metres of altitude).
SAME_POSITION = (1e-7, 1e-3)


def check_against_source(db: Any, source: str | Path | None = None, *, model: Any = None,
                         sample: int = 16, seed: int = 0) -> str:
    """Raise :class:`MapError` unless sampled entries are still their source images.

    Checksums and the agreement of the map's files cannot show rows that belong to other
    images (a writer that joined the descriptors of one drive with the positions of another,
    or rows shifted by one). A sample of entries is read from the source again and described
    by the map's model as the build did; each must give back its stored position, thumbnail
    and descriptor. Returns what was checked, or why nothing was: the source the map records
    may not be on this machine (a robot often has the map only). A ``source`` given by the
    caller must be readable (:class:`DataError` otherwise).
    """
    import numpy as np

    from vpr_ros.errors import MapError
    from vpr_ros.mapdb.describe import extract_chunk
    from vpr_ros.vectors import unit_rows

    try:
        entries, path = source_entries(db, source)
    except DataError as exc:
        if source is not None:
            raise
        return f'not checked against its source images: {exc}'
    rows = np.sort(np.random.default_rng(seed).choice(len(db), size=min(len(db), sample),
                                                      replace=False))
    picked = [entries[i] for i in rows]
    version = 2 if db.format_version >= 2 else 1

    def fail(k: int, what: str) -> None:
        raise MapError(f'{db.path}: entry {int(rows[k])} ({db.names[rows[k]]}): {what} of its '
                       f'source image in {path}: the map does not hold the images it names, '
                       f'or the source changed since the build; build the map again')

    stored = db.positions(rows)
    for k, e in enumerate(picked):
        lat, lon, alt = stored[k]
        near = max(abs(lat - e.lat), abs(lon - e.lon)) <= SAME_POSITION[0]
        same_alt = (math.isnan(alt) and math.isnan(e.alt)) or abs(alt - e.alt) <= SAME_POSITION[1]
        if not (near and same_alt):
            fail(k, f'the stored position {lat:.7f}, {lon:.7f} is not the position '
                    f'{e.lat:.7f}, {e.lon:.7f}')
    build = db.manifest.get('build') or {}
    thumbs = db.manifest.get('thumbnails') or {}
    size = (int(thumbs['height']), int(thumbs['width'])) if thumbs else (96, 128)
    model = model if model is not None else db.load_model('cpu')
    again = extract_chunk(model, picked, resize_max=int(build.get('resize_max') or 0),
                          thumbnail_size=size)
    want = np.asarray(again.descriptors, np.float32)
    if version == 2:
        want = db.projection.apply(want)
    cosine = (unit_rows(np.asarray(db.descriptors[rows], np.float64), np.float64)
              * unit_rows(want, np.float64)).sum(axis=1)
    for k in np.flatnonzero(cosine < SAME_DESCRIPTOR[version])[:1]:
        fail(int(k), f'the stored descriptor has cosine {cosine[k]:.3f} with the descriptor')
    checked = 'positions and descriptors'
    if thumbs:
        got = np.asarray(db.thumbnails(rows), np.float32).reshape(len(rows), -1)
        made = np.asarray(again.thumbnails, np.float32).reshape(len(rows), -1)
        diff = np.abs(got[:, None] - made[None]).mean(axis=2)   # stored k against made j
        alike = np.abs(made[:, None] - made[None]).max(axis=2) == 0     # e.g. a stopped robot
        for k in range(len(rows)):
            own = np.abs(got[k] - made[k]).max() <= SAME_PIXELS if version == 1 else \
                diff[k, k] < np.min(diff[k], initial=np.inf, where=~alike[k])
            if not own:
                fail(k, f'the stored thumbnail differs (by {diff[k, k]:.1f} on average) '
                        f'from the thumbnail')
        checked = 'positions, thumbnails and descriptors'
    return f'the {checked} of {len(rows)} sampled entries are those of their source images'
