"""Executors that stop in order, so callbacks running at shutdown end cleanly.

rclpy's (Kilted) ``MultiThreadedExecutor.shutdown()`` destroys the executor's guard condition and only
then drains its worker pool. A callback waiting for a worker thread at that moment (while others run an
inference or a render) fails before it runs, with ``InvalidHandle: cannot use Destroyable because
destruction was requested``, printed as "exception was never retrieved" or raised in the spinning
thread: its message or timer tick is lost. A shutdown from another thread may also close the pool
while ``spin`` is still handing it work (ros2/rclpy#1724).

:class:`OrderlyExecutor` stops in three steps: ``spin`` returns (it spins until a stop future is
done), the callbacks already handed to the worker threads finish, then rclpy's own shutdown runs.
:class:`OrderlySingleThreadedExecutor` stops the same way; it runs every callback in the spinning thread,
so none is left once ``spin`` has returned. :func:`orderly_executor` picks one by thread count and
:func:`spinning_in_background` is the usual way to run one next to other work.

Why a single thread for the nodes of the command path (adapter_node, control_mux): their callbacks are
short and never block, and rclpy's Python ``MultiThreadedExecutor`` costs most of a 100 Hz node's CPU (a
wait set rebuilt and a thread-pool hand-off per callback) and may spin at 100 % of a core while its timer
falls behind (ros2/rclpy#1223). The adapter at 100 Hz on this 2-core machine (bench/jitter_bench.py,
bench/RESULTS.md): command interval p99 +286 ms over its 10 ms period alone and +27 ms beside an inferring
policy node on 2 threads, +1 ms and +5 ms on one. rclpy's ``EventsExecutor`` (Kilted
``rclpy.experimental``) ran no timer and answered no service here, so it is not used.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.task import Future


class _StopsInOrder:
    """The ordered ``spin``/``shutdown`` shared by both executors (a mixin before the rclpy executor)."""

    def __init__(self, **executor_options: object) -> None:
        super().__init__(**executor_options)
        self._stop_requested: Future = Future()
        self._spin_returned = threading.Event()
        self._spin_returned.set()

    def spin(self) -> None:
        """Execute callbacks until :meth:`shutdown` (or the context shuts down)."""
        self._spin_returned.clear()
        try:
            self.spin_until_future_complete(self._stop_requested)
        finally:
            self._spin_returned.set()

    def shutdown(self, timeout_sec: float | None = None, **options: object) -> bool:
        """Stop ``spin``, let the callbacks in flight finish, then shut down as rclpy does. ``timeout_sec``
        bounds the wait for ``spin`` to return; returns False if it did not."""
        if not self._stop_requested.done():
            self._stop_requested.set_result(None)  # wakes the wait set: spin returns
        spin_returned = self._spin_returned.wait(timeout_sec)
        if spin_returned:
            self._finish_running_callbacks()
        return super().shutdown(timeout_sec, **options) and spin_returned

    def _finish_running_callbacks(self) -> None:
        """Wait for the callbacks started before ``spin`` returned (none in a single-threaded executor)."""


class OrderlyExecutor(_StopsInOrder, MultiThreadedExecutor):
    """``MultiThreadedExecutor`` whose ``shutdown`` stops ``spin`` and waits for running callbacks first."""

    def __init__(self, num_threads: int | None = None) -> None:
        super().__init__(num_threads=num_threads)

    def _finish_running_callbacks(self) -> None:
        self._executor.shutdown(wait=True)  # rclpy's worker pool: no public way to drain it first


class OrderlySingleThreadedExecutor(_StopsInOrder, SingleThreadedExecutor):
    """``SingleThreadedExecutor`` whose ``shutdown`` stops ``spin`` first (its callbacks run in that thread)."""


def orderly_executor(threads: int | None = None) -> Executor:
    """An executor that stops in order: single-threaded for ``threads == 1``, else an :class:`OrderlyExecutor`
    with ``threads`` workers (``None``: rclpy's default, the CPU count)."""
    return OrderlySingleThreadedExecutor() if threads == 1 else OrderlyExecutor(num_threads=threads)


@contextmanager
def spinning_in_background(executor: Executor, thread_name: str, timeout_s: float = 5.0) -> Iterator[Executor]:
    """``executor`` spinning in a daemon thread for the ``with`` block, then shut down in order; the
    caller destroys its nodes afterwards, when no callback can run any more."""
    thread = threading.Thread(target=executor.spin, daemon=True, name=thread_name)
    thread.start()
    try:
        yield executor
    finally:
        executor.shutdown(timeout_sec=timeout_s)
        thread.join(timeout=timeout_s)
