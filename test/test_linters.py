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

"""ament linters (flake8, pep257, copyright) over the package; skipped where not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATHS = [str(REPO / p) for p in ('vpr_ros', 'test', 'launch', 'bench', 'scripts', 'setup.py')
         if (REPO / p).exists()]

pytestmark = pytest.mark.linter


def test_flake8():
    main = pytest.importorskip('ament_flake8.main')
    rc, errors = main.main_with_errors(argv=PATHS)
    assert rc == 0, f'{len(errors)} flake8 error(s):\n' + '\n'.join(errors)


def test_pep257():
    main = pytest.importorskip('ament_pep257.main')
    # Google-style sections (Args:, Returns:) with ament's choice of not requiring docstrings
    # everywhere (D100-D107).
    rc = main.main(argv=['--convention', 'google', '--add-ignore', 'D100', 'D101', 'D102',
                         'D103', 'D104', 'D105', 'D106', 'D107', *PATHS])
    assert rc == 0, 'pep257 found docstring problems (see the output above)'


def test_copyright():
    main = pytest.importorskip('ament_copyright.main')
    rc = main.main(argv=['--exclude', str(REPO / 'setup.py'), *PATHS])
    assert rc == 0, 'files without a copyright and license header (see the output above)'
