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

"""The ``vpr-ros`` command line: version, help, doctor, error handling."""

from __future__ import annotations

import importlib
from pathlib import Path
import re
import shutil
import subprocess
import sys

import pytest

import vpr_ros
from vpr_ros import cli, doctor


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(['--version'])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f'vpr_ros {vpr_ros.__version__}'


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert 'doctor' in capsys.readouterr().out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(['no-such-command'])
    assert exc.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_doctor_reports_the_stack(capsys):
    assert cli.main(['doctor']) == 0
    out = capsys.readouterr().out
    report = dict(re.split(r'\s{2,}', line, maxsplit=1) for line in out.splitlines())
    import faiss
    import torch

    assert report['torch'] == torch.__version__.split('+')[0]
    assert report['faiss'] == faiss.__version__
    assert not report['rclpy'].startswith('NOT AVAILABLE')
    assert report['rmw'] == 'rmw_fastrtps_cpp'
    auto = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert report['device (auto)'].startswith(auto)
    import onnxruntime

    assert report['onnxruntime'] == onnxruntime.__version__
    assert 'CPUExecutionProvider' in report['onnxruntime providers']


def test_doctor_flags_missing_parts(monkeypatch, capsys):
    monkeypatch.setattr(doctor, '_PACKAGES', doctor._PACKAGES + (
        ('faiss', 'no_such_module_anywhere', ('nope',)),))
    assert cli.main(['doctor']) == 1
    assert 'missing required parts: faiss' in capsys.readouterr().err


def test_console_script_installed():
    exe = shutil.which('vpr-ros')
    if exe is None:
        pytest.skip('vpr-ros console script not on PATH (package not installed)')
    out = subprocess.run([exe, '--version'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f'vpr_ros {vpr_ros.__version__}'


@pytest.mark.parametrize('command, option', [('localize', '--map'), ('build-map', '--out'),
                                             ('calibrate', '--queries'),
                                             ('calibrate', '--source')])
def test_command_help_lists_its_options(command, option, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, '--help'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: vpr-ros {command}') and option in out


COMMANDS_DIR = Path(vpr_ros.__file__).parent / 'commands'


def test_every_verb_is_one_module_in_commands():
    modules = {p.stem for p in COMMANDS_DIR.glob('*.py') if not p.stem.startswith('_')}
    assert modules == {verb.replace('-', '_') for verb in cli.COMMANDS}
    for verb in cli.COMMANDS:
        module = importlib.import_module(cli.command_module(verb))
        assert callable(module.add_arguments) and callable(module.main), verb


@pytest.mark.parametrize('verb', sorted(cli.COMMANDS))
def test_every_verb_answers_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([verb, '--help'])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f'usage: vpr-ros {verb}')


def test_verb_modules_import_no_ros():
    # play and record import rclpy when they run, not when their module (or --help) loads.
    names = ', '.join(cli.command_module(v) for v in cli.COMMANDS)
    code = (f'import sys, {names}; bad = [m for m in sys.modules if m.startswith(("rclpy", '
            '"sensor_msgs"))]; print(bad); sys.exit(1 if bad else 0)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_device_option_is_one_text(capsys):
    texts = set()
    for verb in ('localize', 'calibrate', 'build-map', 'adapt', 'describe', 'eval'):
        with pytest.raises(SystemExit):
            cli.main([verb, '--help'])
        out = ' '.join(capsys.readouterr().out.split())
        texts.add(re.search(r'--device DEVICE (torch device: [^)]*\))', out).group(1))
    assert texts == {'torch device: auto, cpu, cuda or cuda:N (default auto)'}
