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

"""Inference backends of the localizer: torch eager, ONNX Runtime, TensorRT.

``LocalizerConfig.backend``:

- ``torch``: the map's torch model (always available; the default when the map has no
  export);
- ``onnxruntime``: the map's ONNX export (``vpr-ros export``) in ONNX Runtime: the CPU
  execution provider on the CPU, the CUDA one on a GPU (``onnxruntime-gpu``), with the fp16
  export when the map has one;
- ``tensorrt``: ONNX Runtime's TensorRT execution provider (fp16 engines built from the fp32
  export, cached beside the map) on NVIDIA GPUs and Jetson;
- ``auto``: the fastest available for the device: TensorRT, then ONNX Runtime CUDA, on a GPU;
  ONNX Runtime on the CPU when the map has an export; torch otherwise. Every fall-back is
  logged with its reason.

A backend asked for by name that cannot run (not installed, no export, an export of another
model or GeoWarp, a corrupted file) is a :class:`BackendError` naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from pathlib import Path
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from vpr_ros.errors import VprError
from vpr_ros.runtime import onnx_record

log = logging.getLogger(__name__)

BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
CPU_EP = 'CPUExecutionProvider'
CUDA_EP = 'CUDAExecutionProvider'
TRT_EP = 'TensorrtExecutionProvider'


class BackendError(VprError):
    """A backend that was asked for and cannot run; the message names what is missing."""


def import_onnxruntime() -> Any:
    """Return the onnxruntime module, or a BackendError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(f'onnxruntime is not installed ({exc}): pip install onnxruntime '
                           f'(CPU) or onnxruntime-gpu (NVIDIA; on Jetson the JetPack wheel)'
                           ) from None
    return onnxruntime


def available_providers() -> list[str]:
    """Return the ONNX Runtime execution providers here ([] without onnxruntime)."""
    try:
        return list(import_onnxruntime().get_available_providers())
    except BackendError:
        return []


def default_providers(precision: str = 'fp32') -> list[str]:
    """Pick the providers to verify an export with: CUDA for fp16 if there is one, else CPU."""
    if precision == 'fp16' and CUDA_EP in available_providers():
        return [CUDA_EP, CPU_EP]
    return [CPU_EP]


def session(path: Path, providers: list, threads: int | None = None) -> Any:
    """Open an ONNX Runtime session; an unreadable graph is a BackendError naming the file."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # No busy-waiting between runs: the node's decode thread and other processes share the
    # cores (spinning made a 2-core machine slower overall).
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # noqa: B902 - onnxruntime raises its own untyped errors
        raise BackendError(f'{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})'
                           ) from None


def run(sess: Any, array: np.ndarray, output: int | None = 0) -> Any:
    """Run a one-input session on a float32 array; return output ``output`` (None: all)."""
    name = sess.get_inputs()[0].name
    outs = sess.run(None, {name: np.ascontiguousarray(array, np.float32)})
    return outs if output is None else outs[output]


@dataclass
class Runtime:
    """What the localizer runs its networks with; ``torch`` when ``sessions`` is empty."""

    name: str
    precision: str
    model: Any
    providers: list[str] = field(default_factory=list)
    sessions: dict[str, Any] = field(default_factory=dict)
    reason: str = ''

    @property
    def device(self) -> torch.device:
        """Return the torch device of the model (where tensors are handed over)."""
        return self.model.device

    def describe(self, batch: torch.Tensor) -> tuple[np.ndarray, float, float]:
        """Return ``(descriptors (N, D) float32, resize s, forward s)`` of an image batch."""
        model = self.model
        if not self.sessions:
            ta = time.perf_counter()
            resized = model.resize(batch)
            tb = time.perf_counter()
            out = model.embed(resized).float().cpu().numpy()
            return out, tb - ta, time.perf_counter() - tb
        out, _, resize_s, forward_s = self._run_descriptor(batch, local=False)
        return out, resize_s, forward_s

    def _run_descriptor(self, batch: torch.Tensor, local: bool,
                        ) -> tuple[np.ndarray, torch.Tensor | None, float, float]:
        """Run the exported descriptor graph (checked input); its stride-16 map when ``local``."""
        from vpr_ros.models.descriptor import check_batch

        batch = check_batch(batch, max_pixels=self.model.config.max_input_pixels,
                            check_values=False)
        t0 = time.perf_counter()
        outs = run(self.sessions['descriptor'], batch.cpu().numpy(), output=None)
        maps = torch.from_numpy(outs[1]).float().to(self.device) if local else None
        # The resizer runs inside the graph: its time is part of the forward.
        return outs[0].astype(np.float32, copy=False), maps, 0.0, time.perf_counter() - t0

    def describe_with_local(self, batch: torch.Tensor,
                            ) -> tuple[np.ndarray, torch.Tensor | None, float, float]:
        """Return :meth:`describe`'s output plus the batch's stride-16 maps of the same pass.

        ``(descriptors, local features (N, C, h, w) or None, resize s, forward s)``: torch and
        the exported descriptor graph's second output hand out the map; an export made before
        that output gives None (:attr:`forward_local`).
        """
        if self.sessions:
            return self._run_descriptor(batch, local=self.forward_local)
        model = self.model
        ta = time.perf_counter()
        resized = model.resize(batch)
        tb = time.perf_counter()
        out, local = model.embed_with_local(resized)
        return out.float().cpu().numpy(), local, tb - ta, time.perf_counter() - tb

    @property
    def forward_local(self) -> bool:
        """Return whether :meth:`describe_with_local` hands out the stride-16 map.

        Exports made before the descriptor graph had that second output do not.
        """
        return not self.sessions or len(self.sessions['descriptor'].get_outputs()) > 1

    def local_features(self, batch: torch.Tensor) -> torch.Tensor:
        """Return the GeoWarp dense features of ``(N, 3, h, w)`` images, as a float tensor."""
        if not self.sessions:
            return self.model.local_features(batch)
        out = run(self.sessions['local_features'], batch.cpu().numpy())
        return torch.from_numpy(out).float().to(self.device)

    def regression(self) -> nn.Module | None:
        """Return the exported GeoWarp regression as a module (None: keep the torch one)."""
        return _OrtRegression(self.sessions['geowarp'], self.device) if self.sessions else None

    def info(self) -> dict[str, str]:
        """Return backend, precision, providers and why: for logs and /diagnostics."""
        return {'backend': self.name, 'precision': self.precision,
                'providers': ','.join(self.providers) or 'torch', 'backend_reason': self.reason}


def faster_regression(modules: dict[str, nn.Module], batch: int, repeats: int = 3,
                      ) -> tuple[str, dict[str, float]]:
    """Return the name of the fastest GeoWarp regression and each one's time (ms).

    The exported regression in ONNX Runtime's CPU provider is not always faster than torch:
    on a Zen 4 CPU (AVX-512) oneDNN ran the 7x7/5x5 stack of a frame's 5 regressions in
    8.7 ms where ONNX Runtime took 11.8 ms, and re-ranking 5 candidates took 17 ms instead of
    22-32 ms (``bench/bench_realtime.py``), while ONNX Runtime wins the backbone. Both
    compute the same function (``vpr-ros export`` verifies the scores), so the choice is a
    timing: ``repeats`` runs of each on a zero ``(batch, 225, 15, 15)`` input after one
    warm-up, the best of each compared.
    """
    from vpr_ros.models.geowarp import CHANNELS, GRID

    corr = torch.zeros(batch, CHANNELS[0], GRID, GRID)
    best: dict[str, float] = {}
    with torch.inference_mode():
        for name, module in modules.items():
            module(corr)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                module(corr)
                times.append(time.perf_counter() - t0)
            best[name] = 1e3 * min(times)
    return min(best, key=best.__getitem__), best


class _OrtRegression(nn.Module):
    """Drop-in for ``GeoWarp.regression`` that runs the exported graph."""

    def __init__(self, sess: Any, device: torch.device) -> None:
        super().__init__()
        self._session = sess
        self._device = device

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        """Regress ``(N, 8, 2)`` points from ``(N, 225, 15, 15)`` correlations."""
        out = run(self._session, corr.detach().float().cpu().numpy())
        return torch.from_numpy(out).float().to(self._device)


def _record(db: Any, precision: str) -> dict[str, Any]:
    """Return the usable export of that precision, or raise a BackendError saying why not."""
    record = (db.manifest.get(onnx_record.KEY) or {}).get(precision)
    if not record:
        raise BackendError(f'{db.path} has no ONNX {precision} export: run vpr-ros export '
                           f'{db.path}' + (' --fp16' if precision == 'fp16' else ''))
    problem = onnx_record.problem(db, record)
    if problem:
        raise BackendError(f'{db.path}: {problem}')
    onnx_record.verify_sha256(db, record)
    return record


def _onnx(db: Any, model: Any, name: str, precision: str, record_precision: str,
          providers: list, reason: str) -> Runtime:
    record = _record(db, record_precision)
    sessions = {part: session(db.path / record[f'{part}_file'], providers)
                for part in ('descriptor', 'local_features', 'geowarp')}
    used = sessions['descriptor'].get_providers()
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if wanted not in used:
        raise BackendError(f'ONNX Runtime did not enable {wanted} (it runs {used}); check the '
                           f'CUDA/TensorRT libraries')
    return Runtime(name, precision, model, [p if isinstance(p, str) else p[0]
                                            for p in providers], sessions, reason)


def _build(backend: str, db: Any, model: Any, device: torch.device) -> Runtime:
    """Build one named backend (not auto); BackendError when it cannot run here."""
    if backend == 'torch':
        return Runtime('torch', 'fp32', model, reason='asked for')
    ort = import_onnxruntime()
    have = ort.get_available_providers()
    if backend == 'onnxruntime':
        if device.type == 'cuda':
            if CUDA_EP not in have:
                raise BackendError(f'onnxruntime has no {CUDA_EP} here (it has {have}): '
                                   f'install onnxruntime-gpu, or use device cpu')
            opts = {'device_id': device.index or 0}
            has16 = bool((db.manifest.get('onnx') or {}).get('fp16'))
            precision = 'fp16' if has16 else 'fp32'
            return _onnx(db, model, 'onnxruntime', precision, precision,
                         [(CUDA_EP, opts), CPU_EP], 'ONNX Runtime CUDA')
        return _onnx(db, model, 'onnxruntime', 'fp32', 'fp32', [CPU_EP], 'ONNX Runtime CPU')
    if backend == 'tensorrt':
        if device.type != 'cuda':
            raise BackendError('backend tensorrt needs an NVIDIA GPU (device cuda)')
        if TRT_EP not in have:
            raise BackendError(f'onnxruntime has no {TRT_EP} here (it has {have}): install '
                               f'onnxruntime-gpu with TensorRT 10 (or the JetPack wheel)')
        cache = db.path.parent / f'{db.path.name}.trt'
        cache.mkdir(exist_ok=True)
        opts = {'device_id': device.index or 0, 'trt_fp16_enable': True,
                'trt_engine_cache_enable': True, 'trt_engine_cache_path': str(cache),
                'trt_timing_cache_enable': True, 'trt_timing_cache_path': str(cache)}
        return _onnx(db, model, 'tensorrt', 'fp16', 'fp32',
                     [(TRT_EP, opts), (CUDA_EP, {'device_id': device.index or 0}), CPU_EP],
                     'ONNX Runtime TensorRT')
    raise BackendError(f'backend {backend!r} is not one of {list(BACKENDS)}')


def select_runtime(backend: str, db: Any, model: Any, device: torch.device | None = None,
                   ) -> Runtime:
    """Return the runtime for ``backend`` (see the module doc); auto logs its fall-backs."""
    device = torch.device(device or model.device)
    if backend != 'auto':
        return _build(backend, db, model, device)
    order = ['tensorrt', 'onnxruntime'] if device.type == 'cuda' else ['onnxruntime']
    skipped = []
    for name in order:
        try:
            runtime = _build(name, db, model, device)
        except BackendError as exc:
            skipped.append(f'{name}: {exc}')
            continue
        runtime.reason = f'auto: {runtime.reason}' + (f' ({"; ".join(skipped)})'
                                                      if skipped else '')
        return runtime
    reason = 'auto: torch (' + '; '.join(skipped) + ')'
    exported = bool(db.manifest.get('onnx'))
    # A map without an export running torch is the normal case; anything else is worth a warning.
    (log.warning if exported else log.info)('backend %s', reason)
    return Runtime('torch', 'fp32', model, reason=reason)


__all__ = ['available_providers', 'BACKENDS', 'BackendError', 'faster_regression',
           'import_onnxruntime', 'Runtime', 'select_runtime']
