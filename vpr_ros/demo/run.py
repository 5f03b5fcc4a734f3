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

"""``vpr-ros demo``: a synthetic geotagged route end to end, through the real ROS 2 node.

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

import contextlib
from dataclasses import dataclass
import gc
import json
import os
from pathlib import Path
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Iterator, Sequence

from vpr_ros.config import Config, option
from vpr_ros.errors import ConfigError, DataError
from vpr_ros.synth import SynthConfig

LAUNCHERS = ('auto', 'launch', 'direct')
CALIBRATE_ON = ('drive', 'pseudo')
FIX_TOPIC = '/vpr/fix'
READY_NODE = 'localizer started on'
READY_RECORDER = f'subscribed to {FIX_TOPIC}'


@dataclass(frozen=True)
class DemoConfig(Config):
    """Settings of ``vpr-ros demo`` (the defaults take under 10 minutes on 2 CPU cores)."""

    synth: SynthConfig = option(
        SynthConfig(seed=1), 'synthetic route (frames per pass, spacing, image size, query '
        'perturbations); seed 1 is a route the default model localises well')
    model: str = option('effnet-lite0-gem', 'descriptor model of the map (preset, YAML or '
                        'checkpoint)')
    device: str = option('auto', 'torch device of every step: auto, cpu, cuda, cuda:N')
    geowarp_iterations: int = option(30, 'GeoWarp fit steps (a short CPU fit; the paper '
                                         'trains 50 000 on a GPU)', min=1)
    geowarp_batch_size: int = option(8, 'GeoWarp pairs per loss per step', min=1)
    calibrate_on: str = option('drive', 'calibration frames: a second rendered drive of the '
                               'street (drive), or pseudo-queries made from the map images '
                               '(pseudo; much harder than the query pass on this route, so '
                               'the sigmas come out too large)', choices=CALIBRATE_ON)
    pseudo_queries: int = option(200, 'map images turned into calibration pseudo-queries '
                                 '(calibrate_on: pseudo)', min=10)
    rate: float = option(1.0, 'playback speed factor of the query bag', min=0.05, max=20.0)
    launcher: str = option('auto', 'how the node starts: launch (ros2 launch), direct (the '
                           'node module as a process) or auto (launch when ros2 is on PATH)',
                           choices=LAUNCHERS)
    image_topic: str = option('/camera/image_raw', 'camera topic of the bag')
    truth_topic: str = option('/gnss/fix', 'ground-truth NavSatFix topic of the bag')
    startup_timeout_s: float = option(300.0, 'longest wait for the node to load its map (s)',
                                      min=1.0)
    settle_s: float = option(3.0, 'wait after the bag ends so the last frames are localised '
                             '(s)', min=0.0)
    stop_timeout_s: float = option(20.0, 'wait per process after SIGINT before SIGTERM, then '
                                   'SIGKILL (s)', min=1.0)


# -- progress ------------------------------------------------------------------------------

class Steps:
    """Numbered progress lines with the time of every step (``timings_s``)."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = total
        self.done = 0
        self.timings_s: dict[str, float] = {}
        self.stream = stream or sys.stdout

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, key: str, title: str) -> Iterator[None]:
        self.done += 1
        self.say(f'\n[{self.done}/{self.total}] {title}')
        start = time.perf_counter()
        yield
        took = time.perf_counter() - start
        self.timings_s[key] = round(took, 1)
        self.say(f'[{self.done}/{self.total}] done in {took:.1f} s')


# -- child processes -----------------------------------------------------------------------

def _default_sigint() -> None:
    """Undo an inherited SIG_IGN for SIGINT (a background job of a non-interactive shell).

    Python installs its KeyboardInterrupt handler only when SIGINT is not ignored at start, so
    without this a demo started with ``&`` from a script gives children that ignore SIGINT.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    """A child in its own process group, output to a log file, stopped with SIGINT.

    ``ros2 launch`` must be stopped with SIGINT (SIGTERM can leave its node running,
    ros2/launch#666); what ignores it gets SIGTERM, then SIGKILL, sent to the whole group.
    """

    def __init__(self, name: str, cmd: Sequence[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log = log
        self._file = open(log, 'wb')
        self.popen = subprocess.Popen(self.cmd, stdout=self._file, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True,
                                      preexec_fn=_default_sigint)

    def output(self) -> str:
        if not self._file.closed:
            self._file.flush()
        return self.log.read_text(errors='replace')

    def tail(self, lines: int = 25) -> str:
        return '\n'.join(self.output().splitlines()[-lines:])

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_for_output(self, text: str, timeout_s: float) -> None:
        """Wait until ``text`` appears; a DataError with the log tail on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if not self.running():
                raise DataError(f'{self.name} exited with {self.popen.returncode} before '
                                f'"{text}" (log {self.log}):\n{self.tail()}')
            if time.monotonic() > deadline:
                raise DataError(f'{self.name}: no "{text}" within {timeout_s:.0f} s (log '
                                f'{self.log}):\n{self.tail()}')
            time.sleep(0.2)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float) -> int:
        """SIGINT the leader and wait; then SIGTERM, then SIGKILL the group. Return the exit code.

        SIGINT goes to the leader only: ``ros2 launch`` forwards it to its node and relays the
        node's last log lines (a SIGINT to the whole group lets the launch stop relaying
        before the node's shutdown summary is written).
        """
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0),
                            (signal.SIGKILL, 5.0)):
            if not self.running():
                break
            if sig == signal.SIGINT:
                self.popen.send_signal(sig)
            else:
                self._signal(sig)
            try:
                self.popen.wait(wait_s)
            except subprocess.TimeoutExpired:
                print(f'{self.name} ignored {signal.Signals(sig).name} for {wait_s:.0f} s',
                      file=sys.stderr)
        if self.running():  # pragma: no cover - SIGKILL cannot be ignored
            self.popen.wait()
        # Children of the group that outlived their parent (a node after its launch) go too.
        self._signal(signal.SIGKILL)
        self._file.close()
        return self.popen.returncode


def child_env() -> dict[str, str]:
    """Return the environment of the children: ours, localhost-only discovery by default."""
    env = dict(os.environ)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('PYTHONUNBUFFERED', '1')
    return env


def node_command(map_path: Path, config: DemoConfig, compressed: bool) -> tuple[list[str], str]:
    """Return the command that starts the node and its launcher (launch or direct)."""
    launcher = config.launcher
    ros2 = shutil.which('ros2')
    if launcher == 'auto':
        launcher = 'launch' if ros2 else 'direct'
    if launcher == 'launch':
        if ros2 is None:
            raise ConfigError('DemoConfig.launcher: launch needs ros2 on PATH (install the ROS '
                              '2 CLI or use direct)')
        cmd = [ros2, 'launch', 'vpr_ros', 'localize.launch.py', f'map:={map_path}',
               f'device:={config.device}', f'image_topic:={config.image_topic}']
        if compressed:
            cmd.append('compressed:=true')
        return cmd, launcher
    cmd = [sys.executable, '-m', 'vpr_ros.ros.entry', '--ros-args',
           '-p', f'map:={map_path}', '-p', f'device:={config.device}',
           '-r', f'image:={config.image_topic}']
    if compressed:
        cmd += ['-p', 'compressed:=true']
    return cmd, launcher


def _plain(line: str) -> str:
    """Drop terminal colour codes (launch runs the node with emulate_tty) and blanks."""
    return re.sub(r'\x1b\[[0-9;]*m', '', line).strip()


def _cli(*args: Any) -> list[str]:
    return [sys.executable, '-m', 'vpr_ros.cli', *[str(a) for a in args]]


# -- the steps -----------------------------------------------------------------------------

def render_map_pass(route: Any, folder: Path, progress: bool = True) -> Path:
    """Render the map pass into ``folder`` (PNGs + images.csv); return the CSV."""
    from tqdm import tqdm
    from vpr_ros.synth import write_csv_source

    if folder.exists():
        shutil.rmtree(folder)
    frames = tqdm(route.map_pass(), total=route.config.frames, unit='frame',
                  desc='render map pass', disable=not progress)
    return write_csv_source(frames, folder)


def write_query_bag(route: Any, path: Path, config: DemoConfig, progress: bool = True) -> dict:
    """Render the query pass into a rosbag2 (mcap): camera images and the truth NavSatFix.

    Log time = header stamp. The truth starts one frame period before the first image (GNSS
    runs before the camera), which also gives a recorder time to subscribe to the camera.
    """
    import numpy as np
    from tqdm import tqdm
    from vpr_ros.bags import BagWriter, message_class
    from vpr_ros.image_codec import rgb_to_image_fields

    header_cls, time_cls = message_class('std_msgs/msg/Header'), message_class(
        'builtin_interfaces/msg/Time')
    image_cls = message_class('sensor_msgs/msg/Image')
    fix_cls = message_class('sensor_msgs/msg/NavSatFix')
    status_cls = message_class('sensor_msgs/msg/NavSatStatus')

    def header(stamp: int, frame_id: str) -> Any:
        return header_cls(stamp=time_cls(sec=stamp // 10**9, nanosec=stamp % 10**9),
                          frame_id=frame_id)

    def truth(stamp: int, lat: float, lon: float, alt: float) -> Any:
        return fix_cls(header=header(stamp, 'gnss'), status=status_cls(status=0, service=1),
                       latitude=lat, longitude=lon, altitude=alt,
                       position_covariance=np.diag([0.01, 0.01, 0.04]).reshape(-1),
                       position_covariance_type=2)   # diagonal known: a precise reference

    if path.exists():
        shutil.rmtree(path)
    n = 0
    first = last = None
    with BagWriter(path, storage='mcap') as writer:
        frames = tqdm(route.query_pass(), total=route.config.frames, unit='frame',
                      desc='render query pass', disable=not progress)
        for frame in frames:
            if first is None:
                period = int(0.5e9)
                lat, lon, alt = route.position(max(frame.s_m - route.config.spacing_m, 0.0))
                writer.write_message(config.truth_topic, frame.stamp_ns - period,
                                     truth(frame.stamp_ns - period, lat, lon, alt))
                first = frame.stamp_ns
            image = image_cls(header=header(frame.stamp_ns, 'camera'),
                              **rgb_to_image_fields(frame.image, 'rgb8'))
            writer.write_message(config.image_topic, frame.stamp_ns, image)
            writer.write_message(config.truth_topic, frame.stamp_ns,
                                 truth(frame.stamp_ns, frame.lat, frame.lon, frame.alt))
            last = frame.stamp_ns
            n += 1
    return {'frames': n, 'duration_s': (last - first) / 1e9 if n else 0.0}


def bag_info(path: Path, config: DemoConfig) -> dict[str, Any]:
    """Frames, duration and image kind of a user's bag; clear errors for missing topics."""
    from vpr_ros.bags import FIX_TYPE, IMAGE_TYPES, open_reader

    reader = open_reader(path)
    try:
        conns = {c.topic: c for c in reader.connections}
        for topic, kinds in ((config.image_topic, IMAGE_TYPES), (config.truth_topic,
                                                                 (FIX_TYPE,))):
            if topic not in conns or conns[topic].msgtype not in kinds:
                raise DataError(f'{path}: needs {topic} of type {" or ".join(kinds)}; its '
                                f'topics: { {t: c.msgtype for t, c in sorted(conns.items())} }')
        image = conns[config.image_topic]
        duration = (reader.end_time - reader.start_time) / 1e9
    finally:
        reader.close()
    return {'frames': int(image.msgcount), 'duration_s': duration,
            'compressed': image.msgtype.endswith('CompressedImage')}


def build_demo_map(csv: Path, map_path: Path, config: DemoConfig, steps: Steps,
                   progress: bool = True, route: Any = None) -> dict[str, Any]:
    """build-map, fit-geowarp and calibrate, each as its own step; return what they report.

    ``route`` renders the calibration drive (``calibrate_on: drive``); without it the map is
    calibrated on pseudo-queries.
    """
    from vpr_ros.calibration import calibrate_map, CalibrationConfig, store_calibration
    from vpr_ros.localizer import Localizer, LocalizerConfig
    from vpr_ros.mapdb import build_map, BuildConfig
    from vpr_ros.training.geowarp_trainer import fit_geowarp, GeoWarpFitConfig, work_dir_for

    info: dict[str, Any] = {}
    with steps.step('build_map', f'build the map with {config.model} -> {map_path}'):
        for old in (map_path, work_dir_for(map_path)):
            if old.exists():
                shutil.rmtree(old)
        # Chunks of 50: the progress bar moves every 50 images (the map is the same).
        build_map(csv, map_path, BuildConfig(model=config.model, device=config.device,
                                             chunk_size=50),
                  overwrite=True, progress=progress)
    with steps.step('fit_geowarp', f'fit GeoWarp on the map images '
                    f'({config.geowarp_iterations} steps x {config.geowarp_batch_size} pairs)'):
        fit = fit_geowarp(map_path, GeoWarpFitConfig(
            iterations=config.geowarp_iterations, batch_size=config.geowarp_batch_size,
            device=config.device), restart=True, progress=progress)
        steps.say(f'  loss {fit["loss_first10"]:.3f} -> {fit["loss_last10"]:.3f} '
                  f'(first / last 10 steps), {fit["fw_pairs"]} positive pairs')
        info['geowarp'] = fit
    entries = len(csv.read_text().splitlines()) - 1   # calibrate uses at most every entry
    on_drive = config.calibrate_on == 'drive' and route is not None
    what = (f'a second rendered drive, {route.config.frames} frames' if on_drive else
            f'{min(config.pseudo_queries, entries)} pseudo-queries from the map images')
    with steps.step('calibrate', f'calibrate the covariance ({what})'):
        queries = None
        if on_drive:
            frames = list(route.query_pass(drive=1))
            queries = ([f.image for f in frames], [[f.lat, f.lon] for f in frames])
        localizer = Localizer.open(map_path, LocalizerConfig(), device=config.device)
        cal, report = calibrate_map(
            localizer, CalibrationConfig(pseudo_queries=config.pseudo_queries),
            queries=queries, progress=progress)
        store_calibration(localizer.map, cal, report)
        cov = report.get('nees_coverage_cv') or report['nees_coverage']
        steps.say(f'  calibration error median {report["error_m"]["median"]:.2f} m, '
                  f'p95 {report["error_m"]["p95"]:.2f} m; coverage at 1/2/3 sigma '
                  + ' / '.join(f'{100 * v:.0f} %' for v in cov.values()))
        steps.say(f'  between map frames: {report["subspacing"]["reason"]}')
        info['calibration'] = report
        del localizer
        gc.collect()
    return info


def run_node_on_bag(map_path: Path, bag: Path, record_to: Path, logs: Path,
                    config: DemoConfig, bag_meta: dict[str, Any], steps: Steps,
                    progress: bool = True) -> dict[str, Any]:
    """Start the node, record, play the bag, stop everything; return what happened."""
    from tqdm import tqdm

    env = child_env()
    logs.mkdir(parents=True, exist_ok=True)
    if record_to.exists():
        shutil.rmtree(record_to)
    cmd, launcher = node_command(map_path, config, bag_meta.get('compressed', False))
    children: list[Child] = []
    result: dict[str, Any] = {'launcher': launcher, 'node_command': ' '.join(cmd)}
    try:
        with steps.step('node_start', f'start the node ({launcher}): {" ".join(cmd[:5])} ...'):
            node = Child('localizer node', cmd, logs / 'node.log', env)
            children.append(node)
            node.wait_for_output(READY_NODE, config.startup_timeout_s)
            line = next((ln for ln in node.output().splitlines() if READY_NODE in ln), '')
            steps.say(f'  {_plain(line)}')
            recorder = Child('recorder', _cli('record', record_to, '--topics',
                                              config.image_topic, FIX_TOPIC,
                                              config.truth_topic), logs / 'record.log', env)
            children.append(recorder)
            recorder.wait_for_output(READY_RECORDER, 60.0)
        duration = bag_meta['duration_s'] / config.rate
        with steps.step('play', f'play {bag.name} ({bag_meta["frames"]} frames, '
                        f'{duration:.0f} s at rate {config.rate:g}); record {FIX_TOPIC}, '
                        f'the camera and the truth'):
            started = time.monotonic()
            player = Child('player', _cli('play', bag, '--topics', config.image_topic,
                                          config.truth_topic, '--rate', config.rate,
                                          '--restamp', '--wait-for-subscribers', 30,
                                          '--no-progress'), logs / 'play.log', env)
            children.append(player)
            deadline = time.monotonic() + duration + 120.0
            with tqdm(total=round(duration), unit='s', desc='playing',
                      disable=not progress) as bar:
                while player.running():
                    if time.monotonic() > deadline:
                        raise DataError(f'the player did not finish within {duration + 120:.0f}'
                                        f' s (log {player.log}):\n{player.tail()}')
                    if not node.running():
                        raise DataError(f'the node exited during playback (log {node.log}):'
                                        f'\n{node.tail()}')
                    time.sleep(0.5)
                    elapsed = min(bar.total, int(time.monotonic() - started))
                    if elapsed != bar.n:
                        bar.update(elapsed - bar.n)
            if player.popen.returncode != 0:
                raise DataError(f'the player failed (log {player.log}):\n{player.tail()}')
            time.sleep(config.settle_s)
        with steps.step('stop', 'stop the recorder and the node (SIGINT)'):
            result['recorder_rc'] = recorder.stop(config.stop_timeout_s)
            start = time.monotonic()
            result['node_rc'] = node.stop(config.stop_timeout_s)
            result['node_stop_s'] = round(time.monotonic() - start, 2)
            summary = [ln for ln in node.output().splitlines() if 'localizer stopped' in ln]
            result['node_summary'] = _plain(summary[-1]) if summary else ''
            recorded = [ln for ln in recorder.output().splitlines() if 'recorded' in ln]
            result['recorded'] = recorded[-1].strip() if recorded else ''
            steps.say(f'  {result["recorded"]}')
            if result['node_summary']:
                steps.say(f'  {_plain(result["node_summary"])}')
            if result['node_rc'] != 0 or 'Traceback' in node.output():
                raise DataError(f'the node did not stop cleanly (exit {result["node_rc"]}, '
                                f'log {node.log}):\n{node.tail()}')
            if result['recorder_rc'] != 0 or not (record_to / 'metadata.yaml').is_file():
                raise DataError(f'the recorder did not close {record_to} (exit '
                                f'{result["recorder_rc"]}):\n{recorder.tail()}')
    finally:
        for child in reversed(children):
            if child.running():
                child.stop(config.stop_timeout_s)
    return result


def evaluate(record: Path, report_dir: Path, config: DemoConfig,
             progress: bool = True) -> dict[str, Any]:
    """eval-bag on the recording: the report folder; return the metrics."""
    from vpr_ros.evaluation.bag_eval import evaluate_bag
    from vpr_ros.evaluation.report import write_report

    result = evaluate_bag(record, fix_topic=FIX_TOPIC, truth_topic=config.truth_topic,
                          frames=config.image_topic, progress=progress)
    inputs = {'bag': str(record.resolve()), 'fix_topic': result.fix_topic,
              'truth_topic': result.truth_topic, 'frames_topic': result.frames_topic}
    write_report(result.evaluation, report_dir, inputs, overwrite=True)
    return result.evaluation.metrics


def _pct(value: float | None) -> str:
    return '-' if value is None else f'{100 * value:.1f} %'


def _m(value: float | None, unit: str = ' m') -> str:
    return '-' if value is None else f'{value:.2f}{unit}'


def summary_table(metrics: dict[str, Any]) -> str:
    """Format the headline numbers of a report as a Markdown table."""
    err, cov = metrics['horizontal_error_m'], metrics['nees']['coverage']
    ideal = metrics['nees']['ideal_coverage']
    lat = metrics['latency']
    counts = metrics['counts']
    rows = [
        ('frames / valid fixes', f'{counts["frames"]} / {counts["valid_fixes"]}'),
        ('median / p95 error', f'{_m(err["median"])} / {_m(err["p95"])}'),
        *[(f'recall@{d} m', _pct(v)) for d, v in metrics['recall'].items() if d in ('10', '25')],
        ('availability', _pct(metrics['availability'])),
        ('NEES coverage 1/2/3 sigma', ' / '.join(_pct(cov[k]) for k in cov)
         + ' (ideal ' + ' / '.join(f'{100 * ideal[k]:.1f}' for k in ideal) + ')'),
        ('latency p50 / p95', f'{_m(lat["p50_ms"], " ms")} / {_m(lat["p95_ms"], " ms")}'),
        ('jumps', f'{metrics["jumps"]["count"]} of {metrics["jumps"]["pairs"]}'),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f'| {"metric".ljust(width)} | value |', f'|{"-" * (width + 2)}|-------|']
    lines += [f'| {name.ljust(width)} | {value} |' for name, value in rows]
    return '\n'.join(lines)


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
    tmp = out / '.demo.json.tmp'
    tmp.write_text(json.dumps(summary, indent=2, default=str) + '\n')
    os.replace(tmp, out / 'demo.json')
    steps.say('\n' + summary_table(metrics))
    steps.say('\nsteps: ' + ', '.join(f'{k} {v:.0f} s' for k, v in steps.timings_s.items())
              + f'; total {summary["total_s"]:.0f} s')
    steps.say(f'report: {summary["report"]}')
    return summary
