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

"""The verbs of ``vpr-ros``: one module per verb, ``vpr_ros/commands/<verb>.py``.

Each module has ``add_arguments(parser)`` and ``main(args) -> int`` and stays thin: build the
parser, turn the arguments into a config, call the library, print. The verb table is
:data:`vpr_ros.cli.COMMANDS`; shared options (``--device``, ``--model``, ``--config``, ...)
come from :mod:`vpr_ros.commands._args`. A verb module imports nothing heavy (torch, rclpy)
at the top that the verb's ``--help`` does not need.
"""
