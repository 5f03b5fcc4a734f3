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

"""Settings of ``vpr-ros train`` (``config/train.yaml`` documents each field)."""

from __future__ import annotations

from dataclasses import dataclass

from vpr_ros.config import Config, option
from vpr_ros.models import DEFAULT_MODEL
from vpr_ros.training.data import AugmentConfig, DataConfig
from vpr_ros.training.losses import LossConfig
from vpr_ros.training.mining import MiningConfig


@dataclass(frozen=True)
class TrainConfig(Config):
    """Everything ``vpr-ros train`` needs (``config/train.yaml`` documents each field)."""

    model: str = option(DEFAULT_MODEL, 'model to train: preset, model YAML or checkpoint')
    out_dir: str = option('runs/train', 'folder for best.pt, last.pt, metrics.csv/png')
    device: str = option('auto', 'torch device: auto, cpu, cuda, cuda:N (torchrun: the '
                                 'process local GPU)')
    epochs: int = option(5, 'number of epochs', min=1)
    batch_size: int = option(4, 'tuples (query, positive, negatives) per optimiser step, over '
                                'all processes', min=1)
    lr: float = option(1e-5, 'Adam learning rate (1e-5 was best in Gambino et al. Table 3)',
                       min=0.0)
    weight_decay: float = option(0.0, 'Adam weight decay', min=0.0)
    queries_per_epoch: int = option(0, 'training queries per epoch (0: all of them)', min=0)
    infer_batch_size: int = option(32, 'images per forward pass when caching descriptors',
                                   min=1)
    num_workers: int = option(0, 'DataLoader processes building batches (0: in process)',
                              min=0)
    seed: int = option(0, 'random seed (split, query order, mining, augmentation)')
    resume: str = option('', 'last.pt of an earlier run to continue from')
    train_layers: str = option('all', 'weights trained: all, or last (the last backbone stage '
                                      'and the head; fast on a CPU)', choices=('all', 'last'))
    frozen_cache_mb: int = option(4096, 'with train_layers last: memory for the frozen '
                                        "layers' outputs of the database images, computed "
                                        'once (0: recompute them every pass)', min=0)
    freeze_bn: bool = option(True, 'keep the backbone BatchNorm statistics fixed (small '
                                   'batches)')
    netvlad_init: str = option('auto', 'k-means init of NetVLAD/CRN centroids from training '
                                       'features: auto (unless the model is a checkpoint), '
                                       'never', choices=('auto', 'never'))
    netvlad_init_images: int = option(500, 'training images sampled for the k-means init',
                                      min=1)
    val_positive_m: float = option(25.0, 'validation positives: database images within this '
                                         '(m), as the benchmark', min=0.0)
    best_metric: str = option('R@5', 'validation recall that selects best.pt',
                              choices=('R@1', 'R@5', 'R@10'))
    validate_before: bool = option(True, 'validate the starting model as epoch 0 (best.pt '
                                         'then never falls below it)')
    data: DataConfig = option(DataConfig(), 'training data and split')
    augment: AugmentConfig = option(AugmentConfig(), 'augmentations (Gambino et al. §5.3)')
    mining: MiningConfig = option(MiningConfig(), 'positives and negatives (Gambino et al. '
                                                  '§4, CRN)')
    loss: LossConfig = option(LossConfig(), 'loss margins and weights')
