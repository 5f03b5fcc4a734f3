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

"""Short CPU fine-tune of the default model on the Corridor refs; query recall before/after.

The Corridor set has no GPS: ref frame i gets a synthetic position i metres east of an origin
(the frames are ~1 m apart along one corridor, ../shared/data/corridor/README.md). The refs are
written as a CSV source, split by place into train and val (whole 20 m cells), and the model is
trained with ``vpr-ros train``'s library entry point; the queries are never used for training.
Recall@1/5/10 of the queries against all refs (ground_truth.csv, ``vpr-ros eval``'s protocol)
is measured for the starting model, best.pt (chosen on the val refs) and last.pt.

    OMP_NUM_THREADS=2 bash scripts/env.sh run python bench/train_corridor.py --epochs 2
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import sys
import tempfile
import time

from _common import add_json, bench_parser, set_torch_threads, write_json
import pymap3d
from vpr_ros.evaluation.retrieval import evaluate_retrieval, open_vprbench, RetrievalEvalConfig
from vpr_ros.models import DEFAULT_MODEL
from vpr_ros.training.data import AugmentConfig, DataConfig
from vpr_ros.training.mining import MiningConfig
from vpr_ros.training.trainer import train, TrainConfig

CORRIDOR = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'corridor'
ORIGIN = (47.3769, 8.5417, 408.0)


def write_refs_csv(root: Path, work: Path) -> Path:
    """Copy the refs into ``work`` with a CSV: ref i at i metres east of ORIGIN."""
    refs = sorted((root / 'ref').glob('*.jpg'))
    (work / 'ref').mkdir(parents=True, exist_ok=True)
    rows = ['image,lat,lon,alt']
    for i, path in enumerate(refs):
        shutil.copy(path, work / 'ref' / path.name)
        lat, lon, alt = pymap3d.enu2geodetic(float(i), 0.0, 0.0, *ORIGIN)
        rows.append(f'ref/{path.name},{lat:.9f},{lon:.9f},{alt:.3f}')
    csv = work / 'refs.csv'
    csv.write_text('\n'.join(rows) + '\n')
    return csv


def query_recall(model: str, dataset) -> dict[str, float]:
    """Recall@1/5/10 (percent) of the Corridor queries on all refs."""
    config = RetrievalEvalConfig(model=model, device='cpu', recall_values=(1, 5, 10))
    result = evaluate_retrieval(dataset, config, progress=False)
    return {f'R@{n}': round(r, 2) for n, r in result.recall.as_dict().items()}


def main(argv=None) -> int:
    """Fine-tune, then print recall before/after and the time taken."""
    parser = bench_parser(__doc__)
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--negatives', type=int, default=5)
    parser.add_argument('--lr', type=float, default=1e-5)
    parser.add_argument('--out', type=Path, default=Path('runs/corridor'))
    add_json(parser, 'write the numbers here')
    args = parser.parse_args(argv)
    set_torch_threads(2)
    dataset = open_vprbench(CORRIDOR)
    rows: dict[str, object] = {'model': args.model, 'epochs': args.epochs, 'lr': args.lr,
                               'negatives': args.negatives}
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_refs_csv(CORRIDOR, Path(tmp))
        t0 = time.perf_counter()
        rows['before'] = query_recall(args.model, dataset)
        rows['eval_s'] = round(time.perf_counter() - t0, 1)
        print('before:', rows['before'], file=sys.stderr)
        config = TrainConfig(
            model=args.model, out_dir=str(args.out), device='cpu', epochs=args.epochs,
            batch_size=4, lr=args.lr, val_positive_m=2.0, best_metric='R@1',
            data=DataConfig(database=str(csv), val_fraction=0.2, split_cell_m=20.0,
                            split_gap_m=3.0),
            mining=MiningConfig(positive_m=2.0, negative_m=25.0, negatives=args.negatives,
                                batch_negatives=1, cache_refresh=1000),
            augment=AugmentConfig())
        t0 = time.perf_counter()
        result = train(config)
        rows['train_s'] = round(time.perf_counter() - t0, 1)
        rows['history'] = result.history
    rows['after_best'] = query_recall(str(result.best), dataset)
    rows['after_last'] = query_recall(str(result.last), dataset)
    print(json.dumps(rows, indent=2, default=float))
    write_json(args.json, rows, default=float)
    return 0


if __name__ == '__main__':
    sys.exit(main())
