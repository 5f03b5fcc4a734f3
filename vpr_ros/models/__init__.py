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

"""Descriptor models: resizer -> backbone -> aggregation head -> L2-normalised vector.

``descriptor`` composes them (``DescriptorModel``, ``ModelConfig``, ``PRESETS``),
``checkpoints`` saves and loads them (ours and the public benchmark layouts).
The package itself is light (it names the default model); its modules import torch.
"""

#: The preset ``build-map``, ``describe``, ``eval``, ``train`` and the demo use by default.
DEFAULT_MODEL = 'effnet-lite0-gem'
