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

A key that moves to another place (or another config) is declared in ``MOVED`` (or ``RETIRED``)
so that files written before keep loading, with a ``FutureWarning`` saying where it goes now.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import types
import typing
from typing import Any, ClassVar, Mapping, TypeVar
import warnings

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
    """Check ``value`` of field ``name`` against the annotation ``tp``; int->float, list->tuple.

    A :class:`ConfigError` names the field (``field``); the config that owns it adds itself.
    """
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
        raise ConfigError(f'{value!r} matches none of {_type_name(tp)}', field=name)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'expected a list, got {value!r}', field=name)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f'{name}[{i}]', args[0], v) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f'expected {len(args)} values, got {len(value)}', field=name)
        return tuple(_coerce(f'{name}[{i}]', a, v) for i, (a, v) in enumerate(zip(args, value)))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f'{value!r} is not one of {list(args)}', field=name)
        return value
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'expected a number, got {value!r}', field=name)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'expected an integer, got {value!r}', field=name)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f'expected true or false, got {value!r}', field=name)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f'expected a string, got {value!r}', field=name)
        return value
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            try:
                return tp.from_dict(value)
            except ConfigError as exc:
                if exc.field is None and exc.owner is None:   # free text of a validate()
                    raise
                raise exc.inside(name, None) from None
        raise ConfigError(f'expected a mapping for {tp.__name__}, got {value!r}', field=name)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f'expected {_type_name(tp)}, got {value!r}', field=name)
    return value


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One config field as the checks, the ROS parameters and the generated YAML need it."""

    name: str
    type: Any  # noqa: A003 - the field's annotation
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None  # noqa: A003
    max: float | None = None  # noqa: A003
    runtime: bool = False

    def check(self, value: Any) -> None:
        """Raise a :class:`ConfigError` naming this field when ``value`` breaks a rule."""
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f'{value!r} is not one of {list(self.choices)}', field=self.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                raise ConfigError(f'{value!r} is below the minimum {self.min}', field=self.name)
            if self.max is not None and value > self.max:
                raise ConfigError(f'{value!r} is above the maximum {self.max}', field=self.name)

    def rules(self) -> str:
        """Return the rules in words: ``one of: a, b``, ``range [0, 1]``, ``at least 1``."""
        parts = []
        if self.choices:
            parts.append('one of: ' + ', '.join(str(c) for c in self.choices))
        if self.min is not None and self.max is not None:
            parts.append(f'range [{self.min:g}, {self.max:g}]')
        elif self.min is not None:
            parts.append(f'at least {self.min:g}')
        elif self.max is not None:
            parts.append(f'at most {self.max:g}')
        return '; '.join(parts)


_SPECS: dict[type, tuple[FieldSpec, ...]] = {}


def _field_specs(cls: type) -> tuple[FieldSpec, ...]:
    specs = _SPECS.get(cls)
    if specs is None:
        hints = typing.get_type_hints(cls)
        specs = tuple(FieldSpec(
            name=f.name, type=hints[f.name],
            default=f.default if f.default is not _MISSING else None,
            **{k: f.metadata.get(k) for k in ('doc', 'choices', 'min', 'max')},
            runtime=bool(f.metadata.get('runtime'))) for f in dataclasses.fields(cls))
        _SPECS[cls] = specs
    return specs


def _find(data: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    *parents, leaf = path.split('.')
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping) and leaf in node:
        return True, node[leaf]
    return False, None


def _pop(data: dict[str, Any], path: str) -> None:
    *parents, leaf = path.split('.')
    node = data
    for part in parents:
        node[part] = dict(node[part])       # copies: the caller's mapping stays as it was
        node = node[part]
    del node[leaf]


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split('.')
    node = data
    for part in parents:
        inner = node.get(part)
        node[part] = dict(inner) if isinstance(inner, Mapping) else {}
        node = node[part]
    node[leaf] = value


def _upgrade(cls: type[Config], data: dict[str, Any], label: str,
             prefix: str = '') -> dict[str, Any]:
    """Read keys at their old places (``MOVED``), drop retired ones (``RETIRED``), warn.

    Nested configs given as mappings are upgraded too, so the warning names the file (or the
    outer config) and the whole path.
    """
    for old, new in cls.MOVED.items():
        found, value = _find(data, old)
        if not found:
            continue
        _pop(data, old)
        warnings.warn(f'{label}: {prefix}{old} has moved to {prefix}{new}; it is read from '
                      f'the old place for now: move it in your file', FutureWarning,
                      stacklevel=3 + prefix.count('.'))
        given, current = _find(data, new)
        if given and current != value:
            raise ConfigError(f'given twice, here ({current!r}) and at its old place {old} '
                              f'({value!r}); keep {new} only', field=prefix + new, owner=label)
        _put(data, new, value)
    for key, now in cls.RETIRED.items():
        if key not in data:
            continue
        value = data.pop(key)
        if value in ({}, None):             # emptied by the moves above: nothing is lost
            continue
        warnings.warn(f'{label}: {prefix}{key} is ignored here: {now}', FutureWarning,
                      stacklevel=3 + prefix.count('.'))
    for spec in _field_specs(cls):
        inner = data.get(spec.name)
        if isinstance(spec.type, type) and issubclass(spec.type, Config) and \
                isinstance(inner, Mapping):
            data[spec.name] = _upgrade(spec.type, dict(inner), label, f'{prefix}{spec.name}.')
    return data


def _over_defaults(cls: type[Config], data: dict[str, Any]) -> dict[str, Any]:
    """Give each nested config that ``data`` sets in part the rest of the field's default.

    A field's default may differ from its class's defaults (the localizer regresses one
    GeoWarp direction, ``GeoWarpConfig(symmetric=False)``): ``geowarp: {mode: image}`` in a
    file changes the mode of that default, not the other settings.
    """
    def over(base: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in given.items():
            deeper = isinstance(value, Mapping) and isinstance(out.get(key), dict)
            out[key] = over(out[key], value) if deeper else value
        return out

    for spec in _field_specs(cls):
        inner = data.get(spec.name)
        if isinstance(spec.default, Config) and isinstance(inner, Mapping):
            data[spec.name] = over(spec.default.to_dict(), inner)
    return data


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of all config dataclasses: type/range/choice checks and dict/YAML round trips."""

    #: Keys that moved, old dotted path -> new dotted path (``geowarp.k`` -> ``losses.k``):
    #: still read from the old place, with a FutureWarning.
    MOVED: ClassVar[Mapping[str, str]] = {}
    #: Keys no longer read by this config -> where they live now: ignored, with a FutureWarning.
    RETIRED: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        try:
            for spec in _field_specs(type(self)):
                value = _coerce(spec.name, spec.type, getattr(self, spec.name))
                object.__setattr__(self, spec.name, value)
                spec.check(value)
            self.validate()
        except ConfigError as exc:
            if exc.field is None or exc.owner is not None:
                raise
            raise exc.inside(None, type(self).__name__) from None

    def validate(self) -> None:
        """Cross-field checks; subclasses override and raise :class:`ConfigError`."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None, *, where: str = '') -> C:
        """Build from a mapping; unknown keys are an error that lists the valid ones."""
        label = where or cls.__name__
        data = _upgrade(cls, dict(data or {}), label)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f'unknown key(s) {unknown}; valid keys: {names}', owner=label)
        return cls(**_over_defaults(cls, data))

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
    def field_specs(cls) -> tuple[FieldSpec, ...]:
        """Name, type, default and rules of every field (for ROS parameters and docs)."""
        return _field_specs(cls)
