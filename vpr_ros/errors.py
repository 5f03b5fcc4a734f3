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

"""Exception types: one per subsystem, all deriving from :class:`VprError`.

Callers that must keep running (the node) catch VprError per frame; every message names the
thing that is wrong (file, field, value) and what was expected.
"""

from __future__ import annotations


class VprError(Exception):
    """Base class of every error vpr_ros raises on purpose."""


class ConfigError(VprError, ValueError):
    """A configuration value is missing, unknown or out of range.

    When one field is at fault, ``field`` is its dotted path in the config being built
    (``geowarp.mode``, ``image_size[0]``), ``owner`` that config's class (or file) and
    ``problem`` the rule it breaks; the message reads ``owner.field: problem`` (``label:
    problem`` when a ``label`` is given). A layer that mirrors the fields under other names (the
    ROS parameters) names them from ``field``.
    """

    def __init__(self, problem: str, *, field: str | None = None, owner: str | None = None,
                 label: str | None = None) -> None:
        self.problem = problem
        self.field = field
        self.owner = owner
        self.label = label
        where = label or '.'.join(part for part in (owner, field) if part)
        super().__init__(f'{where}: {problem}' if where else problem)

    def inside(self, parent: str | None, owner: str | None) -> ConfigError:
        """Return this error as seen from a config that holds the failing one as ``parent``."""
        field = self.field
        if parent:
            field = parent if not field else (
                parent + field if field.startswith('[') else f'{parent}.{field}')
        return ConfigError(self.problem, field=field, owner=owner)

    def __reduce__(self) -> tuple:
        return _config_error, (self.problem, self.field, self.owner, self.label)


def _config_error(problem: str, field: str | None, owner: str | None,
                  label: str | None) -> ConfigError:
    return ConfigError(problem, field=field, owner=owner, label=label)


class DeviceError(VprError):
    """The requested compute device is not available."""


class CheckpointError(VprError):
    """A model checkpoint is missing, unreadable or does not match the model."""


class MapError(VprError):
    """A map (.vprmap) is missing, corrupt, or does not match the model."""


class DataError(VprError):
    """Input data (images, CSV, bags, folders) is missing or malformed."""
