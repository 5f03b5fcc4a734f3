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

"""The one place that papers over rclpy differences between ROS 2 distributions.

Tested on Jazzy (rclpy 7.1) and Kilted (rclpy 9.1); written for Humble (rclpy 3.3) too.
``with rclpy.init():`` needs rclpy >= 8 (Jazzy's ``init()`` returns None), so code here and in
the tests opens and closes the context with :func:`ros_session` instead.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions

T = TypeVar('T')


@contextmanager
def ros_session(args: Sequence[str] | None = None, *, context: Context | None = None,
                rclpy_signals: bool = False) -> Iterator[Context]:
    """Initialise ``context`` (the default one when None), yield it, shut it down at exit.

    ``rclpy_signals=False`` (the default) keeps rclpy from installing its SIGINT/SIGTERM
    handlers: processes of this package stop through :class:`vpr_ros.ros.stop.StopSignals`.
    """
    context = context if context is not None else rclpy.get_default_context()
    options = SignalHandlerOptions.ALL if rclpy_signals else SignalHandlerOptions.NO
    rclpy.init(args=list(args) if args is not None else None, context=context,
               signal_handler_options=options)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


def in_own_session(work: Callable[[Context], T], stop: Any, default: T) -> T:
    """Run ``work(context)`` in a ROS session of its own unless ``stop`` was requested first.

    A shutdown from outside (``ExternalShutdownException``) ends it like a stop; ``default`` is
    returned when ``work`` did not run to its end.
    """
    result = default
    try:
        with ros_session() as context:
            if not stop.requested:
                result = work(context)
    except ExternalShutdownException:
        pass
    return result


def spin_until_stopped(executor: Any, stop: Any, context: Context | None = None) -> None:
    """Spin ``executor`` in short slices until ``stop.requested`` or the context shuts down."""
    from vpr_ros.ros.stop import SPIN_SLICE_S

    context = context if context is not None else executor.context
    while not stop.requested and context.ok():
        executor.spin_once(timeout_sec=SPIN_SLICE_S)
