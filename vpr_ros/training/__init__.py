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

"""Training descriptor models on geotagged data.

The recipe follows the papers cited in each module: the ResNet-18 heads report (Gambino et al.,
"Visual Geo-Localization"), CRN (Kim et al., CVPR 2017) and HAF (Yan et al., ICASSP 2021).

``data`` reads training sets from map sources and splits them by place, ``mining`` finds
positives and hard negatives with GPS weak supervision, ``losses`` holds the triplet losses,
``trainer`` runs the (optionally distributed) training loop (``vpr-ros train``:
:mod:`vpr_ros.commands.train`) with ``train_config`` (its settings), ``distributed`` (the
process group), ``model_setup``, ``batches``, ``validation`` and ``run_files`` (metrics, plots,
checkpoints). ``geowarp_trainer`` fits GeoWarp re-ranking on a map (``vpr-ros fit-geowarp``).
Importing this package imports torch.
"""
