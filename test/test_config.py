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

"""Config dataclasses: validation on construction, unknown keys, YAML round trip."""

from __future__ import annotations

from dataclasses import dataclass, FrozenInstanceError
from typing import Literal

import pytest

from vpr_ros.config import Config, option
from vpr_ros.errors import ConfigError


@dataclass(frozen=True)
class SearchConfig(Config):
    top_k: int = option(10, 'candidates from the index', min=1, max=1000)
    threshold: float = option(0.5, 'minimum score', min=0.0, max=1.0, runtime=True)
    index: str = option('flat', 'index kind', choices=('flat', 'ivfpq', 'hnsw'))
    mode: Literal['top1', 'cluster'] = option('top1', 'position estimate')
    image_size: tuple[int, int] = option((480, 640), 'model input (H, W)')
    note: str | None = option(None, 'free text')

    def validate(self) -> None:
        if self.image_size[0] > 4 * self.image_size[1]:
            raise ConfigError('SearchConfig.image_size: absurd aspect ratio')


class TestConfig:
    def test_defaults_and_types(self):
        cfg = SearchConfig()
        assert (cfg.top_k, cfg.threshold, cfg.image_size) == (10, 0.5, (480, 640))
        assert isinstance(SearchConfig(threshold=1).threshold, float)  # int widened to float
        assert SearchConfig.from_dict({'image_size': [240, 320]}).image_size == (240, 320)

    def test_frozen(self):
        with pytest.raises(FrozenInstanceError):
            SearchConfig().top_k = 3

    @pytest.mark.parametrize('kwargs, match', [
        ({'top_k': 0}, r'SearchConfig.top_k: 0 is below the minimum 1'),
        ({'threshold': 1.5}, r'SearchConfig.threshold: 1.5 is above the maximum 1.0'),
        ({'index': 'lsh'}, r"SearchConfig.index: 'lsh' is not one of \['flat', 'ivfpq', 'hnsw'\]"),
        ({'mode': 'mean'}, r"SearchConfig.mode: 'mean' is not one of"),
        ({'top_k': '5'}, r"SearchConfig.top_k: expected an integer, got '5'"),
        ({'top_k': True}, r'SearchConfig.top_k: expected an integer'),
        ({'image_size': (1, 2, 3)}, r'SearchConfig.image_size: expected 2 values, got 3'),
        ({'image_size': (4000, 10)}, r'absurd aspect ratio'),
        ({'note': 3}, r'SearchConfig.note: 3 matches none of'),
    ])
    def test_exception(self, kwargs, match):
        with pytest.raises(ConfigError, match=match):
            SearchConfig(**kwargs)

    def test_unknown_key_lists_valid_ones(self):
        with pytest.raises(ConfigError, match=r"unknown key\(s\) \['topk'\]; valid keys: "
                                              r"\['top_k', 'threshold'"):
            SearchConfig.from_dict({'topk': 5})

    def test_yaml_round_trip(self, tmp_path):
        import yaml

        cfg = SearchConfig(top_k=3, index='hnsw', image_size=(120, 160), note='x')
        path = tmp_path / 'search.yaml'
        path.write_text(yaml.safe_dump({'search': cfg.to_dict()}))
        assert SearchConfig.from_yaml(path, section='search') == cfg
        with pytest.raises(ConfigError, match="no section 'other'"):
            SearchConfig.from_yaml(path, section='other')

    def test_yaml_errors_name_the_file(self, tmp_path):
        bad = tmp_path / 'bad.yaml'
        bad.write_text('top_k: [unclosed\n')
        with pytest.raises(ConfigError, match='bad.yaml is not valid YAML'):
            SearchConfig.from_yaml(bad)
        with pytest.raises(ConfigError, match='cannot read config .*missing.yaml'):
            SearchConfig.from_yaml(tmp_path / 'missing.yaml')

    def test_describe_fields(self):
        fields = {f['name']: f for f in SearchConfig.describe_fields()}
        assert fields['threshold']['runtime'] is True
        assert fields['top_k']['runtime'] is False
        assert fields['top_k']['min'] == 1
        assert fields['top_k']['doc'] == 'candidates from the index'

    def test_mutable_default_rejected(self):
        with pytest.raises(TypeError, match='use a tuple'):
            option([1, 2], 'a list')


class TestDevice:
    def test_auto_and_cpu(self):
        import torch

        from vpr_ros.device import resolve_device

        assert resolve_device('cpu') == torch.device('cpu')
        expected = 'cuda' if torch.cuda.is_available() else 'cpu'
        assert resolve_device('auto').type == expected

    def test_exception(self):
        import torch

        from vpr_ros.device import resolve_device
        from vpr_ros.errors import DeviceError

        with pytest.raises(DeviceError, match="unknown device 'tpu'"):
            resolve_device('tpu')
        if not torch.cuda.is_available():
            with pytest.raises(DeviceError, match='CUDA is not available'):
                resolve_device('cuda')
