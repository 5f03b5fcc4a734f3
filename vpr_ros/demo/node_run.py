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

"""The node on a bag: start it (``ros2 launch`` or its module), record, play, stop everything.

Header stamps are mapped onto the playback clock (``play --restamp``), so the recorded latency
is real; each child runs in its own process group with its output in ``DIR/logs/``.
"""

from __future__ import annotations

from pathlib import Path
import re
import shutil
import sys
import time
from typing import Any

from vpr_ros.demo.config import DemoConfig, FIX_TOPIC, READY_NODE, READY_RECORDER
from vpr_ros.demo.processes import Child, child_env
from vpr_ros.demo.steps import Steps
from vpr_ros.errors import ConfigError, DataError


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
