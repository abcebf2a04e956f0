"""The server's pure parts: wire protocol, frame rule, session table, metrics text (facts §3.3-3.5).

No server and no model here (the protocol module imports no torch); test_serve.py runs the real server.
"""
from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy

from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_model.serving.metrics import Metrics
from dreamzero_model.serving.protocol import (FRAME_MODE_KEY, RequestError, build_request, check_server_config,
                                              decode_request, embodiment_url, is_reset, is_session_lost,
                                              parse_infer_request, reply_actions, server_handshake, tag_from_path,
                                              wire_keys)
from dreamzero_model.serving.sessions import (FRAMES_PER_CHUNK, ServerFull, SessionLost, SessionTable,
                                              select_frames)
from serving_clients import parse_prometheus, session_state, session_views

NAMES = ("droid", "agibot_g1", "yam")
SERVED = ["oxe_droid", "agibot", "yam"]


@pytest.fixture(scope="module")
def specs() -> dict[str, EmbodimentSpec]:
    return {name: load_embodiment(name) for name in NAMES}


# ------------------------------------------------------------------------------------------- handshake
@pytest.mark.parametrize(("name", "resolution", "wrist", "external"), [
    ("droid", [180, 320], True, 2), ("agibot_g1", [480, 640], False, 3), ("yam", [480, 640], False, 3)])
def test_handshake_has_the_official_fields_of_each_embodiment_and_our_frame_mode(
        specs: dict, name: str, resolution: list, wrist: bool, external: int) -> None:
    spec = specs[name]
    handshake = msgpack_numpy.unpackb(msgpack_numpy.packb(server_handshake(spec, spec.embodiment_tag, SERVED)))
    assert handshake == {"image_resolution": resolution, "needs_wrist_camera": wrist, "n_external_cameras": external,
                         "needs_stereo_camera": False, "needs_session_id": True, "action_space": "joint_position",
                         FRAME_MODE_KEY: "training", "embodiment": spec.embodiment_tag, "embodiments": SERVED}
    assert check_server_config(handshake, spec, wire_keys(spec)) == []


def test_client_rejects_the_handshake_of_another_embodiment(specs: dict) -> None:
    agibot = server_handshake(specs["agibot_g1"], "agibot", SERVED)
    problems = check_server_config(agibot, specs["droid"], wire_keys(specs["droid"]))
    assert "embodiment: server 'agibot', embodiment 'droid' 'oxe_droid'" in problems
    assert any(p.startswith("image_resolution: server [480, 640]") for p in problems)


def test_embodiment_url_adds_the_tag_only_when_the_url_has_no_path() -> None:
    assert embodiment_url("ws://gpu:8000", "agibot") == "ws://gpu:8000/agibot"
    assert embodiment_url("ws://gpu:8000/", "agibot") == "ws://gpu:8000/agibot"
    assert embodiment_url("wss://gpu:8000/proxy/dz", "agibot") == "wss://gpu:8000/proxy/dz"
    assert tag_from_path("/agibot?x=1") == "agibot" and tag_from_path("/") == "" and tag_from_path("") == ""


# -------------------------------------------------------------------------------------------- requests
@pytest.mark.parametrize(("name", "frames"), [("droid", 1), ("droid", 9), ("agibot_g1", 4), ("yam", 1)])
def test_a_request_the_client_builds_parses_back_to_the_same_frames_and_state(specs: dict, name: str,
                                                                              frames: int) -> None:
    spec = specs[name]
    views, state = session_views(spec, 3, 1, frames), session_state(spec, 3, 1)
    payload = msgpack_numpy.packb(build_request(views, state, "wave.", "s-1", spec, wire_keys(spec)))
    message = decode_request(payload)
    assert not is_reset(message)
    request = parse_infer_request(message, spec, wire_keys(spec))
    assert sorted(request.views) == sorted(views)
    for key, sent in views.items():
        np.testing.assert_array_equal(request.views[key], sent)
    np.testing.assert_array_equal(request.state, state)
    assert (request.prompt, request.session_id) == ("wave.", "s-1")


def _droid_request(specs: dict, **changes) -> dict:
    spec = specs["droid"]
    request = build_request(session_views(spec, 0, 0, 1), session_state(spec, 0, 0), "wave.", "s-1", spec,
                            wire_keys(spec))
    request.update(changes)
    return {k: v for k, v in request.items() if v is not None}


def test_state_as_1_by_d_is_accepted_as_the_official_server_does(specs: dict) -> None:
    request = _droid_request(specs, **{"observation/joint_position": np.full((1, 7), 0.25)})
    parsed = parse_infer_request(request, specs["droid"], wire_keys(specs["droid"]))
    np.testing.assert_array_equal(parsed.state[:7], np.full(7, 0.25))


@pytest.mark.parametrize(("changes", "message"), [
    ({"observation/wrist_image_left": None},
     r"observation/wrist_image_left: missing from the request \(keys present: endpoint, observation/cartesian"),
    ({"observation/exterior_image_0_left": np.zeros((180, 320, 3), np.float32)},
     r"observation/exterior_image_0_left: expected uint8\[180, 320, 3\] or uint8\[T, 180, 320, 3\] with T >= 1, "
     r"got float32\[180, 320, 3\]"),
    ({"observation/exterior_image_1_left": np.zeros((2, 224, 224, 3), np.uint8)},
     r"observation/exterior_image_1_left: expected uint8\[180, 320, 3\] .* got uint8\[2, 224, 224, 3\]"),
    ({"observation/joint_position": np.zeros(6)},
     r"observation/joint_position: expected float\[7\] or float\[1, 7\], got float64\[6\]"),
    ({"observation/gripper_position": np.array(["open"])},
     r"observation/gripper_position: expected float\[1\] or float\[1, 1\], got <U4\[1\]"),
    ({"observation/joint_position": np.array([0, 0, 0, np.nan, 0, 0, 0])},
     r"observation/joint_position: expected finite values, got \[0.0, 0.0, 0.0, nan"),
    ({"prompt": 7}, r"prompt: expected a string, got int 7"),
    ({"session_id": ""}, r"session_id: expected a non-empty string \(the handshake says needs_session_id\)"),
])
def test_invalid_request_names_the_key_what_was_expected_and_what_came(specs: dict, changes: dict,
                                                                       message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_infer_request(_droid_request(specs, **changes), specs["droid"], wire_keys(specs["droid"]))


@pytest.mark.parametrize(("payload", "message"), [
    (b"\xc1garbage", r"request: malformed msgpack, cannot decode it \(FormatError\)"),
    (b"\x81\xc4\x0b__ndarray__\xc3", r"request: malformed msgpack, cannot decode it \(KeyError: b'data'\)"),
    (msgpack.packb([1, 2]), r"request: expected a msgpack map, got list"),
    ("infer", r"request: expected a binary msgpack frame, got a text frame"),
])
def test_undecodable_frames_are_request_errors(payload: bytes | str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        decode_request(payload)


def test_reply_adds_the_request_state_to_relative_dimensions_only(specs: dict) -> None:
    spec = specs["droid"]  # 7 relative joints, absolute gripper (facts §1.4)
    actions = np.tile(np.linspace(0.0, 0.7, 8), (24, 1))
    state = np.arange(1.0, 9.0)
    reply = reply_actions(actions, spec.relative_mask, state, spec)
    assert reply.dtype == np.float32 and reply.shape == (24, 8)
    np.testing.assert_allclose(reply[:, :7], actions[:, :7] + state[:7], rtol=1e-6)
    np.testing.assert_allclose(reply[:, 7], actions[:, 7], rtol=1e-6)


# ------------------------------------------------------------------------------------------ frame rule
def _frames(*values: int) -> np.ndarray:
    """uint8[T, 2, 2, 3] whose frame t is filled with values[t]."""
    return np.stack([np.full((2, 2, 3), v, np.uint8) for v in values])


def _seen(choice, key: str = "cam") -> list[int]:
    return [int(frame[0, 0, 0]) for frame in choice.views[key]]


def test_first_call_sees_its_newest_frame_only() -> None:
    choice = select_frames(None, {"cam": _frames(1, 2, 3)})
    assert _seen(choice) == [3]
    assert [int(f[0, 0, 0]) for f in choice.buffers["cam"]] == [1, 2, 3]


def test_one_frame_clients_see_their_last_4_frames_left_padded_with_the_oldest() -> None:
    """The official 1-frame clients (RoboArena, the sim client): facts §3.4."""
    choice = select_frames(None, {"cam": _frames(10)})
    seen = []
    for value in (11, 12, 13, 14):
        choice = select_frames(choice.buffers, {"cam": _frames(value)})
        seen.append(_seen(choice))
    assert seen == [[10, 10, 10, 11], [10, 10, 11, 12], [10, 11, 12, 13], [11, 12, 13, 14]]
    assert len(choice.buffers["cam"]) == FRAMES_PER_CHUNK


def test_nine_frames_are_used_as_sent_and_four_frames_as_sent() -> None:
    buffers = select_frames(None, {"cam": _frames(0)}).buffers
    nine = select_frames(buffers, {"cam": _frames(*range(1, 10))})
    assert _seen(nine) == list(range(1, 10))
    four = select_frames(nine.buffers, {"cam": _frames(20, 21, 22, 23)})
    assert _seen(four) == [20, 21, 22, 23]


def test_frame_choice_leaves_the_given_buffers_unchanged() -> None:
    buffers = select_frames(None, {"cam": _frames(1)}).buffers
    select_frames(buffers, {"cam": _frames(2)})
    assert [int(f[0, 0, 0]) for f in buffers["cam"]] == [1]


# ------------------------------------------------------------------------------------------- sessions
def test_the_least_recently_used_idle_session_is_evicted_and_its_next_call_is_told_to_reset() -> None:
    table = SessionTable(max_sessions=2, timeout_s=60.0)
    a, _ = table.open("oxe_droid", "a", now=0.0)
    table.open("oxe_droid", "b", now=1.0)
    table.open("oxe_droid", "a", now=2.0)  # a used last: b is the least recently used
    _, evicted = table.open("agibot", "c", now=3.0)
    assert evicted == ["oxe_droid/b"] and table.evictions == 1 and len(table) == 2
    with pytest.raises(SessionLost) as lost:
        table.open("oxe_droid", "b", now=4.0)
    assert is_session_lost(str(lost.value))
    assert "was evicted to make room for a new session (--max-sessions 2)" in str(lost.value)
    assert "Send endpoint 'reset' with this session_id" in str(lost.value)
    table.reset("oxe_droid/b")
    assert table.open("agibot", "c", now=5.0)[0] is not None and table.get("oxe_droid/a") is a


def test_busy_sessions_are_never_evicted_and_a_full_server_refuses_new_sessions() -> None:
    table = SessionTable(max_sessions=1, timeout_s=60.0)
    busy, _ = table.open("oxe_droid", "a", now=0.0)
    busy.busy = 1
    with pytest.raises(ServerFull, match=r"server full: all 1 sessions have a call in progress \(--max-sessions 1\)"):
        table.open("oxe_droid", "b", now=1.0)
    assert table.get("oxe_droid/a") is busy and table.evictions == 0


def test_idle_sessions_expire_after_the_timeout_but_busy_ones_stay() -> None:
    table = SessionTable(max_sessions=4, timeout_s=10.0)
    idle, _ = table.open("oxe_droid", "idle", now=0.0)
    busy, _ = table.open("oxe_droid", "busy", now=0.0)
    busy.busy = 1
    assert table.expire(now=5.0) == []
    assert table.expire(now=10.5) == ["oxe_droid/idle"] and idle.closed and table.expirations == 1
    with pytest.raises(SessionLost, match="dropped after more than 10 s idle"):
        table.open("oxe_droid", "idle", now=11.0)
    assert table.get("oxe_droid/busy") is busy


# -------------------------------------------------------------------------------------------- metrics
def test_metrics_render_as_prometheus_text() -> None:
    metrics = Metrics()
    metrics.calls["infer"] += 3
    metrics.errors["request"] += 1
    for seconds in (0.1, 0.2, 0.3, 0.4):
        metrics.summaries["infer_seconds"].observe(seconds)
    samples = parse_prometheus(metrics.render([("queue_depth", "Jobs.", 2)], evictions=1, expirations=0))
    assert samples['dreamzero_calls_total{endpoint="infer"}'] == 3
    assert samples['dreamzero_errors_total{cause="request"}'] == 1
    assert samples['dreamzero_infer_seconds{quantile="0.5"}'] == pytest.approx(0.2)
    assert samples['dreamzero_infer_seconds{quantile="0.95"}'] == pytest.approx(0.4)
    assert samples["dreamzero_infer_seconds_count"] == 4
    assert samples["dreamzero_infer_seconds_sum"] == pytest.approx(1.0)
    assert math.isnan(samples['dreamzero_model_seconds{quantile="0.5"}'])
    assert samples["dreamzero_queue_depth"] == 2 and samples["dreamzero_session_evictions_total"] == 1
