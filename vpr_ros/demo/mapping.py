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

"""The demo's map: ``build-map``, ``fit-geowarp`` and ``calibrate`` on the rendered map pass.

GeoWarp's L_ss needs no labels (Berton et al., ICCV 2021, arXiv 2109.09827, §3.4), so the fit
runs on the map's own thumbnails; the calibration uses a second rendered drive of the street
(what ``calibrate --queries`` does with a second drive on a robot) or pseudo-queries made from
the map images (``calibrate_on: pseudo``).
"""

from __future__ import annotations

import gc
from pathlib import Path
import shutil
from typing import Any

from vpr_ros.demo.config import DemoConfig
from vpr_ros.demo.steps import Steps


def build_demo_map(csv: Path, map_path: Path, config: DemoConfig, steps: Steps,
                   progress: bool = True, route: Any = None) -> dict[str, Any]:
    """build-map, fit-geowarp and calibrate, each as its own step; return what they report.

    ``route`` renders the calibration drive (``calibrate_on: drive``); without it the map is
    calibrated on pseudo-queries.
    """
    from vpr_ros.calibrate import calibrate_map
    from vpr_ros.calibration import CalibrationConfig, store_calibration
    from vpr_ros.localizer import Localizer, LocalizerConfig
    from vpr_ros.mapdb import build_map, BuildConfig
    from vpr_ros.mapdb.sources import source_images
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
            f"{min(config.pseudo_queries, entries)} pseudo-queries from the map's source images")
    with steps.step('calibrate', f'calibrate the covariance ({what})'):
        queries = None
        if on_drive:
            frames = list(route.query_pass(drive=1))
            queries = ([f.image for f in frames], [[f.lat, f.lon] for f in frames])
        localizer = Localizer.open(map_path, LocalizerConfig(), device=config.device)
        cal, report = calibrate_map(
            localizer, CalibrationConfig(pseudo_queries=config.pseudo_queries),
            queries=queries, map_images=None if on_drive else source_images(localizer.map),
            progress=progress)
        store_calibration(localizer.map, cal, report)
        cov = report.get('nees_coverage_cv') or report['nees_coverage']
        steps.say(f'  calibration error median {report["error_m"]["median"]:.2f} m, '
                  f'p95 {report["error_m"]["p95"]:.2f} m; coverage at 1/2/3 sigma '
                  + ' / '.join(f'{100 * v:.0f} %' for v in cov.values()))
        fusion = report.get('rerank_fusion') or {}
        if fusion.get('mode_choice'):
            steps.say(f'  GeoWarp mode: {fusion["mode_choice"]["reason"]}')
        steps.say(f'  between map frames: {report["subspacing"]["reason"]}')
        info['calibration'] = report
        del localizer
        gc.collect()
    return info
