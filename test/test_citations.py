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

"""Docstrings, help texts and docs cite papers, not documents that are not in this repository.

The design notes and paper files the project started from ("seed 004", "DESIGN §7",
"notes/....md") are not shipped: a reader of the package cannot follow such a reference. Cite
the paper (authors, title, venue, arXiv id) or say the fact itself.
"""

from __future__ import annotations

from pathlib import Path
import re

import pytest

REPO = Path(__file__).resolve().parents[1]

#: References to documents outside the repository.
INTERNAL_REF = re.compile(r'\b[Ss]eeds? 0\d\d\b'  # paper files: "seed 004", "seeds 001-003"
                          r'|\bDESIGN\b'           # DESIGN.md, "DESIGN §7"
                          r'|\bnotes/'             # notes/environment.md, ../shared/notes/...
                          r'|\bseeds/')            # ../shared/seeds/

#: Searched: the package, tests, benches, scripts, launch and config files, top-level docs.
SEARCHED = ('vpr_ros', 'test', 'bench', 'scripts', 'launch', 'config')
SUFFIXES = {'.py', '.md', '.yaml', '.yml', '.sh', '.txt', '.cfg', '.toml', '.xml'}

#: Files allowed to name internal documents (none).
ALLOWED: set[str] = set()


def searched_files() -> list[Path]:
    """Return the text files the check reads (this file, which names the patterns, excluded)."""
    files = list(REPO.glob('*.md'))
    for top in SEARCHED:
        files += [p for p in (REPO / top).rglob('*') if p.is_file() and p.suffix in SUFFIXES
                  and '__pycache__' not in p.parts]
    return sorted(p for p in files if p != Path(__file__).resolve())


def internal_refs(text: str) -> list[tuple[int, str]]:
    """Return ``(line number, line)`` of every line that cites an internal document."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)
            if INTERNAL_REF.search(line)]


@pytest.mark.parametrize('text', [
    'GeoWarp re-ranking (seed 004 §3.2)',
    'Seed 002 augmentations of one image',
    'What it does (seeds 001-003):',
    'the node (DESIGN §7)',
    'The parts of DESIGN.md are in place',
    '(notes/ros_conventions.md §3)',
    '(../shared/notes/vpr_reference_code.md §c)',
    'the five source papers are in ../shared/seeds/',
])
def test_pattern_finds_internal_references(text):
    assert internal_refs(text) == [(1, text)]


@pytest.mark.parametrize('text', [
    "seed: int = option(0, 'random seed (split, query order, mining, augmentation)')",
    'bench/fix_quality.py --seeds 0 1 2 3 4 --corridor',
    'Other seeds (`--seed 0`) show what wrong places look like',
    'GeoWarp (Berton et al., ICCV 2021, arXiv 2109.09827, §3.4)',
    'design notes',
])
def test_pattern_leaves_ordinary_text_alone(text):
    assert internal_refs(text) == []


def test_search_covers_the_package_and_docs():
    names = {p.relative_to(REPO).as_posix() for p in searched_files()}
    assert {'README.md', 'CONTRIBUTING.md', 'vpr_ros/localizer.py', 'vpr_ros/models/geowarp.py',
            'config/train.yaml', 'bench/README.md', 'test/test_geowarp.py'} <= names
    assert 'test/test_citations.py' not in names


def test_allowed_files_exist():
    missing = sorted(n for n in ALLOWED if not (REPO / n).is_file())
    assert not missing, f'allow-list names files that do not exist: {missing}'


def test_no_internal_document_references():
    found = []
    for path in searched_files():
        name = path.relative_to(REPO).as_posix()
        if name in ALLOWED:
            continue
        found += [f'{name}:{i}: {line}'
                  for i, line in internal_refs(path.read_text(encoding='utf-8'))]
    assert not found, ('cite the paper (authors, title, venue, arXiv id) or state the fact '
                       'instead of these internal documents:\n' + '\n'.join(found))
