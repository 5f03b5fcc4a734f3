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

"""``vpr-ros build-map``: build a ``*.vprmap`` from a VG folder, a CSV or a rosbag2."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from vpr_ros.commands._args import (add_config, add_device, add_model, add_progress, load_config,
                                    override)
from vpr_ros.errors import ConfigError
from vpr_ros.mapdb.adaptation import METHODS
from vpr_ros.mapdb.build import build_map, BuildConfig
from vpr_ros.mapdb.format import read_manifest

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of build-map; defaults come from BuildConfig / SourceConfig / IndexConfig."""
    parser.add_argument('source', type=Path,
                        help='VG image folder, CSV (image,lat,lon[,alt]) or rosbag2 directory')
    parser.add_argument('--out', type=Path, required=True, help='map to write (*.vprmap)')
    add_config(parser, 'BuildConfig', '; options below override it')
    add_model(parser, default=None, shown=BuildConfig().model)
    parser.add_argument('--index', choices=('auto', 'flat', 'ivfpq', 'hnsw'),
                        help='FAISS index kind (default auto: flat up to 20k entries)')
    parser.add_argument('--batch-size', type=int)
    add_device(parser, default=None)
    parser.add_argument('--workers', type=int, dest='num_workers',
                        help='image decoding processes')
    parser.add_argument('--chunk-size', type=int, help='entries per resumable chunk')
    parser.add_argument('--resize-max', type=int,
                        help='shrink images to this longer side before the model')
    parser.add_argument('--thumbnail-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='GeoWarp thumbnails per entry; 0 0 for none')
    parser.add_argument('--min-spacing', type=float, dest='min_spacing_m',
                        help='drop entries closer than this to the previous one (m)')
    parser.add_argument('--utm-zone', help='zone for VG names without one, e.g. 17T')
    parser.add_argument('--image-topic', help='bag image topic (Image or CompressedImage)')
    parser.add_argument('--fix-topic', help='bag NavSatFix topic')
    parser.add_argument('--fix-tolerance', type=float, dest='fix_tolerance_s',
                        help='max time between an image and the fixes it uses (s)')
    parser.add_argument('--adapt', choices=METHODS, dest='adapt_method',
                        help='descriptor adaptation fitted on the finished map (default auto: '
                             'kept only if it helps on held-out places; none: off)')
    parser.add_argument('--queries', type=Path, dest='adapt_queries', metavar='SECOND_DRIVE',
                        help='a second drive of the area with positions (folder, CSV or bag): '
                             'its frames decide the adaptation instead of pseudo-queries of '
                             'held-out places (as vpr-ros adapt --queries)')
    parser.add_argument('--allow-duplicates', action='store_true', default=None,
                        help='CSV: keep images listed more than once (warned) instead of '
                             'refusing the CSV')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing map')
    parser.add_argument('--skip-bad', action='store_true', default=None,
                        help='leave out images that cannot be read (listed in the manifest) '
                             'instead of stopping')
    add_progress(parser)
    parser.add_argument('--ray', nargs='?', const='local', metavar='ADDRESS',
                        help='describe the images on a Ray cluster (pip install '
                             'vpr_ros[ray]): no ADDRESS starts one on this machine, auto or '
                             'HOST:PORT joins a running one; the source must be readable at '
                             'the same path on every worker')
    parser.add_argument('--ray-actors', type=int, default=0, metavar='N',
                        help='with --ray: model copies describing at once (default: one per '
                             'cluster CPU, or per GPU when the cluster has GPUs)')


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """Turn the command line into a validated BuildConfig."""
    config = load_config(BuildConfig, args.config)
    source = override(config.source, args, ('utm_zone', 'image_topic', 'fix_topic',
                                            'fix_tolerance_s', 'min_spacing_m',
                                            'allow_duplicates'))
    index = config.index.replace(kind=args.index) if args.index else config.index
    config = override(config, args, ('model', 'batch_size', 'device', 'num_workers',
                                     'chunk_size', 'resize_max', 'skip_bad'))
    if args.adapt_method is not None:
        config = config.replace(adapt=config.adapt.replace(method=args.adapt_method))
    if args.thumbnail_size is not None:
        config = config.replace(thumbnail_size=tuple(args.thumbnail_size))
    return config.replace(source=source, index=index)


def _hint_place_labelled(out: Path) -> None:
    """Point a map whose views share positions at fine-tuning, which such maps can use.

    Many views of each place give fine-tuning real positives and negatives; on a rendered set of
    that kind it raised held-out R@1 from 0.64 to 0.80 (bench/README.md, "Fine-tuning").
    """
    from vpr_ros.fix_quality import place_spacing_m, PLACE_SPACING_FLOOR_M
    from vpr_ros.mapdb.database import MapDB

    db = MapDB.open(out, fast=True)
    if len(db) >= 2 and place_spacing_m(db.positions_enu(np.arange(len(db)))) <= \
            PLACE_SPACING_FLOOR_M:
        print(f'most entries share their position with another (views of a place): '
              f'vpr-ros adapt {out} --finetune may raise recall a lot on such a map (kept only '
              f'if held-out places show it), then vpr-ros calibrate {out}')


def main(args: argparse.Namespace) -> int:
    """Build the map and print where it is."""
    config = config_from_args(args)
    log.debug('build config: %s', config.to_dict())
    if args.ray_actors < 0:
        raise ConfigError(f'--ray-actors {args.ray_actors}: must be >= 0 (0: one per CPU or '
                          f'GPU of the cluster)')
    if args.ray is None and args.ray_actors:
        raise ConfigError('--ray-actors needs --ray')
    if args.ray is not None:   # before the model loads: a missing Ray fails at once
        from vpr_ros.mapdb.distributed import import_ray
        import_ray()
    out = build_map(args.source, args.out, config, overwrite=args.overwrite,
                    progress=not args.no_progress, ray=args.ray, ray_actors=args.ray_actors,
                    adapt_queries=args.adapt_queries)
    print(f'map written: {out}')
    _hint_place_labelled(out)
    manifest = read_manifest(out)
    skipped = manifest.get('skipped_images') or []
    if skipped:
        count = manifest['source']['skipped'].get('unreadable_image', len(skipped))
        print(f'skipped {count} image(s) that could not be read (listed in '
              f'{out / "manifest.json"}, skipped_images):')
        for item in skipped[:20]:
            print(f'  {item["name"]}: {item["error"]}')
    return 0
