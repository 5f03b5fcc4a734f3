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

"""Pick the compute device: ``auto`` means CUDA when present, the CPU otherwise.

Nothing in vpr_ros calls ``.cuda()``; every module takes the device this returns.
"""

from __future__ import annotations

import typing
from typing import Any

from vpr_ros.errors import DeviceError

if typing.TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ('auto', 'cpu', 'cuda')


def resolve_device(spec: str = 'auto') -> 'torch.device':
    """Turn auto / cpu / cuda / cuda:N into a usable :class:`torch.device`.

    Asking for CUDA on a machine without it is an error, not a silent fallback: a robot that
    was configured for the GPU should say so loudly rather than run 10x slower.
    """
    import torch

    spec = (spec or 'auto').strip().lower()
    if spec == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if spec == 'cpu':
        return torch.device('cpu')
    if spec == 'cuda' or spec.startswith('cuda:'):
        if not torch.cuda.is_available():
            raise DeviceError(f'device {spec!r} requested but CUDA is not available '
                              '(use device: auto or cpu)')
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f'device {spec!r} requested but only '
                              f'{torch.cuda.device_count()} CUDA device(s) exist')
        return dev
    raise DeviceError(f'unknown device {spec!r}; use one of auto, cpu, cuda, cuda:N')


#: Images per forward pass when none is asked for. A GPU wants large batches; on a CPU the
#: activations of 16 images overflow the caches and every image costs 1.4-2.9x what it costs
#: in the batch below (EfficientNet-Lite0 at 240x320, 360x480 and multi-scale, 2-core Zen 4;
#: bench/README.md, "Forward batch size on a CPU").
GPU_BATCH, CPU_BATCH = 16, 2
#: On a CPU, the input pixels of one forward pass: two 240x320 images. Two 360x480 images
#: already cost 12 % more per image than one.
CPU_PIXELS = 2 * 240 * 320
#: What a batch size of 0 means, for option and flag help texts.
BATCH_HELP = '0: 16 on a GPU; on a CPU 2 at 240x320 input, 1 at 360x480'
#: Images the offline loops load per call of a batched describe or ``localize_batch``: a few
#: forward passes' worth on a CPU, so that loading and the progress bar are not per image.
READ_STEP = 16


def read_step(batch_size: int = 0) -> int:
    """Return how many images to load per call: :data:`READ_STEP`, or one larger batch."""
    return max(READ_STEP, int(batch_size))


def forward_batch(device: 'torch.device | str', requested: int = 0, model: Any = None) -> int:
    """Return ``requested`` images per forward pass, or for 0 the fastest size on ``device``.

    On a CPU the size follows the input of ``model`` (its ``config.input_size``) when given.
    """
    if requested > 0:
        return int(requested)
    if str(device).startswith('cuda'):
        return GPU_BATCH
    size = getattr(getattr(model, 'config', None), 'input_size', None)
    if not size:
        return CPU_BATCH
    return max(1, CPU_PIXELS // (int(size[0]) * int(size[1])))


def describe_device(device: 'torch.device') -> str:
    """Human-readable name of a device, for logs and diagnostics."""
    import torch

    if device.type == 'cuda':
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f'cuda:{index} ({torch.cuda.get_device_name(index)})'
    return f'cpu ({torch.get_num_threads()} threads)'
