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

"""CPU time of GeoWarp re-ranking per query, both modes, as a ratio to one descriptor forward.

Random-weight descriptor model (architecture only matters for timing), one query against |P|
candidates (default 5), images at the preset's input size. Goals (issue 6): re-rank <= 1.0x one
forward in ``features`` mode and <= 6x in ``image`` mode.

    bash scripts/env.sh run python bench/bench_geowarp.py [--preset effnet-lite0-gem]
"""

from __future__ import annotations


from _common import add_threads, bench_parser, median_ms, set_torch_threads
import torch
from vpr_ros.models import DEFAULT_MODEL
from vpr_ros.models.descriptor import build_model, PRESETS
from vpr_ros.models.geowarp import GeoWarp, GeoWarpConfig


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument('--preset', default=DEFAULT_MODEL, choices=sorted(PRESETS))
    parser.add_argument('--candidates', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=10)
    add_threads(parser, 0, 'torch threads (0: default)')
    args = parser.parse_args()
    set_torch_threads(args.threads)
    config = PRESETS[args.preset].replace(pretrained=False)
    model = build_model(config).eval()
    h, w = config.input_size
    g = torch.Generator().manual_seed(0)
    query = torch.rand(1, 3, h, w, generator=g)
    cands = torch.rand(args.candidates, 3, h, w, generator=g)
    geowarp = GeoWarp(GeoWarpConfig()).eval()
    half = GeoWarp(GeoWarpConfig(image_scale=0.5)).eval()
    with torch.no_grad():
        dense_q = model.dense_features(query)
        dense_p = model.dense_features(cands)
        ms = median_ms({
            'forward': lambda: model(query),
            'features': lambda: geowarp.rerank_scores(dense_q, dense_p, mode='features'),
            'image': lambda: geowarp.rerank_scores(
                dense_q, dense_p, query_image=query, candidate_images=cands,
                dense_fn=model.dense_features, mode='image'),
            'image_half': lambda: half.rerank_scores(
                dense_q, dense_p, query_image=query, candidate_images=cands,
                dense_fn=model.dense_features, mode='image'),
        }, args.repeats)
    forward, feats, image = ms['forward'], ms['features'], ms['image']
    print(f'preset {args.preset}, input {h}x{w}, dense {tuple(dense_q.shape[1:])}, '
          f'|P| = {args.candidates}, torch threads {torch.get_num_threads()}')
    print('| what | ms per query | x one forward |')
    print('|---|---|---|')
    print(f'| descriptor forward (1 image) | {forward:.1f} | 1.00 |')
    print(f'| re-rank, features mode | {feats:.1f} | {feats / forward:.2f} |')
    print(f'| re-rank, image mode | {image:.1f} | {image / forward:.2f} |')
    half_ms = ms['image_half']
    print(f'| re-rank, image mode, image_scale 0.5 | {half_ms:.1f} | {half_ms / forward:.2f} |')


if __name__ == '__main__':
    main()
