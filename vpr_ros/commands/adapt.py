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

"""``vpr-ros adapt MAP``: learn the map's descriptor projection, keep it only if it helps."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr_ros.commands._args import add_device, add_progress, map_source_images
from vpr_ros.mapdb.adaptation import AdaptConfig, METHODS
from vpr_ros.mapdb.finetune import FinetuneConfig, LAYERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of adapt; defaults come from AdaptConfig."""
    d = AdaptConfig()
    parser.add_argument('map', type=Path, help='the map (*.vprmap) to adapt')
    parser.add_argument('--method', choices=METHODS, default=d.method,
                        help='auto (default): the best of none / pcaw (PCA whitening) / lw '
                             '(learnt whitening from map pairs) on held-out places; a name '
                             'forces it; none removes the adaptation')
    parser.add_argument('--dims', type=int, nargs='+', default=list(d.dims),
                        help=f'output dimensions to try (default '
                             f'{" ".join(map(str, d.dims))})')
    parser.add_argument('--positive-radius', type=float, default=d.positive_radius_m,
                        help=f'map images this close (m) show the same place: the matching '
                             f'pairs of lw, the positives of --finetune (default '
                             f'{d.positive_radius_m:g})')
    parser.add_argument('--validation-queries', type=int, default=d.validation_queries,
                        help=f'pseudo-queries made from map images (default '
                             f'{d.validation_queries})')
    parser.add_argument('--min-gain', type=float, default=d.min_gain,
                        help=f'keep a projection only if held-out recall@1 rises this much '
                             f'(default {d.min_gain:g})')
    parser.add_argument('--max-p', type=float, default=d.max_p,
                        help=f'and only if a one-sided sign test on the held-out queries it '
                             f'changes gives p at most this over the number of candidates '
                             f'(Bonferroni; --finetune tests one; default {d.max_p:g}; 1: no '
                             f'test)')
    parser.add_argument('--source', type=Path,
                        help='the folder, CSV or bag the map was built from: validation '
                             'pseudo-queries are made from these full-resolution images '
                             '(default: the source the map records; its thumbnails when that '
                             'cannot be read)')
    parser.add_argument('--queries', type=Path,
                        help='a second drive of the area with positions (folder, CSV or bag): '
                             'its frames decide (the projection, or with --finetune the model) '
                             'instead of pseudo-queries of held-out places')
    parser.add_argument('--seed', type=int, default=d.seed, help='folds and pseudo-queries')
    add_device(parser)
    parser.add_argument('--dry-run', action='store_true', help='validate and report, store '
                        'nothing')
    parser.add_argument('--json', type=Path, help='also write the validation table here')
    f = FinetuneConfig()
    tune = parser.add_argument_group(
        "fine-tuning (--finetune): train the map's model on its own images, GPS weak "
        'supervision; kept only if recall on held-out places rises')
    tune.add_argument('--finetune', action='store_true',
                      help='fine-tune the model, rebuild the map with it if it helps '
                           '(the old map stays beside it as a backup)')
    tune.add_argument('--layers', choices=LAYERS, default=f.layers,
                      help='auto (default): the last backbone stage and the head on a CPU, '
                           'everything on a GPU')
    tune.add_argument('--epochs', type=int, default=f.epochs,
                      help=f'passes over the map (default {f.epochs})')
    tune.add_argument('--queries-per-epoch', type=int, default=f.queries_per_epoch,
                      help='training queries per epoch (default 0: all)')
    tune.add_argument('--lr', type=float, default=f.lr, help=f'Adam (default {f.lr:g})')
    tune.add_argument('--negative-radius', type=float, default=f.negative_m,
                      help=f'negatives: map images farther than this (m) (default '
                           f'{f.negative_m:g}; lower it for a site smaller than that)')
    tune.add_argument('--work-dir', type=Path,
                      help='checkpoints and the candidate map (default <map>.finetune; '
                           'running again continues from there)')
    add_progress(tune)


def finetune(args: argparse.Namespace) -> int:
    """Fine-tune, print before/after recall on held-out places and the decision."""
    from vpr_ros.mapdb.finetune import finetune_map

    config = FinetuneConfig(layers=args.layers, epochs=args.epochs,
                            queries_per_epoch=args.queries_per_epoch, lr=args.lr,
                            positive_m=args.positive_radius, negative_m=args.negative_radius,
                            validation_queries=args.validation_queries,
                            min_gain=args.min_gain, max_p=args.max_p, seed=args.seed)
    result = finetune_map(args.map, config, source=args.source, queries=args.queries,
                          device=args.device, work_dir=args.work_dir, dry_run=args.dry_run,
                          progress=not args.no_progress)
    r = result.report
    drive = r.get('drive')
    print(f'fine-tuned {r["layers"]} layers on {r["train_images"]} map images; '
          + (f'the second drive {drive["source"]} decides' if drive else
             f'{r["held_out_images"]} images of held-out places decide'))
    tables = [('held-out places', 'pseudo-queries', r['held_out_before'], r['held_out_after'])]
    if drive:
        tables.append((f'second drive {drive["source"]}', 'frames', drive['before'],
                       drive['after']))
    for title, unit, before, after in tables:
        print(f'{title} ({before["queries"]} {unit}, right place within '
              f'{before["right_place_m"]:.2f} m):')
        print(f'  {"model":<12}{"R@1":>8}{"R@5":>8}')
        for name, row in (('before', before), ('fine-tuned', after)):
            print(f'  {name:<12}{row["recall@1"]:>8.3f}{row["recall@5"]:>8.3f}')
    print(f'  sign test on the {"frames" if drive else "pseudo-queries"} it changes: '
          f'p = {r["sign_test_p"]:.2g}')
    print(f'fine-tuning: {result.reason} ({r["seconds"]:.0f} s)')
    if result.kept:
        print(f'{args.map} rebuilt with the fine-tuned model; the old map is {result.backup}')
        for key in ('adaptation', 'geowarp', 'calibration'):
            if key in r:
                print(f'  {key}: {r[key]}')
    _write_json(args.json, {'kept': result.kept, 'before': result.before,
                            'after': result.after, 'report': r})
    return 0


def main(args: argparse.Namespace) -> int:
    """Validate, print the table and the choice, store it in the map."""
    if args.finetune:
        return finetune(args)
    from vpr_ros.mapdb.adaptation import adapt_map
    from vpr_ros.mapdb.database import MapDB

    config = AdaptConfig(method=args.method, dims=tuple(args.dims),
                         positive_radius_m=args.positive_radius,
                         validation_queries=args.validation_queries, min_gain=args.min_gain,
                         max_p=args.max_p,
                         seed=args.seed)
    db = MapDB.open(args.map)
    # source_images shrinks them as the build did, so adapt_map needs no resize_max.
    wants = config.method != 'none' and db.format_version < 2    # else adapt_map refuses
    drive = None
    if wants and args.queries is not None:
        from vpr_ros.mapdb.sources import open_source

        drive = open_source(args.queries).entries
    images = map_source_images(db, args.source) if wants and drive is None else None
    choice = adapt_map(db, config, device=args.device, dry_run=args.dry_run, images=images,
                       drive=drive)
    report = choice.report
    if choice.table:
        if drive is not None:
            print(f'validation of {args.map} on the second drive {args.queries}: '
                  f'{report["drive_frames"]} frames (candidates fitted on the whole map), '
                  f'right place within {report["right_place_m"]:.2f} m, {report["pairs"]} map '
                  f'pairs within {config.positive_radius_m:g} m')
        else:
            kept = ' (stored by the last adapt)' if report.get('pseudo_queries_stored') else ''
            print(f'held-out validation of {args.map}: {report["pseudo_queries"]} '
                  f'pseudo-queries from {report["pseudo_queries_from"]}{kept}, {report["folds"]} '
                  f'spatial folds, right place within {report["right_place_m"]:.2f} m, '
                  f'{report["pairs"]} map pairs within {config.positive_radius_m:g} m')
        print(f'  {"method":<7}{"dim":>6}{"R@1":>8}{"R@5":>8}')
        chosen = (choice.method, choice.dim)
        order = sorted(choice.table, key=lambda r: (r['method'] != 'none', r['method'], r['dim']))
        for row in order:
            mark = '  <- chosen' if (row['method'], row['dim']) == chosen else ''
            print(f'  {row["method"]:<7}{row["dim"]:>6}{row["recall@1"]:>8.3f}'
                  f'{row["recall@5"]:>8.3f}{mark}')
    print(f'adaptation: {report["reason"]}'
          + (f' ({report["seconds"]:.1f} s)' if 'seconds' in report else ''))
    if args.dry_run:
        print('dry run: nothing stored')
    else:
        print(f'stored in {args.map}')
        from vpr_ros.calibration import stored_calibration_problem

        problem = stored_calibration_problem(MapDB.open(args.map))
        if problem:
            print(f'note: {problem}')
    _write_json(args.json, {'method': choice.method, 'dim': choice.dim,
                            'validation': choice.table, 'report': report})
    return 0


def _write_json(path: Path | None, data: dict) -> None:
    """Write ``--json`` output (when asked) atomically."""
    from vpr_ros.files import write_json

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, data)
