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

"""Module graph: no cycles, every module imports, no ROS in the core, no global side effects.

The graph counts every ``import`` statement in a module, at any depth (inside functions and
``TYPE_CHECKING`` blocks too): an import moved into a function hides a cycle from Python, not
from the design. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg``; the implicit import of parent packages is not counted.

Run ``python test/test_module_graph.py`` to print the cycles and the import order.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'vpr_ros'
#: Top-level packages the core (everything outside vpr_ros.ros) must not load.
ROS_PREFIXES = ('rclpy', 'sensor_msgs')
#: Cycles allowed to remain, each with its way out; the test fails when one of them changes or
#: disappears, so the list can only shrink. None is left.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def module_files(root: Path = REPO) -> dict[str, Path]:
    """Return ``{dotted name: file}`` of every module of the package under ``root``."""
    out = {}
    for path in sorted((root / PACKAGE).rglob('*.py')):
        parts = list(path.relative_to(root).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        out['.'.join(parts)] = path
    return out


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition('.')[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom,
             modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {t for a in node.names if (t := _known_prefix(a.name, modules))}
    if node.level:   # relative: resolve against this module's package
        base = module if modules[module].name == '__init__.py' else module.rpartition('.')[0]
        for _ in range(node.level - 1):
            base = base.rpartition('.')[0]
        source = f'{base}.{node.module}' if node.module else base
    else:
        source = node.module or ''
    out = set()
    for alias in node.names:
        target = f'{source}.{alias.name}'
        found = target if target in modules else _known_prefix(source, modules)
        if found:
            out.add(found)
    return out


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Return ``{module: modules it imports}`` counting every import statement."""
    modules = module_files(root)
    graph = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _targets(name, node, modules)
        deps.discard(name)
        graph[name] = deps
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components in reverse topological order (a component after all it imports)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:   # the graph is ~100 modules deep at most: recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """Return one concrete cycle ``a -> b -> ... -> a`` inside a strongly connected component."""
    members = set(component)
    start = component[0]
    parents = {start: start}
    frontier = [start]
    while frontier:   # breadth first, so the cycle printed is a short one
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the components of more than one module (each is at least one cycle)."""
    return [c for c in strongly_connected(graph) if len(c) > 1]


def import_order(graph: dict[str, set[str]]) -> list[str]:
    """Return every module after the modules it imports (cycle members side by side)."""
    return [m for component in strongly_connected(graph) for m in component]


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    edges = '\n'.join(f'    {m} -> {", ".join(sorted(graph[m] & set(component)))}'
                      for m in component)
    return f'cycle {" -> ".join(cycle_in(component, graph))}\n{edges}'


def test_the_graph_sees_imports_inside_functions(tmp_path):
    """A cycle hidden by a function-level import is still a cycle."""
    pkg = tmp_path / PACKAGE
    (pkg / 'sub').mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'sub' / '__init__.py').write_text('')
    (pkg / 'sub' / 'a.py').write_text('from vpr_ros.sub.b import f\n')
    (pkg / 'sub' / 'b.py').write_text('def f():\n    from . import a\n    return a\n')
    (pkg / 'c.py').write_text('import vpr_ros.sub\nfrom vpr_ros.sub import a as _a\n')
    graph = import_graph(tmp_path)
    assert graph['vpr_ros.sub.a'] == {'vpr_ros.sub.b'}
    assert graph['vpr_ros.sub.b'] == {'vpr_ros.sub.a'}
    assert graph['vpr_ros.c'] == {'vpr_ros.sub', 'vpr_ros.sub.a'}
    assert cycles(graph) == [['vpr_ros.sub.a', 'vpr_ros.sub.b']]
    assert cycle_in(['vpr_ros.sub.a', 'vpr_ros.sub.b'], graph) == [
        'vpr_ros.sub.a', 'vpr_ros.sub.b', 'vpr_ros.sub.a']
    order = import_order(graph)
    assert order.index('vpr_ros.sub') < order.index('vpr_ros.c')


def test_no_import_cycles():
    graph = import_graph()
    found = {frozenset(c): c for c in cycles(graph)}
    new = [_describe(c, graph) for key, c in found.items() if key not in KNOWN_CYCLES]
    assert not new, 'import cycles:\n' + '\n'.join(new)
    gone = [sorted(key) for key in KNOWN_CYCLES if key not in found]
    assert not gone, f'these known cycles changed or are gone; update KNOWN_CYCLES: {gone}'


_IMPORT_ALL = """
import importlib, json, sys, traceback
import faiss
faiss_before = faiss.cvar.distance_compute_blas_threshold
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-3)
ros = sorted(m for m in sys.modules if m.split('.')[0] in json.loads(sys.argv[2]))
print(json.dumps({'failed': failed, 'ros': ros, 'pyplot': 'matplotlib.pyplot' in sys.modules,
                  'faiss': [faiss_before, faiss.cvar.distance_compute_blas_threshold]}))
"""


def _import_in_fresh_interpreter(names: list[str]) -> dict:
    out = subprocess.run([sys.executable, '-c', _IMPORT_ALL, json.dumps(names),
                          json.dumps(ROS_PREFIXES)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _core(order: list[str]) -> list[str]:
    return [m for m in order if m != f'{PACKAGE}.ros' and not m.startswith(f'{PACKAGE}.ros.')]


def test_every_core_module_imports_without_ros_or_side_effects():
    """Each module outside vpr_ros.ros imports (in dependency order); none loads ROS.

    Importing changes no process-wide setting either: FAISS's BLAS threshold stays as it was
    (:mod:`vpr_ros.faiss_config` sets it when a search runs) and matplotlib's pyplot, which
    holds the global backend, is never loaded (plots use the object API).
    """
    order = _core(import_order(import_graph()))
    assert len(order) > 50 and 'vpr_ros.localizer' in order and 'vpr_ros.mapdb.index' in order
    result = _import_in_fresh_interpreter(order)
    assert not result['failed'], '\n'.join(f'{k}:\n{v}' for k, v in result['failed'].items())
    assert not result['ros'], f'the core loaded ROS modules: {result["ros"]}'
    before, after = result['faiss']
    assert after == before, f'importing set faiss distance_compute_blas_threshold to {after}'
    assert not result['pyplot'], 'importing the core loaded matplotlib.pyplot'


_PLOT = """
import sys
from pathlib import Path
import numpy as np
from vpr_ros.evaluation.metrics import compute_metrics, FixSeries, TruthSeries
from vpr_ros.evaluation.plots import write_plots
from vpr_ros.training.geowarp_trainer import _plot
t = np.arange(20) * 10**9
lat, lon = 45 + np.arange(20) * 1e-5, np.full(20, 7.0)
truth = TruthSeries(t, lat, lon, np.zeros(20), np.ones(20, bool))
fixes = FixSeries(t, lat + 2e-5, lon, np.zeros(20), np.ones(20, bool),
                  np.tile(np.eye(3).reshape(1, 9), (20, 1)))
out = Path(sys.argv[1])
names = [p.name for p in write_plots(compute_metrics(fixes, truth), out)]
_plot([{'step': i, 'total': 1.0 / (i + 1)} for i in range(5)], out / 'losses.png')
print(sorted(names), 'matplotlib.pyplot' in sys.modules)
"""


def test_plots_render_without_a_global_backend(tmp_path):
    """The report and GeoWarp plots render as PNGs without pyplot (no global backend set)."""
    out = subprocess.run([sys.executable, '-c', _PLOT, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    from vpr_ros.evaluation.plots import PLOTS

    assert out.stdout.split('\n')[-2] == f'{sorted(PLOTS)} False'
    for name in [*PLOTS, 'losses.png']:
        assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_every_ros_module_imports():
    pytest.importorskip('rclpy')
    order = import_order(import_graph())
    ros = [m for m in order if m not in _core(order)]
    assert f'{PACKAGE}.ros.localizer_node' in ros
    result = _import_in_fresh_interpreter(ros)
    assert not result['failed'], '\n'.join(f'{k}:\n{v}' for k, v in result['failed'].items())


if __name__ == '__main__':
    g = import_graph()
    for c in cycles(g):
        print(_describe(c, g), '(known)' if frozenset(c) in KNOWN_CYCLES else '(NEW)')
    print('import order:', ' '.join(import_order(g)))


#: Modules longer than this say at the top (module docstring) why they are one module.
LONG_MODULE_LINES = 420


def test_long_modules_say_why():
    import ast

    silent = []
    for name, path in module_files().items():
        text = path.read_text(encoding='utf-8')
        if text.count('\n') > LONG_MODULE_LINES and \
                'Why one module' not in (ast.get_docstring(ast.parse(text)) or ''):
            silent.append(f'{name} ({text.count(chr(10))} lines)')
    assert not silent, ('modules over %d lines without a "Why one module" paragraph at the '
                        'top: %s' % (LONG_MODULE_LINES, ', '.join(silent)))
