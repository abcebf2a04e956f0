"""policy_node with the tiny local backend, driven by synthetic sensors over real rclpy topics.

Cameras run at different rates with jittered stamps, one of them compressed; joint states follow a
known function of time, so each chunk's anchor can be traced to the published state it used.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from dreamzero_embodiments.spec import ROBOTS_DIR, load_embodiment
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.conversions import message_to_chunk, stamp_to_ns
from dreamzero_policy.policy_node import PolicyNode
from ros_testing import PATIENCE_S, MessageCollector, spinning, wait_until
from policy.fake_dreamzero_server import FakeDreamZeroServer, droid_server_config
from policy.synthetic_sensors import SyntheticSensors

RATES = {"exterior_image_1_left": 15.0, "exterior_image_2_left": 10.0, "wrist_image_left": 30.0}
EXECUTE_STEPS = 8
STATE_TOLERANCE_S = 0.1
CAMERA_TIMEOUT_S = 0.5


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(tmp_path_factory: pytest.TempPathFactory):
    previous = os.environ.get("DREAMZERO_CACHE")
    os.environ["DREAMZERO_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("DREAMZERO_CACHE")
    else:
        os.environ["DREAMZERO_CACHE"] = previous


def _mixed_droid(tmp_path: Path) -> Path:
    """DROID with its second exterior camera sending CompressedImage (jpeg)."""
    document = yaml.safe_load((ROBOTS_DIR / "droid.yaml").read_text())
    document["cameras"][1]["type"] = "CompressedImage"
    path = tmp_path / "droid_mixed.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _policy_node(namespace: str, embodiment: Path, **overrides) -> PolicyNode:
    values = {"embodiment": str(embodiment), "backend": "local", "checkpoint": "tiny", "prompt": "Pick up the cup.",
              "execute_steps": EXECUTE_STEPS, "solver": "euler", "num_inference_steps": 1, "cfg_scale": 1.0,
              "camera_timeout_s": CAMERA_TIMEOUT_S, "state_tolerance_s": STATE_TOLERANCE_S, "diagnostics_rate_hz": 5.0,
              # chunks are published however late: a busy CI machine may take longer than a 1.6 s horizon
              "max_chunk_age_s": PATIENCE_S, **overrides}
    return PolicyNode(namespace=namespace, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def _start(node: PolicyNode) -> None:
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS


@contextmanager
def _running(namespace: str, embodiment: Path, **overrides) -> Iterator[tuple[PolicyNode, SyntheticSensors, Node]]:
    """A configured and active policy node with synthetic sensors and a listener node, all spinning."""
    spec = load_embodiment(embodiment)
    node = _policy_node(namespace, embodiment, **overrides)
    sensors = SyntheticSensors("sensors", spec, RATES, camera_types={c.key: c.type for c in spec.cameras},
                               namespace=namespace)
    listener = Node("listener", namespace=namespace)
    try:
        with spinning([node, sensors, listener], threads=4):
            yield node, sensors, listener
    finally:
        node.trigger_shutdown()
        for each in (node, sensors, listener):
            each.destroy_node()


def test_chunks_flow_with_names_anchors_stamps_latency_and_video(ros_context, unique_name, tmp_path) -> None:
    embodiment = _mixed_droid(tmp_path)
    spec = load_embodiment(embodiment)
    with _running(unique_name, embodiment) as (node, sensors, listener):
        chunks = MessageCollector(listener, ActionChunk, "policy_node/action_chunk")
        video = MessageCollector(listener, Image, "policy_node/predicted_video", 50)
        _start(node)
        received = chunks.wait_for(5)
        arrival_ns = listener.get_clock().now().nanoseconds
        frames = video.wait_for(8)

    parsed = [message_to_chunk(m) for m in received]
    assert all(c.names == spec.action_names for c in parsed)
    assert all(c.relative.tolist() == [True] * 7 + [False] for c in parsed)
    assert all(c.values.shape == (24, 8) and np.all(np.isfinite(c.values)) for c in parsed)
    assert [c.chunk_id for c in parsed] == list(range(1, len(parsed) + 1))
    assert all(abs(c.dt - 1 / 15) < 1e-12 and c.embodiment == spec.name for c in parsed)
    assert len({c.session_id for c in parsed}) == 1
    for chunk in parsed:  # the anchor is a published joint state near t_obs (joints: no unit map)
        near = [p for s, p in sensors.states() if abs(s - chunk.t_obs_ns) <= STATE_TOLERANCE_S * 1e9]
        assert any(np.allclose(chunk.anchor[:7], p[:7]) for p in near), "anchor is not the state at t_obs"
        assert chunk.anchor[7] == 0.0  # absolute gripper: no anchor
        assert 0.0 < chunk.latency <= (arrival_ns - chunk.t_obs_ns) * 1e-9  # published before it arrived here
    # Cadence (lower bounds only: how late a query may start depends on this shared machine's load, which a
    # test must not assert on): a query never starts while one is in flight, and never before the previous
    # chunk has EXECUTE_STEPS steps left minus the latency; t_obs trails the query start by at most the
    # camera timeout (the staleness check guarantees it) plus stamp jitter.
    gaps_s = np.diff([c.t_obs_ns for c in parsed]) * 1e-9
    latencies = np.array([c.latency for c in parsed[:-1]])
    slack_s = CAMERA_TIMEOUT_S + 0.01
    assert np.all(gaps_s >= latencies - slack_s), (gaps_s, latencies)
    assert np.all(gaps_s >= EXECUTE_STEPS / 15 - latencies.max() - slack_s), (gaps_s, latencies)
    assert all((f.height, f.width, f.encoding) == (32, 64, "rgb8") for f in frames)  # tiny model's mosaic
    assert stamp_to_ns(frames[0].header.stamp) > parsed[0].t_obs_ns


def _diagnostic(collector: MessageCollector) -> tuple[int, str]:
    if not collector.messages:
        return -1, ""
    status = collector.messages[-1].status[0]
    return status.level[0], status.message


def test_stale_camera_and_bad_joint_stop_chunks_and_are_named_then_recover(ros_context, unique_name) -> None:
    with _running(unique_name, ROBOTS_DIR / "droid.yaml") as (node, sensors, listener):
        chunks = MessageCollector(listener, ActionChunk, "policy_node/action_chunk")
        diagnostics = MessageCollector(listener, DiagnosticArray, "diagnostics", 50)
        _start(node)
        chunks.wait_for(2)

        sensors.stopped.add("wrist_image_left")
        wait_until(lambda: "wrist_image_left" in _diagnostic(diagnostics)[1], "diagnostics naming the camera")
        level, message = _diagnostic(diagnostics)
        assert level == 1 and "cameras/wrist/image_raw" in message  # WARN, names the topic
        settled, reports = len(chunks.messages), len(diagnostics.messages)
        diagnostics.wait_for(reports + 5)  # a further second of stale reports at 5 Hz
        assert all("wrist_image_left" in m.status[0].message for m in diagnostics.messages[reports:])
        assert len(chunks.messages) <= settled + 1, "no chunk may follow a stale camera (one may be in flight)"

        sensors.stopped.clear()
        sensors.poisoned = "panda_joint3"
        wait_until(lambda: "panda_joint3" in _diagnostic(diagnostics)[1], "diagnostics naming the joint")
        before = len(chunks.messages)

        sensors.poisoned = None
        chunks.wait_for(before + 2)
        wait_until(lambda: _diagnostic(diagnostics)[0] == 0, "diagnostics back to OK")


def test_implausible_joint_states_are_refused_named_and_never_an_anchor(ros_context, unique_name) -> None:
    """A joint reading of 1e6 rad (issue 12 item 1) is refused, counted and named in diagnostics; no chunk
    is anchored on it, and chunks resume once the readings are plausible again."""
    with _running(unique_name, ROBOTS_DIR / "droid.yaml") as (node, sensors, listener):
        chunks = MessageCollector(listener, ActionChunk, "policy_node/action_chunk")
        diagnostics = MessageCollector(listener, DiagnosticArray, "diagnostics", 50)
        _start(node)
        chunks.wait_for(2)
        sensors.glitches = {"panda_joint1": 1e6}
        wait_until(lambda: "panda_joint1=1e+06 is outside" in _diagnostic(diagnostics)[1],
                   "diagnostics naming the refused reading")
        assert _diagnostic_value(diagnostics, "refused_joint_states") > 0
        sensors.glitches = {}
        chunks.wait_for(len(chunks.messages) + 2)
    anchors = np.array([message_to_chunk(m).anchor[0] for m in chunks.messages])
    assert np.all(np.abs(anchors) < 2.9), anchors  # within panda_joint1's URDF range: never the glitch


def test_a_killed_model_process_is_restarted_and_chunks_resume_in_a_new_session(ros_context, unique_name) -> None:
    """Issue 12 item 7: no operator needed after the local model process dies."""
    with _running(unique_name, ROBOTS_DIR / "droid.yaml") as (node, sensors, listener):
        chunks = MessageCollector(listener, ActionChunk, "policy_node/action_chunk")
        diagnostics = MessageCollector(listener, DiagnosticArray, "diagnostics", 50)
        _start(node)
        before = chunks.wait_for(2)[-1].session_id
        node._backend._process.kill()
        wait_until(lambda: _diagnostic_value(diagnostics, "model_process_restarts") >= 1, "the restart reported")
        wait_until(lambda: chunks.messages[-1].session_id != before, "chunks from a new session")


def test_an_oversized_frame_is_refused_by_name_and_starves_nothing(ros_context, unique_name, tmp_path) -> None:
    """2000x2000 frames on one camera (issue 12 item 10) are refused before decoding, counted and named; the
    joint states, in their own callback group, still reach the node."""
    with _running(unique_name, _mixed_droid(tmp_path)) as (node, sensors, listener):
        diagnostics = MessageCollector(listener, DiagnosticArray, "diagnostics", 50)
        _start(node)
        sensors.oversized = {"exterior_image_2_left"}  # a CompressedImage camera in this YAML: the header is read
        wait_until(lambda: _diagnostic_value(diagnostics, "refused_oversized_frames") > 0, "oversized frames refused")
        assert "frame from camera exterior_image_2_left" in _diagnostic_value(diagnostics, "last_refusal", str)
        assert "2000x2000 = 4000000 pixels is over the cap of 230400" in _diagnostic_value(diagnostics, "last_refusal",
                                                                                           str)
        newest = node._assembler._states.latest()[0]
        wait_until(lambda: node._assembler._states.latest()[0] > newest, "joint states still arriving")


def _diagnostic_value(collector: MessageCollector, key: str, kind: type = float):
    if not collector.messages:
        return kind()
    return kind(next(kv.value for kv in collector.messages[-1].status[0].values if kv.key == key))


def test_remote_backend_chunks_are_absolute_and_server_errors_show_in_diagnostics(ros_context, unique_name) -> None:
    with FakeDreamZeroServer() as server, _running(unique_name, ROBOTS_DIR / "droid.yaml", backend="remote",
                                                   server_url=server.url, call_timeout_s=5.0,
                                                   frame_mode="official") as (node, _, listener):
        chunks = MessageCollector(listener, ActionChunk, "policy_node/action_chunk")
        diagnostics = MessageCollector(listener, DiagnosticArray, "diagnostics", 50)
        _start(node)
        received = chunks.wait_for(2)
        server.fail_infer_with = "CUDA out of memory"
        wait_until(lambda: "CUDA out of memory" in _diagnostic(diagnostics)[1], "the server error")
        assert _diagnostic(diagnostics)[0] == 2  # ERROR
        count, reports = len(chunks.messages), len(diagnostics.messages)
        diagnostics.wait_for(reports + 5)
        assert len(chunks.messages) <= count + 1, "no chunk may come from a failing server"
        server.fail_infer_with = None
        chunks.wait_for(len(chunks.messages) + 1)
    first = message_to_chunk(received[0])
    assert not first.relative.any() and not first.anchor.any()  # the official server returns absolute actions
    assert first.values.shape == (24, 8)
    sizes = [r["observation/wrist_image_left"].shape for r in server.requests if r.get("endpoint") == "infer"]
    assert sizes[0] == (180, 320, 3) and (4, 180, 320, 3) in sizes  # first query one frame, then 4 (official mode)


@pytest.mark.parametrize(("announced", "frames"), [({}, 4), ({"frame_mode": "training"}, 9)])
def test_frame_mode_auto_sends_what_the_server_takes(ros_context, unique_name, announced: dict, frames: int) -> None:
    """Issue 14 item 1: by default the official server (no frame_mode in its handshake; it keeps the last 4
    frames) gets 4 frames per continuation query, and a server announcing frame_mode training gets 9."""
    with FakeDreamZeroServer(config=droid_server_config(**announced)) as server, _running(
            unique_name, ROBOTS_DIR / "droid.yaml", backend="remote", server_url=server.url) as (node, _, listener):
        chunks = MessageCollector(listener, ActionChunk, "policy_node/action_chunk")
        _start(node)
        chunks.wait_for(3)
    sizes = [r["observation/wrist_image_left"].shape for r in server.requests if r.get("endpoint") == "infer"]
    assert sizes[0] == (180, 320, 3)  # a session's first query: one frame
    assert len(sizes) >= 3 and set(sizes[1:]) == {(frames, 180, 320, 3)}, sizes


def _rosout_lines(collector: MessageCollector, node: PolicyNode, text: str) -> list[Log]:
    name = node.get_logger().name
    return [m for m in collector.messages if m.name == name and text in m.msg]


def test_an_unreachable_server_is_an_error_at_once_and_backend_log_lines_reach_the_node_log(
        ros_context, unique_name) -> None:
    """Issue 14 items 2 and 3: diagnostics say ERROR with the cause after the first failed connection, not
    after call_timeout_s, while the node keeps trying; the backend's lines are in the node's log."""
    down = FakeDreamZeroServer().start()
    down.stop()  # connections to its port are refused
    with _running(unique_name, ROBOTS_DIR / "droid.yaml", backend="remote", server_url=down.url,
                  call_timeout_s=PATIENCE_S) as (node, _, listener):
        chunks = MessageCollector(listener, ActionChunk, "policy_node/action_chunk")
        diagnostics = MessageCollector(listener, DiagnosticArray, "diagnostics", 50)
        rosout = MessageCollector(listener, Log, "/rosout", 1000)
        _start(node)
        wait_until(lambda: "Connection refused" in _diagnostic(diagnostics)[1], "ERROR naming the cause",
                   timeout_s=PATIENCE_S / 2)  # far within call_timeout_s
        assert _diagnostic(diagnostics)[0] == 2
        assert _diagnostic_value(diagnostics, "server.connected", str) == "False"
        wait_until(lambda: _diagnostic_value(diagnostics, "server.failed_connection_attempts", int) >= 2,
                   "a second connection attempt")
        wait_until(lambda: _rosout_lines(rosout, node, f"cannot connect to {down.url}"), "the failure in the log")
        with FakeDreamZeroServer(port=down.port) as server:
            chunks.wait_for(1)
            wait_until(lambda: _rosout_lines(rosout, node, f"connected to {server.url}/oxe_droid after"), "connected, logged")
    (connected,) = _rosout_lines(rosout, node, f"connected to {server.url}")
    assert "(server metadata {" in connected.msg and connected.stamp.sec > 0
    assert _rosout_lines(rosout, node, "session") and _rosout_lines(rosout, node, "frame_mode auto -> official")


def test_a_chunk_older_than_its_horizon_is_not_published_and_diagnostics_say_so(ros_context, unique_name) -> None:
    """Issue 12 item 8: a server that takes 2 s per chunk (DROID horizon: 24 / 15 Hz = 1.6 s): nothing it
    computes could be executed, so nothing is published; diagnostics WARN, then ERROR once no chunk came
    for call_timeout_s, and report the age of the call in flight."""
    with FakeDreamZeroServer(reply_delay_s=2.0) as server, _running(
            unique_name, ROBOTS_DIR / "droid.yaml", backend="remote", server_url=server.url, call_timeout_s=4.0,
            frame_mode="official", max_chunk_age_s=0.0) as (node, _, listener):
        chunks = MessageCollector(listener, ActionChunk, "policy_node/action_chunk")
        diagnostics = MessageCollector(listener, DiagnosticArray, "diagnostics", 50)
        _start(node)
        wait_until(lambda: "older than max_chunk_age_s 1.60 s: not published" in _diagnostic(diagnostics)[1],
                   "a chunk refused as too old")
        assert _diagnostic(diagnostics)[0] == 1  # WARN
        wait_until(lambda: _diagnostic_value(diagnostics, "call_in_flight_s") > 0, "the call in flight reported")
        wait_until(lambda: "longer than call_timeout_s 4 s" in _diagnostic(diagnostics)[1], "ERROR: no chunk for long")
        assert _diagnostic(diagnostics)[0] == 2 and _diagnostic_value(diagnostics, "chunks_too_old") >= 1
    assert chunks.messages == []


def test_enable_reset_and_prompt_control_the_session(ros_context, unique_name) -> None:
    with FakeDreamZeroServer() as server, _running(unique_name, ROBOTS_DIR / "droid.yaml", backend="remote",
                                                   server_url=server.url,
                                                   frame_mode="official") as (node, _, client):
        chunks = MessageCollector(client, ActionChunk, "policy_node/action_chunk")
        diagnostics = MessageCollector(client, DiagnosticArray, "diagnostics", 50)
        enable = client.create_client(SetBool, "policy_node/enable")
        reset = client.create_client(Trigger, "policy_node/reset")
        prompt = client.create_publisher(String, "policy_node/prompt", 10)

        def call(service, request):
            assert service.wait_for_service(timeout_sec=PATIENCE_S)
            future = service.call_async(request)
            wait_until(future.done, "service reply")
            return future.result()

        _start(node)
        first_session = chunks.wait_for(2)[0].session_id

        assert call(enable, SetBool.Request(data=False)).success
        paused_at, reports = len(chunks.messages), len(diagnostics.messages)
        diagnostics.wait_for(reports + 5)
        assert len(chunks.messages) <= paused_at + 1
        assert any(kv.key == "enabled" and kv.value == "False" for kv in diagnostics.messages[-1].status[0].values)

        def first_chunk_after(index: int, old_sessions: tuple[str, ...], what: str) -> ActionChunk:
            """The first chunk from message ``index`` on of a session not in ``old_sessions`` (a chunk of an old
            session may still land; the new one's may land before the service reply is read)."""
            wait_until(lambda: any(m.session_id not in old_sessions for m in chunks.messages[index:]), what)
            return next(m for m in chunks.messages[index:] if m.session_id not in old_sessions)

        paused = len(chunks.messages)
        assert call(enable, SetBool.Request(data=True)).success
        resumed = first_chunk_after(paused, (first_session,), "a chunk after enabling")
        assert resumed.chunk_id == 1  # a new session, counted from 1

        before_reset = len(chunks.messages)
        reply = call(reset, Trigger.Request())
        assert reply.success and reply.message.startswith("new session")
        first_chunk_after(before_reset, (first_session, resumed.session_id), "a chunk of the reset's session")

        prompt.publish(String(data="Open the drawer."))
        wait_until(lambda: any(r.get("prompt") == "Open the drawer." for r in server.requests),
                   "the new prompt at the server")
    resets = [r for r in server.requests if r.get("endpoint") == "reset"]
    assert len({r["session_id"] for r in resets}) >= 4  # activate, enable, reset, prompt: a new session each
