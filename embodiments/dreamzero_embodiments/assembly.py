"""Assembling one model query from stamped camera frames and joint states (ARCHITECTURE.md §3).

Frames arrive per camera with their header stamps and are kept, resized to the checkpoint's input
resolution, in a ring buffer per camera; joint states are kept raw. A query at ``now``:
1. every camera must have a frame no older than ``camera_timeout_s`` (else the camera is named);
2. t_obs = the newest time at which every camera has a frame (the minimum of the newest stamps);
3. frames: the first query of a session takes the frame nearest t_obs (T = 1); later queries take
   9 frames at the training spacing t_obs - 24 dt + 3 dt i, or the official server's 4 frames at
   steps -23, -16, -8, 0 (facts §1.8, §3.5). Wanted times older than a camera's history use its
   oldest frame, as the official server left-pads with its first frame (facts §3.4): they are clipped
   to that frame's stamp, and the clipped times are returned beside the stamps of the frames used;
4. state: the joint state nearest t_obs within ``state_tolerance_s``, packed by joint name into the
   checkpoint's order in model units; a missing or non-finite joint is named, and so is how far the
   newest joint state is from t_obs when none is near it (older or newer).
Pure: times are arguments, nothing reads a clock. Imports numpy only (and sibling modules).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dreamzero_embodiments.buffers import StampedRingBuffer
from dreamzero_embodiments.frames import FrameSchedule, FrameSelectionError, select_frames
from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_embodiments.state import StateError, pack_state
from dreamzero_embodiments.stitching import resize_to

HISTORY_MARGIN_S = 0.5  # frames kept beyond one chunk's span (24 dt: 1.6 s DROID, 0.8 s AgiBot/YAM)
STATE_HISTORY = 500  # joint states kept: 1 s at 500 Hz; only states near t_obs are used


class ObservationError(ValueError):
    """No query can be assembled now; the message names the camera, the joint or the gap."""


@dataclass(frozen=True)
class AssembledObservation:
    """t_obs_ns: anchor time. views: camera key -> uint8[T, H, W, 3] at the checkpoint resolution,
    oldest first. state: float64[S] model units at t_obs. frame_stamps: camera key -> int64[T] stamps of
    the frames used. wanted_stamps: camera key -> int64[T] the times they were picked for: the schedule's,
    clipped to the camera's oldest frame (the left-pad of step 3 in the module docstring), so
    ``|frame_stamps - wanted_stamps|`` is how far each frame is from the time it stands for."""

    t_obs_ns: int
    views: dict[str, np.ndarray]
    state: np.ndarray
    frame_stamps: dict[str, np.ndarray]
    wanted_stamps: dict[str, np.ndarray]


class ObservationAssembler:
    """Per-camera frame history plus joint-state history of one robot (see module docstring)."""

    def __init__(self, spec: EmbodimentSpec, frame_mode: str = "training", camera_timeout_s: float = 0.5,
                 frame_tolerance_s: float = 0.15, state_tolerance_s: float = 0.1, camera_rate_hz: float = 30.0) -> None:
        self.spec = spec
        self.schedule = FrameSchedule.from_spec(spec, frame_mode)
        self.camera_timeout_ns = int(camera_timeout_s * 1e9)
        self.frame_tolerance_ns = int(frame_tolerance_s * 1e9)
        self.state_tolerance_ns = int(state_tolerance_s * 1e9)
        # Enough frames for one chunk's span at ``camera_rate_hz``; a faster camera covers less time, and
        # wanted times beyond the history then use the oldest frame (step 3 of the module docstring).
        capacity = int(np.ceil((spec.timing.horizon * spec.timing.dt + HISTORY_MARGIN_S) * camera_rate_hz))
        self._frames = {camera.key: StampedRingBuffer(capacity) for camera in spec.cameras}
        self._states: StampedRingBuffer = StampedRingBuffer(STATE_HISTORY)

    def set_frame_mode(self, frame_mode: str) -> None:
        """Pick the frames of later queries by ``frame_mode`` (``training`` or ``official``, facts §1.8, §3.5),
        e.g. once a remote server's handshake says which it takes; the history is kept."""
        if frame_mode != self.schedule.mode:
            self.schedule = FrameSchedule.from_spec(self.spec, frame_mode)

    def push_frame(self, key: str, stamp_ns: int, rgb: np.ndarray) -> None:
        """Store a decoded frame uint8[H, W, 3], resized to the camera's checkpoint resolution."""
        camera = self.spec.camera(key)
        if tuple(rgb.shape[:2]) != camera.resolution:
            rgb = resize_to(rgb, camera.resolution)
        self._frames[key].push(stamp_ns, rgb)

    def push_state(self, stamp_ns: int, names: Sequence[str], positions: np.ndarray) -> None:
        self._states.push(stamp_ns, (tuple(names), np.asarray(positions, dtype=np.float64)))

    def camera_ages_s(self, now_ns: int) -> dict[str, float]:
        """Age of each camera's newest frame (inf when none arrived)."""
        return {key: (now_ns - buffer.newest_stamp) * 1e-9 if len(buffer) else float("inf")
                for key, buffer in self._frames.items()}

    def assemble(self, now_ns: int, first_of_session: bool) -> AssembledObservation:
        """The observation for a query at ``now_ns``; raises :class:`ObservationError` naming the cause."""
        stale = {key: age for key, age in self.camera_ages_s(now_ns).items() if age * 1e9 > self.camera_timeout_ns}
        if stale:
            details = ", ".join(f"{key} ({'no frame yet' if age == float('inf') else f'{age:.2f} s old'}; topic "
                                f"{self.spec.camera(key).topic})" for key, age in stale.items())
            raise ObservationError(f"stale camera(s): {details}")
        t_obs_ns = min(buffer.newest_stamp for buffer in self._frames.values())
        wanted = self.schedule.query_stamps(t_obs_ns, first_of_session)
        views, stamps, clipped = {}, {}, {}
        for key, buffer in self._frames.items():
            clipped[key] = np.maximum(wanted, buffer.oldest_stamp)
            try:
                views[key], stamps[key] = select_frames(buffer, clipped[key], self.frame_tolerance_ns, name=key)
            except FrameSelectionError as error:
                raise ObservationError(str(error)) from error
        nearest = self._states.nearest(t_obs_ns, self.state_tolerance_ns)
        if nearest is None:
            newest = self._states.latest()
            if newest is None:
                gap = "no joint state yet"
            else:
                age_s = (t_obs_ns - newest[0]) * 1e-9  # > 0: the newest state is stamped before t_obs
                gap = f"newest is {abs(age_s):.3f} s {'older' if age_s > 0 else 'newer'} than t_obs"
            raise ObservationError(f"no joint state within {self.state_tolerance_ns * 1e-9:.3f} s of t_obs ({gap}; topic "
                                   f"{self.spec.joint_states_topic})")
        names, positions = nearest[1]
        try:
            state = pack_state(names, positions, self.spec)
        except StateError as error:
            raise ObservationError(f"joint state refused: {error}") from error
        return AssembledObservation(t_obs_ns=t_obs_ns, views=views, state=state, frame_stamps=stamps,
                                    wanted_stamps=clipped)
