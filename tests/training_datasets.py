"""Small DROID datasets for the training tests, written by the real writer (``dreamzero dataset``'s).

Each episode is a smooth joint trajectory; the commanded action leads the measured state by 3 steps;
every camera shows a white square whose position follows two joints (different joints per camera)
on a camera-coloured background, so frames, state and actions are consistent and learnable.
Frames are 180x320, the DROID checkpoint resolution (facts §1.4).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_policy.bags.lerobot_writer import Episode, write_lerobot_dataset

LEAD_STEPS = 3  # the action is the state 3 steps later


def synthetic_episode(spec: EmbodimentSpec, index: int, length: int, task: str) -> Episode:
    """One episode of ``length`` rows (see module docstring)."""
    rng = np.random.default_rng(index)
    steps = np.arange(length)[:, None]
    dims = len(spec.state_names)
    phase, speed = rng.uniform(0, 2 * np.pi, dims), rng.uniform(0.04, 0.08, dims)
    state = (0.5 * np.sin(speed * steps + phase)).astype(np.float32)
    state[:, -1] = (np.sin(0.05 * steps[:, 0] + phase[-1]) > 0).astype(np.float32)  # gripper 0 / 1
    action = np.concatenate([state[LEAD_STEPS:], np.repeat(state[-1:], LEAD_STEPS, axis=0)])
    frames = {}
    for number, camera in enumerate(spec.cameras):
        height, width = camera.resolution
        clip = np.zeros((length, height, width, 3), np.uint8)
        clip[..., number] = 60 + 40 * number
        size = height // 6
        for row in range(length):
            x = int((width - size) * (0.5 + state[row, number]))
            y = int((height - size) * (0.5 + state[row, number + 3]))
            clip[row, y:y + size, x:x + size] = 255
        frames[camera.key] = clip
    return Episode(task=task, state=state, action=action, frames=frames, name=f"synthetic-{index}")


def write_dataset(root: Path, lengths: Sequence[int], spec_name: str = "droid",
                  tasks: Sequence[str] = ("Move the squares.", "Hold the squares.")) -> Path:
    """A dataset at ``root`` with one episode per length (task i alternates between ``tasks``)."""
    spec = load_embodiment(spec_name)
    episodes = (synthetic_episode(spec, i, length, tasks[i % len(tasks)]) for i, length in enumerate(lengths))
    write_lerobot_dataset(root, episodes, spec)
    return root
