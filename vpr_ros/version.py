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

"""The package version (``vpr_ros.__version__``), kept apart from the package's top level.

Modules that record it (the map manifest, ``vpr-ros doctor``) import it from here: importing
``vpr_ros`` itself from inside the package would close a loop through its convenience
functions.
"""

__version__ = '0.1.0'
