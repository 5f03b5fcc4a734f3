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

"""Describe map entries chunk by chunk: descriptors and thumbnails, a pure function of both.

:func:`extract_chunk` turns a chunk of :class:`~vpr_ros.mapdb.entry.Entry` records into
descriptors and GeoWarp thumbnails; :func:`describe_chunks` does the same for many chunks with
one DataLoader. The result depends only on the model and the entries (batch boundaries never
cross a chunk), so a resumed or distributed build (:mod:`vpr_ros.mapdb.build`,
:mod:`vpr_ros.mapdb.distributed`) gives the same map as one uninterrupted local build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from vpr_ros.errors import DataError
from vpr_ros.images import check_rgb, resize_to, thumbnail, to_tensor
from vpr_ros.mapdb.entry import Entry


@dataclass(frozen=True)
class ChunkResult:
    """Output of :func:`extract_chunk`: descriptors ``(n, D)`` and thumbnails ``(n, h, w, 3)``.

    ``bad``: row in the chunk -> reason, for images left out (``skip_bad``); the arrays hold
    the other rows, in order.
    """

    descriptors: np.ndarray
    thumbnails: np.ndarray
    bad: dict[int, str] = field(default_factory=dict)


class _EntryImages:
    """Map-style dataset: image tensor + thumbnail of each entry (picklable for workers)."""

    def __init__(self, entries: Sequence[Entry], resize_max: int,
                 thumbnail_size: tuple[int, int], skip_bad: bool = False) -> None:
        self.entries = list(entries)
        self.resize_max = resize_max
        self.thumbnail_size = thumbnail_size
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        entry = self.entries[i]
        try:
            image = check_rgb(entry.load(), where=entry.name)
        except DataError as exc:
            if self.skip_bad:
                return None, str(exc)
            raise DataError(f'{exc} (build-map --skip-bad leaves out images that cannot be '
                            f'read)') from None
        h, w = self.thumbnail_size
        thumb = (resize_to(image, (h, w)) if h
                 else np.zeros((0, 0, 3), np.uint8))
        if self.resize_max:
            image = thumbnail(image, self.resize_max)
        return to_tensor(image), thumb


def _collate(batch):
    return batch


def model_device(model: Any) -> Any:
    """Return the torch device of the model's parameters (CPU for a model without any)."""
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device('cpu')


def _describe_batch(model: Any, batch: list, device: Any) -> list[np.ndarray]:
    """Describe one loader batch; images that differ in size go through in runs of one size."""
    import torch

    out, start = [], 0
    while start < len(batch):
        size = batch[start][0].shape
        stop = start
        while stop < len(batch) and batch[stop][0].shape == size:
            stop += 1
        x = torch.stack([t for t, _ in batch[start:stop]]).to(device)
        out.append(np.asarray(model.describe(x), np.float32))
        start = stop
    return out


def _chunk_result(model: Any, descriptors: list[np.ndarray], thumbs: list[np.ndarray],
                  count: int, bad: dict[int, str] | None = None) -> ChunkResult:
    out = (np.concatenate(descriptors) if descriptors
           else np.zeros((0, int(model.descriptor_dim)), np.float32))
    if out.shape != (count, int(model.descriptor_dim)) or not np.isfinite(out).all():
        raise DataError(f'model returned descriptors of shape {out.shape} (finite: '
                        f'{bool(np.isfinite(out).all())}) for {count} images; expected '
                        f'({count}, {model.descriptor_dim})')
    return ChunkResult(out, np.stack(thumbs) if thumbs else np.zeros((0, 0, 0, 3), np.uint8),
                       dict(bad or {}))


def _chunk_batches(n: int, chunk_size: int, batch_size: int,
                   chunk_ids: Sequence[int]) -> list[list[int]]:
    """Entry indices of every batch of the given chunks (batches never cross a chunk)."""
    batches = []
    for c in chunk_ids:
        stop = min(n, (c + 1) * chunk_size)
        batches += [list(range(b, min(b + batch_size, stop)))
                    for b in range(c * chunk_size, stop, batch_size)]
    return batches


def describe_chunks(model: Any, entries: Sequence[Entry], chunk_ids: Sequence[int], *,
                    chunk_size: int, batch_size: int = 0, resize_max: int = 0,
                    thumbnail_size: tuple[int, int] = (96, 128), num_workers: int = 0,
                    skip_bad: bool = False) -> Iterator[tuple[int, ChunkResult]]:
    """Yield ``(chunk id, result)`` for the chunks ``chunk_ids`` of ``entries``, in order.

    One DataLoader serves every chunk, so with ``num_workers`` its processes start once and
    decode the next batches (across chunk boundaries) while the model describes this one.
    Each result equals :func:`extract_chunk` of that chunk's entries. With ``skip_bad`` an
    image that cannot be read is left out and named in the result's ``bad``. ``batch_size``
    0: the fastest for the model's device (:func:`vpr_ros.device.forward_batch`).
    """
    import torch
    from torch.utils.data import DataLoader

    from vpr_ros.device import forward_batch

    device = model_device(model)
    batches = _chunk_batches(len(entries), chunk_size, forward_batch(device, batch_size, model),
                             chunk_ids)
    if not batches:
        return
    loader = DataLoader(_EntryImages(entries, resize_max, thumbnail_size, skip_bad),
                        batch_sampler=batches, num_workers=num_workers, collate_fn=_collate)
    was_training = getattr(model, 'training', False)
    model.eval()
    try:
        chunk, descriptors, thumbs, bad = None, [], [], {}
        with torch.inference_mode():
            for rows, batch in zip(batches, loader):
                c = rows[0] // chunk_size
                if chunk is not None and c != chunk:
                    yield chunk, _chunk_result(model, descriptors, thumbs,
                                               sum(len(d) for d in descriptors), bad)
                    descriptors, thumbs, bad = [], [], {}
                chunk = c
                good = [item for item in batch if item[0] is not None]
                bad.update({row - c * chunk_size: item[1] for row, item in zip(rows, batch)
                            if item[0] is None})
                if good:
                    descriptors += _describe_batch(model, good, device)
                thumbs.extend(th for _, th in good)
        yield chunk, _chunk_result(model, descriptors, thumbs, sum(len(d) for d in descriptors),
                                   bad)
    finally:
        model.train(was_training)


def extract_chunk(model: Any, entries: Sequence[Entry], *, batch_size: int = 0,
                  resize_max: int = 0, thumbnail_size: tuple[int, int] = (96, 128),
                  num_workers: int = 0) -> ChunkResult:
    """Describe a chunk of entries: a pure function of the model and the entries.

    Images of a batch that differ in size are described in runs of equal size, so any mix
    of image sizes works; the batch boundaries depend only on ``batch_size``.
    """
    if not entries:
        return _chunk_result(model, [], [], 0)
    results = describe_chunks(model, entries, [0], chunk_size=len(entries),
                              batch_size=batch_size, resize_max=resize_max,
                              thumbnail_size=thumbnail_size, num_workers=num_workers)
    result = next(results)[1]
    if len(result.descriptors) != len(entries):
        raise DataError(f'described {len(result.descriptors)} of {len(entries)} images')
    return result


__all__ = ['ChunkResult', 'describe_chunks', 'extract_chunk', 'model_device']
