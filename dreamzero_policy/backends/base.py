"""The backend interface of the policy node (ARCHITECTURE.md section 4): ``reset``, ``infer``, ``close``.

Backends are plain Python (no rclpy): the node hands them an :class:`Observation` assembled from its
buffers and publishes the :class:`BackendPrediction` as an ``ActionChunk``. Units are model units:
joint values as in ROS (rad, m) and grippers/effectors in the checkpoint's units; the embodiment
YAML's unit maps convert between the two, on the state side in the node and on the action side in
the adapter. Calls may block for seconds; the node runs them on a worker thread.

Backends log through :mod:`logging` under :data:`BACKEND_LOGGER`; :func:`route_backend_logs` is the one
place that hands those records to a node's log.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

BACKEND_LOGGER = "dreamzero_policy.backends"  # the parent of every backend module's logger

import numpy as np


class BackendError(RuntimeError):
    """A backend could not produce a chunk (server error, timeout, bad response); the message says why."""


class BackendRecoveringError(BackendError):
    """A failure the backend recovers from by itself (its model process is being restarted): the caller
    retries later and reports a warning, not an error."""


class SessionLostError(BackendRecoveringError):
    """The backend lost its session (the model process restarted): start a new session with ``reset``."""


@dataclass(frozen=True)
class Observation:
    """What one query sends to a backend.

    Attributes:
        t_obs_ns: stamp of the observation set (newest frame), ns; the chunk is anchored there.
        views: camera key -> uint8[T, H, W, 3] RGB frames at the checkpoint's input resolution, oldest
            first, newest last (T = 1 on the first query of a session).
        state: float64[S], the state at t_obs in the checkpoint's key order, model units.
        prompt: the instruction.
        session_id: the session (context) this query belongs to.
        first_of_session: True on the first query after a reset.
    """

    t_obs_ns: int
    views: dict[str, np.ndarray]
    state: np.ndarray
    prompt: str
    session_id: str
    first_of_session: bool


@dataclass(frozen=True)
class BackendPrediction:
    """One chunk from a backend.

    Attributes:
        actions: float64[H, A] in model units, action dims in the embodiment YAML's order.
        relative: bool[A]; True where the values are relative to the state at t_obs.
        frames: uint8[T, H', W', 3] predicted mosaic frames, or None when the backend gives none.
        seconds: timing breakdown reported by the backend (may be empty).
    """

    actions: np.ndarray
    relative: np.ndarray
    frames: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class PolicyBackend(Protocol):
    """What the policy node needs from a backend."""

    def reset(self, prompt: str, session_id: str) -> None:
        """Start a new session: the next ``infer`` begins a new context."""

    def infer(self, observation: Observation) -> BackendPrediction:
        """Predict the chunk for ``observation``; raise :class:`BackendError` when no chunk can be made."""

    def close(self) -> None:
        """Release connections and memory."""


class _Route(logging.Handler):
    def __init__(self, sink: Callable[[int, str], None]) -> None:
        super().__init__(logging.DEBUG)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink(record.levelno, self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise into the backend; reported by logging
            self.handleError(record)


def wanted_frame_mode(backend: PolicyBackend, frame_mode: str) -> str:
    """The frames a continuation query should carry (facts §1.8, §3.5): ``frame_mode`` when forced, for ``auto``
    what the backend asks for (a remote backend once its server's handshake told it), else ``training``."""
    if frame_mode != "auto":
        return frame_mode
    return getattr(backend, "frame_mode", None) or "training"


def route_backend_logs(sink: Callable[[int, str], None]) -> Callable[[], None]:
    """Hand every backend's log records (INFO and above) to ``sink(level, message)``, e.g. a node's logger.

    Args:
        sink: called with the :mod:`logging` level and the formatted message, from the thread that logged.

    Returns:
        A function that stops the routing.
    """
    logger = logging.getLogger(BACKEND_LOGGER)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)  # INFO lines (connected, sessions) would stop at the root's WARNING
    handler = _Route(sink)
    logger.addHandler(handler)
    return lambda: logger.removeHandler(handler)
