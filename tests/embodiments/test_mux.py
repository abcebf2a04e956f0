"""Teleop/policy arbitration: deadman, handoff blend, auto override, hold."""
from __future__ import annotations

import numpy as np

from dreamzero_embodiments.mux import ModeArbiter

MS = 1_000_000


def _arbiter(**overrides) -> ModeArbiter:
    settings = {"deadman_timeout_s": 0.2, "blend_time_s": 1.0, "auto_override": True, "initial_mode": "teleop"}
    return ModeArbiter(("arm",), **{**settings, **overrides})


def test_teleop_drives_and_a_stale_input_holds() -> None:
    arbiter = _arbiter()
    arbiter.on_input("teleop", "arm", np.array([1.0, 2.0]), 0)
    assert np.array_equal(arbiter.decide("arm", 100 * MS).values, [1.0, 2.0])
    held = arbiter.decide("arm", 201 * MS)
    assert held.values is None and held.reason.startswith("deadman")


def test_handoff_to_policy_waits_for_its_first_command_then_blends() -> None:
    arbiter = _arbiter()
    arbiter.on_input("policy", "arm", np.array([5.0]), 0)  # before the switch: ignored
    ok, _ = arbiter.set_mode("policy", 10 * MS, {"arm": np.array([1.0])})
    assert ok
    assert arbiter.decide("arm", 20 * MS).values is None  # no policy command since the switch
    arbiter.on_input("policy", "arm", np.array([3.0]), 100 * MS)
    assert np.allclose(arbiter.decide("arm", 100 * MS).values, [1.0])  # blend starts where the arm was
    arbiter.on_input("policy", "arm", np.array([3.0]), 600 * MS)
    assert np.allclose(arbiter.decide("arm", 600 * MS).values, [2.0])  # half way after 0.5 s
    arbiter.on_input("policy", "arm", np.array([3.0]), 1100 * MS)
    assert np.allclose(arbiter.decide("arm", 1100 * MS).values, [3.0])


def test_blend_never_jumps_more_than_its_rate() -> None:
    arbiter = _arbiter(blend_time_s=0.5)
    arbiter.set_mode("policy", 0, {"arm": np.zeros(1)})
    outputs = []
    for t in range(0, 600, 10):
        arbiter.on_input("policy", "arm", np.array([1.0]), t * MS)
        outputs.append(arbiter.decide("arm", t * MS).values[0])
    assert np.max(np.abs(np.diff(outputs))) <= 10 / 500 + 1e-12


def test_teleop_input_overrides_the_policy_at_once_when_enabled() -> None:
    arbiter = _arbiter()
    arbiter.set_mode("policy", 0, {"arm": np.zeros(1)})
    arbiter.on_input("policy", "arm", np.array([1.0]), 10 * MS)
    assert arbiter.on_input("teleop", "arm", np.array([-1.0]), 20 * MS)
    assert arbiter.mode == "teleop" and np.allclose(arbiter.decide("arm", 20 * MS).values, [-1.0])
    manual = _arbiter(auto_override=False)
    manual.set_mode("policy", 0, {"arm": np.zeros(1)})
    assert not manual.on_input("teleop", "arm", np.array([-1.0]), 20 * MS) and manual.mode == "policy"


def test_hold_mode_and_unknown_modes() -> None:
    arbiter = _arbiter()
    arbiter.on_input("teleop", "arm", np.array([1.0]), 0)
    assert arbiter.set_mode("hold", 0, {})[0] and arbiter.decide("arm", 0).values is None
    ok, message = arbiter.set_mode("fly", 0, {})
    assert not ok and "fly" in message and arbiter.mode == "hold"
