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

"""``vpr-ros train``: train a descriptor model on geotagged images (``--config train.yaml``).

Several GPUs: ``torchrun --nproc_per_node N $(which vpr-ros) train --config train.yaml``
(or ``torchrun ... -m vpr_ros.cli train ...``); the same command with one process trains on
one device.
"""

from __future__ import annotations

import argparse
import logging
import os

from vpr_ros.commands._args import (add_config, add_device, add_model, add_progress, load_config,
                                    override)
from vpr_ros.training.train_config import TrainConfig
from vpr_ros.training.trainer import train

log = logging.getLogger(__name__)

# command-line option -> TrainConfig field (None: keep the YAML / default value)
OVERRIDES = ('model', 'out_dir', 'device', 'epochs', 'batch_size', 'lr', 'resume', 'seed',
             'num_workers', 'queries_per_epoch', 'train_layers')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of train; everything else lives in the YAML (config/train.yaml)."""
    add_config(parser, 'TrainConfig')
    parser.add_argument('--database', help='training images (VG folder, CSV, rosbag2); '
                        'overrides data.database')
    parser.add_argument('--queries', help='second traversal used as queries (data.queries)')
    add_model(parser, default=None, what=' to start from')
    parser.add_argument('--out-dir', dest='out_dir', help='where best.pt/last.pt/metrics go')
    add_device(parser, default=None)
    parser.add_argument('--epochs', type=int)
    parser.add_argument('--batch-size', dest='batch_size', type=int,
                        help='tuples per optimiser step')
    parser.add_argument('--lr', type=float, help='Adam learning rate')
    parser.add_argument('--seed', type=int)
    parser.add_argument('--workers', dest='num_workers', type=int,
                        help='DataLoader processes building batches')
    parser.add_argument('--queries-per-epoch', dest='queries_per_epoch', type=int)
    parser.add_argument('--train-layers', dest='train_layers', choices=('all', 'last'),
                        help='all weights, or the last backbone stage and the head only')
    parser.add_argument('--resume', help='last.pt of an earlier run to continue from')
    add_progress(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """YAML (if any), then the command-line overrides; validated."""
    config = load_config(TrainConfig, args.config)
    data = {n: getattr(args, n) for n in ('database', 'queries') if getattr(args, n, None)}
    if data:
        config = config.replace(data=config.data.replace(**data))
    return override(config, args, OVERRIDES)


def main(args: argparse.Namespace) -> int:
    """Train and print where the checkpoints are."""
    config = config_from_args(args)
    log.debug('train config: %s', config.to_dict())
    result = train(config, progress=not args.no_progress)
    if int(os.environ.get('RANK', '0')) != 0:
        return 0  # torchrun: the first process reports
    if result.history and result.history[-1]['epoch'] > 0:
        row = result.history[-1]
        print(f"epoch {int(row['epoch'])}: loss {row['loss']:.4f}, R@1 {row['R@1']:.1f}, "
              f"R@5 {row['R@5']:.1f}, R@10 {row['R@10']:.1f}")
    print(f'last checkpoint: {result.last}')
    if result.best is not None:
        print(f'best checkpoint: {result.best}')
    print(f"metrics: {result.out_dir / 'metrics.csv'}, {result.out_dir / 'metrics.png'}")
    return 0
