"""Runs a backend in a child process, so the model never competes with ROS callbacks for the GIL.

A model forward is thousands of small torch calls, each re-taking the GIL. In the node's process
the executor threads (cameras, joint states, timers) take it in between, and each re-take can wait
a whole switch interval: measured here, a tiny-model chunk took 0.25 s alone and 1 to 6 s inside
the node. A child process (``spawn``, never ``fork`` a process with DDS threads) removes that
contention. Calls go over a pipe; errors come back as :class:`BackendError` with the child's text,
and a dead child is reported with its exit code. No rclpy here.
"""
from __future__ import annotations

import multiprocessing
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

from dreamzero_policy.backends.base import BackendError, BackendPrediction, Observation, PolicyBackend


def _serve(connection: Connection, factory: Callable[[], PolicyBackend]) -> None:
    """Child process: build the backend, then answer calls until ``close``."""
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
    """A :class:`PolicyBackend` whose work happens in a child process built by ``factory``.

    Args:
        factory: picklable callable returning the real backend (e.g. ``functools.partial(LocalBackend, ...)``).
        startup_timeout_s: how long loading may take (a 14B model: minutes).
        call_timeout_s: longest wait for one ``reset``/``infer``.
    """

    def __init__(self, factory: Callable[[], PolicyBackend], startup_timeout_s: float = 900.0,
                 call_timeout_s: float = 120.0) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, factory), name="dreamzero-backend", daemon=True)
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        self.call_timeout_s = call_timeout_s
        self._receive(startup_timeout_s, "start")

    def _died(self, what: str) -> BackendError:
        self._process.join(timeout=2.0)  # reap it, so the exit code is known
        return BackendError(f"model process died during {what} (exit code {self._process.exitcode})")

    def _receive(self, timeout_s: float, what: str):
        if not self._connection.poll(timeout_s):
            if not self._process.is_alive():
                raise self._died(what)
            self._process.terminate()  # a late reply would be taken for the next call's
            raise BackendError(f"model process did not answer {what} within {timeout_s:.0f} s; stopped it")
        try:
            status, value = self._connection.recv()
        except EOFError as error:
            raise self._died(what) from error
        if status == "error":
            raise BackendError(value)
        return value

    def _call(self, method: str, *args):
        with self._lock:
            if not self._process.is_alive():
                raise BackendError(f"model process is not running (exit code {self._process.exitcode})")
            self._connection.send((method, args))
            return self._receive(self.call_timeout_s, method)

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
