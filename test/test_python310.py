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

"""The package stays Python 3.10 syntax, so a ROS 2 Humble user (Ubuntu 22.04) can try it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Standard-library names added in 3.11+ (the syntax check cannot see them).
NEWER_STDLIB = ('tomllib', 'StrEnum', 'TaskGroup', 'ExceptionGroup', 'file_digest',
                'datetime.UTC', 'add_note', 'LiteralString')


def _sources() -> list[Path]:
    return (sorted((REPO / 'vpr_ros').rglob('*.py')) + sorted((REPO / 'launch').glob('*.py'))
            + [REPO / 'setup.py'])


@pytest.mark.parametrize('snippet', [
    'try:\n    pass\nexcept* ValueError:\n    pass\n',     # 3.11 exception groups
    'def first[T](items: list[T]) -> T:\n    return items[0]\n',   # 3.12 type parameters
    'type Pair = tuple[int, int]\n',                      # 3.12 type aliases
])
def test_the_check_rejects_newer_syntax(snippet):
    with pytest.raises(SyntaxError):
        ast.parse(snippet, feature_version=(3, 10))


def test_every_module_parses_as_python_3_10():
    errors = []
    for path in _sources():
        text = path.read_text()
        try:
            ast.parse(text, str(path), feature_version=(3, 10))
        except SyntaxError as exc:
            errors.append(f'{path.relative_to(REPO)}:{exc.lineno}: {exc.msg}')
        errors += [f'{path.relative_to(REPO)}: uses {name} (Python 3.11+)'
                   for name in NEWER_STDLIB if name in text]
    assert errors == []


def test_setup_allows_python_3_10():
    assert "python_requires='>=3.10'" in (REPO / 'setup.py').read_text()
