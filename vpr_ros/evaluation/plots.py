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

"""PNG plots of an :class:`~vpr_ros.evaluation.metrics.Evaluation` (matplotlib object API).

Every figure is ``FIGSIZE`` inches at ``DPI`` (800 x 600 pixels) so reports line up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vpr_ros.evaluation.metrics import Evaluation

FIGSIZE = (8.0, 6.0)
DPI = 100
MAX_ELLIPSES = 400
PLOTS = {
    'trajectory.png': 'trajectory vs truth in local ENU, with 1-sigma ellipses',
    'error_over_time.png': 'horizontal error over time (NO_FIX marked)',
    'error_cdf.png': 'cumulative distribution of the horizontal error',
    'sigma_vs_error.png': 'reported sigma vs actual error',
    'nees_coverage.png': 'NEES coverage per sigma level vs the 2-D Gaussian ideal',
}


def _figure() -> tuple[Any, Any]:
    """Return a figure of its own and its axes (object API: no pyplot, no global backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    return fig, fig.subplots()


def _finish(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str,
            legend: bool = True) -> None:
    """Label, grid and save a plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(loc='best')
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=DPI)  # no bbox_inches='tight': keep the pixel size fixed


def _ellipse_points(cov: np.ndarray, k: float = 1.0, n: int = 40) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    angle = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    return (vecs @ (k * np.sqrt(np.clip(vals, 0, None))[:, None] * circle)).T


def plot_trajectory(ev: Evaluation, path: Path) -> None:
    """Truth track and valid fixes in ENU, fixes coloured by error, with 1-sigma ellipses."""
    fig, ax = _figure()
    ax.plot(ev.truth_enu[:, 0], ev.truth_enu[:, 1], '-', color='0.3', lw=1.5, label='truth')
    valid = np.flatnonzero(ev.fix_valid)
    step = max(1, len(valid) // MAX_ELLIPSES)
    for i in valid[::step]:
        cov = ev.cov_en[i]
        if np.isfinite(cov).all():
            pts = _ellipse_points(cov) + ev.fix_enu[i, :2]
            ax.plot(pts[:, 0], pts[:, 1], '-', color='tab:blue', lw=0.5, alpha=0.4)
    scored = ev.fix_valid & np.isfinite(ev.error_m)
    if scored.any():
        sc = ax.scatter(ev.fix_enu[scored, 0], ev.fix_enu[scored, 1], c=ev.error_m[scored],
                        cmap='viridis', s=12, label='fixes', zorder=3)
        fig.colorbar(sc, ax=ax, label='horizontal error (m)')
    other = ev.fix_valid & ~scored
    if other.any():
        ax.scatter(ev.fix_enu[other, 0], ev.fix_enu[other, 1], c='tab:red', marker='x', s=12,
                   label='fixes outside truth', zorder=3)
    ax.set_aspect('equal', adjustable='datalim')
    _finish(fig, ax, path, xlabel='east (m)',
            ylabel='north (m)',
            title='trajectory (1-sigma ellipses)')


def plot_error_over_time(ev: Evaluation, path: Path) -> None:
    """Error of each matched fix against time; NO_FIX messages as red ticks at zero."""
    fig, ax = _figure()
    t0 = ev.truth_stamp_ns[0]
    t = (ev.fix_stamp_ns - t0) / 1e9
    scored = np.isfinite(ev.error_m)
    ax.plot(t[scored], ev.error_m[scored], '.-', ms=4, lw=0.8, label='horizontal error')
    no_fix = ~ev.fix_valid
    if no_fix.any():
        ax.plot(t[no_fix], np.zeros(no_fix.sum()), '|', color='tab:red', ms=12, label='NO_FIX')
    for d in ev.config.thresholds_m:
        ax.axhline(d, color='0.5', ls='--', lw=0.8)
    _finish(fig, ax, path, xlabel='time since first truth sample (s)',
            ylabel='horizontal error (m)',
            title='error over time')


def plot_error_cdf(ev: Evaluation, path: Path) -> None:
    """Empirical CDF of the error of matched valid fixes, with the recall thresholds."""
    fig, ax = _figure()
    errors = np.sort(ev.error_m[np.isfinite(ev.error_m)])
    if errors.size:
        ax.step(errors, np.arange(1, errors.size + 1) / errors.size * 100, where='post')
    for d in ev.config.thresholds_m:
        ax.axvline(d, color='0.5', ls='--', lw=0.8)
    ax.set_ylim(0, 100)
    _finish(fig, ax, path, xlabel='horizontal error (m)',
            ylabel='valid fixes with a smaller error (%)',
            title='error CDF (valid matched fixes)', legend=False)


def plot_sigma_vs_error(ev: Evaluation, path: Path) -> None:
    """Plot the reported horizontal sigma against the actual error, with error = k sigma."""
    fig, ax = _figure()
    ok = np.isfinite(ev.error_m) & np.isfinite(ev.sigma_m)
    ax.scatter(ev.sigma_m[ok], ev.error_m[ok], s=10, alpha=0.7)
    top = float(np.nanmax(ev.sigma_m[ok])) if ok.any() else 1.0
    xs = np.array([0.0, top * 1.05 or 1.0])
    for k in (1, 2, 3):
        ax.plot(xs, k * xs, '--', lw=0.8, label=f'error = {k} sigma')
    _finish(fig, ax, path, xlabel='reported sigma (m, largest axis)',
            ylabel='horizontal error (m)',
            title='sigma vs error')


def plot_nees_coverage(ev: Evaluation, path: Path) -> None:
    """Share of fixes within k sigma (NEES <= k^2) against k, with the 2-D Gaussian ideal.

    Above the ideal: the covariance is too large (conservative); below: overconfident.
    """
    fig, ax = _figure()
    curve = ev.metrics['nees']['curve']
    k = np.asarray(curve['sigma'], np.float64)
    ideal = np.asarray(curve['ideal'], np.float64) * 100
    ax.plot(k, ideal, '--', color='0.3', label='ideal 2-D Gaussian (1 - exp(-k^2/2))')
    got = np.array([np.nan if v is None else v for v in curve['coverage']], np.float64) * 100
    if np.isfinite(got).any():
        ax.plot(k, got, 'o-', ms=4, color='tab:blue', label='fixes')
    for level in (1, 2, 3):
        ax.axvline(level, color='0.7', lw=0.8)
    ax.set_ylim(0, 100)
    _finish(fig, ax, path, xlabel='k (sigma)', ylabel='valid fixes with NEES <= k^2 (%)',
            title=f'NEES coverage ({ev.metrics["nees"]["count"]} fixes)')


def write_plots(ev: Evaluation, out_dir: Path) -> list[Path]:
    """Write every plot of :data:`PLOTS` into ``out_dir``; return their paths."""
    makers = {'trajectory.png': plot_trajectory, 'error_over_time.png': plot_error_over_time,
              'error_cdf.png': plot_error_cdf, 'sigma_vs_error.png': plot_sigma_vs_error,
              'nees_coverage.png': plot_nees_coverage}
    paths = []
    for name in PLOTS:
        makers[name](ev, Path(out_dir) / name)
        paths.append(Path(out_dir) / name)
    return paths
