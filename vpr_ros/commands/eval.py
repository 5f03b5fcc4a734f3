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

"""``vpr-ros eval``: recall@N of a model on a VG or VPR-Bench dataset, benchmark protocol.

Option names follow the benchmark / VPR-methods-evaluation (``--database_folder``,
``--queries_folder``, ``--positive_dist_threshold``, ``--recall_values``, ``--image_size``) so
their command lines work here; the dashed spellings are accepted too.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import sys

from vpr_ros.commands._args import (add_backend, add_device, add_localizer_config, add_model,
                                    add_progress, localizer_config)
from vpr_ros.device import BATCH_HELP
from vpr_ros.errors import DataError
from vpr_ros.evaluation.retrieval import LAYOUTS, RetrievalEvalConfig

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of eval; defaults come from RetrievalEvalConfig."""
    d = RetrievalEvalConfig()
    parser.add_argument('--database_folder', '--database-folder', type=Path,
                        help='database images (VG: @utm_east@utm_north@zone@...@.jpg)')
    parser.add_argument('--queries_folder', '--queries-folder', type=Path,
                        help='query images, same naming')
    parser.add_argument('--dataset_folder', '--dataset-folder', type=Path,
                        help='one folder instead: VPR-Bench (query/, ref/, ground truth) or a '
                             'VG split (database/, queries/)')
    parser.add_argument('--layout', choices=LAYOUTS, default=d.layout,
                        help='dataset layout (default auto)')
    parser.add_argument('--ground_truth', '--ground-truth', type=Path,
                        help='VPR-Bench ground truth (default: ground_truth.csv in the folder)')
    parser.add_argument('--allow-pickle', '--allow_pickle', action='store_true',
                        dest='allow_pickle',
                        help='read the upstream VPR-Bench .npy ground truth (a pickle: it can '
                             'run code from the file; only for files you trust)')
    parser.add_argument('--positive_dist_threshold', '--positive-dist-threshold', type=float,
                        default=d.positive_dist_threshold,
                        help=f'VG positives within this many metres (default '
                             f'{d.positive_dist_threshold:g})')
    parser.add_argument('--recall_values', '--recall-values', type=int, nargs='+',
                        default=list(d.recall_values),
                        help=f'N of recall@N (default {" ".join(map(str, d.recall_values))})')
    parser.add_argument('--image_size', '--image-size', type=int, nargs=2, metavar=('H', 'W'),
                        help="model input size for this run (default: the model's own)")
    add_model(parser, default=d.model)
    add_device(parser, default=d.device)
    parser.add_argument('--batch-size', '--batch_size', type=int, default=d.batch_size,
                        dest='batch_size',
                        help=f'images per forward pass (default {BATCH_HELP})')
    parser.add_argument('--workers', type=int, default=d.num_workers, dest='num_workers',
                        help='image decoding processes (default 0: in process)')
    parser.add_argument('--map', type=Path,
                        help='evaluate against this built map (*.vprmap, made from the '
                             'database images) the way the node searches: its model, '
                             'adaptation, index and GeoWarp re-ranking; --model, --image_size '
                             'do not apply')
    parser.add_argument('--no-rerank', action='store_true',
                        help='with --map: global retrieval only, no GeoWarp re-ranking')
    add_localizer_config(parser, when='with --map: ')
    add_backend(parser, when='with --map: ')
    parser.add_argument('--json', type=Path, help='also write the recalls and protocol here')
    add_progress(parser)


def config_from_args(args: argparse.Namespace) -> RetrievalEvalConfig:
    """Turn the command line into a validated RetrievalEvalConfig."""
    return RetrievalEvalConfig(
        layout=args.layout, positive_dist_threshold=args.positive_dist_threshold,
        recall_values=tuple(args.recall_values), image_size=tuple(args.image_size or ()),
        model=args.model, device=args.device, batch_size=args.batch_size,
        num_workers=args.num_workers, allow_pickle=args.allow_pickle)


def main(args: argparse.Namespace) -> int:
    """Evaluate and print the protocol with the recalls; optionally write JSON."""
    from vpr_ros.evaluation.retrieval import evaluate_retrieval, open_dataset
    from vpr_ros.files import write_json

    config = config_from_args(args)
    dataset = open_dataset(config, dataset_folder=args.dataset_folder,
                           database_folder=args.database_folder,
                           queries_folder=args.queries_folder, ground_truth=args.ground_truth)
    if getattr(args, 'map', None):
        from vpr_ros.evaluation.retrieval import evaluate_map
        from vpr_ros.localizer import CALIBRATION_FITS

        result = evaluate_map(dataset, args.map, config, rerank=not args.no_rerank,
                              localizer_config=localizer_config(args),
                              progress=not args.no_progress)
        if result.protocol['calibration'] != CALIBRATION_FITS:
            print(f'warning: {result.protocol["calibration"]}', file=sys.stderr)
    else:
        if args.no_rerank or args.localizer_config or getattr(args, 'backend', None):
            raise DataError('--no-rerank, --localizer-config and --backend apply with --map '
                            'only')
        result = evaluate_retrieval(dataset, config, progress=not args.no_progress)
    for line in result.summary_lines():
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result.as_dict())
        print(f'written: {args.json}')
    return 0
