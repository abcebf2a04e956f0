"""The lifecycle shape every dreamzero node shares (STYLE.md items 14, 27-32), and the console-script loop.

:class:`ManagedNode` turns the transitions into three hooks: ``_setup()`` on configure (an exception
is logged with its traceback, ``_teardown()`` runs and the node stays re-configurable), ``_teardown()``
on cleanup, shutdown and a failed configure (it must tolerate partial state), and ``_set_active()`` on
activate/deactivate; it logs "activated", "deactivated" and "shut down".

Stopping a process (``dreamzero bringup`` and every node's console script): under :func:`ros_main`
SIGINT and SIGTERM alike only request a stop, which ends the main thread's :meth:`StopRequest.wait`
while the ROS context stays alive; leaving :func:`serving` then shuts the nodes down in order: active
nodes deactivated (the adapter holds), the executor stopped, shutdown transitions, nodes destroyed;
the exit status is 0. :func:`spin_node` is the ``main()`` of every node, built from the two.
"""
from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy.executors import Executor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from dreamzero_policy.executor import orderly_executor, spinning_in_background

# The primary states a shutdown transition starts from (rclpy's trigger_shutdown raises in any other).
_SHUTDOWN_FROM = ("unconfigured", "inactive", "active")
# How often StopRequest.wait looks whether a signal came.
SIGNAL_CHECK_S = 0.1


class ManagedNode(LifecycleNode):
    """A lifecycle node whose subclasses implement ``_setup``, ``_teardown`` and ``_set_active``."""

    def _setup(self) -> None:
        raise NotImplementedError

    def _teardown(self) -> None:
        raise NotImplementedError

    def _set_active(self, active: bool) -> None:
        raise NotImplementedError

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._setup()
        except Exception:  # noqa: BLE001 - a failed configure must leave the node re-configurable
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._set_active(True)
        self.get_logger().info("activated")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._set_active(False)
        self.get_logger().info("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().info("shut down")
        return TransitionCallbackReturn.SUCCESS

    def destroy_entities(self, entities: Iterable) -> None:
        """Destroy subscriptions, services, clients and timers created in ``_setup``."""
        for entity in entities:
            for destroy in (self.destroy_subscription, self.destroy_service, self.destroy_client, self.destroy_timer):
                if destroy(entity):
                    break


def _state(node: LifecycleNode) -> str:
    """The label of ``node``'s current state ("active", "configuring", ...); rclpy has no public getter."""
    return node._state_machine.current_state[1]


class StopRequest:
    """Records the first SIGINT or SIGTERM (as its handler, see :func:`ros_main`); later ones change nothing."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, number: int, frame: object) -> None:
        if self.signal is None:
            self.signal = number

    def wait(self, timeout_s: float | None = None) -> None:
        """Return when a signal has come or ``timeout_s`` has passed. Sleeps in short steps and reads the
        flag in between: the handler runs in the main thread only between two Python instructions, and a
        signal that the kernel delivers to another thread (DDS, executor) does not end a blocking wait."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.signal is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(SIGNAL_CHECK_S)


@contextmanager
def ros_main(args: list[str] | None = None) -> Iterator[StopRequest]:
    """rclpy initialised for a console script's ``with`` block, SIGINT and SIGTERM recorded in the
    :class:`StopRequest` it yields, whose ``wait`` the block ends with.

    rclpy's own handlers (by default on both signals) shut the ROS context down at once, after which a
    node can neither deactivate nor publish its hold, and on SIGTERM nothing else happens: they are not
    installed. A signal that comes during a lifecycle transition (a long configure, or the shutdown
    itself) therefore interrupts nothing; the stop follows once the main thread waits. Further signals
    are ignored, so a terminal's Ctrl-C that ``ros2 launch`` forwards as a second SIGINT cannot cut the
    shutdown short; SIGKILL still ends a process that hangs.
    """
    stop = StopRequest()
    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
            yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def serving(nodes: list[Node], thread_name: str, threads: int | None = None) -> Iterator[Executor]:
    """``nodes`` spinning on an executor that stops in order (:func:`dreamzero_policy.executor.orderly_executor`:
    ``threads`` 1 is single-threaded) in a background thread for the ``with`` block, then shut
    down in order, however the block ends: the active lifecycle nodes deactivated in list order while
    the executor still spins (policy_node stops querying, adapter_node clears its buffer and holds),
    the executor stopped, then each node's shutdown transition and ``destroy_node``."""
    executor = orderly_executor(threads)
    for node in nodes:
        executor.add_node(node)
    try:
        with spinning_in_background(executor, thread_name):
            try:
                yield executor
            finally:
                for node in nodes:
                    if isinstance(node, LifecycleNode) and _state(node) == "active":
                        node.trigger_deactivate()
    finally:  # the executor has stopped and its callbacks have ended: none runs on an entity being destroyed
        for node in nodes:
            if isinstance(node, LifecycleNode) and _state(node) in _SHUTDOWN_FROM:
                node.trigger_shutdown()
            node.destroy_node()


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None, threads: int | None = None) -> None:
    """Console-script body: spin the node on ``threads`` executor threads (1: a single-threaded executor, for
    nodes whose callbacks never block) until SIGINT or SIGTERM, then shut it down in order (deactivate if
    active, shutdown transition, destroy; :func:`serving`) and return."""
    with ros_main(args) as stop, serving([make_node()], "node-executor", threads):
        stop.wait()
