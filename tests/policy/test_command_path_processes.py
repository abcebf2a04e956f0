"""The command path's console scripts (adapter_node, control_mux) in their own processes, as launch files run them.

Both now spin on a single-threaded executor (``dreamzero_policy.executor``; why: issue 12's measure in
bench/RESULTS.md, bench/jitter_bench.py). Here each process is configured and activated through its
lifecycle services, the adapter's command rate is read from its own command stamps (normalised by the time
they span, so the test's own load does not count), and SIGTERM deactivates, shuts down and exits with
status 0. The multi-threaded executor's starvation (12-28 of 100 commands per second) showed in the bench's
setting, not in this short one: the bench, not this test, is its measure.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.conversions import stamp_to_ns
from dreamzero_policy.qos import reliable_qos
from policy.test_adapter_node import _chunk, _home, _publish_joint_states
from ros_testing import PATIENCE_S, MessageCollector, spinning, wait_until

SPEC = load_embodiment("droid")
BIN = Path(sys.executable).parent
LIFECYCLE_LOG = re.compile(r"\]: (activated|deactivated|shut down)$", re.MULTILINE)
COMMAND_RATE_HZ = 100.0
COMMANDS = 300  # about 3 s of the adapter's commands


@contextmanager
def _node_process(executable: str, namespace: str, log: Path, **parameters: object) -> Iterator[subprocess.Popen]:
    """``executable`` in its own process, killed on leaving if it is still running."""
    ros_args = [arg for name, value in parameters.items() for arg in ("-p", f"{name}:={value}")]
    with log.open("w") as sink:
        process = subprocess.Popen([str(BIN / executable), "--ros-args", "-r", f"__ns:=/{namespace}", *ros_args],
                                   stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _activate(driver: Node, node_name: str) -> None:
    client = driver.create_client(ChangeState, f"{node_name}/change_state")
    wait_until(client.service_is_ready, f"{node_name}'s lifecycle service")
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
        wait_until(future.done, f"{node_name}: lifecycle transition {transition}")
        assert future.result().success, f"{node_name}: transition {transition} failed"


def _play_robot(driver: Node, with_chunks: bool = False) -> None:
    """Joint states at 10 Hz; with ``with_chunks``, a chunk that stays where the arm is every 0.5 s (the
    adapter publishes nothing before its first chunk, then executes or holds)."""
    home = _home(SPEC)
    _publish_joint_states(driver, SPEC, home)
    if with_chunks:
        chunks = driver.create_publisher(ActionChunk, "policy_node/action_chunk", reliable_qos())
        chunk_ids = iter(range(1, 1_000_000))
        driver.create_timer(0.5, lambda: chunks.publish(
            _chunk(SPEC, home, driver.get_clock().now().nanoseconds, next(chunk_ids), delta=0.0)))


def _stop_and_check(process: subprocess.Popen, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=PATIENCE_S) == 0, log.read_text()[-3000:]
    assert LIFECYCLE_LOG.findall(log.read_text()) == ["activated", "deactivated", "shut down"], log.read_text()


def test_adapter_process_sends_commands_at_its_rate_and_stops_on_sigterm(ros_context, unique_name, tmp_path) -> None:
    """Executing chunks that stay where the arm is, the adapter sends at least half of its 100 commands per
    second of its own clock."""
    log = tmp_path / "adapter.log"
    driver = Node("driver", namespace=unique_name)
    arm = next(g for g in SPEC.controller_groups if g.kind == "joints")
    commands = MessageCollector(driver, JointTrajectory, f"policy/{arm.name}", 10 * COMMANDS)
    try:
        with _node_process("adapter_node", unique_name, log, command_rate_hz=COMMAND_RATE_HZ,
                           stream_message="joint_trajectory") as process, spinning([driver]):
            _play_robot(driver, with_chunks=True)
            _activate(driver, f"/{unique_name}/adapter_node")
            received = commands.wait_for(COMMANDS)
            _stop_and_check(process, log)
    finally:
        driver.destroy_node()
    stamps_s = [stamp_to_ns(m.header.stamp) * 1e-9 for m in received]
    rate = (len(stamps_s) - 1) / (stamps_s[-1] - stamps_s[0])
    print(f"adapter_node: {rate:.1f} commands per second of its clock ({len(stamps_s)} commands)")
    assert rate >= COMMAND_RATE_HZ / 2, f"{rate:.1f} commands/s, configured {COMMAND_RATE_HZ:.0f}"


def test_control_mux_process_activates_and_stops_on_sigterm(ros_context, unique_name, tmp_path) -> None:
    log = tmp_path / "mux.log"
    driver = Node("driver", namespace=unique_name)
    try:
        with _node_process("control_mux", unique_name, log) as process, spinning([driver]):
            _play_robot(driver)
            _activate(driver, f"/{unique_name}/control_mux")
            _stop_and_check(process, log)
    finally:
        driver.destroy_node()
