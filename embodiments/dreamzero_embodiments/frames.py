"""Which camera frames a query conditions on (ARCHITECTURE.md §3; facts §1.8, §3.4, §3.5).

A query is anchored at ``t_obs_ns``. Per camera the frames are taken from a
:class:`~dreamzero_embodiments.buffers.StampedRingBuffer` keyed by header stamp:

* first query of a session: the frame nearest ``t_obs`` only (T = 1). The official server also starts
  a session from exactly one frame, the newest, which resets the model context (facts §3.4); with
  ``t_obs`` = the newest common observation stamp, as the policy node picks it, the two agree.
* later queries, training spacing (default): T = horizon / stride + 1 = 9 frames at
  ``t_obs - 24 dt + 3 dt i``, i = 0..8: the previous anchor frame plus 8 frames 3 steps apart, the last
  at ``t_obs`` (facts §1.8: training samples video every ``frame_stride`` = 3 action steps).
* later queries, official-server mode: T = 4 frames at step offsets -23, -16, -8, 0 (facts §3.5: the
  reference test client's frames [0, 7, 15, 23] around an anchor at 23).

Each wanted stamp takes the frame nearest to it within a caller-chosen tolerance; a wanted stamp with
no frame that near raises :class:`FrameSelectionError` naming it and the buffer's span. Times are
arguments (integer ns), nothing reads a clock. Imports numpy and sibling modules only.

Dimensions: T frames (oldest first), H, W pixels.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from dreamzero_embodiments.buffers import StampedRingBuffer, nearest_index
from dreamzero_embodiments.spec import EmbodimentSpec

V = TypeVar("V")

# Step offsets (in action steps of dt) of the 4 frames the official server's reference client sends
# per chunk after the first (facts §3.5).
OFFICIAL_STEP_OFFSETS = (-23, -16, -8, 0)
FRAME_MODES = ("training", "official")


class FrameSelectionError(ValueError):
    """A wanted frame is missing: the message names the camera, the stamp, the tolerance and the buffer's span."""


def _stamps_from_steps(t_obs_ns: int, steps: Sequence[int], dt_s: float) -> np.ndarray:
    """int64[T]: ``t_obs_ns + round(step * dt_s * 1e9)`` for each step, each rounded on its own (no drift)."""
    t_obs_ns = operator.index(t_obs_ns)
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0 seconds, got {dt_s}")
    return np.array([t_obs_ns + round(step * dt_s * 1e9) for step in steps], dtype=np.int64)


def training_step_offsets(horizon: int = 24, stride: int = 3) -> tuple[int, ...]:
    """Step offsets -horizon, -horizon + stride, ..., 0 of the training frame spacing (facts §1.8).

    Raises:
        ValueError: non-positive values or a horizon that is not a multiple of the stride.
    """
    if horizon < 1 or stride < 1 or horizon % stride:
        raise ValueError(f"frame spacing: horizon ({horizon}) must be a positive multiple of stride ({stride})")
    return tuple(range(-horizon, 1, stride))


def training_query_stamps(t_obs_ns: int, dt_s: float, horizon: int = 24, stride: int = 3) -> np.ndarray:
    """Wanted frame stamps at the training spacing: ``t_obs - horizon dt + stride dt i``, i = 0..horizon/stride.

    Args:
        t_obs_ns: anchor of the query, ns. dt_s: action period, s (1 / ``timing.action_rate_hz``).
        horizon: actions per chunk (``timing.horizon``). stride: ``timing.frame_stride``, action steps.

    Returns:
        int64[horizon / stride + 1] stamps in ns, ascending; the last equals ``t_obs_ns``.
    """
    return _stamps_from_steps(t_obs_ns, training_step_offsets(horizon, stride), dt_s)


def official_query_stamps(t_obs_ns: int, dt_s: float) -> np.ndarray:
    """Wanted frame stamps of the official server protocol: steps -23, -16, -8, 0 from ``t_obs`` (facts §3.5).

    Returns:
        int64[4] stamps in ns, ascending; the last equals ``t_obs_ns``.
    """
    return _stamps_from_steps(t_obs_ns, OFFICIAL_STEP_OFFSETS, dt_s)


@dataclass(frozen=True)
class FrameSchedule:
    """The frame stamps of each query of a session (module docstring).

    Attributes:
        dt_s: action period, s. horizon: actions per chunk. stride: action steps between frames.
        mode: ``training`` (9 frames at the training spacing) or ``official`` (4 frames, server protocol).
    """

    dt_s: float
    horizon: int = 24
    stride: int = 3
    mode: str = "training"

    def __post_init__(self) -> None:
        if self.mode not in FRAME_MODES:
            raise ValueError(f"FrameSchedule.mode must be one of {', '.join(FRAME_MODES)}, got {self.mode!r}")
        if not self.dt_s > 0:
            raise ValueError(f"FrameSchedule.dt_s must be > 0 seconds, got {self.dt_s}")
        training_step_offsets(self.horizon, self.stride)  # validates horizon and stride

    @classmethod
    def from_spec(cls, spec: EmbodimentSpec, mode: str = "training") -> FrameSchedule:
        """The schedule of an embodiment: ``timing.dt``, ``timing.horizon``, ``timing.frame_stride``."""
        return cls(dt_s=spec.timing.dt, horizon=spec.timing.horizon, stride=spec.timing.frame_stride, mode=mode)

    @property
    def step_offsets(self) -> tuple[int, ...]:
        """Offsets in action steps of a later query's frames, oldest first."""
        if self.mode == "official":
            return OFFICIAL_STEP_OFFSETS
        return training_step_offsets(self.horizon, self.stride)

    def query_stamps(self, t_obs_ns: int, first_of_session: bool) -> np.ndarray:
        """int64[T] wanted stamps, ns: ``[t_obs_ns]`` on the first query of a session, else the schedule's."""
        steps = (0,) if first_of_session else self.step_offsets
        return _stamps_from_steps(t_obs_ns, steps, self.dt_s)


def _span(stamps: Sequence[int]) -> str:
    if not stamps:
        return "the buffer is empty (camera never started, or stopped before this session)"
    return (f"the buffer holds {len(stamps)} frame(s) from {stamps[0]} to {stamps[-1]} ns "
            f"({(stamps[-1] - stamps[0]) * 1e-9:.3f} s)")


def select_stamped(buffer: StampedRingBuffer[V], stamps_ns: Sequence[int] | np.ndarray, tolerance_ns: int,
                   name: str = "buffer") -> tuple[np.ndarray, list[V]]:
    """The entry nearest each wanted stamp, all from one snapshot of ``buffer``.

    The same entry may serve several wanted stamps (a slow camera); an older stamp wins a tie.

    Args:
        buffer: history of any values. stamps_ns: int[T] wanted stamps, ns.
        tolerance_ns: largest accepted |picked - wanted|, ns (inclusive).
        name: what the buffer holds, for messages (e.g. the camera key).

    Returns:
        (picked stamps int64[T] in ns, the T values in the same order).

    Raises:
        FrameSelectionError: a wanted stamp has no entry within the tolerance; names every such stamp,
            how far the nearest entry is, and the buffer's span.
        ValueError: negative tolerance or no wanted stamp.
    """
    tolerance_ns = operator.index(tolerance_ns)
    if tolerance_ns < 0:
        raise ValueError(f"{name}: tolerance_ns must be >= 0, got {tolerance_ns}")
    wanted = [operator.index(s) for s in np.asarray(stamps_ns, dtype=np.int64).reshape(-1).tolist()]
    if not wanted:
        raise ValueError(f"{name}: no wanted stamps")
    stamps, values = buffer.snapshot()
    picked: list[int] = []
    missing: list[str] = []
    for t_ns in wanted:
        index = nearest_index(stamps, t_ns)
        if index is None:
            missing.append(f"{t_ns}")
            continue
        if abs(stamps[index] - t_ns) > tolerance_ns:
            missing.append(f"{t_ns} (nearest frame {(stamps[index] - t_ns) * 1e-6:+.1f} ms away)")
        picked.append(index)
    if missing:
        raise FrameSelectionError(f"{name}: no frame within {tolerance_ns * 1e-6:.1f} ms of wanted stamp(s) "
                                  f"{', '.join(missing)}; {_span(stamps)}")
    return np.array([stamps[i] for i in picked], dtype=np.int64), [values[i] for i in picked]


def select_frames(buffer: StampedRingBuffer[np.ndarray], stamps_ns: Sequence[int] | np.ndarray, tolerance_ns: int,
                  name: str = "camera") -> tuple[np.ndarray, np.ndarray]:
    """Frames nearest the wanted stamps, stacked (see :func:`select_stamped` for the rules).

    Args:
        buffer: frames uint8[H, W, 3] keyed by header stamp. stamps_ns: int[T] wanted stamps, ns.
        tolerance_ns: largest accepted |picked - wanted|, ns. name: camera key, for messages.

    Returns:
        (frames uint8[T, H, W, 3] oldest first, picked stamps int64[T] in ns).

    Raises:
        FrameSelectionError: a wanted frame is missing (see :func:`select_stamped`).
        ValueError: the picked frames differ in shape or are not uint8[H, W, 3].
    """
    picked, frames = select_stamped(buffer, stamps_ns, tolerance_ns, name)
    shapes = {_frame_shape(frame) for frame in frames}
    if len(shapes) != 1 or None in shapes:
        raise ValueError(f"{name}: frames must all be uint8[H, W, 3] of one size, got {sorted(map(str, shapes))}")
    return np.stack(frames), picked


def _frame_shape(frame: Any) -> tuple[int, ...] | None:
    ok = isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    return tuple(frame.shape) if ok else None
