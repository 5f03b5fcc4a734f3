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

"""Options that several verbs share, written once: one spelling, one help text each.

``when`` prefixes a help text with the mode the option belongs to (``'with --map: '``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable, TypeVar

from vpr_ros.config import Config
from vpr_ros.device import DEVICE_CHOICES
from vpr_ros.models import AUTO_MODEL, AUTO_PRESETS, DEFAULT_MODEL

C = TypeVar('C', bound=Config)

MODEL_HELP = 'preset name, model YAML or vpr_ros checkpoint'


def add_device(parser: Any, *, default: str | None = 'auto', when: str = '',
               what: str = '') -> None:
    """``--device``: the torch device (:func:`vpr_ros.device.resolve_device` reads it).

    ``default=None`` leaves the config's value (YAML or dataclass default, ``auto``) in place.
    """
    parser.add_argument('--device', default=default,
                        help=f'{when}torch device{what}: {", ".join(DEVICE_CHOICES)} or cuda:N '
                             f'(default {default or "auto"})')


def add_model(parser: Any, *, default: str | None, what: str = '',
              shown: str | None = None) -> None:
    """``--model``: a preset name, a model YAML or a checkpoint (``get_model`` reads it).

    ``default=None`` leaves the config's value in place; ``shown`` is the one the help names.
    """
    default_help = shown or default or DEFAULT_MODEL
    if default_help == AUTO_MODEL:
        default_help = (f'auto: {AUTO_PRESETS[0][1]} for images of {AUTO_PRESETS[0][0]} rows '
                        f'or more, {AUTO_PRESETS[-1][1]} below')
    parser.add_argument('--model', default=default,
                        help=f'{MODEL_HELP}{what} (default {default_help})')


def add_config(parser: Any, config_name: str, extra: str = '') -> None:
    """``--config``: a YAML file with the fields of ``config_name``."""
    parser.add_argument('--config', type=Path, help=f'YAML with {config_name} fields{extra}')


def add_localizer_config(parser: Any, *, when: str = '') -> None:
    """``--localizer-config``: the LocalizerConfig YAML, the settings the node uses."""
    parser.add_argument('--localizer-config', type=Path,
                        help=f'{when}YAML with LocalizerConfig fields (the settings the node '
                             f'uses)')


def add_backend(parser: Any, *, when: str = '') -> None:
    """``--backend``: the inference runtime (``LocalizerConfig.backend``)."""
    from vpr_ros.runtime.backends import BACKENDS

    parser.add_argument('--backend', choices=BACKENDS,
                        help=f'{when}inference backend (LocalizerConfig.backend; default auto: '
                             f"the map's ONNX export in ONNX Runtime when it has one, else "
                             f'torch)')


def add_progress(parser: Any) -> None:
    """``--no-progress``: no tqdm bars (logs, CI); ``args.no_progress``."""
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


def load_config(cls: type[C], path: Path | None) -> C:
    """Return the config in the YAML at ``path``, or the defaults when no file is given."""
    return cls.from_yaml(path) if path else cls()


def override(config: C, args: argparse.Namespace, names: Iterable[str]) -> C:
    """Replace the fields in ``names`` that were given on the command line (not None)."""
    changes = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return config.replace(**changes) if changes else config


def localizer_config(args: argparse.Namespace) -> Any:
    """Return the LocalizerConfig of ``--localizer-config`` and ``--backend`` (None: neither)."""
    from vpr_ros.localizer import LocalizerConfig

    path, backend = getattr(args, 'localizer_config', None), getattr(args, 'backend', None)
    if path is None and backend is None:
        return None
    config = load_config(LocalizerConfig, path)
    return config.replace(backend=backend) if backend else config


def map_source_images(db: Any, source: Path | None) -> Any:
    """Loader of the map's source images for pseudo-queries; None means its thumbnails.

    The source is ``source`` or the one the map records. A recorded source that cannot be read
    (moved, another machine) falls back to the thumbnails with a printed note; a source given
    on the command line must hold the map's entries (a clear error otherwise).
    """
    from vpr_ros.errors import DataError
    from vpr_ros.mapdb.sources import source_images

    try:
        return source_images(db, source)
    except DataError as exc:
        if source is not None:
            raise
        print(f'pseudo-queries from the map thumbnails, not the source images ({exc})')
        return None
