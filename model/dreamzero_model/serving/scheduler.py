"""The worker thread that owns the engine, and the FIFO queue in front of it (training-serving-facts §5.3).

Inference never runs on the event loop (the official and openpi servers block theirs for the whole forward
pass, so pings, handshakes and health checks wait, training-serving-facts §5.3): the loop submits work and
one worker thread runs it in arrival order. Two kinds of work:

* a job (:meth:`Scheduler.run`, awaited; :meth:`Scheduler.post`, not): a plain callable, run alone;
* a model call (:meth:`Scheduler.call`), run in two phases that make batches: the worker prepares the call
  at the head of the queue (``prepare``), then, while the next item is a call and fewer than ``max_batch``
  are prepared, that one too; then it completes them together (``complete``, which may batch them:
  :meth:`~dreamzero_model.serving.engine.Engine.complete`). So a batch holds the calls queued while the
  worker was busy, and those that arrive while it prepares the batch; a call that finds the worker idle
  starts at once, and the worker never waits for calls that have not come. A batch never passes a job.

A call that ``prepare`` refuses (raises) fails alone, at once; one that ``complete`` fails with fails every
call of its batch. The server holds a session's lock from submission to reply, so a session has at most one
call queued and sessions take turns (FIFO across sessions). A call whose client has gone still runs to the
end; its result is simply not sent. No torch here: jobs are plain callables and calls opaque values.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

LOG = logging.getLogger(__name__)
T = TypeVar("T")
_Settle = Callable[[Any, BaseException | None], None]


@dataclass(frozen=True)
class _Work:
    """A queued job (``job`` set) or model call (``call`` set), and how to hand over its outcome."""

    settle: _Settle
    job: Callable[[], Any] | None = None
    call: Any = None


class Scheduler:
    """One worker thread running work first in, first out; queued model calls in batches (module docstring).

    Args:
        prepare: ``prepare(call)`` -> what ``complete`` takes; None: :meth:`call` is not used.
        complete: ``complete([prepared, ...])`` -> each call's result, in order.
        max_batch: calls completed together at most (1: one at a time).
    """

    def __init__(self, prepare: Callable[[Any], Any] | None = None,
                 complete: Callable[[list[Any]], list[Any]] | None = None, max_batch: int = 1,
                 name: str = "dreamzero-engine") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self._prepare, self._complete = prepare, complete
        self._queue: deque[_Work | None] = deque()  # None: stop
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._pending = 0

    @property
    def depth(self) -> int:
        """Jobs and calls queued or running."""
        with self._wake:
            return self._pending

    def start(self) -> None:
        self._thread.start()

    async def run(self, job: Callable[[], T]) -> T:
        """Run ``job()`` alone on the worker after the work before it; its result, or its exception re-raised here."""
        return await self._submit(lambda settle: _Work(settle, job=job))

    async def call(self, call: Any) -> Any:
        """Run ``call`` (prepare, then complete in a batch) after the work before it; its result, or its
        exception re-raised here."""
        if self._prepare is None or self._complete is None:
            raise RuntimeError("Scheduler.call: this scheduler has no prepare and complete")
        return await self._submit(lambda settle: _Work(settle, call=call))

    def post(self, job: Callable[[], None]) -> None:
        """Run ``job()`` on the worker after the work before it, without waiting; a failure is logged."""
        def settle(_: Any, error: BaseException | None) -> None:
            if error is not None:
                LOG.error("engine job %s failed", job, exc_info=error)

        self._put(_Work(settle, job=job))

    def stop(self) -> None:
        """Let the worker finish the work queued so far, then end it (returns when it has)."""
        with self._wake:
            self._queue.append(None)
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()

    async def _submit(self, make: Callable[[_Settle], _Work]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_resolve, future, result, error)

        self._put(make(settle))
        return await future

    def _put(self, work: _Work) -> None:
        with self._wake:
            self._pending += 1
            self._queue.append(work)
            self._wake.notify()

    def _next(self, calls_only: bool) -> _Work | None:
        """The next item, waited for; with ``calls_only`` the next call if one is queued now, else None."""
        with self._wake:
            if calls_only:
                return self._queue.popleft() if self._queue and self._queue[0] is not None and (
                    self._queue[0].job is None) else None
            while not self._queue:
                self._wake.wait()
            return self._queue.popleft()

    def _settle(self, work: _Work, result: Any, error: BaseException | None) -> None:
        with self._wake:
            self._pending -= 1
        work.settle(result, error)

    def _work(self) -> None:
        # broad catches: thread boundary, every waiting caller gets its error
        while (work := self._next(calls_only=False)) is not None:
            if work.job is not None:
                try:
                    result, error = work.job(), None
                except BaseException as caught:  # noqa: BLE001
                    result, error = None, caught
                self._settle(work, result, error)
                continue
            batch: list[tuple[_Work, Any]] = []
            while work is not None:
                try:
                    batch.append((work, self._prepare(work.call)))
                except BaseException as caught:  # noqa: BLE001 - refused alone
                    self._settle(work, None, caught)
                work = self._next(calls_only=True) if len(batch) < self.max_batch else None
            if not batch:
                continue
            try:
                results = self._complete([prepared for _, prepared in batch])
                if len(results) != len(batch):
                    raise ValueError(f"complete returned {len(results)} results for {len(batch)} calls")
                outcomes = [(result, None) for result in results]
            except BaseException as caught:  # noqa: BLE001 - the whole batch failed
                outcomes = [(None, caught)] * len(batch)
            for (done, _), (result, error) in zip(batch, outcomes):
                self._settle(done, result, error)


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting call was cancelled: nobody wants the result
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
