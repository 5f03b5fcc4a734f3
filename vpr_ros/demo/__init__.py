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

"""``vpr-ros demo``: a synthetic geotagged route end to end, through the real ROS 2 node.

- :mod:`~vpr_ros.demo.run`: :func:`run_demo`, the steps in order (README command 1);
- :mod:`~vpr_ros.demo.config`: ``DemoConfig`` and the topics and log lines the steps rely on;
- :mod:`~vpr_ros.demo.inputs`: the rendered map pass, the query bag, or a user's bag checked;
- :mod:`~vpr_ros.demo.mapping`: build-map, fit-geowarp and calibrate on the map pass;
- :mod:`~vpr_ros.demo.node_run`: the node, the recorder and the player as child processes;
- :mod:`~vpr_ros.demo.processes`: a child in its own process group, stopped with SIGINT;
- :mod:`~vpr_ros.demo.steps`: numbered progress lines with the time of each step;
- :mod:`~vpr_ros.demo.summary`: eval-bag on the recording and the summary table.
"""
