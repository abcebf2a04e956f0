"""Assembling a query from camera frames and joint states (dreamzero_embodiments.assembly; ARCHITECTURE.md §3).

DROID: cameras at 15 Hz on the action grid (dt = 1/15 s), so every wanted time of the training spacing
(t_obs - 24 dt + 3 dt i) has a frame stamped exactly there, unless it is older than the camera's history.
"""
from __future__ import annotations

import numpy as np
import pytest

from dreamzero_embodiments.assembly import ObservationAssembler, ObservationError
from dreamzero_embodiments.spec import load_embodiment

SPEC = load_embodiment("droid")
T_OBS = 1_700_000_000_000_000_000


def _assembler_with_frames(count: int) -> ObservationAssembler:
    """Every camera with ``count`` frames at 15 Hz, the newest at T_OBS."""
    assembler = ObservationAssembler(SPEC)
    for camera in SPEC.cameras:
        frame = np.zeros((*camera.resolution, 3), dtype=np.uint8)
        for k in range(count):
            assembler.push_frame(camera.key, T_OBS - round(k * 1e9 / 15), frame)
    return assembler


def test_wanted_times_older_than_the_history_are_clipped_to_the_oldest_frame() -> None:
    oldest = T_OBS - 400_000_000  # 0.4 s of history; a later query wants 1.6 s
    assembler = _assembler_with_frames(7)
    assembler.push_state(T_OBS, SPEC.state_names, np.zeros(len(SPEC.state_names)))
    observation = assembler.assemble(T_OBS, first_of_session=False)
    schedule = T_OBS + np.array([-1_600, -1_400, -1_200, -1_000, -800, -600, -400, -200, 0]) * 1_000_000
    for camera in SPEC.cameras:
        wanted = observation.wanted_stamps[camera.key]
        assert wanted.tolist() == [oldest] * 7 + schedule[7:].tolist()  # the left-pad, then the schedule
        assert observation.frame_stamps[camera.key].tolist() == wanted.tolist()  # no offset counted for the pad


def _no_state_message(state_ns: int) -> str:
    assembler = _assembler_with_frames(1)
    assembler.push_state(state_ns, SPEC.state_names, np.zeros(len(SPEC.state_names)))
    with pytest.raises(ObservationError) as error:
        assembler.assemble(T_OBS, first_of_session=True)
    return str(error.value)


def test_a_missing_joint_state_says_whether_the_newest_is_older_or_newer_than_t_obs() -> None:
    old = _no_state_message(T_OBS - 2_440_000_000)
    assert "no joint state within 0.100 s of t_obs (newest is 2.440 s older than t_obs; topic joint_states)" in old
    future = _no_state_message(T_OBS + 300_000_000)
    assert "(newest is 0.300 s newer than t_obs;" in future
