"""Bags: offline evaluation on a bag written with rosbags (sqlite3, best-effort cameras, a compressed
wrist camera; a camera gap shows as the largest frame offset), replay timing / clock / remap / offset / loop,
record of a replay (MCAP) that evaluates exactly as the original, and a recorded custom type readable from the
bag alone. The round trip from the simulation is in test_bags_sim.py."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader, Writer
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.bags.bag_types import (BagTypeError, message_class, qos_from_bag, qos_to_bag,
                                             subscription_qos, typestore_for)
from dreamzero_policy.bags.evaluation import EvalError, EvalOptions, evaluate_bag
from dreamzero_policy.bags.record import MAX_QUEUE_WAIT_NS, BagRecorder, receive_stamp_ns
from dreamzero_policy.bags.replay import BagPlayer, ReplayOptions, parse_remaps
from dreamzero_policy.bags.report import VIDEO_NAME, write_report
from dreamzero_policy.conversions import stamp_to_ns
from dreamzero_policy.params import PolicySettings
from dreamzero_policy.qos import camera_qos, reliable_qos
from dreamzero_policy.video import Mp4Writer
from ros_testing import PATIENCE_S, MessageCollector, spinning, wait_until
from policy.synthetic_bag import (CAMERA_HZ, JOINT_HZ, RECEIVE_DELAY_NS, SPEC, START_NS, VELOCITY, KnownMotionBackend,
                                   write_droid_bag)

BAG_SECONDS = 6.0
WRIST = {"wrist_image_left": "/cameras/wrist/image_raw/compressed"}
OPTIONS = EvalOptions(camera_topics=WRIST, progress=False)


@pytest.fixture(scope="module")
def sqlite_bag(tmp_path_factory) -> tuple:
    path = tmp_path_factory.mktemp("bags") / "synthetic"
    return path, write_droid_bag(path, BAG_SECONDS, storage="sqlite3")


def test_custom_types_come_from_the_installed_msg_file() -> None:
    typestore = typestore_for(["dreamzero_msgs/msg/ActionChunk"])
    fields = [name for name, _ in typestore.fielddefs["dreamzero_msgs/msg/ActionChunk"][1]]
    assert fields == ["header", "embodiment", "session_id", "chunk_id", "names", "relative", "anchor", "horizon",
                      "dt", "values", "latency"]
    assert message_class("dreamzero_msgs/msg/ActionChunk").__name__ == "ActionChunk"
    with pytest.raises(BagTypeError, match="no_such_pkg/msg/Thing"):
        typestore_for(["no_such_pkg/msg/Thing"])
    with pytest.raises(BagTypeError, match="not installed"):
        message_class("no_such_pkg/msg/Thing")


def test_qos_survives_the_bag_and_recording_matches_every_publisher() -> None:
    best_effort = camera_qos("best_effort")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    assert qos_from_bag([qos_to_bag(best_effort)]).reliability == ReliabilityPolicy.BEST_EFFORT
    assert qos_from_bag([qos_to_bag(latched)]).durability == DurabilityPolicy.TRANSIENT_LOCAL
    mixed = qos_from_bag([qos_to_bag(best_effort), qos_to_bag(reliable_qos())])
    assert mixed.reliability == ReliabilityPolicy.RELIABLE  # disagreeing publishers: the default, as ros2 bag play
    assert qos_from_bag([]).reliability == ReliabilityPolicy.RELIABLE
    assert subscription_qos([reliable_qos(), best_effort]).reliability == ReliabilityPolicy.BEST_EFFORT
    assert subscription_qos([latched]).durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert subscription_qos([latched, reliable_qos()]).durability == DurabilityPolicy.VOLATILE


def test_eval_of_a_perfect_prediction_has_no_error(sqlite_bag, tmp_path) -> None:
    path, counts = sqlite_bag
    backend = KnownMotionBackend("oracle")
    with Mp4Writer(tmp_path / VIDEO_NAME, fps=5) as video:
        result = evaluate_bag(path, SPEC, backend, OPTIONS, video)
    horizon_s = SPEC.timing.horizon * SPEC.timing.dt
    assert len(result.t_obs_ns) == int(BAG_SECONDS / horizon_s) + 1 == len(backend.calls)
    assert backend.resets == 1 and backend.calls[0].first_of_session and not backend.calls[1].first_of_session
    assert np.all(np.diff(result.t_obs_ns) == round(horizon_s * 1e9))  # one query per chunk, on bag time
    assert [v.shape[0] for v in backend.calls[1].views.values()] == [9, 9, 9]  # training frame history
    assert result.messages == sum(counts.values())
    summary = write_report(result, SPEC, tmp_path, {"bag": str(path), "embodiment": "droid", "backend": "oracle",
                                                    "prompt": ""})
    for row in summary["errors_vs_joint_states"]:
        assert row["count"] > 0 and row["max"] < 1e-9, row
    arm = [row for row in summary["errors_vs_commands"] if row["name"] != "panda_gripper_joint"]
    assert all(row["count"] > 0 and row["max"] < 1e-9 for row in arm), arm
    assert summary["errors_vs_commands"][-1]["count"] == 0  # no gripper command recorded: nothing compared
    assert summary["video_frames"] == 2 * len(result.t_obs_ns)
    for name in ("report.md", "report.json", "errors_per_step.png", "trajectories.png", "latency_hist.png", VIDEO_NAME):
        assert (tmp_path / name).stat().st_size > 100, name
    assert "| panda_joint1 |" in (tmp_path / "report.md").read_text()


def test_eval_of_a_still_prediction_shows_the_motion_it_missed(sqlite_bag) -> None:
    path, _ = sqlite_bag
    result = evaluate_bag(path, SPEC, KnownMotionBackend("hold"), OPTIONS)
    missed = result.state_reference - result.predicted
    expected = np.arange(SPEC.timing.horizon)[None, :, None] * SPEC.timing.dt * np.append(VELOCITY, 0.0)
    known = np.isfinite(missed)
    assert known[:, 0].all() and not known[-1, -1].any()  # the last chunk reaches past the bag's end
    np.testing.assert_allclose(missed[known], np.broadcast_to(expected, missed.shape)[known], atol=1e-9)


def _frame_ns(index: int) -> int:
    """Header stamp of camera frame ``index`` in the synthetic bag."""
    return START_NS + round(index * 1e9 / CAMERA_HZ)


def _copy_without_frames(source: Path, target: Path, topic: str, dropped: range) -> None:
    """``source`` copied to ``target`` (sqlite3) without the frames ``dropped`` (indices) on ``topic``."""
    gap = {_frame_ns(i) + RECEIVE_DELAY_NS for i in dropped}  # the frames' receive times
    with Reader(source) as reader, Writer(target, version=9) as writer:
        copies = {c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest,
                                              offered_qos_profiles=c.ext.offered_qos_profiles)
                  for c in reader.connections}
        for connection, receive_ns, raw in reader.messages():
            if not (connection.topic == topic and receive_ns in gap):
                writer.write(copies[connection.id], receive_ns, raw)


def test_eval_reports_the_largest_frame_offset_across_a_camera_gap(sqlite_bag, tmp_path) -> None:
    """Frames 11-13 of one camera are missing (a 0.27 s gap from frame 10 to 14). The second query
    (t_obs = 1.6 s) wants a frame at 0.8 s, mid-gap: frames 10 and 14 are equally near, so the offset
    used is half the gap, within the 150 ms frame tolerance; the other cameras are on the wanted times."""
    path, _ = sqlite_bag
    _copy_without_frames(path, tmp_path / "gap", "/cameras/exterior_1/image_raw", range(11, 14))
    result = evaluate_bag(tmp_path / "gap", SPEC, KnownMotionBackend("hold"), OPTIONS)
    assert not result.blocked and result.t_obs_ns[1] == _frame_ns(24)
    summary = write_report(result, SPEC, tmp_path / "report", {"bag": "gap", "embodiment": "droid",
                                                               "backend": "hold", "prompt": ""})
    offsets = summary["frame_offsets_ms"]
    assert set(offsets) == {camera.key for camera in SPEC.cameras}
    half_gap_ms = (_frame_ns(14) - _frame_ns(10)) / 2 * 1e-6
    assert offsets["exterior_image_1_left"]["max"] == pytest.approx(half_gap_ms, abs=1e-6)  # 133.3 ms
    assert offsets["exterior_image_2_left"]["max"] <= 1e-6 and offsets["wrist_image_left"]["max"] <= 1e-6
    assert f"| exterior_image_1_left | {half_gap_ms:.4f} |" in (tmp_path / "report" / "report.md").read_text()


def test_eval_of_a_bag_with_other_joint_names_names_them(tmp_path) -> None:
    """An FR3 bag (fr3_joint1..7) evaluated as DROID (panda_joint1..7): every query is blocked, and the
    example names the joints the messages carried, not an empty list (issue 12 item 11)."""
    fr3 = tuple(f"fr3_joint{i}" for i in range(1, 8)) + ("fr3_finger_joint1",)
    path = tmp_path / "fr3"
    write_droid_bag(path, 3.0, joint_names=fr3)
    result = evaluate_bag(path, SPEC, KnownMotionBackend("hold"), OPTIONS)
    (cause, example), = result.blocked_example.items()
    assert "missing joints ['panda_joint1'" in example
    assert f"the bag's joint states carry {list(fr3)}, which are not joints of droid" in example
    assert "--joint-name-map" in example
    # ... and with the joints renamed as the bag names them (no YAML edit), the same bag is evaluated
    renamed = load_embodiment("droid", ["panda_*=fr3_*", "panda_gripper_joint=fr3_finger_joint1"])
    result = evaluate_bag(path, renamed, KnownMotionBackend("hold"), OPTIONS)
    assert not result.blocked and len(result.t_obs_ns) >= 2


def test_eval_refuses_messages_stamped_ahead_of_bag_time(tmp_path) -> None:
    """Stamps that jump 10 s ahead for a second and come back (issue 12 item 4): those frames and joint
    states are refused and counted; no chunk is anchored in their future."""
    path = tmp_path / "jumped"
    write_droid_bag(path, BAG_SECONDS, stamp_jump=(2.0, 3.0, 10.0))
    result = evaluate_bag(path, SPEC, KnownMotionBackend("hold"), OPTIONS)
    assert result.blocked["frame stamped ahead of its receive time"] == 3 * CAMERA_HZ
    assert result.blocked["joint state stamped ahead of its receive time"] == JOINT_HZ
    ahead_s = (10 * 10**9 - RECEIVE_DELAY_NS) * 1e-9
    assert f"stamped {ahead_s:.3f} s after it was received" in result.blocked_example[
        "frame stamped ahead of its receive time"]
    end_ns = START_NS + round((BAG_SECONDS + 0.1) * 1e9)
    assert len(result.t_obs_ns) > 0 and np.all(np.asarray(result.t_obs_ns) < end_ns)


def test_eval_names_what_the_bag_lacks(sqlite_bag) -> None:
    path, _ = sqlite_bag
    with pytest.raises(EvalError, match=r"camera wrist_image_left: /cameras/wrist/image_raw is missing.*"
                                        r"/cameras/wrist/image_raw/compressed \(sensor_msgs/msg/CompressedImage\)"):
        evaluate_bag(path, SPEC, KnownMotionBackend("hold"), EvalOptions(progress=False))
    with pytest.raises(EvalError, match="/robot1/joint_states is missing"):
        evaluate_bag(path, SPEC, KnownMotionBackend("hold"), EvalOptions(namespace="robot1", progress=False))


def _play_in_background(player: BagPlayer) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def play() -> None:
        started = time.monotonic()
        outcome["published"] = player.play()
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread, outcome


def test_replay_keeps_timing_and_publishes_the_clock(ros_context, sqlite_bag, unique_name) -> None:
    path, _ = sqlite_bag
    node, listener = Node(f"player_{unique_name}"), Node(f"listener_{unique_name}")
    states = MessageCollector(listener, JointState, "/replayed/joint_states", reliable_qos(depth=500))
    clock = MessageCollector(listener, Clock, "/clock", reliable_qos(depth=1000))
    options = ReplayOptions(rate=4.0, start_offset_s=2.0, delay_s=0.5, clock_hz=40.0, topics=("/joint_states",),
                            remap=parse_remaps(["joint_states:=/replayed/joint_states"]))
    player = BagPlayer(path, options, node)
    try:
        with spinning([listener]):
            wait_until(lambda: states.subscription.get_publisher_count() > 0, "the player's publisher")
            thread, outcome = _play_in_background(player)
            thread.join(timeout=PATIENCE_S)
            expected = sum(1 for j in range(int(BAG_SECONDS * JOINT_HZ) + 1) if j / JOINT_HZ >= 2.0 - 0.002)
            received = states.wait_for(expected)
    finally:
        player.close()
        node.destroy_node()
        listener.destroy_node()
    stamps = np.array([stamp_to_ns(m.header.stamp) for m in received])
    assert outcome["published"] == len(received) == expected
    assert stamps[0] >= START_NS + 2 * 10**9 - 2_000_000 and np.all(np.diff(stamps) > 0)
    assert outcome["seconds"] >= 0.5 + 0.9 * (BAG_SECONDS - 2.0) / 4.0  # the recorded spacing, 4x faster
    ticks = np.array([stamp_to_ns(m.clock) for m in clock.messages])
    assert len(ticks) > 20 and np.all(np.diff(ticks) >= 0)  # 40 Hz plus one before each message
    assert ticks[0] >= START_NS + 2 * 10**9 and ticks[-1] <= stamps[-1] + 2_000_000  # bag receive times


def test_replay_rejects_bad_options(ros_context, sqlite_bag, unique_name) -> None:
    path, _ = sqlite_bag
    node = Node(f"player_{unique_name}")
    try:
        with pytest.raises(ValueError, match=r"topics \['/nope'\] are not in the bag; it has \['/arm_controller"):
            BagPlayer(path, ReplayOptions(topics=("/nope",)), node)
        with pytest.raises(ValueError, match="start offset 60.0 s is outside the bag"):
            BagPlayer(path, ReplayOptions(start_offset_s=60.0), node)
        with pytest.raises(ValueError, match="rate must be > 0"):
            BagPlayer(path, ReplayOptions(rate=0.0), node)
        with pytest.raises(ValueError, match="must look like"):
            parse_remaps(["/a=/b"])
    finally:
        node.destroy_node()


def test_loop_starts_again_at_the_start_offset(ros_context, sqlite_bag, unique_name) -> None:
    """The last second of the bag, looped at rate 2: 60 Hz, a rate a Python listener keeps up with
    (at 300 Hz this listener lagged by several passes and its reader lost samples)."""
    path, counts = sqlite_bag
    offset_s = BAG_SECONDS - 1.0
    node, listener = Node(f"player_{unique_name}"), Node(f"listener_{unique_name}")
    states = MessageCollector(listener, JointState, "/joint_states", reliable_qos(depth=1000))
    player = BagPlayer(path, ReplayOptions(rate=2.0, loop=True, start_offset_s=offset_s, topics=("/joint_states",)),
                       node)
    per_pass = sum(1 for j in range(int(BAG_SECONDS * JOINT_HZ) + 1) if j / JOINT_HZ >= offset_s - 0.002)
    try:
        with spinning([listener]):
            wait_until(lambda: states.subscription.get_publisher_count() > 0, "the player's publisher")
            thread, outcome = _play_in_background(player)
            received = states.wait_for(per_pass + 10)
            player.stop()
            thread.join(timeout=PATIENCE_S)
    finally:
        player.close()
        node.destroy_node()
        listener.destroy_node()
    stamps = np.array([stamp_to_ns(m.header.stamp) for m in received])
    first_ns = START_NS + round(offset_s * 1e9)
    assert abs(stamps[0] - first_ns) < 2_000_000  # the first pass starts at the offset (to the 30 Hz grid)
    wraps = np.flatnonzero(np.diff(stamps) < 0) + 1
    assert len(wraps) >= 1 and wraps[0] == per_pass and stamps[wraps[0]] == stamps[0]  # a whole pass, then again
    assert outcome["published"] >= len(received)


def test_a_recorded_replay_evaluates_like_the_original(ros_context, sqlite_bag, tmp_path, unique_name) -> None:
    path, counts = sqlite_bag
    node = Node(f"player_{unique_name}")
    recorder = BagRecorder(tmp_path / "rerecorded", list(counts), storage="mcap")
    player = BagPlayer(path, ReplayOptions(rate=2.0, wait_for_subscribers_s=10.0, delay_s=0.2), node)
    try:
        with spinning([recorder]):
            wait_until(lambda: len(recorder.topics) == len(counts), "the recorder on every topic")
            thread, _ = _play_in_background(player)
            thread.join(timeout=PATIENCE_S)
            wait_until(lambda: dict(recorder.counts) == counts, f"every message recorded (have "
                                                                      f"{dict(recorder.counts)}, want {counts})")
        recorder.close()
    finally:
        player.close()
        recorder.destroy_node()
        node.destroy_node()
    with Reader(tmp_path / "rerecorded") as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == counts
        cameras = [c for c in reader.connections if c.topic == "/cameras/exterior_1/image_raw"]
        assert cameras[0].ext.offered_qos_profiles[0].reliability.name == "BEST_EFFORT"  # as the player offered
    original = evaluate_bag(path, SPEC, KnownMotionBackend("hold"), OPTIONS)
    replayed = evaluate_bag(tmp_path / "rerecorded", SPEC, KnownMotionBackend("hold"), OPTIONS)
    np.testing.assert_array_equal(replayed.t_obs_ns, original.t_obs_ns)
    np.testing.assert_array_equal(replayed.predicted, original.predicted)
    np.testing.assert_array_equal(replayed.state_reference, original.state_reference)


def test_policy_settings_without_a_node_are_checked_like_node_parameters() -> None:
    settings = PolicySettings.from_values(checkpoint="/ckpt", num_inference_steps=4)
    assert (settings.checkpoint, settings.num_inference_steps, settings.solver) == ("/ckpt", 4, "unipc")
    with pytest.raises(ValueError, match="num_inference_steps=0 is outside"):
        PolicySettings.from_values(num_inference_steps=0)
    with pytest.raises(ValueError, match=r"unknown policy parameters \['steps'\]"):
        PolicySettings.from_values(steps=4)


def test_receive_stamps_undo_queue_waits_and_never_reorder_a_topic() -> None:
    ms, wall = 1_000_000, 1_800_000_000 * 10**9  # the system clock, some day in 2027
    # waited 30 ms in the queue: stamped 30 ms before the callback, on the node clock
    assert receive_stamp_ns(now_ns=5_000 * ms, wall_ns=wall, received_ns=wall - 30 * ms, previous_ns=None) == 4_970 * ms
    # the clocks were read 2 ms apart for the second of two back-to-back messages: still after the first
    first = receive_stamp_ns(now_ns=5_000 * ms, wall_ns=wall, received_ns=wall - 1 * ms, previous_ns=None)
    second = receive_stamp_ns(now_ns=5_000 * ms, wall_ns=wall + 2 * ms, received_ns=wall - 1 * ms, previous_ns=first)
    assert second == first + 1
    # a lagging executor: a wait of seconds is undone too, up to the limit
    assert receive_stamp_ns(now_ns=5_000 * ms, wall_ns=wall, received_ns=wall - 2_500 * ms, previous_ns=None) == 2_500 * ms
    assert receive_stamp_ns(now_ns=10**12 * ms, wall_ns=wall, received_ns=wall - 10**6 * ms,
                            previous_ns=None) == 10**12 * ms - MAX_QUEUE_WAIT_NS
    # no receive time (0) or one in the future (a clock step): stamped at the callback
    for received_ns in (0, wall + 1 * ms):
        assert receive_stamp_ns(now_ns=5_000 * ms, wall_ns=wall, received_ns=received_ns, previous_ns=None) == 5_000 * ms


def test_recording_everything_keeps_custom_types_readable_without_ros(ros_context, tmp_path, unique_name) -> None:
    topic = f"/{unique_name}/action_chunk"
    talker = Node(f"talker_{unique_name}")
    publisher = talker.create_publisher(ActionChunk, topic, reliable_qos())
    recorder = BagRecorder(tmp_path / "all", [], storage="mcap")  # no topics: everything
    try:
        with spinning([recorder]):
            wait_until(lambda: topic in recorder.topics, "the recorder discovering the chunk topic")
            wait_until(lambda: publisher.get_subscription_count() > 0, "the recorder subscribed")
            for chunk_id in range(3):
                publisher.publish(ActionChunk(embodiment="droid", chunk_id=chunk_id, names=["a", "b"],
                                              relative=[True, False], anchor=[0.5, 0.0], horizon=1, dt=0.1,
                                              values=[0.25, -1.5], latency=0.2))
            wait_until(lambda: recorder.counts[topic] == 3, "three chunks recorded")
        assert "/rosout" not in recorder.topics and "/parameter_events" not in recorder.topics
    finally:
        recorder.destroy_node()
        talker.destroy_node()
    with AnyReader([tmp_path / "all"]) as reader:  # a ROS-free reader, types from the bag alone
        connections = [c for c in reader.connections if c.topic == topic]
        chunks = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections)]
    assert [c.chunk_id for c in chunks] == [0, 1, 2]
    assert list(chunks[2].relative) == [True, False] and list(chunks[2].values) == [0.25, -1.5]
    assert chunks[0].names == ["a", "b"] and chunks[0].latency == pytest.approx(0.2)


def test_bag_commands_name_the_cause_and_exit_2(sqlite_bag, tmp_path) -> None:
    dreamzero = str(Path(sys.executable).parent / "dreamzero")
    path, _ = sqlite_bag

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([dreamzero, *args], capture_output=True, text=True, timeout=120)

    missing = run("eval-bag", str(path), "--output", str(tmp_path), "--quiet")
    assert missing.returncode == 2 and "camera wrist_image_left: /cameras/wrist/image_raw is missing" in missing.stderr
    assert "Traceback" not in missing.stderr
    steps = run("eval-bag", str(path), "--execute-steps", "30", "--output", str(tmp_path))
    assert steps.returncode == 2 and "execute_steps must be in 0..24" in steps.stderr
    nowhere = run("replay", str(tmp_path / "nowhere"))
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr
    exists = run("record", "/joint_states", "-o", str(path), "--duration", "0.1")
    assert exists.returncode == 2 and "already exists" in exists.stderr


def test_eval_follows_the_frames_a_remote_server_takes(tmp_path) -> None:
    """frame_mode auto (the default): a backend whose server takes the official 4 frames (a remote backend after
    the official server's handshake) gets 1 frame, then 4 per camera; a local one keeps 9 (issue 14 part 2)."""
    path = tmp_path / "bag"
    write_droid_bag(path, BAG_SECONDS)
    official = KnownMotionBackend("hold")
    official.frame_mode = "official"
    for backend, frames in ((official, 4), (KnownMotionBackend("hold"), 9)):
        evaluate_bag(path, SPEC, backend, OPTIONS)
        counts = [{len(v) for v in call.views.values()} for call in backend.calls]
        assert counts[0] == {1} and len(counts) >= 2 and all(c == {frames} for c in counts[1:]), counts
