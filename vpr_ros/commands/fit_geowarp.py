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

"""``vpr-ros fit-geowarp``: fit GeoWarp on a map's own images and store it in the map."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr_ros.calibration import stored_calibration_problem
from vpr_ros.commands._args import add_config, add_device, add_progress, load_config, override
from vpr_ros.mapdb.database import MapDB
from vpr_ros.training.geowarp_trainer import fit_geowarp, GeoWarpFitConfig, work_dir_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of fit-geowarp; defaults come from GeoWarpFitConfig."""
    parser.add_argument('map', type=Path, help='the map (*.vprmap)')
    add_config(parser, 'GeoWarpFitConfig')
    parser.add_argument('--iterations', type=int, help='optimiser steps')
    parser.add_argument('--batch-size', type=int, help='pairs per loss per step')
    parser.add_argument('--lr', type=float, help='Adam learning rate')
    parser.add_argument('--no-positions', action='store_true',
                        help='self-supervised only (L_ss + L_cons), ignore map positions')
    add_device(parser, default=None)
    parser.add_argument('--restart', action='store_true',
                        help='ignore a saved state and start from the identity')
    add_progress(parser)


def main(args: argparse.Namespace) -> int:
    """Fit, attach to the map and print where the loss curve is."""
    config = override(load_config(GeoWarpFitConfig, args.config), args,
                      ('iterations', 'batch_size', 'lr', 'device'))
    if args.no_positions:
        config = config.replace(use_positions=False)
    record = fit_geowarp(args.map, config, restart=args.restart,
                         progress=not args.no_progress)
    work = work_dir_for(args.map)
    print(f'GeoWarp fitted: {record["iterations"]} steps, losses {"+".join(record["losses"])}, '
          f'loss {record["loss_first10"]:.4f} -> {record["loss_last10"]:.4f}')
    print(f'stored in {args.map / record["file"]}; loss curve {work / "loss.png"}')
    problem = stored_calibration_problem(MapDB.open(args.map))
    if problem:
        print(f'note: {problem}')
    return 0
