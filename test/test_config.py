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
from typing import ClassVar, Literal, Mapping
import warnings

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


@dataclass(frozen=True)
class OuterConfig(Config):
    search: SearchConfig = option(SearchConfig(), 'nested')


@dataclass(frozen=True)
class TunedConfig(Config):
    search: SearchConfig = option(SearchConfig(top_k=3, index='hnsw'), 'a tuned default')
    outer: OuterConfig = option(OuterConfig(search=SearchConfig(threshold=0.9)), 'two deep')


@dataclass(frozen=True)
class MovedConfig(Config):
    MOVED: ClassVar[Mapping[str, str]] = {'old.top_k': 'search.top_k'}
    RETIRED: ClassVar[Mapping[str, str]] = {'old': 'notes are gone'}

    search: SearchConfig = option(SearchConfig(), 'nested')


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

    def test_field_specs(self):
        fields = {f.name: f for f in SearchConfig.field_specs()}
        assert fields['threshold'].runtime is True
        assert fields['top_k'].runtime is False
        assert (fields['top_k'].min, fields['top_k'].max, fields['top_k'].type) == (1, 1000, int)
        assert fields['top_k'].doc == 'candidates from the index'
        assert fields['top_k'].rules() == 'range [1, 1000]'
        assert fields['index'].rules() == 'one of: flat, ivfpq, hnsw'
        with pytest.raises(ConfigError, match='below the minimum') as exc:
            fields['top_k'].check(0)
        assert exc.value.field == 'top_k'

    def test_error_carries_the_field(self):
        with pytest.raises(ConfigError) as exc:
            SearchConfig(top_k=0)
        assert (exc.value.field, exc.value.owner) == ('top_k', 'SearchConfig')
        assert exc.value.problem == '0 is below the minimum 1'
        with pytest.raises(ConfigError) as exc:
            SearchConfig(image_size=(240, 'x'))
        assert exc.value.field == 'image_size[1]'
        assert str(exc.value) == "SearchConfig.image_size[1]: expected an integer, got 'x'"
        with pytest.raises(ConfigError) as exc:       # a cross-field rule: free text
            SearchConfig(image_size=(4000, 10))
        assert exc.value.field is None

    def test_nested_error_names_the_path(self):
        with pytest.raises(ConfigError) as exc:
            OuterConfig.from_dict({'search': {'index': 'lsh'}})
        assert (exc.value.field, exc.value.owner) == ('search.index', 'OuterConfig')
        assert str(exc.value).startswith("OuterConfig.search.index: 'lsh' is not one of")
        with pytest.raises(ConfigError, match=r"OuterConfig.search: unknown key\(s\) \['topk'\]"):
            OuterConfig.from_dict({'search': {'topk': 1}})

    def test_a_nested_setting_given_alone_keeps_the_rest_of_the_fields_default(self, tmp_path):
        # Not the nested class's own defaults (top_k 10, flat): those of the field's default.
        path = tmp_path / 'part.yaml'
        path.write_text('search: {mode: cluster}\nouter: {search: {top_k: 7}}\n')
        cfg = TunedConfig.from_yaml(path)
        assert cfg.search == SearchConfig(top_k=3, index='hnsw', mode='cluster')
        assert cfg.outer.search == SearchConfig(threshold=0.9, top_k=7)
        assert TunedConfig.from_dict({}) == TunedConfig()
        assert TunedConfig.from_dict(TunedConfig().to_dict()) == TunedConfig()
        with pytest.raises(ConfigError, match=r"TunedConfig.search: unknown key\(s\) \['topk'\]"):
            TunedConfig.from_dict({'search': {'topk': 1}})

    def test_moved_keys_are_read_from_the_old_place_with_a_warning(self, tmp_path):
        path = tmp_path / 'old.yaml'
        path.write_text('search: {index: hnsw}\nold: {top_k: 3, note: x}\n')
        with pytest.warns(FutureWarning) as caught:
            cfg = MovedConfig.from_yaml(path)
        texts = [str(w.message) for w in caught]
        assert (cfg.search.top_k, cfg.search.index, cfg.search.note) == (3, 'hnsw', None)
        assert any(f'{path}: old.top_k has moved to search.top_k' in t for t in texts)
        assert any(f'{path}: old is ignored here: notes are gone' in t for t in texts), texts
        # The new place alone: no warning; both places with different values: an error.
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert MovedConfig.from_dict({'search': {'top_k': 4}}).search.top_k == 4
        with pytest.raises(ConfigError, match=r'search.top_k: given twice') as exc, \
                pytest.warns(FutureWarning, match='old.top_k has moved'):
            MovedConfig.from_dict({'search': {'top_k': 4}, 'old': {'top_k': 3}})
        assert exc.value.field == 'search.top_k'

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


def test_config_error_survives_pickling():
    import pickle

    with pytest.raises(ConfigError) as exc:
        SearchConfig(top_k=0)
    copy = pickle.loads(pickle.dumps(exc.value))
    assert (str(copy), copy.field, copy.owner, copy.problem) == (
        str(exc.value), 'top_k', 'SearchConfig', '0 is below the minimum 1')
