"""The backend interface of the policy node (ARCHITECTURE.md section 4): ``reset``, ``infer``, ``close``.

Backends are plain Python (no rclpy): the node hands them an :class:`Observation` assembled from its
buffers and publishes the :class:`BackendPrediction` as an ``ActionChunk``. Units are model units:
joint values as in ROS (rad, m) and grippers/effectors in the checkpoint's units; the embodiment
YAML's unit maps convert between the two, on the state side in the node and on the action side in
the adapter. Calls may block for seconds; the node runs them on a worker thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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
