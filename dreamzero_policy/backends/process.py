"""Runs a backend in a child process, so the model never competes with ROS callbacks for the GIL.

A model forward is thousands of small torch calls, each re-taking the GIL. In the node's process
the executor threads (cameras, joint states, timers) take it in between, and each re-take can wait
a whole switch interval: measured here, a tiny-model chunk took 0.25 s alone and 1 to 6 s inside
the node. A child process (``spawn``, never ``fork`` a process with DDS threads) removes that
contention. Calls go over a pipe; errors come back as :class:`BackendError` with the child's text,
and a dead child is reported with its exit code. No rclpy here.

Restarts: a child that dies, or does not answer a call within ``call_timeout_s`` (it is then
stopped), is started again by the next call, after a back-off (``restart_backoff_s``; calls in the
meantime fail at once). Each restart is logged and counted (``restarts``). The first call after any
start includes the model's warm-up, so it may take ``startup_timeout_s``, not ``call_timeout_s``. The
new child has no session: a call other than ``reset`` raises :class:`SessionLostError` until the
caller starts one. These failures are :class:`BackendRecoveringError`; after ``max_failures``
failures within ``failure_window_s`` the backend gives up, and every call raises a plain
:class:`BackendError` saying so until the backend is built again (the node reconfigured).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection

from dreamzero_policy.backends.base import (BackendError, BackendPrediction, BackendRecoveringError, Observation,
                                            PolicyBackend, SessionLostError)

logger = logging.getLogger(__name__)


def _serve(connection: Connection, factory: Callable[[], PolicyBackend], niceness: int = 0) -> None:
    """Child process: lower its priority by ``niceness``, build the backend, then answer calls until ``close``."""
    os.nice(niceness)
    try:
        backend = factory()
    except Exception:  # noqa: BLE001 - process boundary: report the failure to the parent
        connection.send(("error", f"backend failed to start:\n{traceback.format_exc()}"))
        return
    connection.send(("ready", None))
    while True:
        try:
            method, args = connection.recv()
        except EOFError:  # parent gone
            method, args = "close", ()
        if method == "close":
            backend.close()
            return
        try:
            connection.send(("ok", getattr(backend, method)(*args)))
        except BackendError as error:
            connection.send(("error", str(error)))
        except Exception:  # noqa: BLE001 - process boundary: report, keep serving
            connection.send(("error", traceback.format_exc()))


class ProcessBackend:
    """A :class:`PolicyBackend` whose work happens in a child process built by ``factory`` (see module docstring).

    Args:
        factory: picklable callable returning the real backend (e.g. ``functools.partial(LocalBackend, ...)``).
        startup_timeout_s: how long loading, and the first call after it (warm-up), may take (a 14B model: minutes).
        call_timeout_s: longest wait for one later ``reset``/``infer``.
        restart_backoff_s: pauses before the 1st, 2nd, ... restart within the window; the last repeats.
        max_failures, failure_window_s: give up after this many failures within this many seconds.
        niceness: added to the child's nice value (0..19), so that on a shared CPU the model yields to the
            processes that command the robot (adapter, mux, controllers); ``bench/jitter_bench.py`` measures it.

    Raises:
        BackendError: the first start fails (the child's traceback or exit code in the message).
    """

    def __init__(self, factory: Callable[[], PolicyBackend], startup_timeout_s: float = 900.0,
                 call_timeout_s: float = 120.0, restart_backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0),
                 max_failures: int = 5, failure_window_s: float = 300.0, niceness: int = 0) -> None:
        self._factory = factory
        self._niceness = niceness
        self.startup_timeout_s = startup_timeout_s
        self.call_timeout_s = call_timeout_s
        self._backoff_s = restart_backoff_s
        self._max_failures = max_failures
        self._window_s = failure_window_s
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()  # time.monotonic() of each failure within the window
        self._restart_at = 0.0
        self._gave_up = ""
        self.restarts = 0
        self._start()
        self._session_lost = False

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self._factory, self._niceness),
                                        name="dreamzero-backend",
                                        daemon=True)
        self._process.start()
        child.close()
        self._warm = False
        self._receive(self.startup_timeout_s, "start")

    def _failed(self, reason: str) -> BackendError:
        """Record a failure of the child; the error to raise (recovering, or final once it gave up)."""
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self._window_s:
            self._failures.popleft()
        if len(self._failures) >= self._max_failures:
            self._gave_up = (f"model process failed {len(self._failures)} times within {self._window_s:g} s; not "
                             f"restarting it (last: {reason}); reconfigure the node")
            logger.error(self._gave_up)
            return BackendError(self._gave_up)
        delay = self._backoff_s[min(len(self._failures), len(self._backoff_s)) - 1]
        self._restart_at = now + delay
        return BackendRecoveringError(f"{reason}; restarting it in {delay:g} s")

    def _died(self, what: str) -> BackendError:
        self._process.join(timeout=2.0)  # reap it, so the exit code is known
        return self._failed(f"model process died during {what} (exit code {self._process.exitcode})")

    def _receive(self, timeout_s: float, what: str):
        if not self._connection.poll(timeout_s):
            if not self._process.is_alive():
                raise self._died(what)
            self._process.terminate()  # a late reply would be taken for the next call's
            self._process.join(timeout=5.0)
            raise self._failed(f"model process did not answer {what} within {timeout_s:g} s; stopped it")
        try:
            status, value = self._connection.recv()
        except EOFError as error:
            raise self._died(what) from error
        if status == "error":
            raise BackendError(value)
        return value

    def _ensure_running(self) -> None:
        """Restart a dead child once its back-off has passed; raise while waiting or after giving up."""
        if self._process.is_alive():
            return
        if self._gave_up:
            raise BackendError(self._gave_up)
        wait_s = self._restart_at - time.monotonic()
        if wait_s > 0:
            raise BackendRecoveringError(f"model process is down (exit code {self._process.exitcode}); restarting "
                                         f"it in {wait_s:.1f} s")
        self._connection.close()
        self.restarts += 1
        logger.warning("restarting the model process (restart %d; it exited with code %s)", self.restarts,
                       self._process.exitcode)
        self._session_lost = True
        try:
            self._start()
        except BackendError as error:
            if isinstance(error, BackendRecoveringError) or self._gave_up:
                raise  # already counted
            raise self._failed(f"model process failed to start again: {error}") from error

    def _call(self, method: str, *args):
        with self._lock:
            self._ensure_running()
            if method != "reset" and self._session_lost:
                raise SessionLostError("the model process was restarted and has no session; start a new one")
            try:
                self._connection.send((method, args))
            except OSError as error:  # BrokenPipeError: it died since is_alive() was asked
                raise self._died(method) from error
            value = self._receive(self.call_timeout_s if self._warm else self.startup_timeout_s, method)
            self._warm = True
            if method == "reset":
                self._session_lost = False
            return value

    def reset(self, prompt: str, session_id: str) -> None:
        self._call("reset", prompt, session_id)

    def infer(self, observation: Observation) -> BackendPrediction:
        return self._call("infer", observation)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._connection.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout=10.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5.0)
        self._connection.close()
