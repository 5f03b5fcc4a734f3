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

"""What a training run writes: metrics.csv, metrics.png and checkpoints with their train state."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from vpr_ros.errors import CheckpointError
from vpr_ros.files import write_bytes, write_text
from vpr_ros.models.checkpoints import save_checkpoint
from vpr_ros.models.descriptor import DescriptorModel
from vpr_ros.models.weights import FORMAT, read_checkpoint

METRIC_COLUMNS = ('epoch', 'loss', 'triplet', 'haf', 'R@1', 'R@5', 'R@10', 'images_per_s',
                  'seconds', 'lr')


def write_metrics_csv(history: list[dict[str, float]], path: Path) -> None:
    """Write one row per epoch (epoch 0: the starting model) to ``path`` atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction='ignore')
    writer.writeheader()
    for row in history:
        writer.writerow({k: ('' if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in row.items()})
    write_text(path, buf.getvalue())


def plot_metrics(history: list[dict[str, float]], path: Path) -> None:
    """Loss (left) and validation recall@1/5/10 (right) per epoch as a PNG."""
    from matplotlib.figure import Figure

    epochs = [row['epoch'] for row in history]
    fig = Figure(figsize=(10.0, 4.0), dpi=100)   # the object API: no pyplot, no global backend
    ax_loss, ax_rec = fig.subplots(1, 2)
    for key in ('loss', 'triplet', 'haf'):
        values = [row.get(key, math.nan) for row in history]
        if any(v > 0 for v in values if not math.isnan(v)):
            ax_loss.plot(epochs, values, marker='o', label=key)
    ax_loss.set(xlabel='epoch', ylabel='training loss', title='loss')
    for key in ('R@1', 'R@5', 'R@10'):
        ax_rec.plot(epochs, [row.get(key, math.nan) for row in history], marker='o', label=key)
    ax_rec.set(xlabel='epoch', ylabel='recall (%)', title='validation recall')
    for ax in (ax_loss, ax_rec):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc='best')
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    write_bytes(path, buf.getvalue())


def save_train_checkpoint(model: DescriptorModel, path: Path,
                          train_state: dict[str, Any]) -> Path:
    """Write a model checkpoint that also holds the training state (``extra.train``)."""
    return save_checkpoint(model, path, extra={'train': train_state})


def read_train_state(path: str | Path) -> dict[str, Any]:
    """Return the training state of a ``last.pt``; CheckpointError if it has none."""
    obj = read_checkpoint(path)
    state = obj.get('extra', {}).get('train') if isinstance(obj, dict) and \
        obj.get('format') == FORMAT else None
    if not isinstance(state, dict) or 'optimizer' not in state:
        raise CheckpointError(f'{path} holds no training state to resume from (use the '
                              'last.pt of a vpr-ros train run)')
    return state
