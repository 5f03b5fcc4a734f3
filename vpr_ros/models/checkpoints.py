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

"""Save and load descriptor models; read the public benchmark/CosPlace/GeoWarp checkpoints.

Our format is one file written atomically (:mod:`vpr_ros.files`) and readable with
``torch.load(weights_only=True)``::

    {'format': 'vpr_ros.model', 'version': 1, 'config': ModelConfig.to_dict(),
     'state_dict': {...}, 'fingerprint': sha256 hex, 'extra': {...}}

Public layouts (read from each codebase's model code), all mapped onto our keys:

- deep-visual-geo-localization-benchmark: plain state_dict (model zoo) or
  ``{'model_state_dict': ...}`` (training checkpoints), keys ``module.``-prefixed
  (DataParallel); GeM+FC as ``aggregation.0.1.p`` / ``aggregation.1.*`` (renamed to our CosPlace
  layout ``aggregation.1.p`` / ``aggregation.3.*``, the same computation).
- CosPlace / EigenPlaces: plain state_dict, ``aggregation.1.p``, ``aggregation.3.*``.
- GeoWarp / Nanne pytorch-NetVlad: ``encoder.`` -> ``backbone.``, ``pool.`` -> ``aggregation.``,
  ``{'state_dict': ...}`` wrapper, ``module.`` anywhere in a key.

Loading is strict: missing, unexpected and wrongly shaped keys are listed in a
:class:`CheckpointError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from vpr_ros.device import resolve_device
from vpr_ros.errors import CheckpointError, ConfigError
from vpr_ros.files import staged
from vpr_ros.models.descriptor import build_model, DescriptorModel, ModelConfig, PRESETS

FORMAT = 'vpr_ros.model'
VERSION = 1
YAML_SUFFIXES = ('.yaml', '.yml')


def save_checkpoint(model: DescriptorModel, path: str | Path,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write config + weights (+ ``extra``) to ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.config.replace(pretrained=False, weights_path='', checkpoint='')
    payload = {
        'format': FORMAT,
        'version': VERSION,
        'config': config.to_dict(),
        'state_dict': {k: v.detach().cpu() for k, v in model.state_dict().items()},
        'fingerprint': model.fingerprint(),
        'extra': dict(extra or {}),
    }
    return save_payload(payload, path)


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


def load_state_dict_checked(model: DescriptorModel, state: Mapping[str, torch.Tensor], *,
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
        raise CheckpointError(
            f'{source} does not match the model (backbone={model.config.backbone!r}, '
            f'head={model.config.head!r}): ' + '; '.join(problems))
    model.load_state_dict(dict(state), strict=True)


def load_weights_into(model: DescriptorModel, path: str | Path) -> DescriptorModel:
    """Load any supported checkpoint file (ours or public layouts) into ``model``."""
    state = public_state_dict(read_checkpoint(path))
    load_state_dict_checked(model, state, source=f'checkpoint {path}')
    return model


def _from_ours(obj: Mapping[str, Any], path: Path) -> DescriptorModel:
    version = obj.get('version')
    if version != VERSION:
        raise CheckpointError(f'{path}: unsupported checkpoint version {version!r} '
                              f'(this vpr_ros reads version {VERSION})')
    try:
        config = ModelConfig.from_dict(obj['config'], where=f'{path} config')
    except ConfigError as exc:
        raise CheckpointError(f'{path}: its model config is invalid: {exc}') from None
    model = build_model(config.replace(pretrained=False, checkpoint=''))
    load_state_dict_checked(model, obj['state_dict'], source=f'checkpoint {path}')
    return model


def load_model(spec: str | Path | ModelConfig, device: str = 'auto') -> DescriptorModel:
    """Load a model from a preset name, a YAML ModelConfig, or a checkpoint file.

    A checkpoint in a public layout (benchmark, CosPlace, GeoWarp) carries no config: write a
    YAML ModelConfig naming it in ``checkpoint:`` instead.
    """
    torch_device = resolve_device(device)
    if isinstance(spec, ModelConfig):
        model = build_model(spec)
    elif isinstance(spec, str) and spec in PRESETS:
        model = build_model(PRESETS[spec])
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f'model {str(spec)!r} is neither a preset nor a file; presets: '
                              f'{sorted(PRESETS)}')
        if path.suffix.lower() in YAML_SUFFIXES:
            model = build_model(ModelConfig.from_yaml(path))
        else:
            obj = read_checkpoint(path)
            if not (isinstance(obj, Mapping) and obj.get('format') == FORMAT):
                raise CheckpointError(
                    f'{path} is not a vpr_ros checkpoint (no config inside); for benchmark, '
                    'CosPlace or GeoWarp weights write a YAML ModelConfig with '
                    f'checkpoint: {path} and the matching backbone/head')
            model = _from_ours(obj, path)
    return model.to(torch_device).eval()
