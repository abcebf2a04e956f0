"""The worker thread that owns the engine, and the FIFO queue in front of it (training-serving-facts §5.3).

Inference never runs on the event loop (the official and openpi servers block theirs for the whole forward
pass, so pings, handshakes and health checks wait, training-serving-facts §5.3): the loop submits a job
(:meth:`Scheduler.run`, awaited; :meth:`Scheduler.post`, not) and one worker thread runs the jobs in
arrival order. The server holds a session's lock from submission to reply, so a session has at most one
job queued and sessions take turns (FIFO across sessions). A job whose client has gone still runs to the
end; its result is simply not sent. No torch here: jobs are plain callables.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

LOG = logging.getLogger(__name__)
T = TypeVar("T")
_Settle = Callable[[Any, BaseException | None], None]


class Scheduler:
    """One worker thread running jobs first in, first out."""

    def __init__(self, name: str = "dreamzero-engine") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], _Settle] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._pending_lock = threading.Lock()
        self._pending = 0

    @property
    def depth(self) -> int:
        """Jobs queued or running."""
        with self._pending_lock:
            return self._pending

    def start(self) -> None:
        self._thread.start()

    async def run(self, job: Callable[[], T]) -> T:
        """Run ``job()`` on the worker after the jobs before it; its result, or its exception re-raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_resolve, future, result, error)

        self._put(job, settle)
        return await future

    def post(self, job: Callable[[], None]) -> None:
        """Run ``job()`` on the worker after the jobs before it, without waiting; a failure is logged."""
        def settle(_: Any, error: BaseException | None) -> None:
            if error is not None:
                LOG.error("engine job %s failed", job, exc_info=error)

        self._put(job, settle)

    def stop(self) -> None:
        """Let the worker finish the jobs queued so far, then end it (returns when it has)."""
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join()

    def _put(self, job: Callable[[], Any], settle: _Settle) -> None:
        with self._pending_lock:
            self._pending += 1
        self._jobs.put((job, settle))

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, settle = item
            try:
                result, error = job(), None
            except BaseException as caught:  # noqa: BLE001 - thread boundary: the waiting caller gets it
                result, error = None, caught
            with self._pending_lock:
                self._pending -= 1
            settle(result, error)


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting call was cancelled: nobody wants the result
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
