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

"""``vpr-ros export MAP [--format onnx] [--fp16]``: the map's networks for a faster runtime."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vpr_ros.commands._args import add_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of export."""
    parser.add_argument('map', type=Path, help='the map (*.vprmap)')
    parser.add_argument('--format', default='onnx', choices=('onnx',),
                        help='export format (onnx: ONNX Runtime, and TensorRT through it)')
    parser.add_argument('--fp16', action='store_true',
                        help='float16 graphs (GPUs: ONNX Runtime CUDA); verified with CUDA when '
                             'onnxruntime-gpu is installed, else on the CPU')
    add_device(parser, default='cpu', what=' of the reference run')
    parser.add_argument('--json', action='store_true', help='print the manifest record')


def main(args: argparse.Namespace) -> int:
    """Export, verify against torch, attach to the map; exit 1 (nothing written) on a failure."""
    from vpr_ros.runtime.export import export_map

    record = export_map(args.map, fp16=args.fp16, device=args.device)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        v = record['verification']
        print(f'{args.map}: ONNX {record["precision"]} export stored (opset {record["opset"]}): '
              f'descriptor cosine >= {v["descriptor_min_cosine"]:.6f}, top-1 identical on '
              f'{v["images"]} images, re-rank scores within {v["rerank_max_abs_diff"]:.1e}')
        for part in ('descriptor', 'local_features', 'geowarp'):
            print(f'  {part}: {record[part + "_file"]}')
    return 0
