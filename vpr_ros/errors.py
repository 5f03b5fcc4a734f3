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


class VprError(Exception):
    """Base class of every error vpr_ros raises on purpose."""


class ConfigError(VprError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DeviceError(VprError):
    """The requested compute device is not available."""


class CheckpointError(VprError):
    """A model checkpoint is missing, unreadable or does not match the model."""


class MapError(VprError):
    """A map (.vprmap) is missing, corrupt, or does not match the model."""


class DataError(VprError):
    """Input data (images, CSV, bags, folders) is missing or malformed."""
