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

"""Map database: build ``*.vprmap`` maps from geotagged images, open, verify and search them."""

from vpr_ros.mapdb.build import build_map, BuildConfig
from vpr_ros.mapdb.database import MapDB
from vpr_ros.mapdb.describe import extract_chunk
from vpr_ros.mapdb.entry import Entry, SourceConfig
from vpr_ros.mapdb.index import INDEX_KINDS, IndexConfig
from vpr_ros.mapdb.sources import open_source

__all__ = ['build_map', 'BuildConfig', 'Entry', 'extract_chunk', 'INDEX_KINDS', 'IndexConfig',
           'MapDB', 'open_source', 'SourceConfig']
