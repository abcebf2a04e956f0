"""The ``remote`` backend against a fake DreamZero server on loopback (facts §3.3-3.5).

The fake (fake_dreamzero_server.py) speaks the official wire protocol: handshake first, msgpack-numpy,
traceback text + close 1011 on errors, and replies a chunk computed from the request so the tests can
check what arrived. Like the official server it keeps one frame buffer and shows its model the last 4
frames, and it can be killed mid-call and restarted on the same port. No rclpy.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from openpi_client import msgpack_numpy
from websockets.exceptions import ConnectionClosedError
from websockets.frames import CloseCode
from websockets.sync.client import connect

from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_model.serving.protocol import build_request, wire_keys
from dreamzero_policy.backends.base import BackendError, Observation
from dreamzero_policy.backends.remote import RemoteBackend
from policy.fake_dreamzero_server import (FakeDreamZeroServer, droid_server_config, expected_actions,
                                          HORIZON)
from waiting import PATIENCE_S, wait_until

REMOTE_LOGGER = "dreamzero_policy.backends.remote"

FAST_BACKOFF_S = (0.05, 0.1)


@pytest.fixture(scope="module")
def droid() -> EmbodimentSpec:
    return load_embodiment("droid")


@pytest.fixture
def server() -> Iterator[FakeDreamZeroServer]:
    with FakeDreamZeroServer() as fake:
        yield fake


def make_observation(spec: EmbodimentSpec, frames: int = 1, session_id: str = "session-a",
                     joint_offset: float = 0.0) -> Observation:
    """Each camera and frame gets its own pixel pattern; the state is 0.1, 0.2, ... plus ``joint_offset``."""
    views = {}
    for index, camera in enumerate(spec.cameras):
        height, width = camera.resolution
        pattern = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3)
        views[camera.key] = np.stack([((pattern + 37 * index + 11 * t) % 251).astype(np.uint8)
                                      for t in range(frames)])
    state = 0.1 * np.arange(1, len(spec.state_names) + 1) + joint_offset
    return Observation(t_obs_ns=1_000, views=views, state=state, prompt="pick up the cup.",
                       session_id=session_id, first_of_session=frames == 1)


def backend_for(spec: EmbodimentSpec, fake: FakeDreamZeroServer, **kwargs: object) -> RemoteBackend:
    """A backend on ``fake``; timeouts generous unless a test is about them (CI's 2 cores may be busy)."""
    kwargs.setdefault("call_timeout_s", PATIENCE_S)
    kwargs.setdefault("connect_timeout_s", PATIENCE_S / 2)
    kwargs.setdefault("reconnect_backoff_s", FAST_BACKOFF_S)
    return RemoteBackend(spec, fake.url, **kwargs)


# ------------------------------------------------------------------------------------------- infer
@pytest.mark.parametrize("frames", [1, 4])
def test_infer_sends_roboarena_keys_and_returns_the_absolute_chunk(droid: EmbodimentSpec,
                                                                   server: FakeDreamZeroServer,
                                                                   frames: int) -> None:
    backend = backend_for(droid, server)
    observation = make_observation(droid, frames=frames)
    backend.reset("pick up the cup.", "session-a")
    prediction = backend.infer(observation)
    backend.close()

    reset, request = server.requests
    assert reset["endpoint"] == "reset" and request["endpoint"] == "infer"
    assert request["prompt"] == "pick up the cup." and request["session_id"] == "session-a"
    for camera_key, wire_key in [("exterior_image_1_left", "observation/exterior_image_0_left"),
                                 ("exterior_image_2_left", "observation/exterior_image_1_left"),
                                 ("wrist_image_left", "observation/wrist_image_left")]:
        sent = observation.views[camera_key]
        expected = sent[0] if frames == 1 else sent
        assert request[wire_key].dtype == np.uint8 and request[wire_key].shape == expected.shape
        np.testing.assert_array_equal(request[wire_key], expected)
    assert request["observation/joint_position"].shape == (7,)
    assert request["observation/gripper_position"].shape == (1,)
    np.testing.assert_allclose(request["observation/joint_position"], observation.state[:7], rtol=0, atol=0)
    np.testing.assert_allclose(request["observation/gripper_position"], observation.state[7:], rtol=0, atol=0)
    cartesian = request["observation/cartesian_position"]  # as the official clients send it (facts §3.3)
    assert cartesian.dtype == np.float64 and cartesian.shape == (6,) and not cartesian.any()

    assert prediction.actions.dtype == np.float64 and prediction.actions.shape == (HORIZON, 8)
    np.testing.assert_allclose(prediction.actions, expected_actions(observation.state[:7], observation.state[7:]),
                               rtol=0, atol=1e-6)
    assert prediction.actions[5, 0] == pytest.approx(0.1 + 5 * 0.01, abs=1e-6)
    assert prediction.relative.dtype == bool and prediction.relative.shape == (8,)
    assert not prediction.relative.any()
    assert prediction.frames is None
    assert server.handshakes == 1


def test_connection_is_lazy_and_reused(droid: EmbodimentSpec, server: FakeDreamZeroServer) -> None:
    backend = backend_for(droid, server)
    assert server.handshakes == 0 and backend.server_config is None
    for _ in range(3):
        backend.infer(make_observation(droid))
    backend.close()
    assert server.handshakes == 1 and len(server.requests) == 3
    assert backend.server_config == droid_server_config()


def test_concurrent_callers_never_have_two_requests_in_flight(droid: EmbodimentSpec) -> None:
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    with FakeDreamZeroServer(reply_delay_s=0.02) as fake:
        backend = backend_for(droid, fake)

        def ask(worker: int) -> None:
            try:
                for call in range(3):
                    offset = worker + 10 * call
                    results[offset] = backend.infer(make_observation(droid, joint_offset=offset)).actions
            except BaseException as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=ask, args=(worker,)) for worker in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=PATIENCE_S)
        backend.close()
    assert errors == []
    assert len(results) == 9
    for offset, actions in results.items():  # each caller got the reply to its own request
        assert actions[0, 0] == pytest.approx(0.1 + offset, abs=1e-5)


def test_fake_server_takes_state_as_1d_or_1_by_d_like_the_official_one(server: FakeDreamZeroServer) -> None:
    request = {"endpoint": "infer", "prompt": "x", "session_id": "s",
               **{key: np.zeros((180, 320, 3), np.uint8) for key in ("observation/exterior_image_0_left",
                                                                    "observation/exterior_image_1_left",
                                                                    "observation/wrist_image_left")},
               "observation/joint_position": np.full((1, 7), 0.5), "observation/gripper_position": np.ones((1, 1))}
    with connect(server.url, compression=None, max_size=None, proxy=None) as ws:
        ws.recv(timeout=PATIENCE_S)
        ws.send(msgpack_numpy.packb(request))
        reply = msgpack_numpy.unpackb(ws.recv(timeout=PATIENCE_S))
    np.testing.assert_allclose(reply, expected_actions(np.full(7, 0.5), np.ones(1)))


# -------------------------------------------------------------------------------------- frame mode
@pytest.mark.parametrize(("announced", "expected"), [({}, "official"), ({"frame_mode": "training"}, "training"),
                                                     ({"frame_mode": "official"}, "official")])
def test_frame_mode_auto_comes_from_the_handshake(droid: EmbodimentSpec, announced: dict, expected: str) -> None:
    """Issue 14 item 1: the official server announces nothing and keeps the last 4 frames: official;
    our own server announces frame_mode training."""
    with FakeDreamZeroServer(config=droid_server_config(**announced)) as fake:
        backend = backend_for(droid, fake)
        before = backend.frame_mode
        backend.reset("pick up the cup.", "session-a")
        after, status = backend.frame_mode, backend.connection_status
        backend.close()
    assert before is None and after == expected and status.frame_mode == expected


def test_nine_frames_forced_on_the_official_server_are_warned_about_as_its_model_sees_only_4(
        droid: EmbodimentSpec, server: FakeDreamZeroServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=REMOTE_LOGGER)
    backend = backend_for(droid, server, frame_mode="training")
    backend.reset("pick up the cup.", "session-a")
    backend.infer(make_observation(droid))
    nine = make_observation(droid, frames=9)
    backend.infer(nine)
    backend.infer(make_observation(droid, frames=9))
    mode = backend.frame_mode
    backend.close()
    assert mode == "training"  # forced: the caller's choice stands
    np.testing.assert_array_equal(server.model_frames[1]["observation/wrist_image_left"],
                                  nine.views["wrist_image_left"][-4:])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("frame_mode is training, but the server" in w and "takes official" in w for w in warnings) == 1
    assert sum("carries 9 frames per camera" in w and "takes 4" in w for w in warnings) == 1  # once, not per call


def test_official_server_model_sees_exactly_the_4_frames_of_a_continuation(droid: EmbodimentSpec,
                                                                           server: FakeDreamZeroServer,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=REMOTE_LOGGER)
    backend = backend_for(droid, server)
    backend.reset("pick up the cup.", "session-a")
    first, then = make_observation(droid), make_observation(droid, frames=4)
    backend.infer(first)
    backend.infer(then)
    backend.close()
    seen = [frames["observation/wrist_image_left"] for frames in server.model_frames]
    np.testing.assert_array_equal(seen[0], first.views["wrist_image_left"])
    np.testing.assert_array_equal(seen[1], then.views["wrist_image_left"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("frame_mode auto -> official" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------- reset
def test_reset_sends_the_session_and_the_next_infer_carries_the_new_one(droid: EmbodimentSpec,
                                                                        server: FakeDreamZeroServer) -> None:
    backend = backend_for(droid, server)
    backend.infer(make_observation(droid, session_id="session-a"))
    backend.reset("stack the blocks.", "session-b")
    backend.infer(make_observation(droid, session_id="session-b"))
    backend.close()

    assert [r["endpoint"] for r in server.requests] == ["infer", "reset", "infer"]
    reset = server.requests[1]
    assert reset["session_id"] == "session-b" and reset["prompt"] == "stack the blocks."
    assert server.requests[0]["session_id"] == "session-a"
    assert server.requests[2]["session_id"] == "session-b"


def test_a_session_without_an_instruction_is_warned_about_once(droid: EmbodimentSpec, server: FakeDreamZeroServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14 item 6: the server would silently get "" as its instruction."""
    caplog.set_level(logging.INFO, logger=REMOTE_LOGGER)
    backend = backend_for(droid, server)
    backend.reset("", "session-a")
    backend.infer(replace(make_observation(droid, session_id="session-a"), prompt=""))
    backend.infer(replace(make_observation(droid, frames=4, session_id="session-a"), prompt=""))
    backend.reset("  ", "session-b")
    backend.reset("stack the blocks.", "session-c")
    backend.infer(make_observation(droid, session_id="session-c"))
    backend.close()
    warned = [r.getMessage() for r in caplog.records if "without an instruction" in r.getMessage()]
    assert len(warned) == 2 and "session-a" in warned[0] and "session-b" in warned[1]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "without an instruction" in r.getMessage())


def test_reset_with_an_unexpected_reply_raises(droid: EmbodimentSpec) -> None:
    with FakeDreamZeroServer(reset_reply="reset failed: no policy") as fake:
        backend = backend_for(droid, fake)
        with pytest.raises(BackendError, match="reset failed: no policy"):
            backend.reset("stack the blocks.", "session-b")
        backend.close()


def test_token_goes_out_as_a_bearer_header(droid: EmbodimentSpec, server: FakeDreamZeroServer) -> None:
    backend = backend_for(droid, server, token="s3cret")
    backend.infer(make_observation(droid))
    backend.close()
    plain = backend_for(droid, server)
    plain.infer(make_observation(droid))
    plain.close()
    assert server.authorizations == ["Bearer s3cret", None]


# ---------------------------------------------------------------------------------------- failures
def test_server_traceback_becomes_a_backend_error_with_its_text(droid: EmbodimentSpec) -> None:
    with FakeDreamZeroServer(fail_infer_with="CUDA out of memory on rank 0") as fake:
        backend = backend_for(droid, fake)
        with pytest.raises(BackendError) as caught:
            backend.infer(make_observation(droid))
        assert "Traceback (most recent call last)" in str(caught.value)
        assert "RuntimeError: CUDA out of memory on rank 0" in str(caught.value)
        assert len(fake.requests) == 1  # the error is not retried

        fake.fail_infer_with = None  # the server closed with 1011; the next call reconnects
        prediction = backend.infer(make_observation(droid))
        backend.close()
    assert prediction.actions.shape == (HORIZON, 8)
    assert fake.handshakes == 2


def nan_chunk() -> np.ndarray:
    chunk = np.zeros((HORIZON, 8), np.float32)
    chunk[3, 2] = np.nan
    return chunk


@pytest.mark.parametrize(("reply", "reason"), [
    (np.zeros((HORIZON - 1, 8), np.float32), "shape"),
    (np.zeros((HORIZON, 7), np.float32), "shape"),
    (np.zeros(HORIZON * 8, np.float32), "shape"),
    (nan_chunk(), "non-finite"),
])
def test_malformed_chunk_is_a_backend_error(droid: EmbodimentSpec, reply: np.ndarray, reason: str) -> None:
    with FakeDreamZeroServer(reply_actions=reply) as fake:
        backend = backend_for(droid, fake)
        with pytest.raises(BackendError, match=reason):
            backend.infer(make_observation(droid))
        backend.close()


def test_fake_server_rejects_a_malformed_request_with_traceback_and_1011(server: FakeDreamZeroServer) -> None:
    request = {"endpoint": "infer", "prompt": "x", "session_id": "s",
               "observation/exterior_image_0_left": np.zeros((224, 224, 3), np.uint8)}
    with connect(server.url, compression=None, max_size=None, proxy=None) as ws:
        assert msgpack_numpy.unpackb(ws.recv(timeout=PATIENCE_S)) == droid_server_config()
        ws.send(msgpack_numpy.packb(request))
        reply = ws.recv(timeout=PATIENCE_S)
        assert isinstance(reply, str) and "observation/exterior_image_0_left" in reply
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=PATIENCE_S)
    assert closed.value.rcvd.code == CloseCode.INTERNAL_ERROR


@pytest.mark.parametrize(("override", "field"), [
    ({"image_resolution": [224, 224]}, "image_resolution"),
    ({"n_external_cameras": 1}, "n_external_cameras"),
    ({"needs_wrist_camera": False}, "needs_wrist_camera"),
    ({"action_space": "joint_velocity"}, "action_space"),
    ({"needs_stereo_camera": True}, "needs_stereo_camera"),
    ({"frame_mode": "nine"}, "frame_mode"),
])
def test_handshake_mismatch_raises_naming_the_field_and_both_values(droid: EmbodimentSpec, override: dict,
                                                                    field: str) -> None:
    with FakeDreamZeroServer(config=droid_server_config(**override)) as fake:
        backend = backend_for(droid, fake)
        with pytest.raises(BackendError) as caught:
            backend.infer(make_observation(droid))
        backend.close()
    message = str(caught.value)
    assert f"{field}: server" in message
    if field == "image_resolution":
        assert "[224, 224]" in message and "[180, 320]" in message
    assert fake.requests == []  # nothing is sent to a mismatched server


def test_silent_server_times_out_after_the_call_timeout(droid: EmbodimentSpec) -> None:
    """The call ends with "no reply" once its timeout has passed (counted from the connection), not
    before, and is not sent again."""
    with FakeDreamZeroServer(replies=False) as fake:
        backend = backend_for(droid, fake, call_timeout_s=2.0)
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"no reply from .* within 2 s"):
            backend.infer(make_observation(droid))
        elapsed = time.monotonic() - start
        status = backend.connection_status
        backend.close()
    assert elapsed >= 2.0
    assert len(fake.requests) == 1  # a timeout is not retried
    assert status.lost_calls == 1


def test_an_unreachable_server_fails_the_call_at_once_naming_the_cause_then_backs_off(
        droid: EmbodimentSpec, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14 item 2: a dead server is an error after one connection attempt, not after call_timeout_s;
    a call before the next attempt is due fails at once without trying, naming the last cause."""
    caplog.set_level(logging.INFO, logger=REMOTE_LOGGER)
    fake = FakeDreamZeroServer().start()
    fake.stop()  # the port is free now: connections are refused
    backend = backend_for(droid, fake, call_timeout_s=PATIENCE_S, reconnect_backoff_s=(PATIENCE_S,))
    # a refused connection ends the call (the message names it), not call_timeout_s; no wall clock asserted
    with pytest.raises(BackendError, match=r"cannot connect to .*Connection refused.*next attempt in"):
        backend.infer(make_observation(droid))
    with pytest.raises(BackendError, match=r"unreachable: 1 failed connection attempt.*Connection refused"):
        backend.reset("pick up the cup.", "session-b")
    status = backend.connection_status
    backend.close()
    assert len([r for r in caplog.records if "cannot connect" in r.getMessage()]) == 1  # the 2nd call did not try
    assert status.failed_attempts == 1 and "Connection refused" in status.last_failure and not status.connected


def _assert_backed_off(caplog: pytest.LogCaptureFixture, elapsed_s: float) -> None:
    """Failed attempts came at most one per pause of FAST_BACKOFF_S (after the first), not in a busy loop."""
    failed_attempts = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert 1 <= len(failed_attempts) <= 2 + elapsed_s / min(FAST_BACKOFF_S), (len(failed_attempts), elapsed_s)


# ----------------------------------------------------------------------------------------- restart
def test_server_restart_reconnects_and_rereads_the_handshake(droid: EmbodimentSpec) -> None:
    first = FakeDreamZeroServer().start()
    backend = backend_for(droid, first)
    backend.infer(make_observation(droid))
    first.stop()

    with FakeDreamZeroServer(port=first.port) as second:
        prediction = backend.infer(make_observation(droid, joint_offset=1.0))
        backend.close()
    assert second.handshakes == 1 and len(second.requests) == 1
    assert prediction.actions[0, 0] == pytest.approx(1.1, abs=1e-6)


def test_calls_while_the_server_restarts_fail_and_attempts_back_off_until_it_is_back(
        droid: EmbodimentSpec, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=REMOTE_LOGGER)
    first = FakeDreamZeroServer().start()
    backend = backend_for(droid, first)
    backend.infer(make_observation(droid))
    first.stop()
    start = time.monotonic()
    with pytest.raises(BackendError, match="Connection refused"):
        backend.infer(make_observation(droid))
    failures: list[BackendError] = []

    def call_succeeds() -> bool:  # as the node does: query again and again while the server is down
        try:
            backend.infer(make_observation(droid))
        except BackendError as error:
            failures.append(error)
            return False
        return True

    for _ in range(5):
        call_succeeds()
    second = FakeDreamZeroServer(port=first.port).start()
    try:
        wait_until(call_succeeds, "a call that reaches the restarted server")
        elapsed = time.monotonic() - start
    finally:
        backend.close()
        second.stop()
    assert failures and all("Connection refused" in str(f) for f in failures)
    assert second.handshakes == 1 and len(second.requests) == 1
    _assert_backed_off(caplog, elapsed)


def test_a_call_cut_off_by_a_server_crash_is_not_sent_again_and_the_restarted_server_gets_a_new_session(
        droid: EmbodimentSpec) -> None:
    """Issue 14 item 4: the restarted server must not run the lost observation (its chunk would be seconds
    old); the next query (a fresh observation) resets the session and sends its newest frame only."""
    first = FakeDreamZeroServer().start()
    backend = backend_for(droid, first)
    backend.reset("pick up the cup.", "session-a")
    backend.infer(make_observation(droid))
    first.replies = False  # the next call is "running" when the server dies
    outcome: dict[str, object] = {}

    def lost_call() -> None:
        try:
            outcome["reply"] = backend.infer(make_observation(droid, frames=4, joint_offset=5.0))
        except BackendError as error:
            outcome["error"] = error

    caller = threading.Thread(target=lost_call)
    caller.start()
    wait_until(lambda: len(first.requests) == 3, "the continuation query at the server")
    first.kill()
    second = FakeDreamZeroServer(port=first.port).start()
    try:
        caller.join(timeout=PATIENCE_S)
        fresh = make_observation(droid, frames=4, joint_offset=7.0)
        prediction = backend.infer(fresh)
        status = backend.connection_status
    finally:
        backend.close()
        second.stop()
    assert "reply" not in outcome and "not sent again" in str(outcome["error"])
    assert [r["endpoint"] for r in second.requests] == ["reset", "infer"]  # the lost query never arrived
    assert second.requests[0]["session_id"] == "session-a" == second.requests[1]["session_id"]
    assert second.requests[1]["observation/joint_position"][0] == pytest.approx(7.1)
    newest = fresh.views["wrist_image_left"][-1]
    assert second.requests[1]["observation/wrist_image_left"].shape == newest.shape  # one frame: a first call
    np.testing.assert_array_equal(second.model_frames[0]["observation/wrist_image_left"], newest[None])
    assert prediction.actions[0, 0] == pytest.approx(7.1, abs=1e-6)
    assert status.lost_calls == 1 and status.reconnects == 1 and status.connected


def test_restarted_server_with_another_config_is_rejected(droid: EmbodimentSpec) -> None:
    first = FakeDreamZeroServer().start()
    backend = backend_for(droid, first)
    backend.infer(make_observation(droid))
    first.stop()
    with FakeDreamZeroServer(port=first.port, config=droid_server_config(image_resolution=[224, 224])) as second:
        with pytest.raises(BackendError, match="image_resolution: server"):
            backend.infer(make_observation(droid))
        backend.close()
    assert second.requests == []


def test_close_ends_a_call_in_flight_without_waiting_for_its_timeout(droid: EmbodimentSpec) -> None:
    with FakeDreamZeroServer(replies=False) as fake:
        backend = backend_for(droid, fake)
        closer = threading.Timer(0.2, backend.close)
        closer.start()
        start = time.monotonic()
        with pytest.raises(BackendError):
            backend.infer(make_observation(droid))
        elapsed = time.monotonic() - start
        closer.join()
    assert elapsed < PATIENCE_S / 2  # ended by close, far before the call timeout (PATIENCE_S)
    assert fake.handshakes == 1  # closed, so no reconnect


def test_closed_backend_refuses_calls(droid: EmbodimentSpec, server: FakeDreamZeroServer) -> None:
    backend = backend_for(droid, server)
    backend.infer(make_observation(droid))
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.infer(make_observation(droid))
    assert len(server.requests) == 1


# ------------------------------------------------------------------------------- keys and arguments
def test_generic_keys_for_embodiments_the_official_server_does_not_serve() -> None:
    agibot = load_embodiment("agibot_g1")
    keys = wire_keys(agibot)
    assert keys.views == {c.key: f"observation/{c.key}" for c in agibot.cameras}
    assert keys.wrist_views is None
    observation = make_observation(agibot)
    request = build_request(observation.views, observation.state, observation.prompt, observation.session_id,
                            agibot, keys)
    start = 0
    for key in agibot.state:
        np.testing.assert_array_equal(request[f"observation/{key.key}"],
                                      0.1 * np.arange(start + 1, start + key.dim + 1))
        start += key.dim
    assert request["observation/top_head"].shape == (480, 640, 3)


def test_observation_that_does_not_match_the_spec_is_rejected_before_sending(droid: EmbodimentSpec,
                                                                            server: FakeDreamZeroServer) -> None:
    backend = backend_for(droid, server)
    observation = make_observation(droid)
    bad_views = dict(observation.views, wrist_image_left=np.zeros((1, 224, 224, 3), np.uint8))
    with pytest.raises(ValueError, match="wrist_image_left"):
        backend.infer(replace(observation, views=bad_views))
    with pytest.raises(ValueError, match="observation.state"):
        backend.infer(replace(observation, state=np.zeros(7)))
    backend.close()
    assert server.requests == []


@pytest.mark.parametrize("kwargs", [{"url": "http://gpu-box:8000"}, {"url": "gpu-box:8000"},
                                    {"call_timeout_s": 0.0}, {"reconnect_backoff_s": ()},
                                    {"frame_mode": "nine"}])
def test_bad_arguments_raise_value_error(droid: EmbodimentSpec, kwargs: dict) -> None:
    arguments = {"url": "ws://127.0.0.1:8000", **kwargs}
    with pytest.raises(ValueError):
        RemoteBackend(droid, **arguments)
