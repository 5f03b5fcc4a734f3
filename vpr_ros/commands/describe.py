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

"""``vpr-ros describe IMG... --model CFG --out descriptors.npy``: global descriptors to a file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vpr_ros.commands._args import add_device, add_model
from vpr_ros.device import BATCH_HELP
from vpr_ros.models import DEFAULT_MODEL

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the describe options."""
    parser.add_argument('images', nargs='+', type=Path, help='image files')
    add_model(parser, default=DEFAULT_MODEL)
    parser.add_argument('--out', type=Path, required=True, help='output .npy (N x D float32)')
    add_device(parser)
    parser.add_argument('--batch-size', type=int, default=0,
                        help=f'images per forward pass (default {BATCH_HELP})')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')


def main(args: argparse.Namespace) -> int:
    """Describe the images and write an ``N x D`` array plus a JSON sidecar."""
    from vpr_ros.errors import DataError
    from vpr_ros.files import save_array, write_json
    from vpr_ros.models.api import describe, get_model

    if args.out.exists() and not args.overwrite:
        raise DataError(f'{args.out} exists already; pass --overwrite to replace it')
    if args.batch_size < 0:
        raise DataError('--batch-size must be 0 (auto) or more')
    model = get_model(args.model, args.device)
    descriptors = describe(list(args.images), model, batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_array(args.out, descriptors)
    write_json(args.out.with_suffix('.json'), {
        'images': [str(p) for p in args.images], 'model': str(args.model),
        'config': model.config.to_dict(), 'fingerprint': model.fingerprint(),
        'shape': list(descriptors.shape)})
    print(f'wrote {descriptors.shape[0]} x {descriptors.shape[1]} descriptors to {args.out}')
    return 0
