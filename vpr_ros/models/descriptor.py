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

"""The descriptor model: ImageNet normalisation -> resizer -> backbone -> head -> unit vector.

README.md, "Descriptor models", lists the parts and presets. The attribute names ``resizer``,
``backbone``, ``aggregation`` make the state_dict keys read as the architecture and match the
public layout of the deep visual geo-localization benchmark (``GeoLocalizationNet`` with
children ``backbone`` and ``aggregation``, in its ``model/network.py``). ``ModelConfig`` is a
frozen, YAML-loadable dataclass; ``PRESETS`` holds the named configurations.

Convention: images are float tensors ``(N, 3, H, W)`` in [0, 1], RGB, any H and W; the model
applies the ImageNet mean/std itself. Descriptors are ``(N, D)`` float32, L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import json
from typing import Any

import numpy as np
import torch
from torch import nn
from vpr_ros.config import Config, option
from vpr_ros.errors import ConfigError, DataError
from vpr_ros.models.backbones import BACKBONES, build_backbone
from vpr_ros.models.heads import build_head, GeM, HEADS
from vpr_ros.models.resizer import ASGeoResizer, ASPECT_MODES, BilinearResizer
from vpr_ros.models.weights import load_weights_into

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fields that say where the weights come from, not what the network computes; the
# fingerprint leaves them out (it hashes the weights themselves).
WEIGHT_SOURCE_FIELDS = ('pretrained', 'weights_path', 'checkpoint')


@dataclass(frozen=True)
class ModelConfig(Config):
    """Architecture and weight source of a descriptor model."""

    backbone: str = option('efficientnet-lite0', 'feature extractor', choices=BACKBONES)
    head: str = option('gem', 'aggregation head', choices=tuple(HEADS))
    descriptor_dim: int = option(
        0, 'output size of the gem_fc head (0: the backbone channel count)', min=0)
    gem_p: float = option(3.0, 'initial GeM exponent p', min=1.0)
    gem_l2: str = option('before_pool', 'L2 placement of the gem head (benchmark --l2)',
                         choices=('before_pool', 'after_pool', 'none'))
    netvlad_clusters: int = option(64, 'NetVLAD/CRN clusters K', min=1)
    haf_dim: int = option(128, 'per-scale descriptor size of the HAF head', min=1)
    input_size: tuple[int, int] = option(
        (240, 320), 'model input size (H, W); (0, 0) keeps native size (resizer off only)')
    resizer: bool = option(False, 'AS-Geo learnable resizer in front of the backbone')
    resizer_channels: int = option(16, 'width of the AS-Geo resizer branch', min=1)
    aspect: str = option('stretch', 'how the input aspect ratio meets input_size',
                         choices=ASPECT_MODES)
    antialias: bool = option(True, 'antialiased bilinear resizing when shrinking')
    triplet_attention: bool = option(False, 'triplet attention after the first conv block')
    pretrained: bool = option(True, 'load ImageNet weights into the backbone (offline only)')
    weights_path: str = option('', 'local ImageNet state_dict for resnet/vgg (else hub cache)')
    checkpoint: str = option('', 'weights to load after building (ours or a public layout)')
    max_input_pixels: int = option(50_000_000, 'larger input images are refused', min=1)
    scales: tuple[float, ...] = option(
        (1.0,), 'multi-scale descriptor: the resized input is also described at these '
        'scales (1.0 among them) and the power mean of the descriptors kept (Radenovic et '
        'al., TPAMI 2018); (1.0,): one scale')

    def validate(self) -> None:
        """Check the input size against the resizer setting."""
        h, w = self.input_size
        if (h, w) == (0, 0):
            if self.resizer:
                raise ConfigError('ModelConfig.input_size: the learnable resizer needs an '
                                  'output size, not (0, 0)')
        elif h < 8 or w < 8:
            raise ConfigError(f'ModelConfig.input_size: {self.input_size} is too small '
                              '(at least 8x8, or (0, 0) for native size)')
        if 1.0 not in self.scales or len(set(self.scales)) != len(self.scales) or \
                any(not 0.25 <= s <= 2.0 for s in self.scales):
            raise ConfigError(f'ModelConfig.scales: {self.scales} must hold 1.0 and distinct '
                              'scales in [0.25, 2]')

    def architecture_dict(self) -> dict[str, Any]:
        """Return the config without the weight-source fields (what the fingerprint hashes)."""
        out = {k: v for k, v in self.to_dict().items() if k not in WEIGHT_SOURCE_FIELDS}
        if tuple(self.scales) == (1.0,):    # single-scale models keep their fingerprints
            out.pop('scales', None)
        return out

    @property
    def scale_power(self) -> float:
        """Exponent of the multi-scale power mean: GeM's p for GeM heads, else 1 (a mean).

        Radenovic et al. (TPAMI 2018) combine the scales with the network's own GeM exponent
        (the model uses its learnt ``p``; this is the configured one); other heads give
        signed descriptors, for which only the plain mean is defined.
        """
        return float(self.gem_p) if self.head in ('gem', 'gem_stages') else 1.0


PRESETS: dict[str, ModelConfig] = {
    'effnet-lite0-gem': ModelConfig(),
    'effnet-lite0-gem-360': ModelConfig(input_size=(360, 480)),
    'effnet-lite0-gem-480': ModelConfig(input_size=(480, 640)),
    # Radenovic et al.'s test-time scales 1, 1/sqrt(2), 1/2 (1.75x the pixels of one scale).
    'effnet-lite0-gem-ms': ModelConfig(scales=(1.0, 0.7071, 0.5)),
    'effnet-lite0-gem-360-ms': ModelConfig(input_size=(360, 480), scales=(1.0, 0.7071, 0.5)),
    'effnet-lite0-gem-stages': ModelConfig(head='gem_stages'),
    'effnet-lite0-gem-asgeo': ModelConfig(resizer=True, triplet_attention=True),
    'effnet-lite0-netvlad': ModelConfig(head='netvlad'),
    'effnet-lite1-gem': ModelConfig(backbone='efficientnet-lite1'),
    'effnet-lite2-gem': ModelConfig(backbone='efficientnet-lite2'),
    'resnet18-gem': ModelConfig(backbone='resnet18', input_size=(480, 640)),
    'resnet18-netvlad': ModelConfig(backbone='resnet18', head='netvlad',
                                    input_size=(480, 640)),
    'resnet50-gem': ModelConfig(backbone='resnet50', input_size=(480, 640)),
    'vgg16-netvlad': ModelConfig(backbone='vgg16', head='netvlad', input_size=(480, 640)),
    # Random-init, small input: fast on CPU, for tests and smoke runs.
    'tiny-test': ModelConfig(backbone='resnet18', pretrained=False, input_size=(64, 80)),
    'tiny-test-asgeo': ModelConfig(backbone='resnet18', pretrained=False, input_size=(64, 80),
                                   resizer=True, triplet_attention=True),
}


def check_batch(batch: Any, *, max_pixels: int, check_values: bool = True) -> torch.Tensor:
    """Validate an image batch and return it as ``(N, 3, H, W)`` float; DataError otherwise."""
    if not isinstance(batch, torch.Tensor):
        raise DataError(f'expected a torch.Tensor batch (N, 3, H, W), got {type(batch).__name__}')
    if batch.dim() == 3:
        batch = batch.unsqueeze(0)
    if batch.dim() != 4:
        raise DataError(f'expected a batch of shape (N, 3, H, W), got {tuple(batch.shape)}')
    n, c, h, w = batch.shape
    if c != 3:
        raise DataError(f'expected 3 (RGB) channels, got {c} in shape {tuple(batch.shape)}')
    if n == 0 or h == 0 or w == 0:
        raise DataError(f'empty image batch of shape {tuple(batch.shape)}')
    if h * w > max_pixels:
        raise DataError(f'image of {w}x{h} = {h * w} pixels is larger than max_input_pixels '
                        f'({max_pixels}); downscale it first')
    if batch.dtype == torch.uint8:
        batch = batch.float() / 255.0
    elif not batch.is_floating_point():
        raise DataError(f'expected a float tensor in [0, 1] (or uint8), got {batch.dtype}')
    if check_values:
        if not bool(torch.isfinite(batch).all()):
            raise DataError('image batch contains NaN or infinite values')
        lo, hi = float(batch.min()), float(batch.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise DataError(f'image values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] '
                            '(uint8 data divided by 255?)')
    return batch


class DescriptorModel(nn.Module):
    """Global descriptor network: ``resizer`` -> ``backbone`` -> ``aggregation``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self._config = config
        if config.resizer:
            self.resizer: nn.Module = ASGeoResizer(config.input_size, config.aspect,
                                                   channels=config.resizer_channels,
                                                   antialias=config.antialias)
        else:
            self.resizer = BilinearResizer(config.input_size, config.aspect,
                                           antialias=config.antialias)
        # With a checkpoint to load, the ImageNet weights would be overwritten anyway.
        pretrained = config.pretrained and not config.checkpoint
        self.backbone = build_backbone(config.backbone, pretrained=pretrained,
                                       weights_path=config.weights_path,
                                       triplet_attention=config.triplet_attention)
        self.aggregation = build_head(config.head, self.backbone.out_channels,
                                      self.backbone.stage_channels, config)
        # Not in the state_dict, so public checkpoints load strictly.
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def config(self) -> ModelConfig:
        """Return the configuration the model was built from."""
        return self._config

    @property
    def descriptor_dim(self) -> int:
        """Return the descriptor size D."""
        return int(self.aggregation.out_dim)

    @property
    def device(self) -> torch.device:
        """Return the device the model's tensors live on."""
        return self.mean.device

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        return self.resizer((batch - self.mean) / self.std)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Return ``(N, D)`` unit descriptors with autograd (training)."""
        return self.embed(self.resize(batch))

    def resize(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalise and resize images to the backbone input (the resizer step on its own)."""
        batch = check_batch(batch, max_pixels=self._config.max_input_pixels, check_values=False)
        return self._prepare(batch)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(N, D)`` unit descriptors of already resized inputs (:meth:`resize`)."""
        return self._combine_scales(x, self._one_scale(x))

    def _one_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Return the unit descriptors of ``x`` at its own size."""
        return self._pool(self.backbone.forward_stages(x))

    def _pool(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """Return unit descriptors of the backbone's stage maps (multi-stage heads take all)."""
        multi_stage = getattr(self.aggregation, 'multiscale', False)
        out = self.aggregation(stages if multi_stage else stages[-1])
        return nn.functional.normalize(out, p=2.0, dim=1)

    def embed_with_local(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return :meth:`embed`'s descriptors and the stride-16 map of the same pass.

        GeoWarp matches the dense features of the encoder that made the global descriptor
        (Berton et al., ICCV 2021, arXiv 2109.09827, §3.2): when the map's thumbnails are the
        model's input size, the query's features come from its descriptor forward for free
        (the scale-1 pass of a multi-scale model).
        """
        stages = self.backbone.forward_stages(x)
        return self._combine_scales(x, self._pool(stages)), stages[self.backbone.local_stage]

    def _combine_scales(self, x: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        """Add the other scales of ``config.scales`` to ``unit``, the scale-1 descriptors.

        Each scale is the resized input shrunk (antialiased) or enlarged bilinearly, described
        and L2-normalised; the descriptors are combined by the power mean
        (:meth:`_scale_power`) and normalised again, as Radenovic et al.
        ("Fine-tuning CNN image retrieval with no human annotation", TPAMI 2018) do at test
        time: a place seen from nearer or farther than the map's frame shows its structures
        at another scale, which one scale of an ImageNet network does not match.
        """
        others = self._other_scales(x)
        if not others:
            return unit
        return self._power_mean([unit] + [self._one_scale(v) for v in others])

    def _other_scales(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the resized input ``x`` at each scale of ``config.scales`` other than 1."""
        h, w = x.shape[-2:]
        return [nn.functional.interpolate(
            x, size=(max(8, round(h * s)), max(8, round(w * s))), mode='bilinear',
            align_corners=False, antialias=s < 1.0 and self._config.antialias)
            for s in self._config.scales if s != 1.0]

    def _power_mean(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Combine per-scale unit descriptors as :meth:`_combine_scales` says."""
        p = self._scale_power()
        if isinstance(p, float) and p == 1.0:
            mean = torch.stack(parts).mean(dim=0)
        else:     # (1e-24)^(1/3) = 1e-8: no infinite gradient at 0
            mean = (torch.stack(parts).clamp_min(0.0) ** p).mean(dim=0).clamp_min(1e-24) ** (1 / p)
        return nn.functional.normalize(mean, p=2.0, dim=1)

    def frozen_features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Per scale, the map the final backbone stage starts from (scale 1 first).

        Fine-tuning on a CPU trains only the final stage and the head (:func:`final_stage`):
        for an image that is not augmented these maps never change, so they are computed once
        (:mod:`vpr_ros.training.frozen`) and :meth:`embed_frozen` finishes each pass.
        """
        if getattr(self.aggregation, 'multiscale', False):
            raise ValueError('frozen_features: the head pools several backbone stages')
        x = self.resize(batch)
        return [self.backbone.forward_to_final_stage(v) for v in [x, *self._other_scales(x)]]

    def embed_frozen(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Return :meth:`forward`'s descriptors from :meth:`frozen_features`' maps."""
        units = [self._pool([self.backbone.forward_final_stage(m)]) for m in maps]
        return units[0] if len(units) == 1 else self._power_mean(units)

    def _scale_power(self) -> float | torch.Tensor:
        """Exponent of the multi-scale power mean: the head's own, learnt GeM ``p`` if it has one.

        Radenovic et al. combine the scales with the network's GeM exponent, which training
        (or ``vpr-ros adapt --finetune``) moves away from the configured ``gem_p``; heads with
        several GeM layers (``gem_stages``) use the configured value, signed heads 1.
        """
        power = self._config.scale_power
        if power == 1.0:
            return power
        gems = [m for m in self.aggregation.modules() if isinstance(m, GeM)]
        return gems[0].p.detach().clamp_min(1.0) if len(gems) == 1 else power

    def dense_features(self, batch: torch.Tensor) -> torch.Tensor:
        """Return the backbone feature maps ``(N, C, h, w)`` after the resizer."""
        batch = check_batch(batch, max_pixels=self._config.max_input_pixels, check_values=False)
        return self.backbone(self._prepare(batch))

    def local_features(self, batch: torch.Tensor) -> torch.Tensor:
        """Return GeoWarp's dense features: the stride-16 stage at the batch's own size.

        The resizer is bypassed: GeoWarp compares a query and map thumbnails at one small,
        common size (``vpr_ros.localizer``), and the pass stops at the stride-16 stage, so it
        costs a fraction of :meth:`forward`. Autograd stays on (GeoWarp training freezes the
        backbone itself).
        """
        batch = check_batch(batch, max_pixels=self._config.max_input_pixels, check_values=False)
        x = (batch.to(self.device, non_blocking=True) - self.mean) / self.std
        stage = self.backbone.local_stage
        return self.backbone.forward_stages(x, stop=stage)[stage]

    def describe(self, batch: torch.Tensor) -> np.ndarray:
        """Return float32 ``(N, D)`` L2-normalised descriptors (eval mode, no grad)."""
        batch = check_batch(batch, max_pixels=self._config.max_input_pixels)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                out = self.forward(batch)
        finally:
            self.train(was_training)
        return out.float().cpu().numpy()

    def fingerprint(self) -> str:
        """Return a stable sha256 hex of the architecture config and every weight."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self._config.architecture_dict(), sort_keys=True).encode())
        for key, value in sorted(self.state_dict().items()):
            tensor = value.detach().cpu().contiguous()
            digest.update(f'{key}|{tensor.dtype}|{tuple(tensor.shape)}'.encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def extra_repr(self) -> str:
        """Show the key settings."""
        cfg = self._config
        return (f'backbone={cfg.backbone!r}, head={cfg.head!r}, dim={self.descriptor_dim}, '
                f'input_size={cfg.input_size}, resizer={cfg.resizer}')


def build_model(config: ModelConfig) -> DescriptorModel:
    """Build a model from its config; loads ``config.checkpoint`` when set.

    Randomly initialised parts are drawn from a fixed seed (without touching the caller's RNG
    state), so the same config always gives the same weights and fingerprint: a map built with
    ``--model tiny-test`` opens again with ``tiny-test``.
    """
    if not isinstance(config, ModelConfig):
        raise ConfigError(f'build_model needs a ModelConfig, got {type(config).__name__}')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DescriptorModel(config)
    if config.checkpoint:
        load_weights_into(model, config.checkpoint)
    return model
