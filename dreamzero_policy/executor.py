"""A MultiThreadedExecutor that stops in order, so callbacks running at shutdown end cleanly.

rclpy's (Kilted) ``MultiThreadedExecutor.shutdown()`` destroys the executor's guard condition and only
then drains its worker pool. A callback waiting for a worker thread at that moment (while others run an
inference or a render) fails before it runs, with ``InvalidHandle: cannot use Destroyable because
destruction was requested``, printed as "exception was never retrieved" or raised in the spinning
thread: its message or timer tick is lost. A shutdown from another thread may also close the pool
while ``spin`` is still handing it work (ros2/rclpy#1724).

:class:`OrderlyExecutor` stops in three steps: ``spin`` returns (it spins until a stop future is
done), the callbacks already handed to the worker threads finish, then rclpy's own shutdown runs.
:func:`spinning_in_background` is the usual way to run one next to other work.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rclpy.executors import MultiThreadedExecutor
from rclpy.task import Future


class OrderlyExecutor(MultiThreadedExecutor):
    """``MultiThreadedExecutor`` whose ``shutdown`` stops ``spin`` and waits for running callbacks first."""

    def __init__(self, num_threads: int | None = None) -> None:
        super().__init__(num_threads=num_threads)
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

    def shutdown(self, timeout_sec: float | None = None, *, wait_for_threads: bool = True) -> bool:
        """Stop ``spin``, let the callbacks in flight finish, then shut down as rclpy does. ``timeout_sec``
        bounds the wait for ``spin`` to return; returns False if it did not."""
        if not self._stop_requested.done():
            self._stop_requested.set_result(None)  # wakes the wait set: spin returns
        spin_returned = self._spin_returned.wait(timeout_sec)
        if spin_returned:
            self._executor.shutdown(wait=True)  # rclpy's worker pool: no public way to drain it first
        return super().shutdown(timeout_sec, wait_for_threads=wait_for_threads) and spin_returned


@contextmanager
def spinning_in_background(executor: OrderlyExecutor, thread_name: str,
                           timeout_s: float = 5.0) -> Iterator[OrderlyExecutor]:
    """``executor`` spinning in a daemon thread for the ``with`` block, then shut down in order; the
    caller destroys its nodes afterwards, when no callback can run any more."""
    thread = threading.Thread(target=executor.spin, daemon=True, name=thread_name)
    thread.start()
    try:
        yield executor
    finally:
        executor.shutdown(timeout_sec=timeout_s)
        thread.join(timeout=timeout_s)
