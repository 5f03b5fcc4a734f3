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

"""The demo's evaluation: ``eval-bag`` on the recording, and the headline numbers as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vpr_ros.demo.config import DemoConfig, FIX_TOPIC


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
