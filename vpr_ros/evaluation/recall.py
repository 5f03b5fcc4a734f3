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

"""Retrieval recall@N exactly as the visual geo-localization benchmark computes it.

Protocol (deep-visual-geo-localization-benchmark ``test.py``, CosPlace, VPR-methods-evaluation):

    - positives of a query: database images within ``threshold`` metres (Euclidean on UTM
      east/north, boundary inclusive: a database image at exactly 25.0 m is a positive), as
      sklearn's ``NearestNeighbors.radius_neighbors`` finds them;
    - for each query walk N ascending; at the first N where any of ``predictions[:N]`` is a
      positive, count the query for that N *and every larger N* (cumulative);
    - divide by the number of **all** queries, queries without any positive included (they
      count as failures), and report percentages (``R@1: 61.3, R@5: ...``).

The VPR-Bench layout (``query/``, ``ref/``, ground truth as matching reference indices) gives
the positives directly: :func:`recall_from_positives` is the same count without positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from vpr_ros.errors import DataError
from vpr_ros.mapdb.sources import read_csv_rows

DEFAULT_RECALL_VALUES = (1, 5, 10, 20)
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


@dataclass(frozen=True)
class RecallResult:
    """Recall@N in percent, with the protocol numbers needed to read it."""

    recall_values: tuple[int, ...]
    recalls: tuple[float, ...]  # percent, one per N
    num_queries: int
    num_queries_without_positives: int
    threshold_m: float | None = None  # None for index ground truth (VPR-Bench)

    def as_dict(self) -> dict[int, float]:
        """Return ``{N: recall in percent}``."""
        return dict(zip(self.recall_values, self.recalls))

    def __str__(self) -> str:
        return ', '.join(f'R@{n}: {r:.1f}' for n, r in zip(self.recall_values, self.recalls))


def positives_within(query_utm: np.ndarray, db_utm: np.ndarray,
                     threshold: float = 25.0) -> list[np.ndarray]:
    """Find the database positions within ``threshold`` m of each query (inclusive).

    Convention:
        - ``query_utm`` (Q, 2) and ``db_utm`` (D, 2): UTM (east, north) metres of one zone;
        - returns Q sorted int arrays of database indices.
    """
    query_utm = _as_points(query_utm, 'query_utm')
    db_utm = _as_points(db_utm, 'db_utm')
    out = []
    for start in range(0, len(query_utm), 1024):  # bounded memory for large databases
        chunk = query_utm[start:start + 1024]
        dist = np.sqrt(((chunk[:, None, :] - db_utm[None, :, :]) ** 2).sum(-1))
        out.extend(np.flatnonzero(row <= threshold) for row in dist)
    return out


def recall_from_positives(predictions: np.ndarray, positives: Sequence[np.ndarray],
                          recall_values: Sequence[int] = DEFAULT_RECALL_VALUES
                          ) -> tuple[tuple[float, ...], int]:
    """Count cumulative recall@N (percent of all queries) and the queries without positives.

    ``predictions`` (Q, K) holds database indices best first; negative entries (FAISS's -1 for
    "no result") never match. A query whose positives are empty is a failure at every N.
    """
    predictions = np.asarray(predictions)
    recall_values = tuple(int(n) for n in recall_values)
    if predictions.ndim != 2 or len(predictions) != len(positives):
        raise DataError(f'predictions must be (num_queries={len(positives)}, K), got shape '
                        f'{predictions.shape}')
    if not recall_values or any(n < 1 for n in recall_values) or \
            list(recall_values) != sorted(set(recall_values)):
        raise DataError(f'recall_values must be increasing positive integers, got '
                        f'{list(recall_values)}')
    hits = np.zeros(len(recall_values))
    for preds, pos in zip(predictions, positives):
        for i, n in enumerate(recall_values):
            if np.any(np.isin(preds[:n], pos)):
                hits[i:] += 1
                break
    num_queries = len(positives)
    recalls = hits / max(num_queries, 1) * 100.0
    without = sum(1 for p in positives if len(p) == 0)
    return tuple(float(r) for r in recalls), without


def recall_at_n(query_utm: np.ndarray, db_utm: np.ndarray, predictions: np.ndarray,
                recall_values: Sequence[int] = DEFAULT_RECALL_VALUES,
                threshold: float = 25.0) -> RecallResult:
    """Score retrieval ``predictions`` against UTM ground truth (the benchmark protocol).

    Args:
        query_utm: (Q, 2) UTM east/north of the queries, metres.
        db_utm: (D, 2) UTM east/north of the database images, same zone.
        predictions: (Q, K) database indices retrieved for each query, best first
            (K >= max(recall_values) to evaluate every N; FAISS -1 entries never match).
        recall_values: the N to report, increasing.
        threshold: positive radius in metres (25 in the literature), inclusive.

    Returns:
        RecallResult with percentages over all Q queries.
    """
    positives = positives_within(query_utm, db_utm, threshold)
    recalls, without = recall_from_positives(predictions, positives, recall_values)
    return RecallResult(tuple(int(n) for n in recall_values), recalls, len(positives), without,
                        float(threshold))


def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise DataError(f'{name} must be (N, 2) east/north metres, got shape {points.shape}')
    return points


@dataclass(frozen=True)
class IndexGroundTruth:
    """VPR-Bench ground truth: for each query image, the indices of its matching references."""

    query_names: tuple[str, ...]
    ref_names: tuple[str, ...]
    positives: tuple[np.ndarray, ...]


def _image_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_vprbench_csv(path: Path, ref_names: Sequence[str] | None = None) -> IndexGroundTruth:
    """Read a VPR-Bench ground-truth CSV (``query,ref_matches`` with matches joined by ``;``).

    Reference indices refer to ``ref_names`` (default: the sorted image names in the ``ref/``
    folder beside the CSV). A match that names no reference image is a DataError.
    """
    path = Path(path)
    if ref_names is None:
        ref_dir = path.parent / 'ref'
        if not ref_dir.is_dir():
            raise DataError(f'{path}: no ref/ folder beside it; pass ref_names')
        ref_names = _image_names(ref_dir)
    index = {name: i for i, name in enumerate(ref_names)}
    queries, positives = [], []
    header, rows = read_csv_rows(path)
    if not {'query', 'ref_matches'} <= set(header):
        raise DataError(f'{path}: expected the header query,ref_matches, got {header or None}')
    seen: dict[str, int] = {}
    for line, row in rows:
        names = [n.strip() for n in (row['ref_matches'] or '').split(';') if n.strip()]
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DataError(f'{path}:{line}: reference(s) {unknown[:3]} not among the '
                            f'{len(index)} reference images')
        query = row['query'].strip()
        if query in seen:
            raise DataError(f'{path}:{line}: query {query!r} is listed already on line '
                            f'{seen[query]}')
        seen[query] = line
        queries.append(query)
        positives.append(np.array(sorted(index[n] for n in names), np.int64))
    return IndexGroundTruth(tuple(queries), tuple(ref_names), tuple(positives))


def load_vprbench_npy(path: Path, *, allow_pickle: bool = False) -> list[np.ndarray]:
    """Read the upstream VPR-Bench ``.npy`` ground truth (rows ``[query_index, [ref indices]]``).

    The file is a pickled numpy object array, and unpickling runs code from the file: it is
    read only with an explicit ``allow_pickle=True`` (the CLI's ``--allow-pickle``). Returns the
    positives of each query, ordered by query index.
    """
    if not allow_pickle:
        raise DataError(f'{path} is a pickled object array; reading it can run code from the '
                        f'file. Use the CSV ground truth, or allow pickle explicitly')
    try:
        rows = np.load(path, allow_pickle=True)
    except (OSError, ValueError) as exc:
        raise DataError(f'cannot read {path}: {exc}') from None
    out: dict[int, np.ndarray] = {}
    for row in rows:
        out[int(row[0])] = np.array(sorted(int(i) for i in np.atleast_1d(row[1])), np.int64)
    return [out.get(i, np.zeros(0, np.int64)) for i in range(max(out) + 1 if out else 0)]
