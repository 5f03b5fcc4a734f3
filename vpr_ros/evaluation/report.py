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

"""Evaluation output folder: ``metrics.json``, ``report.md``, PNG plots and TUM trajectories.

TUM files (``timestamp x y z qx qy qz qw``, one pose per line, ``#`` comments) hold ENU metres
around the report's origin with an identity orientation; evo reads them
(``evo_ape tum truth_at_fixes.tum fixes.tum``; do not align with ``-a`` when judging absolute
geolocation):

    - ``fixes.tum``: every valid fix;
    - ``truth.tum``: every valid truth sample;
    - ``truth_at_fixes.tum``: the interpolated truth at the stamp of each matched valid fix
      (same timestamps as those fixes, so evo associates them exactly).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vpr_ros.errors import DataError
from vpr_ros.evaluation.metrics import Evaluation, IDEAL_COVERAGE
from vpr_ros.evaluation.plots import PLOTS, write_plots
from vpr_ros.files import staged_dir

TUM_FILES = ('fixes.tum', 'truth.tum', 'truth_at_fixes.tum')


def write_tum(path: Path, stamp_ns: np.ndarray, enu: np.ndarray, comment: str = '') -> None:
    """Write positions as a TUM trajectory (identity orientation)."""
    with open(path, 'w') as f:
        if comment:
            f.write(f'# {comment}\n')
        for stamp, (e, n, u) in zip(stamp_ns, enu):
            sec, nsec = divmod(int(stamp), 1_000_000_000)
            f.write(f'{sec}.{nsec:09d} {e:.4f} {n:.4f} {u:.4f} 0 0 0 1\n')


def _pct(value: float | None) -> str:
    return '–' if value is None else f'{100 * value:.1f} %'


def _num(value: float | None, unit: str = '') -> str:
    return '–' if value is None else f'{value:.2f}{unit}'


# latency kind -> (table row label, protocol sentence); see metrics.compute_metrics
LATENCY_LABELS = {
    'receive': ('latency p50 / p95',
                'Latency = bag receive time − header stamp of the fix messages.'),
    'processing': ('localizer processing time per frame p50 / p95 (offline, not latency)',
                   'Offline run: no receive times exist, so the latency row is the '
                   "localizer's processing time per frame (sum of its stage timings, batched "
                   'descriptor forward shared across the batch); transport and queueing are '
                   'not included.'),
    None: ('latency p50 / p95', 'Latency: not available (the fixes were not recorded live).'),
}


def render_report(metrics: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Markdown report: inputs, a table of metrics, the protocol and the plots."""
    c, err, nees = metrics['counts'], metrics['horizontal_error_m'], metrics['nees']
    latency_label, latency_protocol = LATENCY_LABELS[metrics['latency'].get('kind', 'receive')]
    cfg = metrics['config']
    rows = [
        ('fix messages / valid / NO_FIX', f'{c["fix_messages"]} / {c["valid_fixes"]} / '
                                          f'{c["no_fix_messages"]}'),
        ('camera frames', '–' if c['frames'] is None else str(c['frames'])),
        ('queries in truth coverage', str(c['queries'])),
        ('fixes outside truth', str(c['fixes_outside_truth'])),
        ('horizontal error median / mean / p95',
         f'{_num(err["median"])} / {_num(err["mean"])} / {_num(err["p95"])} m'),
        ('horizontal error rmse / max', f'{_num(err["rmse"])} / {_num(err["max"])} m'),
    ]
    track = metrics.get('track_error_m')
    if track:
        for part in ('along', 'cross'):
            t = track[part]
            rows.append((f'{part}-track error median / p95 / max',
                         f'{_num(t["median"])} / {_num(t["p95"])} / {_num(t["max"])} m'))
    for d, value in metrics['recall'].items():
        rows.append((f'recall@{d} m (precision)',
                     f'{_pct(value)} ({_pct(metrics["precision"][d])})'))
    rows += [
        ('availability', _pct(metrics['availability'])),
        ('NO_FIX rate', _pct(metrics['no_fix_rate'])),
    ]
    for k, value in nees['coverage'].items():
        ideal = IDEAL_COVERAGE[int(k[0])]
        rows.append((f'NEES coverage {k} (ideal {100 * ideal:.1f} %)', _pct(value)))
    rows += [
        ('mean NEES (ideal 2)', _num(nees['mean'])),
        (latency_label, f'{_num(metrics["latency"]["p50_ms"])} / '
                        f'{_num(metrics["latency"]["p95_ms"])} ms'),
        ('jump rate', f'{_pct(metrics["jumps"]["rate"])} ({metrics["jumps"]["count"]} of '
                      f'{metrics["jumps"]["pairs"]} consecutive pairs)'),
    ]
    lines = ['# vpr_ros localisation report', '']
    lines += [f'- {k}: `{v}`' for k, v in inputs.items()]
    o = metrics['origin']
    lines += [f'- ENU origin (first valid truth sample): {o["lat"]:.8f}, {o["lon"]:.8f}, '
              f'{o["alt"]:.2f} m', '', '| metric | value |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in rows]
    lines += [
        '', '## Protocol', '',
        '- Fixes are matched to the truth by `header.stamp`; the truth is interpolated '
        "linearly in local ENU. Fixes outside the truth's time span, or between truth samples "
        f'more than {cfg["truth_max_gap_s"]} s apart, are not matched.',
        '- Errors are horizontal (east, north). Recall@d = valid fixes within d / queries '
        '(camera frames in the truth coverage when the bag has the camera topic, else fix '
        'messages); a NO_FIX or a frame without a fix is a miss. Precision@d divides by the '
        'matched valid fixes.',
        '- Availability = valid fixes / frames (fix messages without a camera topic); NO_FIX '
        'rate = NO_FIX messages / fix messages.',
        '- NEES = eᵀ S⁻¹ e with S the east/north block of the published ENU covariance; '
        'coverage at kσ = share with NEES ≤ k² (ideal 39.3 / 86.5 / 98.9 %); '
        '`nees_coverage.png` draws it for k = 0.25 … 4 against the ideal 1 − exp(−k²/2) '
        '(above: too conservative, below: overconfident).',
        '- Along-track / cross-track error: the error split along the direction of travel of '
        'the truth at the fix (from the truth samples around its stamp) and across it '
        '(absolute values).',
        f'- {latency_protocol}',
        f'- A jump is a pair of consecutive valid fixes further apart than '
        f'{cfg["max_speed_mps"]:g} m/s × dt + {cfg["jump_margin_m"]:g} m.',
        '', '## Plots', '',
    ]
    for name, caption in PLOTS.items():
        lines += [f'![{caption}]({name})', '']
    lines += ['## Files', '', '- [metrics.json](metrics.json)']
    lines += [f'- [{name}]({name})' for name in TUM_FILES]
    lines += ['', 'TUM files are ENU metres around the origin above: '
              '`evo_ape tum truth_at_fixes.tum fixes.tum -r point_distance`.', '']
    return '\n'.join(lines)


def write_report(ev: Evaluation, out_dir: Path, inputs: dict[str, Any], *,
                 overwrite: bool = False) -> Path:
    """Write the whole output folder (atomically: a temp folder renamed into place)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DataError(f'{out_dir} exists already, not overwriting (use --overwrite)')
    if not out_dir.parent.is_dir():
        raise DataError(f'folder {out_dir.parent} of the output does not exist')
    with staged_dir(out_dir, overwrite=overwrite) as tmp:
        document = {'inputs': inputs, **ev.metrics}
        (tmp / 'metrics.json').write_text(json.dumps(document, indent=2) + '\n')
        write_plots(ev, tmp)
        origin = 'ENU metres around lat {:.8f} lon {:.8f} alt {:.3f}'.format(*ev.origin)
        valid = ev.fix_valid
        write_tum(tmp / 'fixes.tum', ev.fix_stamp_ns[valid], ev.fix_enu[valid], origin)
        write_tum(tmp / 'truth.tum', ev.truth_stamp_ns, ev.truth_enu, origin)
        scored = np.isfinite(ev.error_m)
        write_tum(tmp / 'truth_at_fixes.tum', ev.fix_stamp_ns[scored],
                  ev.truth_at_fix_enu[scored], origin)
        (tmp / 'report.md').write_text(render_report(ev.metrics, inputs))
    return out_dir
