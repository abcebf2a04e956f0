"""Per-session state of the model server: frame buffers, prompt, lifetime (facts §3.4; training-serving-facts §5.5).

Sessions are keyed by embodiment tag and ``session_id`` (:func:`session_key`), never by connection: a
client that reconnects keeps its session, and two robots never share one (the official server keeps ONE
global state, facts §3.3).

Frame rule (:func:`select_frames`), the official server's (facts §3.4) plus the training spacing:

* every camera's frames of a request are appended to the session's buffer (the newest
  :data:`FRAMES_PER_CHUNK` are kept);
* the first call of a session shows the model the newest frame only: a new context;
* a later call that carries exactly :data:`TRAINING_FRAMES` frames per camera (our remote backend with
  ``frame_mode: training``, facts §1.8) shows the model exactly those;
* any other later call shows the model the last :data:`FRAMES_PER_CHUNK` buffered frames, left-padded by
  repeating the oldest: so the official 1-frame clients (RoboArena, the sim client) see their last 4
  queries' frames and the 4-frame test client exactly its 4 (facts §3.5).

Lifetime (:class:`SessionTable`): a ``reset`` or a new ``session_id`` starts fresh; a session idle longer
than the timeout is dropped, and when a new session would exceed the maximum the least recently used
idle one is evicted (one that has a call queued or running never is; if every one is busy the new
session is refused). A dropped or evicted session's next call gets a :class:`SessionLost` error (its
text starts with :data:`~dreamzero_model.serving.protocol.SESSION_LOST`) until its client resets: a
rollout is never silently restarted from a new context. Times are arguments (``now``, monotonic
seconds); nothing here reads a clock. Imports numpy and the protocol module only.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dreamzero_model.serving.protocol import SESSION_LOST, RequestError

FRAMES_PER_CHUNK = 4   # facts §3.4: the official server's model sees the last 4 buffered frames
TRAINING_FRAMES = 9    # facts §1.8: the previous anchor frame + 8 frames 3 steps apart
LOST_REMEMBERED = 1024  # lost session keys remembered for the SessionLost error (oldest forgotten first)


class SessionLost(RequestError):
    """The session's context was dropped (idle timeout) or evicted; the client must reset."""


class ServerFull(RequestError):
    """A new session cannot start: every live session has a call queued or running."""


def session_key(tag: str, session_id: str) -> str:
    """The key of a session's state: ``<tag>/<session_id>``."""
    return f"{tag}/{session_id}"


@dataclass(frozen=True)
class FrameChoice:
    """What one call shows the model, and the buffers if it succeeds.

    Attributes:
        views: camera key -> uint8[T, H, W, 3] for the model: T = 1 (first call), 9 or 4.
        buffers: camera key -> the newest :data:`FRAMES_PER_CHUNK` frames uint8[H, W, 3] after this call.
    """

    views: dict[str, np.ndarray]
    buffers: dict[str, tuple[np.ndarray, ...]]


def select_frames(buffers: Mapping[str, Sequence[np.ndarray]] | None, views: Mapping[str, np.ndarray]) -> FrameChoice:
    """The frames a call shows the model (module docstring); pure: the caller keeps ``buffers`` until it succeeds.

    Args:
        buffers: camera key -> buffered frames uint8[H, W, 3], oldest first; None on a session's first call.
        views: camera key -> uint8[T, H, W, 3] frames of this request, oldest first.
    """
    after = {key: (*(buffers[key] if buffers is not None else ()), *frames)[-FRAMES_PER_CHUNK:]
             for key, frames in views.items()}
    if buffers is None:
        chosen = {key: frames[-1:] for key, frames in views.items()}
    elif all(frames.shape[0] == TRAINING_FRAMES for frames in views.values()):
        chosen = dict(views)
    else:
        chosen = {key: np.stack([frames[0]] * (FRAMES_PER_CHUNK - len(frames)) + list(frames))
                  for key, frames in after.items()}
    return FrameChoice(views=chosen, buffers=after)


@dataclass(eq=False)
class Session:
    """One client session (module docstring).

    Attributes:
        key, tag, session_id: who it is. buffers: :attr:`FrameChoice.buffers` of the last call, None before
        the first. prompt: the last call's instruction. last_used_s: monotonic time of the last use.
        busy: calls of this session queued or running (never evicted or dropped while > 0).
        lock: held from a call's submission to its reply: one call per session at a time.
        closed: set by a reset; a call that waited for the lock starts over with a new session.
    """

    key: str
    tag: str
    session_id: str
    last_used_s: float
    buffers: dict[str, tuple[np.ndarray, ...]] | None = None
    prompt: str | None = None
    busy: int = 0
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SessionTable:
    """Live sessions and the keys of lost ones (module docstring).

    Args:
        max_sessions: live sessions at most, >= 1 (the memory budget: each holds a KV cache).
        timeout_s: a session idle this long (> 0) is dropped.
    """

    def __init__(self, max_sessions: int, timeout_s: float) -> None:
        self.max_sessions = max_sessions
        self.timeout_s = timeout_s
        self.evictions = 0
        self.expirations = 0
        self._live: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._lost: OrderedDict[str, str] = OrderedDict()  # key -> why

    def __len__(self) -> int:
        return len(self._live)

    def get(self, key: str) -> Session | None:
        return self._live.get(key)

    def open(self, tag: str, session_id: str, now: float) -> tuple[Session, list[str]]:
        """The live session ``(tag, session_id)``, or a new one.

        Returns:
            The session (moved to most recently used) and the keys evicted to make room for it (the caller
            frees their model state).

        Raises:
            SessionLost: the session was dropped or evicted and not reset since.
            ServerFull: it is new and every live session is busy.
        """
        key = session_key(tag, session_id)
        if key in self._lost:
            raise SessionLost(f"{SESSION_LOST}: session {session_id!r} of embodiment {tag!r} was {self._lost[key]}; "
                              f"the server no longer holds its context. Send endpoint 'reset' with this session_id "
                              f"(or use a new session_id) to start a new session.")
        session = self._live.get(key)
        if session is not None:
            session.last_used_s = now
            self._live.move_to_end(key)
            return session, []
        evicted = []
        while len(self._live) >= self.max_sessions:
            idle = next((s for s in self._live.values() if s.busy == 0), None)
            if idle is None:
                raise ServerFull(f"server full: all {len(self._live)} sessions have a call in progress "
                                 f"(--max-sessions {self.max_sessions}); session {session_id!r} cannot start, "
                                 f"retry later")
            self._lose(idle.key, f"evicted to make room for a new session (--max-sessions {self.max_sessions})")
            self.evictions += 1
            evicted.append(idle.key)
        session = self._live[key] = Session(key=key, tag=tag, session_id=session_id, last_used_s=now)
        return session, evicted

    def reset(self, key: str) -> None:
        """Forget ``key``'s state and that it was lost: its next call starts a new session."""
        session = self._live.pop(key, None)
        if session is not None:
            session.closed = True
        self._lost.pop(key, None)

    def expire(self, now: float) -> list[str]:
        """Drop the sessions idle longer than the timeout (not busy); returns their keys."""
        stale = [s.key for s in self._live.values() if s.busy == 0 and now - s.last_used_s > self.timeout_s]
        for key in stale:
            self._lose(key, f"dropped after more than {self.timeout_s:g} s idle (--session-timeout-s)")
        self.expirations += len(stale)
        return stale

    def _lose(self, key: str, why: str) -> None:
        self._live.pop(key).closed = True
        self._lost[key] = why
        while len(self._lost) > LOST_REMEMBERED:
            self._lost.popitem(last=False)
