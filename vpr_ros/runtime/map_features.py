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

"""Every map entry's GeoWarp dense features, stored in the map (float16).

GeoWarp re-ranks at the size of the map thumbnails with the backbone's stride-16 stage
(:meth:`DescriptorModel.local_features`). Those features depend on the thumbnail and the model
only, so they are computed once, when the map is built or GeoWarp is fitted, and stored as
``local-features-<sha>.npy`` ``(N, C, h, w)`` float16: the first visit of a place then costs
what a revisit costs (no backbone pass on candidates). The manifest record names the model
fingerprint they were made with; a map whose model changed (re-described) ignores stale
features with a warning and computes them on the fly until ``vpr-ros export`` (or a new
``fit-geowarp``) refreshes them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from vpr_ros.errors import MapError
from vpr_ros.files import save_array
from vpr_ros.mapdb.database import MapDB
from vpr_ros.vectors import unit_rows

log = logging.getLogger(__name__)

#: Manifest key of the stored features and the stem of their file.
KEY = 'local_features'
STEM = 'local-features'
DTYPE = 'float16'


def compute_local_features(db: MapDB, model: Any, *, batch_size: int = 64,
                           entries: Any = None) -> np.ndarray:
    """Return ``(N, C, h, w)`` float16 GeoWarp features of every map thumbnail (or ``entries``)."""
    if not db.manifest.get('thumbnails'):
        raise MapError(f'{db.path} was built without thumbnails: no GeoWarp features')
    from vpr_ros.images import to_tensor

    rows = np.arange(len(db)) if entries is None else np.asarray(entries, np.int64)
    out: np.ndarray | None = None
    n = len(rows)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            thumbs = torch.stack([to_tensor(t) for t in db.thumbnails(rows[idx])])
            dense = model.local_features(thumbs.to(model.device)).float().cpu().numpy()
            if out is None:
                out = np.empty((n, *dense.shape[1:]), np.float16)
            out[idx] = dense.astype(np.float16)
    assert out is not None
    return out


#: ``map verify``: cosine of stored and recomputed features of one entry at least this, where
#: the thumbnails are stored losslessly (float16 storage and memory layouts: 0.99999).
SAME_FEATURES = 0.999
#: Two entries whose recomputed features are this alike count as one view (a stopped robot).
ALIKE = 0.99


def check_local_features(db: MapDB, model: Any = None, *, sample: int = 16,
                         seed: int = 0) -> int:
    """Raise :class:`MapError` unless the stored features are those of the entries' thumbnails.

    Checksums prove the file is the one written, not that its rows belong to the entries (a
    merge in the wrong order would pass them). A sample of thumbnails goes through the map's
    model again. Lossless thumbnails (format v1) must give their stored features back; JPEG
    thumbnails (v2, whose kept features were made before compression) must give features
    closer to their own stored row than to any other sampled entry's. Returns the number of
    entries checked (0: the map has no current stored features).
    """
    features = load_local_features(db)
    if features is None:
        return 0
    rows = np.sort(np.random.default_rng(seed).choice(len(db), size=min(len(db), sample),
                                                      replace=False))
    if model is None:
        model = db.load_model('cpu')
    want = compute_local_features(db, model, entries=rows)
    want = unit_rows(np.asarray(want).reshape(len(rows), -1), np.float64)
    got = unit_rows(np.asarray(features[rows]).reshape(len(rows), -1), np.float64)
    match = got @ want.T                       # stored row i against recomputed entry j
    own = np.diag(match)
    if db.format_version < 2:
        bad = np.flatnonzero(own < SAME_FEATURES)
    else:
        alike = want @ want.T >= ALIKE
        bad = np.flatnonzero((np.where(alike, -np.inf, match) > own[:, None]).any(axis=1))
    if len(bad):
        i = int(bad[0])
        raise MapError(f'{db.path / db.manifest[KEY]["file"]}: the stored GeoWarp features of '
                       f'entry {int(rows[i])} are not those of its thumbnail (cosine '
                       f'{own[i]:.3f}; {len(bad)} of {len(rows)} sampled entries): GeoWarp would '
                       f're-rank with the wrong places; build the map again')
    return len(rows)


def is_current(db: MapDB) -> bool:
    """Return True when the map holds features of its own model at its thumbnail size."""
    return _problem(db, db.manifest.get(KEY) or {}) is None


def _problem(db: MapDB, record: dict[str, Any]) -> str | None:
    """Return why the stored features cannot be used (None when they can)."""
    if not record:
        return 'the map has no stored GeoWarp features'
    fingerprint = db.manifest['model'].get('fingerprint')
    if record.get('model_fingerprint') != fingerprint:
        return (f'the stored GeoWarp features were made with model '
                f'{record.get("model_fingerprint")}, the map holds {fingerprint}')
    thumbs = db.manifest.get('thumbnails') or {}
    if list(record.get('thumbnail', [])) != [thumbs.get('height'), thumbs.get('width')]:
        return (f'the stored GeoWarp features are for thumbnails {record.get("thumbnail")}, '
                f'the map has {[thumbs.get("height"), thumbs.get("width")]}')
    return None


def attach_local_features(db: MapDB, model: Any | None = None, *,
                          batch_size: int = 64) -> dict[str, Any]:
    """Compute the features of every entry and store them in the map (one manifest write).

    ``model`` is the map's own (loaded from the map when None; another model is a MapError).
    Returns the manifest record.
    """
    if model is None:
        model = db.load_model('cpu')
    else:
        from vpr_ros.mapdb.database import check_model
        check_model(db.path, db.manifest, model)
    features = compute_local_features(db, model, batch_size=batch_size)
    thumbs = db.manifest['thumbnails']
    record = {'dtype': DTYPE, 'shape': list(features.shape),
              'thumbnail': [int(thumbs['height']), int(thumbs['width'])],
              'stage': int(model.backbone.local_stage),
              'model_fingerprint': db.manifest['model']['fingerprint']}

    db.attach_files(KEY, {STEM: ('.npy', lambda path: save_array(path, features))},
                    lambda names: {**record, 'file': names[STEM]})
    log.info('%s: stored GeoWarp features %s (%.1f kB per entry)', db.path,
             record['shape'], features[0].nbytes / 1e3)
    return db.manifest[KEY]


def ensure_local_features(db: MapDB, model: Any | None = None) -> bool:
    """Store the features unless current ones are there; True when it (re)computed them."""
    if is_current(db) or not db.manifest.get('thumbnails'):
        return False
    attach_local_features(db, model)
    return True


def load_local_features(db: MapDB) -> np.ndarray | None:
    """Return the stored features (memory-mapped), or None with the reason logged."""
    record = db.manifest.get(KEY) or {}
    problem = _problem(db, record)
    if problem is not None:
        if record:
            log.warning('%s: %s; computing them on the fly (vpr-ros export %s refreshes '
                        'them)', db.path, problem, db.path)
        return None
    path = db.path / record['file']
    try:
        features = np.load(path, mmap_mode='r', allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MapError(f'{path} is not a readable numpy file: {exc}') from None
    if list(features.shape) != list(record['shape']) or features.dtype != np.float16 or \
            features.shape[0] != len(db):
        raise MapError(f'{path}: {features.dtype} {features.shape}, the manifest says '
                       f'{DTYPE} {record["shape"]} for {len(db)} entries')
    return features


__all__ = ['attach_local_features', 'check_local_features', 'compute_local_features',
           'ensure_local_features', 'is_current', 'KEY', 'load_local_features']
