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

"""``vpr-ros localize``: positions of image files against a map, as text or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Any, Iterator

from vpr_ros.commands._args import add_backend, add_config, add_device, load_config
from vpr_ros.device import read_step
from vpr_ros.errors import DataError
from vpr_ros.images import load_image
from vpr_ros.localizer import calibration_warning, Localizer, LocalizerConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of localize; defaults come from LocalizerConfig."""
    parser.add_argument('images', type=Path, nargs='+', help='image files (JPEG, PNG, ...)')
    parser.add_argument('--map', type=Path, required=True, help='the map (*.vprmap)')
    add_config(parser, 'LocalizerConfig', '; options below override it')
    parser.add_argument('--top-k', type=int, help='candidates retrieved')
    parser.add_argument('--no-rerank', action='store_true', help='no GeoWarp re-ranking')
    parser.add_argument('--mode', choices=('features', 'image', 'auto'),
                        help='GeoWarp mode (default auto: the one calibrate chose for the map)')
    parser.add_argument('--estimator', choices=('top1', 'weighted'))
    add_device(parser)
    add_backend(parser)
    parser.add_argument('--show', type=int, default=3, help='candidates printed per image')
    parser.add_argument('--json', action='store_true', help='one JSON object per image')


def config_from_args(args: argparse.Namespace) -> LocalizerConfig:
    """Turn the command line into a validated LocalizerConfig."""
    config = load_config(LocalizerConfig, args.config)
    if args.top_k is not None:
        config = config.replace(top_k=args.top_k)
    if args.no_rerank:
        config = config.replace(rerank=False)
    if args.mode:
        config = config.replace(geowarp=config.geowarp.replace(mode=args.mode))
    if args.estimator:
        config = config.replace(estimator=args.estimator)
    if getattr(args, 'backend', None):
        config = config.replace(backend=args.backend)
    return config


def _estimates(localizer: Localizer, paths: list[Path]) -> Iterator[tuple[Path, Any]]:
    """Yield ``(path, Estimate or DataError)`` in order; an unreadable image stops nothing."""
    step = read_step()
    for start in range(0, len(paths), step):
        loaded: list[tuple[Path, Any]] = []
        for path in paths[start:start + step]:
            try:
                loaded.append((path, load_image(path)))
            except DataError as exc:
                loaded.append((path, exc))
        good = [image for _, image in loaded if not isinstance(image, DataError)]
        estimates = iter(localizer.localize_batch(good))
        for path, image in loaded:
            yield path, image if isinstance(image, DataError) else next(estimates)


def main(args: argparse.Namespace) -> int:
    """Localize every image; exit 0 when all got a fix, 3 when some are NO_FIX, 4 unreadable.

    An image that cannot be read is reported (stderr, or a JSON line with ``error``) and the
    others are still localised.
    """
    localizer = Localizer.open(args.map, config_from_args(args), device=args.device)
    warning = calibration_warning(localizer, args.map)
    if warning:
        print(f'warning: {warning}', file=sys.stderr)
    all_fix, unreadable = True, 0
    for path, est in _estimates(localizer, list(args.images)):
        if isinstance(est, DataError):
            unreadable += 1
            if args.json:
                print(json.dumps({'image': str(path), 'error': str(est)}))
            print(f'vpr-ros localize: error: {est}', file=sys.stderr)
            continue
        all_fix &= est.ok
        if args.json:
            print(json.dumps({'image': str(path), **est.to_dict()}))
            continue
        print(f'{path}: {est.status.upper()} lat {est.lat:.7f} lon {est.lon:.7f} '
              f'alt {est.alt:.1f} sigma {est.sigma_m:.1f} m score {est.score:.3f}'
              + (f' ({est.reason})' if est.reason else ''))
        for rank, c in enumerate(est.candidates[:args.show], 1):
            rerank = '' if c.rerank_score != c.rerank_score else f' rerank {c.rerank_score:.3f}'
            print(f'  {rank}. {c.name} ({c.lat:.7f}, {c.lon:.7f}) score {c.score:.3f}{rerank}')
    if unreadable:
        print(f'vpr-ros localize: {unreadable} of {len(args.images)} image(s) could not be '
              f'read', file=sys.stderr)
        return 4
    return 0 if all_fix else 3
