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

"""Shared pytest setup: isolate ROS 2 traffic of this run and offer a device option."""

from __future__ import annotations

import os
from pathlib import Path
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


def pytest_addoption(parser):
    parser.addoption('--device', default='cpu',
                     help='torch device for model tests: cpu (default) or cuda')


def pytest_configure(config):
    """Give this test run its own DDS domain before anything imports rclpy.

    The domain id is unique per run (1-100, from the process id) unless
    VPR_ROS_TEST_DOMAIN_ID pins it; discovery stays on localhost, so parallel runs on one
    machine and other robots on the network never see the test traffic.
    """
    domain = os.environ.get('VPR_ROS_TEST_DOMAIN_ID') or str(1 + os.getpid() % 100)
    os.environ['ROS_DOMAIN_ID'] = domain
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.pop('ROS_LOCALHOST_ONLY', None)  # ignored by Kilted; do not let it mislead
    # ament_index needs the prefix where the wheels (and pip's data_files) put share/.
    prefix = sys.prefix
    if (Path(prefix) / 'share' / 'ament_index').is_dir():
        paths = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
        if prefix not in paths:
            os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join([prefix, *paths])


@pytest.fixture
def vpr_ros_logs_propagate(monkeypatch):
    """Let every ``vpr_ros`` logger reach ``caplog``'s handler on the root logger (ask for it).

    Importing ``launch`` (the launch-file tests do) installs its logger class, whose loggers
    do not propagate: a ``vpr_ros`` module first imported after that would log past caplog.
    """
    import logging

    for name in ['vpr_ros', *[n for n in logging.root.manager.loggerDict
                              if n.startswith('vpr_ros.')]]:
        monkeypatch.setattr(logging.getLogger(name), 'propagate', True)


@pytest.fixture(scope='session')
def device(request) -> str:
    """Return the torch device model tests run on (``--device``)."""
    return request.config.getoption('--device')


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """Return ../shared/data beside the repository; skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'{SHARED_DATA} not found')
    return SHARED_DATA


@pytest.fixture
def rclpy_context():
    """Yield an initialised rclpy context of its own, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture(scope='session')
def tiny_map(tmp_path_factory):
    """Return a calibrated ``tiny-test`` map of a synthetic route (built once per run, ~30 s)."""
    from node_helpers import build_tiny_map

    return build_tiny_map(tmp_path_factory.mktemp('tiny_map'))
