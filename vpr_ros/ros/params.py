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

"""ROS parameters of the localizer node, derived from the config dataclasses.

Parameters mirror the fields of :class:`NodeConfig` (the node itself) and of
``vpr_ros.localizer.LocalizerConfig`` (prefix ``localizer.``, nested configs add their name:
``localizer.geowarp.mode``) 1:1; nothing is restated by hand. From the same typed field specs
(:class:`vpr_ros.config.FieldSpec`) come the ``ParameterDescriptor`` (type, range, description,
read-only unless ``runtime``), the validation (the dataclasses check types, choices and bounds;
a :class:`ConfigError` carries the field, which names the parameter) and
``config/localize.yaml`` (:func:`render_yaml`; ``python -m vpr_ros.ros.params >
config/localize.yaml`` regenerates it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import difflib
import json
import sys
import textwrap
from typing import Any, Iterable, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from vpr_ros.config import Config, FieldSpec, option
from vpr_ros.errors import ConfigError
from vpr_ros.localizer import LocalizerConfig

IMAGE_RELIABILITY = ('best_effort', 'reliable')
LOCALIZER_PREFIX = 'localizer.'
_INT64 = (-2 ** 63, 2 ** 63 - 1)


@dataclass(frozen=True)
class NodeConfig(Config):
    """How the node is wired: map, device, topics, frames and diagnostics."""

    map: str = option('', 'path of the .vprmap directory to localise against '  # noqa: A003
                      '(required)')
    device: str = option('auto', 'compute device: auto (CUDA when present, else CPU), cpu, '
                         'cuda, cuda:N')
    fast_load: bool = option(False, 'skip the sha256 checks of the map files when opening it '
                             '(very large maps)')
    compressed: bool = option(False, 'subscribe to sensor_msgs/CompressedImage (JPEG/PNG) '
                              'instead of sensor_msgs/Image')
    image_reliability: str = option('best_effort', 'QoS reliability of the image subscription: '
                                    'best_effort (sensor-data QoS, what camera drivers '
                                    'offer) or reliable', choices=IMAGE_RELIABILITY)
    frame_id: str = option('vpr_camera', 'header.frame_id of the fixes: the camera frame, '
                           'which TF must know (navsat_transform removes the lever arm)',
                           runtime=True)
    publish_no_fix: bool = option(False, 'also publish frames without a fix (STATUS_NO_FIX, '
                                  'huge covariance); otherwise they are only counted',
                                  runtime=True)
    publish_pose: bool = option(False, 'also publish geometry_msgs/PoseWithCovarianceStamped '
                                'on vpr/pose, in a local ENU frame at the map origin')
    pose_frame_id: str = option('vpr_map', 'header.frame_id of vpr/pose: the ENU frame whose '
                                'origin is the map origin (kept apart from the robot map frame)',
                                runtime=True)
    diagnostics_period_s: float = option(1.0, 'period of the /diagnostics messages (s)',
                                         min=0.1, max=60.0)
    stale_input_s: float = option(2.0, 'diagnostics warn when no image arrived for this long '
                                  '(s)', min=0.1, runtime=True)
    max_consecutive_errors: int = option(50, 'end the node (exit 1, so a supervisor can '
                                         'restart it) after this many frames in a row failed '
                                         'inside the localizer; 0: never', min=0)
    pipeline: bool = option(True, 'decode and shrink the next frame on a second thread while '
                            'the current one is localised (latest frame wins in both stages)')


def _flatten(cls: type[Config], prefix: str, defaults: Config | None = None) -> list[FieldSpec]:
    # One parameter per leaf field: its FieldSpec under the dotted parameter name. Defaults
    # come from the parent's instance: a nested config may differ from its class's.
    defaults = cls() if defaults is None else defaults
    specs = []
    for spec in cls.field_specs():
        name = prefix + spec.name
        if isinstance(spec.type, type) and issubclass(spec.type, Config):
            specs.extend(_flatten(spec.type, name + '.', getattr(defaults, spec.name)))
            continue
        if spec.type not in (bool, int, float, str):
            raise TypeError(f'{name}: {spec.type} has no ROS parameter type; add it to params.py')
        specs.append(replace(spec, name=name, default=getattr(defaults, spec.name)))
    return specs


def parameter_specs() -> list[FieldSpec]:
    """Every node parameter, node fields first, then ``localizer.*``."""
    return _flatten(NodeConfig, '') + _flatten(LocalizerConfig, LOCALIZER_PREFIX)


def descriptor(spec: FieldSpec) -> ParameterDescriptor:
    """Return the ``ParameterDescriptor`` of a parameter: description, range, read-only."""
    change = 'may change at run time' if spec.runtime else 'fixed once the node runs'
    desc = ParameterDescriptor(name=spec.name, description=f'{spec.doc} ({change})',
                               additional_constraints=spec.rules(),
                               read_only=not spec.runtime)
    if spec.type is float and (spec.min is not None or spec.max is not None):
        desc.floating_point_range = [FloatingPointRange(
            from_value=float('-inf') if spec.min is None else float(spec.min),
            to_value=float('inf') if spec.max is None else float(spec.max), step=0.0)]
    elif spec.type is int and (spec.min is not None or spec.max is not None):
        desc.integer_range = [IntegerRange(
            from_value=_INT64[0] if spec.min is None else int(spec.min),
            to_value=_INT64[1] if spec.max is None else int(spec.max), step=1)]
    return desc


def unknown_parameter_hint(name: str, known: Iterable[str]) -> str:
    """Return the valid name a mistyped ``name`` most likely meant ('' if none is close).

    The localizer's options are nested (``localizer.sequence_check``): the same name without
    its prefix, or with another, is the usual slip, then a spelling mistake.
    """
    known = sorted(known)
    leaf = name.rsplit('.', 1)[-1]
    same_leaf = [k for k in known if k.rsplit('.', 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[0] if len(same_leaf) == 1 else ' or '.join(same_leaf)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return close[0] if close else ''


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, value in values.items():
        *parents, leaf = name.split('.')
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def configs_from_values(values: Mapping[str, Any]) -> tuple[NodeConfig, LocalizerConfig]:
    """Build the validated configs from parameter values (missing ones take the defaults).

    A :class:`ConfigError` names the parameter (``field``) and the rule it breaks.
    """
    nested = _nest(values)
    localizer = nested.pop('localizer', {})
    try:
        node = NodeConfig.from_dict(nested, where='node parameters')
    except ConfigError as exc:
        raise _parameter_error(exc, '') from None
    try:
        loc = LocalizerConfig.from_dict(localizer, where='localizer parameters')
    except ConfigError as exc:
        raise _parameter_error(exc, LOCALIZER_PREFIX) from None
    return node, loc


def _parameter_error(exc: ConfigError, prefix: str) -> ConfigError:
    """Name the parameter of the field at fault (``prefix`` + the field's dotted path)."""
    if exc.field is None:      # a rule across fields: its own text names them
        return ConfigError(f'invalid parameters: {exc}')
    name = prefix + exc.field
    return ConfigError(exc.problem, field=name, label=f'invalid parameter {name}')


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted YAML string
    if isinstance(value, float):
        return repr(value)        # 30.0, not 30: ROS refuses an integer for a double
    return str(value)


def render_yaml() -> str:
    """Return ``config/localize.yaml``: every parameter with its default and a comment."""
    lines = ['# Parameters of the vpr_ros localizer node '
             '(ros2 launch vpr_ros localize.launch.py).',
             '# Generated from the config dataclasses: python -m vpr_ros.ros.params > '
             'config/localize.yaml',
             '# [runtime]: may be changed while the node runs (ros2 param set); the others are '
             'read-only.',
             '/**:', '  ros__parameters:']
    opened: list[str] = []
    for spec in parameter_specs():
        *parents, leaf = spec.name.split('.')
        common = 0
        while common < min(len(opened), len(parents)) and opened[common] == parents[common]:
            common += 1
        opened = opened[:common]
        for part in parents[common:]:
            lines.append('    ' + '  ' * len(opened) + f'{part}:')
            opened.append(part)
        indent = '    ' + '  ' * len(opened)
        rules = spec.rules()
        comment = spec.doc + (f'; {rules}' if rules else '') + \
            (' [runtime]' if spec.runtime else '')
        lines.extend(textwrap.wrap(comment, 99, initial_indent=indent + '# ',
                                   subsequent_indent=indent + '# '))
        lines.append(f'{indent}{leaf}: {_yaml_value(spec.default)}')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.stdout.write(render_yaml())
