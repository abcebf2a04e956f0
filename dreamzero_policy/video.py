"""Run-folder video for the demo and the bag evaluation: frames side by side, written to MP4 with OpenCV."""
from __future__ import annotations

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
