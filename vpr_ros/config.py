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

"""Config dataclasses: one frozen dataclass per concept, validated when it is built.

Every concept (model, map build, localizer, node, ...) declares its settings as a frozen
dataclass that inherits :class:`Config`, with each field made by :func:`option`. The field
metadata (doc, choices, bounds, whether it may change at run time) is the single source the ROS
parameter declarations and the YAML files are generated from, so nothing is restated by hand.

Example::

    @dataclass(frozen=True)
    class SearchConfig(Config):
        top_k: int = option(10, 'candidates retrieved from the index', min=1)

    SearchConfig.from_dict({'top_k': 5})      # ok
    SearchConfig.from_dict({'topk': 5})       # ConfigError naming the valid keys
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import types
import typing
from typing import Any, Mapping, TypeVar

from vpr_ros.errors import ConfigError
import yaml

C = TypeVar('C', bound='Config')

_MISSING = dataclasses.MISSING


def option(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | None = None,
    min: float | None = None,  # noqa: A002 - reads best at the call site
    max: float | None = None,  # noqa: A002
    runtime: bool = False,
) -> Any:
    """Declare one config field with its documentation and validation rules.

    ``runtime=True`` marks values that may be changed while the node runs (thresholds);
    everything else is fixed once a model or map is loaded.
    """
    meta = {'doc': doc, 'choices': choices, 'min': min, 'max': max, 'runtime': runtime}
    if isinstance(default, (list, dict, set)):
        raise TypeError('use a tuple (immutable) as the default of a config field')
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return getattr(tp, '__name__', None) or str(tp).replace('typing.', '')


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; convert int->float and list->tuple."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, arg, value)
            except ConfigError:
                continue
        raise ConfigError(f'{name}: {value!r} matches none of {_type_name(tp)}')
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{name}: expected a list, got {value!r}')
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f'{name}[{i}]', args[0], v) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f'{name}: expected {len(args)} values, got {len(value)}')
        return tuple(_coerce(f'{name}[{i}]', a, v) for i, (a, v) in enumerate(zip(args, value)))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f'{name}: {value!r} is not one of {list(args)}')
        return value
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{name}: expected a number, got {value!r}')
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{name}: expected an integer, got {value!r}')
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f'{name}: expected true or false, got {value!r}')
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f'{name}: expected a string, got {value!r}')
        return value
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return tp.from_dict(value, where=name)
        raise ConfigError(f'{name}: expected a mapping for {tp.__name__}, got {value!r}')
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f'{name}: expected {_type_name(tp)}, got {value!r}')
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of all config dataclasses: type/range/choice checks and dict/YAML round trips."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            where = f'{type(self).__name__}.{f.name}'
            value = _coerce(where, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            meta = f.metadata
            if meta.get('choices') is not None and value not in meta['choices']:
                raise ConfigError(f'{where}: {value!r} is not one of {list(meta["choices"])}')
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if meta.get('min') is not None and value < meta['min']:
                    raise ConfigError(f'{where}: {value!r} is below the minimum {meta["min"]}')
                if meta.get('max') is not None and value > meta['max']:
                    raise ConfigError(f'{where}: {value!r} is above the maximum {meta["max"]}')
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; subclasses override and raise :class:`ConfigError`."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None, *, where: str = '') -> C:
        """Build from a mapping; unknown keys are an error that lists the valid ones."""
        data = dict(data or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            label = where or cls.__name__
            raise ConfigError(f'{label}: unknown key(s) {unknown}; valid keys: {names}')
        return cls(**data)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, *, section: str | None = None) -> C:
        """Load from a YAML file, optionally from one top-level section of it."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f'cannot read config {path}: {exc.strerror}') from None
        except yaml.YAMLError as exc:
            raise ConfigError(f'{path} is not valid YAML: {exc}') from None
        if section is not None:
            if not isinstance(data, dict) or section not in data:
                raise ConfigError(f'{path}: no section {section!r}')
            data = data[section]
        if not isinstance(data, dict):
            raise ConfigError(f'{path}: expected a mapping at the top level')
        return cls.from_dict(data, where=f'{path}')

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) that ``from_dict`` and YAML/JSON round-trip."""
        def plain(value: Any) -> Any:
            if isinstance(value, Config):
                return value.to_dict()
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self: C, **changes: Any) -> C:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe_fields(cls) -> list[dict[str, Any]]:
        """Name, type, default and rules of every field (for ROS parameters and docs)."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not _MISSING else None
            out.append({'name': f.name, 'type': hints[f.name], 'default': default,
                        **{k: f.metadata.get(k) for k in ('doc', 'choices', 'min', 'max',
                                                          'runtime')}})
        return out
