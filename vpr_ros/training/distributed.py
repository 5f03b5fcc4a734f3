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

"""One code path for a CPU, one GPU and several GPUs: the process group under ``torchrun``.

With ``WORLD_SIZE > 1`` the process group is started (NCCL on CUDA, gloo on the CPU); otherwise
the context is a single process on the requested device.
"""

from __future__ import annotations

from dataclasses import dataclass
import os

import torch
from vpr_ros.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    """This process in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Return True on the process that writes files."""
        return self.rank == 0


def setup_distributed(device: str) -> DistContext:
    """Start the process group under torchrun; a plain single-process context otherwise."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return DistContext(0, 1, resolve_device(device))
    import torch.distributed as dist

    base = resolve_device(device)
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if base.type == 'cuda':
        torch_device = torch.device('cuda', local_rank)
        torch.cuda.set_device(torch_device)
        backend = 'nccl'
    else:
        torch_device, backend = torch.device('cpu'), 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), torch_device)


def barrier(ctx: DistContext) -> None:
    """Wait for every process (nothing to wait for in a single-process run)."""
    if ctx.world_size > 1:
        import torch.distributed as dist
        dist.barrier()


def teardown_distributed(ctx: DistContext) -> None:
    """End the process group that :func:`setup_distributed` started, if any."""
    if ctx.world_size > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
