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

"""Save descriptor models and load them from a preset, a YAML config or a checkpoint file.

Our format is one file written atomically (:mod:`vpr_ros.files`) and readable with
``torch.load(weights_only=True)``::

    {'format': 'vpr_ros.model', 'version': 1, 'config': ModelConfig.to_dict(),
     'state_dict': {...}, 'fingerprint': sha256 hex, 'extra': {...}}

The weight files themselves (ours and the public benchmark/CosPlace/GeoWarp layouts) are read
by :mod:`vpr_ros.models.weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from vpr_ros.device import resolve_device
from vpr_ros.errors import CheckpointError, ConfigError
from vpr_ros.models.descriptor import build_model, DescriptorModel, ModelConfig, PRESETS
from vpr_ros.models.weights import FORMAT, load_state_dict_checked, read_checkpoint, save_payload

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
    model = model.to(torch_device)
    if torch_device.type == 'cpu':
        # oneDNN runs EfficientNet's depthwise convolutions faster on NHWC weights: 0.73-0.93x
        # the time of a CPU forward (bench/channels_last.py); the values agree to 5e-7.
        model = model.to(memory_format=torch.channels_last)
    return model.eval()
