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

"""The versions and the device this installation would use (``vpr-ros doctor`` prints them)."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys

from vpr_ros.version import __version__

# (label, import name, distribution names to ask for a version, in order)
_PACKAGES = (
    ('torch', 'torch', ('torch',)),
    ('torchvision', 'torchvision', ('torchvision',)),
    ('kornia', 'kornia', ('kornia',)),
    ('faiss', 'faiss', ('faiss-cpu', 'faiss-gpu', 'faiss')),
    ('numpy', 'numpy', ('numpy',)),
    ('opencv', 'cv2', ('opencv-python-headless', 'opencv-python')),
    ('rosbags', 'rosbags', ('rosbags',)),
    ('rclpy', 'rclpy', ('ros-rclpy', 'rclpy')),
    # Optional: the onnxruntime / tensorrt backends (vpr-ros export).
    ('onnxruntime', 'onnxruntime', ('onnxruntime', 'onnxruntime-gpu')),
)


def _version(import_name: str, dists: tuple[str, ...]) -> str:
    try:
        module = importlib.import_module(import_name)
    except Exception as exc:  # noqa: BLE001 - report any import failure, never crash
        return f'NOT AVAILABLE ({type(exc).__name__}: {exc})'
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return str(getattr(module, '__version__', 'unknown version'))


def collect() -> dict[str, str]:
    """Gather the report as an ordered mapping (also used by tests and diagnostics)."""
    report = {
        'vpr_ros': __version__,
        'python': f'{platform.python_version()} ({sys.executable})',
        'platform': platform.platform(),
    }
    for label, import_name, dists in _PACKAGES:
        report[label] = _version(import_name, dists)
    try:
        from rclpy.utilities import get_rmw_implementation_identifier
        report['rmw'] = get_rmw_implementation_identifier()
    except Exception as exc:  # noqa: BLE001
        report['rmw'] = f'NOT AVAILABLE ({type(exc).__name__}: {exc})'
    try:
        import torch

        from vpr_ros.device import describe_device, resolve_device
        report['cuda available'] = str(torch.cuda.is_available())
        report['cuda devices'] = str(torch.cuda.device_count())
        report['device (auto)'] = describe_device(resolve_device('auto'))
    except Exception as exc:  # noqa: BLE001
        report['device (auto)'] = f'NOT AVAILABLE ({type(exc).__name__}: {exc})'
    from vpr_ros.runtime.backends import available_providers
    report['onnxruntime providers'] = ', '.join(available_providers()) or '(none)'
    report['AMENT_PREFIX_PATH'] = os.environ.get('AMENT_PREFIX_PATH', '(not set)')
    report['ROS_DOMAIN_ID'] = os.environ.get('ROS_DOMAIN_ID', '(not set: 0)')
    return report
