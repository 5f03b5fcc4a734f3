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

from __future__ import annotations

import logging
from typing import Any, Sequence

log = logging.getLogger(__name__)

#: The preset ``describe``, ``train`` and the demo use by default.
DEFAULT_MODEL = 'effnet-lite0-gem'
#: ``build-map`` and ``eval`` by default: the preset chosen from the images' height.
AUTO_MODEL = 'auto'
#: (least image rows, preset) for ``auto``, largest first: the model sees as many rows as the
#: camera gives, up to 360x480. Recall falls when images shrink below the benchmark's 480x640
#: (Berton et al., "Deep Visual Geo-localization Benchmark", CVPR 2022); enlarging small
#: renders to 360x480 lost recall here. Below 360 rows the descriptor is multi-scale
#: (Radenovic et al., TPAMI 2018), which gained on both sets of such images measured; at 360
#: rows and more one scale keeps the node at 20 fixes/s on two cores (the multi-scale preset
#: gained on the rendered route only; bench/README.md, "Multi-scale descriptors").
AUTO_PRESETS = ((360, 'effnet-lite0-gem-360'), (0, 'effnet-lite0-gem-ms'))


def model_for_rows(rows: int) -> str:
    """Return the ``auto`` preset for images of ``rows`` rows (the height the model is given)."""
    return next(name for least, name in AUTO_PRESETS if rows >= least)


def resolve_model(spec: str, images: Sequence[Any], *, resize_max: int = 0,
                  tries: int = 8) -> str:
    """``spec`` itself, or for ``auto`` the preset for the height of the first readable image.

    ``images`` hold ``load()`` methods (map source entries); ``resize_max`` is the longer side
    the images are shrunk to before the model. Without a readable image among the first
    ``tries``, the preset for the fewest rows.
    """
    if spec != AUTO_MODEL:
        return spec
    from vpr_ros.images import thumbnail     # the build's own shrink (OpenCV, no torch)

    for entry in list(images[:tries]):
        try:
            image = entry.load()
        except Exception as exc:     # noqa: BLE001 - a bad image is the build's to report
            log.debug('model auto: %s unreadable (%s)', getattr(entry, 'name', entry), exc)
            continue
        height, width = image.shape[:2]
        rows = thumbnail(image, resize_max).shape[0] if resize_max else height
        name = model_for_rows(rows)
        log.info('model auto: %dx%d images (%d rows for the model) -> %s', height, width,
                 rows, name)
        return name
    fallback = AUTO_PRESETS[-1][1]
    log.warning('model auto: no readable image among the first %d: %s', tries, fallback)
    return fallback
