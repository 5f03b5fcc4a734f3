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

"""What makes the localizer real time: stored GeoWarp features, exported runtimes, backends.

- :mod:`vpr_ros.runtime.map_features`: every map entry's GeoWarp dense features, computed once
  at build / fit time and stored in the map (float16), so re-ranking never runs the backbone on
  candidates.
- :mod:`vpr_ros.runtime.export`: ``vpr-ros export``: the map's networks to ONNX, verified
  against torch, stored in the map with their sha256.
- :mod:`vpr_ros.runtime.backends`: torch, ONNX Runtime (CPU, CUDA) and TensorRT (ONNX Runtime's
  TensorRT execution provider) behind one interface; ``LocalizerConfig.backend`` picks one.
"""
