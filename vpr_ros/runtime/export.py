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

"""``vpr-ros export``: the map's networks to ONNX, verified against torch, stored in the map.

Three graphs, each for the model and GeoWarp the map records (never a hard-coded
architecture):

- ``descriptor``: images ``(N, 3, H, W)`` float in [0, 1], any N, H, W -> ``(N, D)`` unit
  descriptors: ImageNet normalisation, the resizer (bilinear or AS-Geo), backbone and head;
  its second output is the same pass's stride-16 map, GeoWarp's query features when the
  map's thumbnails are the model's input size (no second pass over the query);
- ``local_features``: thumbnails ``(N, 3, h, w)`` -> GeoWarp's stride-16 dense features;
- ``geowarp``: correlation maps ``(N, 225, 15, 15)`` -> the regressed points ``(N, 8, 2)``
  (the warping regression, the costliest step of re-ranking; its first convolution folded for
  the map's thumbnail size, :mod:`vpr_ros.runtime.fold`, and verified against the unfolded
  module).

Exported with the torch.export-based exporter (``torch.onnx.export(dynamo=True)``, opset 18,
dynamic batch and image size). Before anything is written, each graph runs in ONNX Runtime on
the map's own thumbnails (at the model input size and at 480x640, which exercises the resizer)
and is compared with torch: descriptors cosine >= 0.9999 (0.999 for fp16), the same top-1 map
entry for every image, re-rank scores (dense similarity / 225) within 1e-3 (5e-3 for fp16).
A failed check is an :class:`ExportError` and the map is left as it was. The files are
attached with their sha256 in one atomic manifest write (``MapDB.attach_files``), under
``manifest['onnx'][precision]``.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn

from vpr_ros.errors import VprError
from vpr_ros.mapdb.database import MapDB
from vpr_ros.runtime.onnx_record import geowarp_sha256, KEY, PARTS

log = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'fp16')
OPSET = 18
#: What the verification accepts, per precision.
MIN_COSINE = {'fp32': 0.9999, 'fp16': 0.999}
MAX_RERANK_DIFF = {'fp32': 1e-3, 'fp16': 5e-3}


class ExportError(VprError):
    """An export that failed, or that does not match torch closely enough to be used."""


class DescriptorGraph(nn.Module):
    """Normalise, resize and describe: what ``DescriptorModel.describe`` computes."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return unit descriptors of ``(N, 3, H, W)`` images in [0, 1] and their stride-16 map.

        The map is GeoWarp's query features when thumbnails are the model's input size.
        """
        return self.model.embed_with_local(self.model._prepare(images))


class LocalFeaturesGraph(nn.Module):
    """GeoWarp's dense features of thumbnails (``DescriptorModel.local_features``)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the stride-16 stage of ``(N, 3, h, w)`` images in [0, 1]."""
        x = (images - self.model.mean) / self.model.std
        stage = self.model.backbone.local_stage
        return self.model.backbone.forward_stages(x, stop=stage)[stage]


def _export(module: nn.Module, args: tuple, path: Path, names: tuple[list[str], list[str]],
            dynamic: tuple) -> None:
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter('ignore')
        try:
            program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET,
                                        input_names=names[0], output_names=names[1],
                                        dynamic_shapes=dynamic, verbose=False,
                                        report=False, optimize=True)
        except Exception as exc:  # noqa: B902 - torch.export raises many kinds
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
            raise ExportError(f'{path.stem}: torch.onnx.export failed: {type(exc).__name__}: '
                              f'{first}') from None
        program.save(str(path))


def _to_fp16(path: Path) -> None:
    """Convert a graph's weights and compute to float16, inputs and outputs kept float32."""
    import onnx
    # onnxruntime's transformers package ships the standard converter.
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(model, str(path))


def _verification_images(db: MapDB, model: Any, count: int = 12,
                         ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Return map thumbnails at the model input size and at 480x640, and their entries."""
    from vpr_ros.images import to_tensor

    idx = np.unique(np.linspace(0, len(db) - 1, min(count, len(db))).round().astype(int))
    thumbs = torch.stack([to_tensor(t) for t in db.thumbnails(idx)])
    h, w = model.config.input_size
    sizes = {'camera 480x640': (480, 640)}
    if h and w:
        sizes[f'model input {h}x{w}'] = (h, w)
    return {name: nn.functional.interpolate(thumbs, size=size, mode='bilinear',
                                            align_corners=False).clamp(0, 1)
            for name, size in sizes.items()}, idx


def export_map(map_path: str | Path, *, fp16: bool = False, device: str = 'cpu',
               verify_providers: list[str] | None = None) -> dict[str, Any]:
    """Export the map's networks to ONNX, verify them, attach them; return the record.

    Args:
        map_path: the ``*.vprmap`` directory (its model and GeoWarp are exported).
        fp16: convert the graphs to float16 (for GPUs: CUDA or TensorRT execution providers).
        device: torch device for the reference run.
        verify_providers: ONNX Runtime execution providers to verify with (default: CUDA when
            available for fp16, else the CPU).
    """
    from vpr_ros.runtime import backends

    ort = backends.import_onnxruntime()
    db = MapDB.open(map_path)
    if not db.manifest.get('thumbnails'):
        raise ExportError(f'{db.path} was built without thumbnails: the export is verified on '
                          f'them (and GeoWarp needs them)')
    precision = 'fp16' if fp16 else 'fp32'
    model = db.load_model(device).eval()
    from vpr_ros.localizer import Localizer, LocalizerConfig

    reference = Localizer(db, model, LocalizerConfig(backend='torch'))
    geowarp = reference.geowarp           # its regression folded (vpr_ros.runtime.fold)
    providers = verify_providers or backends.default_providers(precision)
    from vpr_ros.runtime.map_features import ensure_local_features

    if ensure_local_features(db, model):
        log.info('%s: stored the GeoWarp features too', db.path)
    images, idx = _verification_images(db, model)
    th, tw = reference.thumb_size
    with torch.inference_mode():
        c = model.backbone.forward_stages(torch.zeros(1, 3, th, tw, device=model.device),
                                          stop=model.backbone.local_stage)[-1].shape[1]
    work = Path(tempfile.mkdtemp(prefix='.export-', dir=db.path.parent))
    graphs = {}
    try:
        dim = torch.export.Dim
        n, hh, ww = dim('batch', min=1, max=1024), dim('height', min=32), dim('width', min=32)
        # Two example images (a batch of 1 would make torch.export fix the batch size).
        first = images[next(iter(images))]
        sample = torch.cat([first, first])[:2].to(model.device)
        log.info('exporting the descriptor network (%s, %s)', model.config.backbone,
                 model.config.head)
        _export(DescriptorGraph(model).eval(), (sample,), work / 'descriptor.onnx',
                (['images'], ['descriptors', 'local_features']), ({0: n, 2: hh, 3: ww},))
        thumbs = sample.cpu()
        small = nn.functional.interpolate(thumbs, size=(th, tw), mode='area').to(model.device)
        log.info('exporting the local-feature network (%dx%d thumbnails)', th, tw)
        _export(LocalFeaturesGraph(model).eval(), (small,), work / 'local_features.onnx',
                (['images'], ['features']), ({0: dim('batch', min=1, max=4096)},))
        from vpr_ros.models.geowarp import correlation

        with torch.no_grad():
            dense = LocalFeaturesGraph(model)(small)
            corr = correlation(dense[:1], dense)
        log.info('exporting the GeoWarp regression')
        _export(geowarp.regression.eval(), (corr,), work / 'geowarp.onnx',
                (['correlation'], ['points']), ({0: dim('batch', min=1, max=4096)},))
        if fp16:
            for part in PARTS:
                _to_fp16(work / f'{part}.onnx')
        sessions = {part: backends.session(work / f'{part}.onnx', providers)
                    for part in PARTS}
        report = _verify(db, reference, sessions, images, idx, precision)
        for part in PARTS:
            graphs[part] = (work / f'{part}.onnx').read_bytes()
    finally:
        for p in work.glob('*'):
            p.unlink()
        work.rmdir()
    record = {
        'format': 'onnx', 'opset': OPSET, 'precision': precision,
        'model_fingerprint': db.manifest['model']['fingerprint'],
        'geowarp_sha256': geowarp_sha256(db), 'thumbnail': [th, tw], 'local_channels': c,
        'verified_with': providers, 'verification': report,
        'torch': torch.__version__, 'onnxruntime': ort.__version__,
        'exported': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    stems = {f'onnx-{precision}-{part.replace("_", "-")}': part for part in PARTS}

    def writer(data: bytes):
        return lambda path: path.write_bytes(data)

    others = {k: v for k, v in (db.manifest.get(KEY) or {}).items() if k != precision}
    db.attach_files(KEY, {stem: ('.onnx', writer(graphs[part])) for stem, part in stems.items()},
                    lambda names: {**others, precision: {
                        **record, **{f'{part}_file': names[stem]
                                     for stem, part in stems.items()}}})
    log.info('%s: ONNX %s export verified and stored: %s', db.path, precision,
             ', '.join(f'{k} {v}' for k, v in report.items() if not isinstance(v, dict)))
    return db.manifest[KEY][precision]


def _verify(db: MapDB, reference: Any, sessions: dict[str, Any], images: dict[str, torch.Tensor],
            idx: np.ndarray, precision: str) -> dict[str, Any]:
    """Compare every graph with torch on the map's thumbnails; ExportError when off."""
    from vpr_ros.models.geowarp import correlation, dense_similarity
    from vpr_ros.runtime.backends import run

    model = reference.model
    report: dict[str, Any] = {}
    worst_cos = 1.0
    for name, batch in images.items():
        with torch.inference_mode():
            want = model.describe(batch)
        got = run(sessions['descriptor'], batch.cpu().numpy())
        got = got / np.linalg.norm(got, axis=1, keepdims=True)
        cos = (want * got).sum(axis=1)
        worst_cos = min(worst_cos, float(cos.min()))
        top_want = db.search(want, 1)[0][:, 0]
        top_got = db.search(got.astype(np.float32), 1)[0][:, 0]
        if not np.array_equal(top_want, top_got):
            bad = int(np.flatnonzero(top_want != top_got)[0])
            raise ExportError(f'descriptor export ({precision}): map image {idx[bad]} at '
                              f'{name} finds entry {top_got[bad]} instead of the torch '
                              f'{top_want[bad]}; not written')
        if batch.shape[-2:] == tuple(reference.thumb_size):
            # The stride-16 output stands in for the query's own pass: same re-rank scores.
            with torch.inference_mode():
                local = model.embed_with_local(model.resize(batch))[1]
            got_local = torch.from_numpy(run(sessions['descriptor'], batch.cpu().numpy(),
                                             output=1))
            diff = (dense_similarity(local, local.float()) -
                    dense_similarity(local, got_local.to(local))).abs().max() / 225.0
            report['descriptor_local_max_abs_diff'] = float(diff)
            if float(diff) > MAX_RERANK_DIFF[precision]:
                raise ExportError(f'descriptor export ({precision}): its stride-16 output '
                                  f'moves re-rank scores by {float(diff):.2e} > '
                                  f'{MAX_RERANK_DIFF[precision]:g}; not written')
    report['descriptor_min_cosine'] = worst_cos
    if worst_cos < MIN_COSINE[precision]:
        raise ExportError(f'descriptor export ({precision}): cosine to torch {worst_cos:.6f} < '
                          f'{MIN_COSINE[precision]}; not written')
    # Re-rank scores: each verification thumbnail against the next entries, both pipelines.
    from vpr_ros.images import to_tensor

    th, tw = reference.thumb_size
    worst = 0.0
    geowarp = reference._map_geowarp().to(model.device).eval()   # as fitted, not folded
    geowarp.config = reference.geowarp.config
    for i in idx:
        cand = np.arange(i, min(len(db), i + 5))
        if len(cand) < 2:
            cand = np.arange(max(0, i - 4), i + 1)
        q = to_tensor(db.thumbnails([i])[0])[None]
        c = torch.stack([to_tensor(t) for t in db.thumbnails(cand)])
        with torch.inference_mode():
            want = geowarp.rerank_scores(model.local_features(q.to(model.device)),
                                         model.local_features(c.to(model.device)),
                                         mode='features').float().cpu().numpy() / 225.0
        fq = torch.from_numpy(run(sessions['local_features'], q.numpy()))
        fp = torch.from_numpy(run(sessions['local_features'], c.numpy()))
        points = torch.from_numpy(run(sessions['geowarp'], correlation(fq, fp).numpy()))
        a, b = geowarp.warp_pair(fq, fp, points[:, :4], points[:, 4:])
        got = dense_similarity(a, b).numpy() / 225.0
        worst = max(worst, float(np.abs(want - got).max()))
    report['rerank_max_abs_diff'] = worst
    if worst > MAX_RERANK_DIFF[precision]:
        raise ExportError(f'local-feature / GeoWarp export ({precision}): re-rank scores differ '
                          f'from torch by {worst:.2e} > {MAX_RERANK_DIFF[precision]:g}; not '
                          f'written')
    report['images'] = int(sum(len(b) for b in images.values()))
    report['top1_identical'] = True
    return report


__all__ = ['export_map', 'ExportError', 'KEY', 'PARTS', 'PRECISIONS']
