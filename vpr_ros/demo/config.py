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

"""Settings of ``vpr-ros demo`` and the topic names and log lines its steps rely on."""

from __future__ import annotations

from dataclasses import dataclass

from vpr_ros.config import Config, option
from vpr_ros.models import DEFAULT_MODEL
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
    model: str = option(DEFAULT_MODEL, 'descriptor model of the map (preset, YAML or '
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
