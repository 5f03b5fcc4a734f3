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

"""Visual place recognition as a position source for ROS 2 robots.

The core (everything outside ``vpr_ros.ros``) imports no ROS, so it runs from plain Python.
"""

from vpr_ros.models import DEFAULT_MODEL
from vpr_ros.version import __version__


def describe(images, model=DEFAULT_MODEL, **kwargs):
    """Return global descriptors of images (paths, arrays or tensors); see vpr_ros.models.api.

    Imported lazily so that ``import vpr_ros`` does not pull in torch.
    """
    from vpr_ros.models.api import describe as _describe

    return _describe(images, model, **kwargs)


def localize(images, map_path, **kwargs):
    """Localize images (paths, arrays or tensors) against a ``*.vprmap``; see vpr_ros.localizer.

    One image gives one ``Estimate`` (lat, lon, alt, cov_enu, status, ...), a list gives a list.
    """
    from vpr_ros.localizer import localize as _localize

    return _localize(images, map_path, **kwargs)


__all__ = ['__version__', 'describe', 'localize']
