"""Run-folder video for the demo and the evaluations: frames side by side, written to MP4 with OpenCV.

:class:`FrameSetVideo` writes one frame per set of simultaneous camera frames: ``sim_droid`` stamps all
cameras of one instant alike, so a video of it plays in simulated time at the camera rate however
slowly the machine produced the frames (``dreamzero eval-sim``).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


def side_by_side(left: np.ndarray, right: np.ndarray | None) -> np.ndarray:
    """uint8 RGB ``left`` with ``right`` scaled (nearest) to its height on its right; ``left`` alone if None."""
    if right is None:
        return left
    height = left.shape[0]
    width = max(1, round(right.shape[1] * height / right.shape[0]))
    return np.concatenate([left, cv2.resize(right, (width, height), interpolation=cv2.INTER_NEAREST)], axis=1)


def camera_row(views: Sequence[np.ndarray], predicted: np.ndarray | None) -> np.ndarray:
    """One run-folder frame: uint8 RGB camera ``views`` of equal height side by side, in the given order, then
    the predicted-video mosaic (``policy_node/predicted_video``) scaled to their height, if any."""
    return side_by_side(np.concatenate(list(views), axis=1), predicted)


def fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` on a black (width, height) = ``size`` canvas, top left, scaled down (aspect kept) if it is larger."""
    width, height = size
    scale = min(1.0, width / rgb.shape[1], height / rgb.shape[0])
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, int(rgb.shape[1] * scale)), max(1, int(rgb.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    if rgb.shape[:2] == (height, width):
        return rgb
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:rgb.shape[0], :rgb.shape[1]] = rgb
    return canvas


class Mp4Writer:
    """Writes uint8 RGB frames to an MP4 (mp4v), each fitted (:func:`fit`) to ``size`` (width, height;
    default: the first frame's). Nothing is created until the first frame, so a run without frames
    leaves no empty file."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int] | None = None) -> None:
        self.path, self.fps = path, fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size = size

    def write(self, rgb: np.ndarray) -> None:
        if self._writer is None:
            self._size = self._size or (rgb.shape[1], rgb.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
        self._writer.write(cv2.cvtColor(fit(rgb, self._size), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameSetVideo:
    """An MP4 of camera frame sets (module docstring): each set of ``camera_keys`` sharing a stamp becomes one
    :func:`camera_row` with the newest predicted mosaic received so far. Sets stamped before :meth:`start`
    are left out (complete sets received before the call wait for it, at most :data:`EARLY_SETS`).

    The video takes the size of its first frame. With ``mosaic_wait_frames`` > 0 (a policy that publishes a
    predicted video) the first frames wait for the first mosaic, at most that many, so that the video is wide
    enough for it; they are then written with black where the mosaic goes. Nothing is written before the first
    frame (no empty file). Not thread-safe: call it from one thread (one callback group).
    """

    EARLY_SETS = 8

    def __init__(self, path: Path, fps: float, camera_keys: Sequence[str], mosaic_wait_frames: int = 0) -> None:
        self._path, self._fps, self._keys, self._wait = path, fps, tuple(camera_keys), mosaic_wait_frames
        self._writer: Mp4Writer | None = None
        self._sets: dict[int, dict[str, np.ndarray]] = {}  # stamp ns -> camera key -> RGB, not complete yet
        self._early: deque[tuple[int, list[np.ndarray]]] = deque(maxlen=self.EARLY_SETS)
        self._held: list[np.ndarray] = []  # rows waiting for the first mosaic
        self._predicted: np.ndarray | None = None
        self._start_ns: int | None = None

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return 0 if self._writer is None else self._writer.frames

    def add_camera(self, key: str, stamp_ns: int, rgb: np.ndarray) -> None:
        """One camera's frame; the frame that completes its set has the set written (or kept until :meth:`start`).

        Raises:
            ValueError: a camera the video does not show.
        """
        if key not in self._keys:
            raise ValueError(f"unknown camera {key!r}; the video shows {list(self._keys)}")
        frames = self._sets.setdefault(stamp_ns, {})
        frames[key] = rgb
        if len(frames) < len(self._keys):
            return
        for stamp in [s for s in self._sets if s <= stamp_ns]:  # older incomplete sets are given up
            del self._sets[stamp]
        views = [frames[k] for k in self._keys]
        if self._start_ns is None:
            self._early.append((stamp_ns, views))
        elif stamp_ns >= self._start_ns:
            self._row(views)

    def add_predicted(self, rgb: np.ndarray) -> None:
        """A predicted-video mosaic frame: shown beside the cameras from the next frame set on."""
        self._predicted = rgb

    def start(self, stamp_ns: int) -> None:
        """Write the frame sets stamped ``stamp_ns`` or later (early ones among them at once)."""
        self._start_ns = stamp_ns
        for stamp, views in self._early:
            if stamp >= stamp_ns:
                self._row(views)
        self._early.clear()

    def _row(self, views: list[np.ndarray]) -> None:
        row = camera_row(views, self._predicted)
        if self._writer is None and self._predicted is None and len(self._held) < self._wait:
            self._held.append(row)
        else:
            self._write(row)

    def _write(self, row: np.ndarray) -> None:
        if self._writer is None:  # sized by this row; held rows first, fitted (black where the mosaic goes)
            self._writer = Mp4Writer(self._path, self._fps, (row.shape[1], row.shape[0]))
            held, self._held = self._held, []
            for early in held:
                self._writer.write(early)
        self._writer.write(row)

    def close(self) -> int:
        """Write the rows still waiting (no mosaic came) and close the file; returns the frames written."""
        held, self._held = self._held, []
        for row in held:
            self._write(row)
        if self._writer is not None:
            self._writer.close()
        return self.frames
