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

"""The demo's steps in order: :func:`run_demo` (``vpr-ros demo``).

The chain a user runs on a robot, on generated data (README command 1):

1. render the synthetic route (:mod:`vpr_ros.synth`): a map pass written as PNGs + CSV;
2. ``build-map`` with the default model, ``fit-geowarp`` on the map's own thumbnails (GeoWarp's
   L_ss needs no labels: Berton et al., ICCV 2021, arXiv 2109.09827, §3.4), ``calibrate`` on a
   second rendered drive of the street (``SynthRoute.query_pass(drive=1)``: what
   ``calibrate --queries`` does with a second drive on a robot), or on pseudo-queries from the
   map images (``calibrate_on: pseudo``);
3. write the harder query pass as a rosbag2 (mcap): ``/camera/image_raw`` + truth ``/gnss/fix``;
4. start the node (``ros2 launch vpr_ros localize.launch.py`` when ``ros2`` is on PATH, the
   node's module as a process otherwise), ``record`` the camera, ``/vpr/fix`` and the truth,
   ``play`` the bag (header stamps mapped onto the playback clock, so latency is real), stop
   everything with SIGINT (SIGTERM, then SIGKILL to the process group if ignored);
5. ``eval-bag`` on the recording: the report with plots, and a summary table.

``--map`` and ``--bag`` run steps 4-5 on a user's own map and drive instead. Child processes
are the same commands a user types (``vpr-ros play``/``record``), started in their own process
groups with their output in ``DIR/logs/``.
"""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any

from vpr_ros.demo.config import DemoConfig
from vpr_ros.demo.inputs import bag_info, render_map_pass, write_query_bag
from vpr_ros.demo.mapping import build_demo_map
from vpr_ros.demo.node_run import run_node_on_bag
from vpr_ros.demo.steps import Steps
from vpr_ros.demo.summary import evaluate, summary_table
from vpr_ros.errors import ConfigError, DataError
from vpr_ros.files import write_json


def run_demo(out: str | Path, config: DemoConfig | None = None, *,
             map_path: str | Path | None = None, bag: str | Path | None = None,
             progress: bool = True, stream: Any = None) -> dict[str, Any]:
    """Run the whole demo into ``out``; return the summary (also ``out/demo.json``).

    Args:
        out: output folder; the demo's own files in it are replaced on a rerun.
        config: demo settings.
        map_path: a user's map: skips rendering, build-map, fit-geowarp and calibrate.
        bag: a user's drive with ``config.image_topic`` and ``config.truth_topic`` (needs
            ``map_path``); skips writing the synthetic query bag.
        progress: tqdm bars.
        stream: where the progress lines go (stdout).
    """
    config = config or DemoConfig()
    out = Path(out).absolute()
    if bag is not None and map_path is None:
        raise ConfigError('--bag needs --map: the map of the place where the bag was recorded')
    for given, what in ((map_path, 'map'), (bag, 'bag')):
        if given is not None and not Path(given).exists():
            raise DataError(f'{what} {given} does not exist')
    out.mkdir(parents=True, exist_ok=True)
    total = 4 + (map_path is None) * 4 + (bag is None)
    steps = Steps(total, stream)
    started = time.perf_counter()
    summary: dict[str, Any] = {'out': str(out), 'config': config.to_dict()}
    route = None
    if map_path is None or bag is None:
        from vpr_ros.synth import SynthRoute
        route = SynthRoute(config.synth)
    if map_path is None:
        map_path = out / 'route.vprmap'
        c = config.synth
        with steps.step('render_map', f'render the map pass: {c.frames} frames every '
                        f'{c.spacing_m:g} m, {c.image_size[0]}x{c.image_size[1]} (seed '
                        f'{c.seed})'):
            csv = render_map_pass(route, out / 'route', progress)
        summary.update(build_demo_map(csv, map_path, config, steps, progress, route))
    map_path = Path(map_path).absolute()
    if bag is None:
        bag = out / 'query_bag'
        with steps.step('query_bag', f'render the query pass into {bag.name} (mcap): '
                        f'{config.image_topic} + truth {config.truth_topic}'):
            meta = write_query_bag(route, bag, config, progress)
    else:
        bag = Path(bag).absolute()
        meta = bag_info(bag, config)
    summary['bag'] = {'path': str(bag), **meta}
    record = out / 'recording'
    summary['run'] = run_node_on_bag(map_path, bag, record, out / 'logs', config, meta, steps,
                                     progress)
    report = out / 'report'
    with steps.step('eval', f'eval-bag {record.name} -> {report}'):
        metrics = evaluate(record, report, config, progress)
    summary.update(map=str(map_path), recording=str(record), report=str(report / 'report.md'),
                   metrics=metrics, timings_s=steps.timings_s,
                   total_s=round(time.perf_counter() - started, 1))
    write_json(out / 'demo.json', summary, default=str, allow_nan=True)
    steps.say('\n' + summary_table(metrics))
    steps.say('\nsteps: ' + ', '.join(f'{k} {v:.0f} s' for k, v in steps.timings_s.items())
              + f'; total {summary["total_s"]:.0f} s')
    steps.say(f'report: {summary["report"]}')
    return summary
