"""``dreamzero dataset``: synthetic DROID bags -> LeRobot v2.1 dataset, read back with pyarrow and PyAV.

The bag (``synthetic_bag.write_droid_bag``) has a known motion: joint states at 40 Hz on a straight
line per joint (so 15 Hz action times fall between samples), arm commands leading that line by 0.1 s,
gripper commands stepping every second, cameras at 15 Hz whose frames carry a bright column at a known
place. Everything is checked against that truth or recomputed here with numpy, never with the
converter's own functions.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from rosbags.rosbag2 import Reader, Writer

from dreamzero_policy.bags.bag_types import typestore_for
from dreamzero_policy.bags.dataset import DatasetOptions, convert_bags
from dreamzero_model.training.sampling import clip_for_start, start_steps
from dreamzero_policy.bags.lerobot_writer import Episode, official_unloadable_steps, write_lerobot_dataset
from dreamzero_policy.cli import main
from policy.synthetic_bag import (CAMERA_HZ, GRIPPER_RAD, RECEIVE_DELAY_NS, SPEC, START_NS, arm_positions,
                                   gripper_command_rad, write_droid_bag)

BAG_SECONDS = 4.0
LEAD_S = 0.1  # arm commands lead the measured line (a controller tracking its target)
JOINT_HZ = 40  # not a multiple of the 15 Hz action rate: most action times fall between joint states
WRIST = {"wrist_image_left": "/cameras/wrist/image_raw/compressed"}
TASK = "Put the cube in the tray."
GRIPPER_ROS_MAX = 0.81  # droid.yaml unit map: 0..0.81 rad <-> 0..1
LANGUAGE_KEYS = ("language.language_instruction", "language.language_instruction_2", "language.language_instruction_3")


def _frame_ns(index: int | np.ndarray) -> np.ndarray:
    """Header stamp of camera frame ``index`` in the synthetic bag."""
    return START_NS + np.round(np.asarray(index) * 1e9 / CAMERA_HZ).astype(np.int64)


def _bag(path: Path, seconds: float = BAG_SECONDS, **kwargs) -> Path:
    options = {"command_groups": ("arm", "gripper"), "command_lead_s": LEAD_S, "joint_hz": JOINT_HZ, **kwargs}
    write_droid_bag(path, seconds, **options)
    return path


def _options(**kwargs) -> DatasetOptions:
    return DatasetOptions(**{"task": TASK, "camera_topics": WRIST, "progress": False, **kwargs})


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("dataset")
    bag = _bag(folder / "bag")
    summary = convert_bags([bag], folder / "droid_cube", SPEC, _options())
    return bag, folder / "droid_cube", summary


def _table(root: Path, episode: int = 0) -> dict[str, np.ndarray]:
    table = pq.read_table(root / f"data/chunk-000/episode_{episode:06d}.parquet")
    return {name: np.stack(table[name].to_numpy(zero_copy_only=False)) for name in table.column_names}


def _meta(root: Path, name: str):
    text = (root / "meta" / name).read_text()
    return [json.loads(line) for line in text.splitlines()] if name.endswith(".jsonl") else json.loads(text)


def _expected_times() -> np.ndarray:
    """The rows' bag times: camera frames 1 .. N-1. Frame 0's commands arrive 1 ms before the first joint
    state, so they cannot be placed in stamp time (commands carry no header) and the commands start at
    frame 1; the last commands (frame N) are stamped 1 ms before frame N, so frame N-1 is the last time at
    which every stream is inside its recording."""
    return _frame_ns(np.arange(1, int(BAG_SECONDS * CAMERA_HZ)))


def test_rows_hold_interpolated_states_and_held_commands_in_model_units(converted) -> None:
    _, root, summary = converted
    rows = _table(root)
    times = _expected_times()
    assert summary["episodes"] == 1 and summary["frames"] == len(times) == len(rows["timestamp"])
    state, action = rows["observation.state"], rows["action"]
    assert state.dtype == np.float32 and state.shape == (len(times), 8) and action.shape == (len(times), 8)
    # measured: the 40 Hz joint line interpolated at each action time (nearest sample would be up to 1.25 mrad off)
    np.testing.assert_allclose(state[:, :7], arm_positions(times), atol=1e-6)
    np.testing.assert_allclose(state[:, 7], GRIPPER_RAD / GRIPPER_ROS_MAX, atol=1e-7)  # model units 0..1
    # commanded: the last command at each time, which leads the measured line; gripper in model units
    np.testing.assert_allclose(action[:, :7], arm_positions(times + round(LEAD_S * 1e9)), atol=1e-6)
    np.testing.assert_allclose(action[:, 7], gripper_command_rad(times) / GRIPPER_ROS_MAX, atol=1e-7)
    assert np.ptp(action[:, 7]) > 0.7  # the gripper steps inside the episode
    # rate, indices, tasks and the language columns the official loader reads
    count = len(times)
    np.testing.assert_array_equal(rows["frame_index"], np.arange(count))
    np.testing.assert_array_equal(rows["index"], np.arange(count))
    np.testing.assert_array_equal(rows["episode_index"], np.zeros(count))
    assert rows["timestamp"].dtype == np.float32
    np.testing.assert_allclose(rows["timestamp"], np.arange(count) / 15.0, atol=1e-6)
    for key in ("task_index",) + tuple(f"annotation.{k}" for k in LANGUAGE_KEYS):
        np.testing.assert_array_equal(rows[key], np.zeros(count))


def _bright_column(rgb: np.ndarray) -> int:
    return int(rgb.astype(np.float64).mean(axis=(0, 2)).argmax())


def test_each_video_has_one_frame_per_row_at_the_row_times(converted) -> None:
    _, root, _ = converted
    rows = _table(root)
    info = _meta(root, "info.json")
    for camera in SPEC.cameras:
        key = f"observation.images.{camera.key}"
        path = root / info["video_path"].format(episode_chunk=0, video_key=key, episode_index=0)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            frames = list(container.decode(stream))
        assert len(frames) == len(rows["timestamp"])
        np.testing.assert_allclose([f.time for f in frames], rows["timestamp"], atol=1e-4)  # LeRobot's tolerance
        pictures = [f.to_ndarray(format="rgb24") for f in frames]
        assert {p.shape for p in pictures} == {(*camera.resolution, 3)}  # the checkpoint's 180x320
        assert info["features"][key]["shape"] == [*camera.resolution, 3]
        # row r shows camera frame r + 1, whose bright column is at 4 (r + 1) mod 160, doubled by the resize
        expected = np.array([2 * ((4 * (r + 1)) % 160) + 0.5 for r in range(len(pictures))])
        found = np.array([_bright_column(p) for p in pictures])
        assert np.abs(found - expected).max() <= 2, (camera.key, found[:8], expected[:8])


def test_meta_files_follow_the_spec_and_the_official_layout(converted) -> None:
    _, root, _ = converted
    info, modality = _meta(root, "info.json"), _meta(root, "modality.json")
    rows = len(_expected_times())
    assert info["codebase_version"] == "v2.1" and info["fps"] == 15 and info["chunks_size"] == 1000
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["total_videos"]) == (1, rows, 1, 3)
    assert info["splits"] == {"train": "0:1"}
    assert (root / info["data_path"].format(episode_chunk=0, episode_index=0)).is_file()
    assert info["features"]["observation.state"]["names"] == list(SPEC.state_names)
    assert info["features"]["action"]["names"] == list(SPEC.action_names)
    for camera in SPEC.cameras:
        feature = info["features"][f"observation.images.{camera.key}"]
        assert feature["dtype"] == "video" and {"height", "width"} <= set(feature["names"])
        assert feature["info"]["video.fps"] == 15 and feature["info"]["video.channels"] == 3
    assert _meta(root, "episodes.jsonl") == [{"episode_index": 0, "tasks": [TASK], "length": rows}]
    assert _meta(root, "tasks.jsonl") == [{"task_index": 0, "task": TASK}]
    assert _meta(root, "embodiment.json")["embodiment_tag"] == "oxe_droid"
    # modality.json slices select each spec key's names out of the packed columns
    for part, column, keys, names in (("state", "observation.state", SPEC.state, SPEC.state_names),
                                      ("action", "action", SPEC.action, SPEC.action_names)):
        assert list(modality[part]) == [key.key for key in keys]
        for key in keys:
            entry = modality[part][key.key]
            assert entry["original_key"] == column and list(names[entry["start"]:entry["end"]]) == list(key.names)
    assert modality["video"] == {c.key: {"original_key": f"observation.images.{c.key}"} for c in SPEC.cameras}
    assert set(modality["annotation"]) == set(LANGUAGE_KEYS)  # all three DROID language keys (facts §2.2, §7)
    columns = set(_table(root))
    assert {entry["original_key"] for entry in modality["annotation"].values()} <= columns


def test_stats_match_a_recomputation_from_the_parquet(converted) -> None:
    _, root, _ = converted
    rows = _table(root)
    stats = _meta(root, "stats.json")
    for column in ("observation.state", "action", "timestamp"):
        data = rows[column].astype(np.float64).reshape(len(rows[column]), -1)
        expected = {"mean": data.mean(0), "std": data.std(0), "min": data.min(0), "max": data.max(0),
                    "q01": np.percentile(data, 1, axis=0), "q99": np.percentile(data, 99, axis=0)}
        assert set(stats[column]) == set(expected)
        for name, values in expected.items():
            np.testing.assert_allclose(stats[column][name], values, rtol=1e-12, atol=1e-12, err_msg=f"{column} {name}")
    # relative stats (facts §1.9): action[i + k] - state[i], k < 24, every start i with a whole chunk
    relative = _meta(root, "relative_stats_dreamzero.json")
    assert set(relative) == {"joint_position"}  # the DROID gripper is absolute
    state, action = rows["observation.state"].astype(np.float64), rows["action"].astype(np.float64)
    samples = np.array([action[i + k, :7] - state[i, :7] for i in range(len(state) - 23) for k in range(24)])
    for name, values in {"mean": samples.mean(0), "std": samples.std(0), "min": samples.min(0),
                         "max": samples.max(0), "q01": np.percentile(samples, 1, axis=0),
                         "q99": np.percentile(samples, 99, axis=0)}.items():
        np.testing.assert_allclose(relative["joint_position"][name], values, rtol=1e-12, atol=1e-12, err_msg=name)
    # the windows see the command lead: action[i + k] - state[i] = VELOCITY (k dt + lead)
    assert relative["joint_position"]["min"][0] == pytest.approx(0.05 * LEAD_S, abs=1e-6)
    episode_stats = _meta(root, "episodes_stats.jsonl")[0]["stats"]
    assert episode_stats["action"]["count"] == [len(action)]
    assert np.array(episode_stats["observation.images.wrist_image_left"]["max"]).shape == (3, 1, 1)


def _copy_bag(source: Path, target: Path, edit) -> Path:
    """``source`` copied to ``target`` with ``edit(topic, receive_ns, raw)`` -> raw bytes, or None to drop."""
    with Reader(source) as reader, Writer(target, version=9) as writer:
        copies = {c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest,
                                              offered_qos_profiles=c.ext.offered_qos_profiles)
                  for c in reader.connections}
        for connection, receive_ns, raw in reader.messages():
            raw = edit(connection.topic, receive_ns, raw)
            if raw is not None:
                writer.write(copies[connection.id], receive_ns, raw)
    return target


def _nan_joint_state(topic: str, receive_ns: int, raw: bytes) -> bytes:
    """The joint state 1 s into the bag with panda_joint3 = NaN."""
    if topic != "/joint_states" or receive_ns != START_NS + 10**9 + RECEIVE_DELAY_NS:
        return raw
    typestore = typestore_for(["sensor_msgs/msg/JointState"])
    msg = typestore.deserialize_cdr(raw, "sensor_msgs/msg/JointState")
    position = np.array(msg.position, dtype=np.float64)
    position[2] = np.nan
    return bytes(typestore.serialize_cdr(dataclasses.replace(msg, position=position), "sensor_msgs/msg/JointState"))


def test_episodes_that_cannot_train_are_skipped_named_and_counted(converted, tmp_path) -> None:
    """A short bag, a NaN joint state and a camera gap: skipped with their names and causes; the good bag
    after them becomes episode 0 (indices renumbered without gaps, training-serving-facts §7)."""
    good, _, _ = converted
    short = _bag(tmp_path / "short", seconds=1.2)  # 17 action steps < 25
    nan = _copy_bag(good, tmp_path / "nan", _nan_joint_state)
    gap_frames = {int(t) + RECEIVE_DELAY_NS for t in _frame_ns(np.arange(20, 26))}  # 0.47 s without exterior 1
    gap = _copy_bag(good, tmp_path / "gap", lambda topic, receive_ns, raw: None if (
        topic == "/cameras/exterior_1/image_raw" and receive_ns in gap_frames) else raw)
    gripper = next(g for g in SPEC.controller_groups if g.name != SPEC.controller_groups[0].name)
    silent = _copy_bag(good, tmp_path / "silent", lambda topic, receive_ns, raw: None if (
        topic == f"/{gripper.command_topic}") else raw)  # a controller group never commanded
    summary = convert_bags([short, nan, gap, silent, good], tmp_path / "out", SPEC, _options())
    assert summary["episodes"] == 1 and summary["frames"] == len(_expected_times())
    assert summary["skipped_by_cause"] == {"shorter than one chunk": 1, "non-finite state or action": 1,
                                           "camera gap": 1, "no commands": 1}
    reasons = {entry["episode"]: entry["reason"] for entry in summary["skipped"]}
    assert "17 action steps, needs 25" in reasons[str(short)]
    assert "panda_joint3=nan" in reasons[str(nan)]
    assert "camera exterior_image_1_left has no frame within 0.150 s" in reasons[str(gap)]
    assert f"no usable command of controller group {gripper.name}" in reasons[str(silent)]
    assert _meta(tmp_path / "out", "episodes.jsonl") == [{"episode_index": 0, "tasks": [TASK],
                                                          "length": len(_expected_times())}]
    assert not (tmp_path / "out/data/chunk-000/episode_000001.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gap", "nan", "out", "short", "silent"]  # no partial folder


def test_tasks_and_success_come_from_each_bags_metadata(tmp_path) -> None:
    source = _bag(tmp_path / "source", seconds=2.0, storage="mcap")  # 29 action steps; MCAP as collect writes
    bags = [shutil.copytree(source, tmp_path / name) for name in ("a", "b", "c")]
    for bag, (instruction, success) in zip(bags, (("Open the drawer.", True), ("Close the drawer.", False),
                                                  ("Open the drawer.", None))):
        (bag / "metadata.json").write_text(json.dumps({"instruction": instruction, "seed": 3, "success": success}))
    summary = convert_bags(bags, tmp_path / "all", SPEC, _options(task=""))
    assert summary["episodes"] == 3 and summary["tasks"] == 2
    assert _meta(tmp_path / "all", "tasks.jsonl") == [{"task_index": 0, "task": "Open the drawer."},
                                                      {"task_index": 1, "task": "Close the drawer."}]
    episodes = _meta(tmp_path / "all", "episodes.jsonl")
    assert [e.get("success") for e in episodes] == [True, False, None]
    assert [_table(tmp_path / "all", i)["task_index"][0] for i in range(3)] == [0, 1, 0]
    only = convert_bags(bags[:2], tmp_path / "only", SPEC, _options(task="", only_success=True))
    assert only["episodes"] == 1 and only["skipped_by_cause"] == {"unsuccessful": 1}
    assert _meta(tmp_path / "only", "episodes.jsonl")[0]["success"] is True


def _run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["dataset", *args, "--quiet"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_bad_input_is_refused_in_one_line_with_exit_status_2(converted, tmp_path, capsys) -> None:
    good, existing, _ = converted
    out = str(tmp_path / "out")
    wrist = ["--camera-topic", "wrist_image_left=/cameras/wrist/image_raw/compressed"]
    arm_only = tmp_path / "arm_only"
    write_droid_bag(arm_only, 0.5)  # commands on the arm's topic only
    short = _bag(tmp_path / "short", seconds=1.0)
    (tmp_path / "bad_meta").mkdir()
    shutil.copytree(good, tmp_path / "bad_meta" / "bag")
    (tmp_path / "bad_meta" / "metadata.json").write_text(json.dumps({"instruction": "", "seed": 1}))
    cases = {
        "camera wrist_image_left: /cameras/wrist/image_raw is missing": [str(good), "-o", out, "--task", TASK],
        "commands of controller group gripper: /gripper_controller/commands is missing":
            [str(arm_only), "-o", out, "--task", TASK, *wrist],
        "no task: pass --task TEXT or write metadata.json": [str(good), "-o", out, *wrist],
        "metadata.json: 'instruction' must be a non-empty string": [str(tmp_path / "bad_meta" / "bag"), "-o", out,
                                                                   *wrist],
        "already exists": [str(good), "-o", str(existing), "--task", TASK, *wrist],
        "does not exist": [str(tmp_path / "nowhere"), "-o", out, "--task", TASK],
        "no episode could be written": [str(short), "-o", out, "--task", TASK, *wrist],
        "silently skips dataset paths containing ['.json']": [str(good), "-o", out + ".json", "--task", TASK, *wrist],
    }
    for message, args in cases.items():
        status, stdout, stderr = _run(capsys, *args)
        assert status == 2, (message, stderr)
        assert stderr.startswith("dreamzero dataset: ") and stderr.count("\n") == 1, stderr
        assert message in stderr, (message, stderr)
        assert not Path(out).exists() and not Path(out + ".json").exists()
    assert "The bag has: " in _run(capsys, str(arm_only), "-o", out, "--task", TASK, *wrist)[2]
    assert "shorter than one chunk" in _run(capsys, str(short), "-o", out, "--task", TASK, *wrist)[2]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial folder left


def test_the_command_prints_a_summary_and_writes_the_dataset(converted, tmp_path, capsys) -> None:
    good, _, _ = converted
    status, stdout, _ = _run(capsys, str(good), "-o", str(tmp_path / "ds"), "--task", TASK,
                             "--camera-topic", "wrist_image_left=/cameras/wrist/image_raw/compressed")
    assert status == 0
    summary = json.loads(stdout[:stdout.rindex("}") + 1])
    assert summary["episodes"] == 1 and summary["frames"] == len(_expected_times()) and summary["skipped"] == []
    assert summary["bag_seconds"] == pytest.approx(BAG_SECONDS, abs=0.01)
    assert summary["conversion_seconds"] > 0 and summary["conversion_seconds_per_bag_minute"] > 0
    assert stdout.rstrip().endswith(f"dataset folder: {tmp_path / 'ds'}")


def _episode(rows: int, task: str = TASK) -> Episode:
    rng = np.random.default_rng(rows)
    return Episode(task=task, state=rng.normal(size=(rows, 8)), action=rng.normal(size=(rows, 8)),
                   frames={c.key: np.zeros((rows, 16, 16, 3), dtype=np.uint8) for c in SPEC.cameras})


def test_the_writer_replaces_a_dataset_only_with_a_complete_one(tmp_path) -> None:
    """Training tests call the writer directly; a failed rewrite leaves the old dataset as it was."""
    root = tmp_path / "ds"
    assert write_lerobot_dataset(root, [_episode(30), _episode(26)], SPEC)["episodes"] == 2
    before = (root / "meta" / "episodes.jsonl").read_text()
    with pytest.raises(ValueError, match="no episode could be written.*shorter than one chunk"):
        write_lerobot_dataset(root, [_episode(24)], SPEC, overwrite=True)
    assert (root / "meta" / "episodes.jsonl").read_text() == before
    with pytest.raises(FileExistsError):
        write_lerobot_dataset(root, [_episode(30)], SPEC)
    assert write_lerobot_dataset(root, [_episode(25)], SPEC, overwrite=True)["frames"] == 25
    assert _meta(root, "episodes.jsonl") == [{"episode_index": 0, "tasks": [TASK], "length": 25}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_the_step_filter_lists_the_start_the_official_loader_cannot_load_of_short_episodes_only(tmp_path) -> None:
    """The official DROID iterator draws s <= L - 24 and crashes (IndexError in get_video) at s = L - 24 when
    L < 48: no anchor s - 24 is left once that chunk's closing frame is cut. Its step filter needs a line per
    episode once the file exists (lerobot_writer module docstring)."""
    root = tmp_path / "ds"
    write_lerobot_dataset(root, [_episode(45), _episode(60)], SPEC)
    assert (root / "meta/step_filter.jsonl").read_text() == (
        '{"episode_index": 0, "step_indices": [21]}\n{"episode_index": 1, "step_indices": []}\n')
    write_lerobot_dataset(root, [_episode(60), _episode(48)], SPEC, overwrite=True)
    assert not (root / "meta/step_filter.jsonl").exists()  # optional: absent, every step loads


def test_unloadable_steps_are_the_starts_without_a_chunk_in_our_reading_of_the_official_sampler() -> None:
    assert official_unloadable_steps(45) == [21] and official_unloadable_steps(47) == [23]
    assert official_unloadable_steps(48) == official_unloadable_steps(60) == official_unloadable_steps(23) == []
    for length in range(24, 150):
        assert official_unloadable_steps(length) == [s for s in start_steps(length)
                                                    if clip_for_start(s, length, None) is None], length
