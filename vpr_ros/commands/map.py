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

"""``vpr-ros map``: what a map holds (``info``, ``verify``) and maps made from maps.

``convert`` writes the compact format v2 of a v1 map, ``merge`` joins maps of one model and
projection, ``append`` adds a new drive to a v2 map without describing the old entries again
(:mod:`vpr_ros.mapdb.compact`). Each writes a temporary folder, the manifest last, then
renames it into place.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Any

from vpr_ros.calibration import stored_calibration_problem
from vpr_ros.device import BATCH_HELP
from vpr_ros.mapdb.database import check_consistency, MapDB
from vpr_ros.mapdb.format import entry_file_bytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``map``."""
    sub = parser.add_subparsers(dest='map_command', metavar='ACTION', required=True)
    info = sub.add_parser('info', help='print what a map holds')
    info.add_argument('map', type=Path, help='the *.vprmap directory')
    info.add_argument('--verify', action='store_true',
                      help='check the sha256 of every file (default: sizes only)')
    verify = sub.add_parser('verify', help='check every file of a map (sha256, shapes, '
                            'finite values) and that they agree (unit descriptors, the index '
                            'finds them, the adaptation projects them); exit 1 on a problem')
    verify.add_argument('map', type=Path, help='the *.vprmap directory')
    verify.add_argument('--source', type=Path,
                        help='the folder, CSV or bag the map was built from (default: the '
                             'source the map records, when it is on this machine): 16 sampled '
                             'entries must give back their position, thumbnail and descriptor')
    convert = sub.add_parser('convert', help='write the compact format v2 of a v1 map '
                             '(float16 projected descriptors, JPEG thumbnails)')
    convert.add_argument('map', type=Path, help='the v1 *.vprmap directory')
    convert.add_argument('--out', type=Path, help='write here (default: replace MAP)')
    convert.add_argument('--dim', type=int, default=256,
                         help='stored descriptor size when the map has no adaptation '
                              '(default 256)')
    convert.add_argument('--keep-features', action='store_true',
                         help='keep the stored float16 GeoWarp features (11 KB per entry '
                              'with the default model; default: computed from the JPEG '
                              'thumbnails on use)')
    convert.add_argument('--projection-from', type=Path, metavar='MAP',
                         help='store the descriptors with the projection of this v2 map '
                              '(maps to be merged need the same one)')
    merge = sub.add_parser('merge', help='join maps of one model and projection')
    merge.add_argument('maps', type=Path, nargs='+', metavar='MAP', help='maps, in order')
    merge.add_argument('--out', type=Path, required=True, help='the merged *.vprmap')
    merge.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    append = sub.add_parser('append', help='add a new drive (a source) to a v2 map, '
                            'describing only its images')
    append.add_argument('map', type=Path, help='the v2 *.vprmap directory')
    append.add_argument('source', type=Path, help='VG folder, CSV or bag of the new drive')
    append.add_argument('--out', type=Path, help='write here (default: replace MAP)')
    append.add_argument('--batch-size', type=int, default=0,
                        help=f'images per forward pass (default {BATCH_HELP})')


def _size(nbytes: float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if nbytes < 1024 or unit == 'GiB':
            return f'{nbytes:.0f} {unit}' if unit == 'B' else f'{nbytes:.1f} {unit}'
        nbytes /= 1024
    return f'{nbytes:.1f} GiB'


def info_lines(db: MapDB, *, verified: bool) -> list[tuple[str, str]]:
    """Rows of ``map info`` as (label, value)."""
    m: dict[str, Any] = db.manifest
    ext = m.get('extent', {})
    files = m['files']
    on_disk = sum(f['size'] for f in files.values()) + (db.path / 'manifest.json').stat().st_size
    n = max(1, len(db))
    per_entry = {name: files[name]['size'] / n for name in sorted(files) if name != 'model.pt'}
    entry_total = sum(entry_file_bytes(files, len(db)).values())
    model_cfg = m['model'].get('config') or {}
    model_name = model_cfg.get('name') or model_cfg.get('preset') or ''
    index = m['index']
    params = ', '.join(f'{k}={v}' for k, v in index.items()
                       if k not in ('kind', 'metric', 'tuning'))
    tuning = index.get('tuning')
    if tuning:  # the build-time auto-tune (mapdb/index.py): what it measured
        params += (f'; tuned: recall@{tuning["k"]} {tuning["recall"]} vs exact, target '
                   f'{tuning["target_recall"]}' + ('' if tuning['reached'] else ' NOT reached'))
    source = m.get('source', {})
    rows = [
        ('map', str(db.path)),
        ('format', f'{m["format"]} v{m["format_version"]}, vpr_ros {m["package_version"]}, '
                   f'created {m["created"]}'),
        ('entries', str(len(db))),
        ('source', f'{source.get("kind", "?")} {source.get("path", "")}'
                   + (f' (skipped {source["skipped"]})' if source.get('skipped') else '')),
        ('extent', f'lat {ext.get("lat_min", float("nan")):.6f} .. '
                   f'{ext.get("lat_max", float("nan")):.6f}, lon '
                   f'{ext.get("lon_min", float("nan")):.6f} .. '
                   f'{ext.get("lon_max", float("nan")):.6f}'),
        ('route length', f'{ext.get("route_length_m", float("nan")):.1f} m'),
        ('origin', '{lat:.7f}, {lon:.7f}, {alt:.2f} m'.format(**m['origin'])
         + ('' if m.get('altitude_known', True) else ' (altitude unknown)')),
        ('model', f'{model_name} fingerprint {m["model"]["fingerprint"]}'.strip()),
        ('descriptors', f'{m["descriptors"]["dim"]}-D {m["descriptors"]["dtype"]}'
                        + _projection_text(m['descriptors'])),
        ('index', f'{index["kind"]} ({params})' if params else index['kind']),
        ('adaptation', _adaptation_text(m.get('adaptation'))),
        ('thumbnails', '{height}x{width} ({bytes_per_entry} B per entry)'.format(
            **m['thumbnails']) if m.get('thumbnails') else 'none'),
        ('calibration', _calibration_text(db)),
        ('size on disk', f'{_size(on_disk)} '
                         f'({", ".join(f"{k} {v:.0f} B" for k, v in per_entry.items())} '
                         f'per entry)'),
        ('per entry', f'{entry_total:.0f} B ({_size(entry_total)}; the files that grow '
                      f'with the map: descriptors, positions, entries, index, thumbnails, '
                      f'local features)'),
        ('checksums', 'verified (sha256)' if verified else 'sizes checked (use --verify)'),
    ]
    return rows


def _calibration_text(db: MapDB) -> str:
    """Whether the map is calibrated, the re-ranking choices stored with it, and if it fits."""
    m = db.manifest
    if not m.get('calibration'):
        return 'not calibrated'
    fusion, subspacing = m.get('rerank_fusion') or {}, m.get('subspacing') or {}
    parts = [f'GeoWarp {fusion["geowarp_mode"]} mode' if fusion.get('geowarp_mode') else '',
             f'fusion weight {fusion["weight"]:g}' if fusion.get('weight') is not None else '',
             f'between map frames: {subspacing["mode"]}' if subspacing.get('mode') else '']
    chosen = ', '.join(p for p in parts if p)
    problem = stored_calibration_problem(db)
    return (f'yes ({chosen})' if chosen else 'yes') + (f'; {problem}' if problem else '')


def _projection_text(record: dict[str, Any]) -> str:
    proj = record.get('projection')
    if not proj:
        return ''
    return f' (projected from {record["input_dim"]}-D by {proj["method"]})'


def _adaptation_text(record: dict[str, Any] | None) -> str:
    if not record:
        return 'none (run vpr-ros adapt)'
    reason = (record.get('report') or {}).get('reason', '')
    if record.get('method', 'none') == 'none':
        return f'none: {reason}' if reason else 'none'
    return f'{record["method"]} {record["input_dim"]}-D -> {record["dim"]}-D; {reason}'


def main(args: argparse.Namespace) -> int:
    """Run one ``map`` action."""
    action = getattr(args, 'map_command', 'info')
    if action == 'verify':
        db = MapDB.open(args.map, fast=False)
        check_consistency(db)
        if db.manifest.get('thumbnails'):   # v2: every JPEG decodes to the stated size
            for start in range(0, len(db), 4096):
                db.thumbnails(list(range(start, min(len(db), start + 4096))))
        from vpr_ros.runtime.map_features import check_local_features
        checked = check_local_features(db)
        features = (f', the stored GeoWarp features of {checked} sampled entries are their '
                    f"thumbnails'" if checked else '')
        from vpr_ros.mapdb.sources import check_against_source
        against_source = check_against_source(db, args.source)
        problem = stored_calibration_problem(db)
        if problem:
            print(f'{args.map}: files OK, but {problem}', file=sys.stderr)
            return 1
        print(f'{args.map}: OK ({len(db)} entries, format v{db.format_version}, every sha256 '
              f'and value checked, the index and descriptors agree{features}); '
              f'{against_source}')
        return 0
    if action in ('convert', 'merge', 'append'):
        from vpr_ros.mapdb import compact

        if action == 'convert':
            projection = (MapDB.open(args.projection_from, fast=True).projection
                          if args.projection_from else None)
            if args.projection_from and projection is None:
                from vpr_ros.errors import MapError
                raise MapError(f'{args.projection_from} has no projection to take')
            out = compact.convert_map(args.map, args.out, dim=args.dim,
                                      keep_features=args.keep_features, projection=projection)
        elif action == 'merge':
            out = compact.merge_maps(args.maps, args.out, overwrite=args.overwrite)
        else:
            out = compact.append_to_map(args.map, args.source, out=args.out,
                                        batch_size=args.batch_size)
        args = argparse.Namespace(map=out, verify=False)
    db = MapDB.open(args.map, fast=not args.verify)
    if args.verify:
        check_consistency(db)
    rows = info_lines(db, verified=args.verify)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f'{key:<{width}}  {value}')
    return 0
