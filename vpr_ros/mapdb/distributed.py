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

"""Describe the chunks of a map build on a Ray cluster (``build-map --ray [ADDRESS]``).

Only the describing is distributed. The driver (the ``build-map`` process) cuts the entries
into the chunks of the local build and hands each chunk to one of a pool of Ray actors; an
actor holds a copy of the driver's model (one actor per CPU, or per GPU when the cluster has
GPUs), reads the chunk's images itself (the source must be visible to every worker at the
same path, as on a shared filesystem) and returns descriptors and thumbnails. The driver
writes each result as the same atomic chunk file as a local build, so:

* a worker that dies costs only its chunk: Ray restarts the actor and runs the chunk again;
* a driver that dies leaves the finished chunks, and ``build-map`` run again resumes from
  them (same job key as a local build on the same device, so either kind can resume either);
* the assembly (index training with the same seed, thumbnails, adaptation) runs unchanged on
  the driver, so the map equals the local build.

Ray is an optional dependency (``pip install vpr_ros[ray]``), imported only here and only
when ``--ray`` is given; the robot never needs it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
from typing import Any, Callable, Iterator, Sequence

from vpr_ros.errors import ConfigError, MapError, VprError
from vpr_ros.mapdb.describe import ChunkResult, describe_chunks, model_device
from vpr_ros.mapdb.entry import Entry

log = logging.getLogger(__name__)
INSTALL_HINT = 'pip install vpr_ros[ray]'
LOCAL = 'local'            # --ray without an address: start a cluster on this machine
TASKS_PER_ACTOR = 2        # chunks queued per actor: the next one is ready when one finishes
MAX_TASK_RETRIES = 3       # a chunk whose worker dies once more than this stops the build
MIN_OBJECT_STORE = 128 << 20


def import_ray() -> Any:
    """Import Ray with usage statistics off; a clear error when it is not installed."""
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f'build-map --ray needs Ray, which is not installed ({exc}); '
                          f'install it with: {INSTALL_HINT}') from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast, naming the address, when nothing listens at ``HOST:PORT``."""
    if address == 'auto' or '://' in address:
        return   # 'auto' reads the local cluster's address file; ray:// is Ray Client
    host, sep, port = address.rpartition(':')
    if not sep or not port.isdigit():
        raise ConfigError(f'--ray {address!r}: expected HOST:PORT (the head node, e.g. '
                          f'10.0.0.5:6379), auto, or nothing for a local cluster')
    try:
        socket.create_connection((host.strip('[]'), int(port)), timeout=10).close()
    except OSError as exc:
        raise MapError(f'cannot reach the Ray cluster at {address}: '
                       f'{exc.strerror or exc} (is `ray start --head` running there and '
                       f'the port open?)') from None


def _local_object_store(chunk_bytes: int, actors: int) -> int:
    """Object store of a local cluster: room for every queued chunk result, bounded by RAM."""
    want = max(MIN_OBJECT_STORE, 3 * TASKS_PER_ACTOR * actors * chunk_bytes)
    try:
        avail = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError):
        return want
    return int(max(MIN_OBJECT_STORE, min(want, 0.3 * avail)))


@contextlib.contextmanager
def connect(address: str, *, num_cpus: int | None = None,
            object_store_bytes: int | None = None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``) or start a local one.

    ``address`` :data:`LOCAL` starts a cluster of ``num_cpus`` CPUs (default: all) on this
    machine, without dashboard, for the duration of the block. A process already connected
    to Ray (``ray.init`` called by the caller) keeps its connection. Yields the ``ray`` module.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    common = {'log_to_driver': True, 'logging_level': logging.WARNING}
    if address == LOCAL:
        kwargs = {'address': 'local', 'num_cpus': num_cpus or os.cpu_count() or 1,
                  'include_dashboard': False, 'object_store_memory': object_store_bytes}
    else:
        _check_reachable(address)
        kwargs = {'address': address}
    try:
        ray.init(**kwargs, **common)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = 'start a local Ray cluster' if address == LOCAL else \
            f'connect to the Ray cluster at {address!r}'
        hint = ('' if address == LOCAL else ' (start one with `ray start --head`, or give '
                '--ray without an address for a local cluster)')
        raise MapError(f'cannot {where}: {str(exc).splitlines()[0] if str(exc) else exc!r}'
                       f'{hint}') from None
    try:
        yield ray
    finally:
        ray.shutdown()


class ChunkDescriber:
    """Ray actor: the driver's model, kept loaded, describing one chunk per call."""

    def __init__(self, device: str, fingerprint: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.device, self.fingerprint, self.model = device, fingerprint, None

    def _load(self, model_ref: list[Any]) -> Any:
        # The model comes with each call as a reference (in a list, so Ray does not resolve
        # it) and is fetched once: a restarted actor fetches it again, and no constructor
        # argument lives in the object store (Ray warns about those, ray#53727).
        import ray

        if self.model is None:
            model = ray.get(model_ref[0]).to(self.device).eval()
            got = str(model.fingerprint())
            if got != self.fingerprint:
                raise MapError(f'the model reached this Ray worker with fingerprint {got}, '
                               f'the driver has {self.fingerprint} (different vpr_ros '
                               f'versions?)')
            self.model = model
        return self.model

    def describe(self, chunk: int, entries: Sequence[Entry], settings: dict[str, Any],
                 model_ref: list[Any]) -> tuple[int, ChunkResult]:
        """Describe one chunk: the result :func:`describe_chunks` gives for it locally."""
        model = self._load(model_ref)
        result = next(describe_chunks(model, entries, [0], chunk_size=len(entries),
                                      **settings))[1]
        return chunk, result


def _chunk_result_bytes(model: Any, chunk_size: int, thumbnail_size: tuple[int, int]) -> int:
    h, w = thumbnail_size
    return chunk_size * (4 * int(model.descriptor_dim) + h * w * 3)


class RayDescriber:
    """Describes chunks on a pool of Ray actors; :meth:`__call__` mirrors describe_chunks."""

    def __init__(self, ray: Any, model: Any, *, device: str, num_workers: int,
                 actors: int = 0) -> None:
        self.ray, self.model = ray, model
        resources = ray.cluster_resources()
        gpus = int(resources.get('GPU', 0))
        cpus = int(resources.get('CPU', 0))
        self.use_gpu = gpus > 0 and not device.startswith('cpu')
        if device.startswith('cuda') and not self.use_gpu:
            from vpr_ros.errors import DeviceError
            raise DeviceError(f'--device {device}: the Ray cluster has no GPU '
                              f'(resources: {resources})')
        self.cpus_per_actor = 1 + num_workers
        capacity = gpus if self.use_gpu else cpus // self.cpus_per_actor
        if capacity < 1:
            raise MapError(f'the Ray cluster has no room for one actor of '
                           f'{self.cpus_per_actor} CPU(s) (resources: {resources}); add '
                           f'worker nodes or lower --workers')
        if actors > capacity:   # the rest could never start, and their chunks would wait
            log.warning('--ray-actors %d: the cluster has room for %d; using %d', actors,
                        capacity, capacity)
        self.actors_wanted = min(actors, capacity) if actors else capacity
        self.device = 'cuda:0' if self.use_gpu else 'cpu'   # each GPU actor sees one GPU
        self.actors: list[Any] = []
        self.model_ref: Any = None

    def _start_actors(self, count: int) -> None:
        model = self.model
        if model_device(model).type != 'cpu':
            model = copy.deepcopy(model).cpu()   # a pickled CUDA model needs CUDA to load
        self.model_ref = self.ray.put(model)
        actor_class = self.ray.remote(ChunkDescriber).options(
            num_cpus=self.cpus_per_actor, num_gpus=1 if self.use_gpu else 0,
            max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)
        fingerprint = str(self.model.fingerprint())
        self.actors = [actor_class.remote(self.device, fingerprint, self.cpus_per_actor)
                       for _ in range(count)]
        log.info('describing on %d Ray actor(s) (%s, %d CPU each)', count, self.device,
                 self.cpus_per_actor)

    def __call__(self, model: Any, entries: Sequence[Entry], chunk_ids: Sequence[int], *,
                 chunk_size: int, **settings: Any) -> Iterator[tuple[int, ChunkResult]]:
        """Yield ``(chunk id, result)`` of ``chunk_ids`` as the actors finish them (any order)."""
        ray = self.ray
        todo = list(chunk_ids)[::-1]
        if not todo:
            return
        if not self.actors:
            self._start_actors(min(self.actors_wanted, len(todo)))
        running: dict[Any, tuple[Any, int]] = {}

        def submit(actor: Any) -> None:
            c = todo.pop()
            part = entries[c * chunk_size:(c + 1) * chunk_size]
            running[actor.describe.remote(c, part, settings, [self.model_ref])] = (actor, c)

        for _ in range(TASKS_PER_ACTOR):
            for actor in self.actors:
                if todo:
                    submit(actor)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, c = running.pop(ref)
            try:
                chunk, result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, 'cause', None)
                if isinstance(cause, VprError):
                    raise cause from None
                raise MapError(f'chunk {c} failed on the Ray cluster: {exc}') from None
            except ray.exceptions.RayError as exc:
                raise MapError(f'chunk {c} failed on the Ray cluster after '
                               f'{MAX_TASK_RETRIES} retries (workers lost): '
                               f'{str(exc).splitlines()[0]}; the finished chunks are kept, '
                               f'run build-map again to resume') from None
            if todo:
                submit(actor)
            yield chunk, result

    def close(self) -> None:
        """Stop the actors (their CPUs/GPUs go back to the cluster)."""
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self.actors = []


@contextlib.contextmanager
def ray_describer(address: str, model: Any, *, device: str, num_workers: int, chunk_size: int,
                  thumbnail_size: tuple[int, int],
                  actors: int = 0) -> Iterator[tuple[Callable[..., Iterator], str]]:
    """Connect (or start a local cluster) and yield ``(describe, actor device)`` for build_map.

    ``describe`` has the signature of :func:`describe_chunks`; the actor device (``cpu`` or
    ``cuda:0``, from the build's ``device`` and the cluster's GPUs) is part of the build's job
    key. ``num_workers``, ``chunk_size`` and ``thumbnail_size`` are the build's settings.
    """
    if actors < 0:
        raise ConfigError(f'--ray-actors {actors}: must be >= 0 (0: one per CPU or GPU)')
    local_cpus = actors * (1 + num_workers) if actors else None
    store = _local_object_store(_chunk_result_bytes(model, chunk_size, thumbnail_size),
                                actors or os.cpu_count() or 1)
    with connect(address, num_cpus=local_cpus, object_store_bytes=store) as ray:
        describer = RayDescriber(ray, model, device=device, num_workers=num_workers,
                                 actors=actors)
        try:
            yield describer, describer.device
        finally:
            describer.close()
