"""Stamped ring buffer and frame selection (ARCHITECTURE.md §3; facts §1.8, §3.4, §3.5).

Expected stamps are written out as integers: DROID dt = 1/15 s, AgiBot G1 and YAM dt = 1/30 s.
"""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from dreamzero_embodiments.buffers import StampedRingBuffer
from dreamzero_embodiments.frames import (FrameSchedule, FrameSelectionError, official_query_stamps, select_frames,
                                          select_stamped, training_query_stamps)
from dreamzero_embodiments.spec import load_embodiment

T_OBS = 1_700_000_000_123_456_789  # a realistic epoch stamp, ns: float seconds would lose its last digits
TRAINING_OFFSETS_NS = {  # t_obs - 24 dt + 3 dt i, i = 0..8 (facts §1.8)
    "droid": [-1_600_000_000, -1_400_000_000, -1_200_000_000, -1_000_000_000, -800_000_000, -600_000_000,
              -400_000_000, -200_000_000, 0],
    "agibot_g1": [-800_000_000, -700_000_000, -600_000_000, -500_000_000, -400_000_000, -300_000_000,
                  -200_000_000, -100_000_000, 0],
    "yam": [-800_000_000, -700_000_000, -600_000_000, -500_000_000, -400_000_000, -300_000_000, -200_000_000,
            -100_000_000, 0],
}
OFFICIAL_OFFSETS_NS = {  # steps -23, -16, -8, 0 (facts §3.5), rounded to the nearest ns
    "droid": [-1_533_333_333, -1_066_666_667, -533_333_333, 0],
    "agibot_g1": [-766_666_667, -533_333_333, -266_666_667, 0],
    "yam": [-766_666_667, -533_333_333, -266_666_667, 0],
}


# ----------------------------------------------------------------------------------------- buffer
def test_capacity_keeps_the_newest_stamps_oldest_first() -> None:
    buffer: StampedRingBuffer[str] = StampedRingBuffer(3)
    for stamp in (10, 20, 30, 40, 50):
        assert buffer.push(stamp, f"v{stamp}")
    assert len(buffer) == 3 and buffer.capacity == 3
    assert buffer.snapshot() == ((30, 40, 50), ("v30", "v40", "v50"))
    assert (buffer.oldest_stamp, buffer.newest_stamp) == (30, 50)
    assert buffer.latest() == (50, "v50")


def test_out_of_order_pushes_are_inserted_in_stamp_order() -> None:
    buffer: StampedRingBuffer[str] = StampedRingBuffer(5)
    for stamp in (30, 10, 50, 20, 40):
        buffer.push(stamp, f"v{stamp}")
    assert buffer.snapshot()[0] == (10, 20, 30, 40, 50)
    assert buffer.latest() == (50, "v50")


def test_equal_stamp_replaces_the_value() -> None:
    buffer: StampedRingBuffer[str] = StampedRingBuffer(3)
    buffer.push(10, "first")
    buffer.push(10, "second")
    assert len(buffer) == 1 and buffer.latest() == (10, "second")


def test_late_push_older_than_a_full_buffer_is_not_kept() -> None:
    buffer: StampedRingBuffer[int] = StampedRingBuffer(2)
    buffer.push(20, 2)
    buffer.push(30, 3)
    assert buffer.push(10, 1) is False
    assert buffer.snapshot() == ((20, 30), (2, 3))
    assert buffer.push(25, 25) is True  # in range: kept, the oldest goes
    assert buffer.snapshot() == ((25, 30), (25, 3))


@pytest.mark.parametrize(("t_ns", "tolerance_ns", "expected"), [
    (140, 50, (100, "a")),
    (160, 50, (200, "b")),
    (150, 50, (100, "a")),   # a tie goes to the older stamp
    (250, 50, (200, "b")),   # tolerance is inclusive
    (251, 50, None),
    (49, 50, None),
    (100, 0, (100, "a")),
    (101, 0, None),
])
def test_nearest_respects_the_tolerance(t_ns: int, tolerance_ns: int, expected) -> None:
    buffer: StampedRingBuffer[str] = StampedRingBuffer(4)
    buffer.push(200, "b")
    buffer.push(100, "a")
    assert buffer.nearest(t_ns, tolerance_ns) == expected


def test_empty_buffer_and_clear() -> None:
    buffer: StampedRingBuffer[int] = StampedRingBuffer(2)
    assert (len(buffer), buffer.latest(), buffer.nearest(0, 10**9), buffer.oldest_stamp, buffer.newest_stamp) == (
        0, None, None, None, None)
    buffer.push(5, 5)
    buffer.clear()
    assert len(buffer) == 0 and buffer.latest() is None and buffer.capacity == 2


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
        StampedRingBuffer(0)
    buffer: StampedRingBuffer[int] = StampedRingBuffer(2)
    with pytest.raises(TypeError):
        buffer.push(1.5e9, 1)  # float seconds-as-ns would silently lose precision
    with pytest.raises(ValueError, match="tolerance_ns must be >= 0"):
        buffer.nearest(0, -1)


@pytest.fixture
def frequent_thread_switches():
    """Switch threads every microsecond instead of every 5 ms, so an unlocked race shows up in one run."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_concurrent_pushes_and_reads_keep_the_history_ordered_and_consistent(frequent_thread_switches) -> None:
    capacity, writers, per_writer = 64, 4, 10000
    buffer: StampedRingBuffer[int] = StampedRingBuffer(capacity)
    problems: list[str] = []
    done = threading.Event()

    def write(offset: int) -> None:
        for i in range(per_writer):
            stamp = i * writers + offset  # interleaved: the writers keep inserting between each other
            buffer.push(stamp, 2 * stamp)

    def read() -> None:
        while not done.is_set():
            stamps, values = buffer.snapshot()
            if list(stamps) != sorted(set(stamps)) or [2 * s for s in stamps] != list(values) or len(stamps) > capacity:
                problems.append(f"inconsistent snapshot {stamps[:4]}... {values[:4]}...")
            buffer.nearest(stamps[-1] if stamps else 0, 10)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()
    assert problems == []
    stamps, values = buffer.snapshot()
    assert len(stamps) == capacity and stamps == tuple(sorted(stamps)) and values == tuple(2 * s for s in stamps)
    assert stamps[-1] == writers * per_writer - 1


# --------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("name", sorted(TRAINING_OFFSETS_NS))
def test_training_stamps_are_the_nine_exact_integers_ending_at_t_obs(name: str) -> None:
    timing = load_embodiment(name).timing
    stamps = training_query_stamps(T_OBS, timing.dt, horizon=timing.horizon, stride=timing.frame_stride)
    assert stamps.dtype == np.int64
    assert (stamps - T_OBS).tolist() == TRAINING_OFFSETS_NS[name]
    assert int(stamps[-1]) == T_OBS


@pytest.mark.parametrize("name", sorted(OFFICIAL_OFFSETS_NS))
def test_official_stamps_are_steps_minus_23_16_8_0(name: str) -> None:
    stamps = official_query_stamps(T_OBS, load_embodiment(name).timing.dt)
    assert stamps.dtype == np.int64 and (stamps - T_OBS).tolist() == OFFICIAL_OFFSETS_NS[name]


@pytest.mark.parametrize("name", sorted(TRAINING_OFFSETS_NS))
def test_schedule_takes_one_frame_first_then_nine_or_four(name: str) -> None:
    spec = load_embodiment(name)
    training, official = FrameSchedule.from_spec(spec), FrameSchedule.from_spec(spec, mode="official")
    assert training.query_stamps(T_OBS, first_of_session=True).tolist() == [T_OBS]
    assert official.query_stamps(T_OBS, first_of_session=True).tolist() == [T_OBS]
    assert (training.query_stamps(T_OBS, first_of_session=False) - T_OBS).tolist() == TRAINING_OFFSETS_NS[name]
    assert (official.query_stamps(T_OBS, first_of_session=False) - T_OBS).tolist() == OFFICIAL_OFFSETS_NS[name]


def test_schedule_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="mode must be one of training, official, got 'every_frame'"):
        FrameSchedule(dt_s=0.1, mode="every_frame")
    with pytest.raises(ValueError, match=r"horizon \(24\) must be a positive multiple of stride \(5\)"):
        FrameSchedule(dt_s=0.1, stride=5)
    with pytest.raises(ValueError, match="dt_s must be > 0"):
        training_query_stamps(T_OBS, 0.0)


# -------------------------------------------------------------------------------------- selection
def _camera(start_ns: int, stop_ns: int, period_ns: int, capacity: int = 200) -> StampedRingBuffer[np.ndarray]:
    """Frames uint8[2, 3, 3] whose value is the frame's index, at start, start + period, ... < stop."""
    buffer: StampedRingBuffer[np.ndarray] = StampedRingBuffer(capacity)
    for index, stamp in enumerate(range(start_ns, stop_ns, period_ns)):
        buffer.push(stamp, np.full((2, 3, 3), index % 256, dtype=np.uint8))
    return buffer


def test_select_frames_picks_the_nearest_frame_per_wanted_stamp() -> None:
    period = 33_333_333  # a 30 Hz camera, stamps jittered off the query grid
    start = T_OBS - 2_000_000_000 + 7_000_000
    buffer = _camera(start, T_OBS + 100_000_000, period)
    wanted = training_query_stamps(T_OBS, 1 / 15)
    frames, picked = select_frames(buffer, wanted, tolerance_ns=period // 2 + 1, name="exterior_image_1_left")
    assert frames.shape == (9, 2, 3, 3) and frames.dtype == np.uint8 and picked.dtype == np.int64
    expected_index = np.rint((wanted - start) / period).astype(int)
    assert picked.tolist() == (start + expected_index * period).tolist()
    assert frames[:, 0, 0, 0].tolist() == (expected_index % 256).tolist()
    assert np.abs(picked - wanted).max() <= period // 2 + 1


def test_a_stopped_camera_is_reported_with_the_missing_stamps_and_the_buffer_span() -> None:
    start = T_OBS - 2_000_000_000
    buffer = _camera(start, start + 500_000_000, 33_333_333)  # stopped 1.5 s before t_obs
    wanted = training_query_stamps(T_OBS, 1 / 15)
    with pytest.raises(FrameSelectionError) as error:
        select_frames(buffer, wanted, tolerance_ns=50_000_000, name="wrist_image_left")
    message = str(error.value)
    assert message.startswith("wrist_image_left: no frame within 50.0 ms of wanted stamp(s)")
    assert str(int(wanted[-1])) in message and "-1500.0 ms away" in message
    assert f"from {start} to {start + 15 * 33_333_333} ns" in message
    assert str(int(wanted[0])) not in message  # the first wanted stamp has a frame near it
    assert isinstance(error.value, ValueError)


def test_an_empty_buffer_is_reported_as_such() -> None:
    with pytest.raises(FrameSelectionError, match=r"top_head: .* the buffer is empty"):
        select_frames(StampedRingBuffer(4), [T_OBS], tolerance_ns=10**8, name="top_head")


def test_selection_works_on_any_value_and_refuses_mixed_frame_sizes() -> None:
    buffer: StampedRingBuffer[object] = StampedRingBuffer(4)
    buffer.push(100, b"jpeg bytes")
    buffer.push(200, np.zeros((4, 4, 3), np.uint8))
    picked, values = select_stamped(buffer, [90, 210], tolerance_ns=20)
    assert picked.tolist() == [100, 200] and values[0] == b"jpeg bytes"
    buffer.push(100, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="cam: frames must all be uint8"):
        select_frames(buffer, [100, 200], tolerance_ns=0, name="cam")
