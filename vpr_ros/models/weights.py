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

"""Weight files: write them atomically, read ours and the public layouts, load them strictly.

Read with ``torch.load(weights_only=True)`` only. Public layouts (read from each codebase's
model code), all mapped onto our keys:

- deep-visual-geo-localization-benchmark: plain state_dict (model zoo) or
  ``{'model_state_dict': ...}`` (training checkpoints), keys ``module.``-prefixed
  (DataParallel); GeM+FC as ``aggregation.0.1.p`` / ``aggregation.1.*`` (renamed to our CosPlace
  layout ``aggregation.1.p`` / ``aggregation.3.*``, the same computation).
- CosPlace / EigenPlaces: plain state_dict, ``aggregation.1.p``, ``aggregation.3.*``.
- GeoWarp / Nanne pytorch-NetVlad: ``encoder.`` -> ``backbone.``, ``pool.`` -> ``aggregation.``,
  ``{'state_dict': ...}`` wrapper, ``module.`` anywhere in a key.

Loading is strict: missing, unexpected and wrongly shaped keys are listed in a
:class:`CheckpointError`. Models and their configs are :mod:`vpr_ros.models.checkpoints`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from vpr_ros.errors import CheckpointError
from vpr_ros.files import staged

#: The ``format`` field of our checkpoint files (:mod:`vpr_ros.models.checkpoints`).
FORMAT = 'vpr_ros.model'


def save_payload(payload: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` a dict of tensors and plain values atomically (:mod:`vpr_ros.files`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint file with ``weights_only=True``; CheckpointError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f'cannot read checkpoint {path}: {exc}') from None


def _strip_module(key: str) -> str:
    parts = key.split('.')
    return '.'.join(p for p in parts if p != 'module')


def public_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Unwrap a public checkpoint object and rename its keys to our layout."""
    if isinstance(obj, Mapping) and obj.get('format') == FORMAT:
        obj = obj['state_dict']
    elif isinstance(obj, Mapping) and 'model_state_dict' in obj:
        obj = obj['model_state_dict']
    elif isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
        obj = obj['state_dict']
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor)
                                               for v in obj.values()):
        raise CheckpointError('not a state_dict: expected a mapping of names to tensors '
                              "(optionally under 'model_state_dict' or 'state_dict')")
    out = {}
    for key, value in obj.items():
        key = _strip_module(key)
        if key.startswith('encoder.'):
            key = 'backbone.' + key[len('encoder.'):]
        elif key.startswith('pool.'):
            key = 'aggregation.' + key[len('pool.'):]
        out[key] = value
    # Benchmark GeM+FC: Seq(Seq(L2Norm, GeM, Flatten), Linear, L2Norm) -> CosPlace layout.
    if 'aggregation.0.1.p' in out and 'aggregation.1.weight' in out:
        out['aggregation.1.p'] = out.pop('aggregation.0.1.p')
        out['aggregation.3.weight'] = out.pop('aggregation.1.weight')
        out['aggregation.3.bias'] = out.pop('aggregation.1.bias')
    return out


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                            source: str = 'checkpoint') -> None:
    """Load ``state`` strictly; list missing / unexpected / mis-shaped keys on mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def head(items: list[str]) -> str:
            more = f' (+{len(items) - 8} more)' if len(items) > 8 else ''
            return ', '.join(items[:8]) + more
        problems = []
        if shapes:
            problems.append(f'shape mismatch: {head(shapes)}')
        if missing:
            problems.append(f'missing keys: {head(missing)}')
        if unexpected:
            problems.append(f'unexpected keys: {head(unexpected)}')
        config = getattr(model, 'config', None)
        what = (f' (backbone={config.backbone!r}, head={config.head!r})'
                if hasattr(config, 'backbone') else '')
        raise CheckpointError(f'{source} does not match the model{what}: '
                              + '; '.join(problems))
    model.load_state_dict(dict(state), strict=True)


def load_weights_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load any supported checkpoint file (ours or public layouts) into ``model``."""
    state = public_state_dict(read_checkpoint(path))
    load_state_dict_checked(model, state, source=f'checkpoint {path}')
    return model


__all__ = ['FORMAT', 'load_state_dict_checked', 'load_weights_into', 'public_state_dict',
           'read_checkpoint', 'save_payload']
