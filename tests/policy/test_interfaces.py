"""dreamzero_msgs: the interfaces match ARCHITECTURE.md section 5 and cross process boundaries intact.

The peer is a separate Python process (interface_peer.py) on the same per-run ROS domain, so these
tests exercise the generated type support, CDR serialisation and DDS discovery, not just Python
objects.
"""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rclpy.node import Node

from dreamzero_msgs.msg import ActionChunk
from dreamzero_msgs.srv import SetControlMode
from ros_testing import PATIENCE_S, MessageCollector, message_fields, spinning, wait_until

PEER = Path(__file__).with_name("interface_peer.py")


@pytest.fixture
def peer(tmp_path: Path) -> Iterator:
    """Start interface_peer.py with given arguments; stop it after the test."""
    processes: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        log = open(tmp_path / f"peer{len(processes)}.log", "w+")  # noqa: SIM115 - closed below
        process = subprocess.Popen([sys.executable, str(PEER), *args], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True)
        process.log = log
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.log.close()


def _peer_output(process: subprocess.Popen) -> str:
    process.log.seek(0)
    return process.log.read()


def test_action_chunk_has_the_fields_of_the_design() -> None:
    assert ActionChunk.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "embodiment": "string",
        "session_id": "string",
        "chunk_id": "uint64",
        "names": "sequence<string>",
        "relative": "sequence<boolean>",
        "anchor": "sequence<double>",
        "horizon": "uint32",
        "dt": "double",
        "values": "sequence<double>",
        "latency": "float",
    }


def test_set_control_mode_has_the_fields_of_the_design() -> None:
    assert SetControlMode.Request.get_fields_and_field_types() == {"mode": "string"}
    assert SetControlMode.Response.get_fields_and_field_types() == {
        "success": "boolean", "message": "string", "mode": "string"}


def _droid_chunk_fields() -> dict:
    """A realistic DROID chunk: 7 relative joints + absolute gripper, horizon 24 at 15 Hz."""
    rng = random.Random(7)
    names = [f"panda_joint{i}" for i in range(1, 8)] + ["gripper"]
    return {
        "header": {"stamp": {"sec": 1_763_700_000, "nanosec": 123_456_789}, "frame_id": "base_link"},
        "embodiment": "droid",
        "session_id": "session-ü-42",  # non-ASCII survives the string type
        "chunk_id": 2**40 + 7,  # beyond 32 bits: the field is uint64
        "names": names,
        "relative": [True] * 7 + [False],
        "anchor": [rng.uniform(-2.0, 2.0) for _ in range(7)] + [0.0],
        "horizon": 24,
        "dt": 1.0 / 15.0,
        "values": [rng.uniform(-3.0, 3.0) for _ in range(24 * len(names))],
        "latency": 0.25,  # exact in float32
    }


def test_action_chunk_crosses_processes_with_every_field_intact(ros_context, unique_name, peer) -> None:
    expected = _droid_chunk_fields()
    topic = f"{unique_name}/action_chunk"
    process = peer("publish-chunk", topic, json.dumps(expected))
    node = Node(f"{unique_name}_receiver")
    try:
        collector = MessageCollector(node, ActionChunk, topic)
        with spinning([node]):
            try:
                received = collector.wait_for(1)[0]
            except TimeoutError as error:
                raise AssertionError(f"no chunk from the peer; peer said:\n{_peer_output(process)}") from error
    finally:
        node.destroy_node()

    fields = message_fields(received)
    assert fields == expected
    assert len(fields["values"]) == fields["horizon"] * len(fields["names"])
    assert math.isclose(fields["dt"], 1.0 / 15.0, rel_tol=0.0, abs_tol=0.0)


def test_set_control_mode_is_served_across_processes(ros_context, unique_name, peer) -> None:
    service = f"{unique_name}/set_mode"
    process = peer("serve-mode", service)
    node = Node(f"{unique_name}_client")
    try:
        client = node.create_client(SetControlMode, service)
        with spinning([node]):
            if not client.wait_for_service(timeout_sec=PATIENCE_S):
                raise AssertionError(f"service never appeared; peer said:\n{_peer_output(process)}")

            def call(mode: str) -> SetControlMode.Response:
                future = client.call_async(SetControlMode.Request(mode=mode))
                wait_until(future.done, f"the reply to set_mode({mode!r})")
                return future.result()

            accepted = call("policy")
            refused = call("fly")
            held = call("hold")
    finally:
        node.destroy_node()

    assert (accepted.success, accepted.mode, accepted.message) == (True, "policy", "mode set to policy")
    assert refused.success is False
    assert refused.mode == "policy", "a refused request must leave the mode unchanged"
    assert "fly" in refused.message and "teleop, policy, hold" in refused.message
    assert (held.success, held.mode) == (True, "hold")
