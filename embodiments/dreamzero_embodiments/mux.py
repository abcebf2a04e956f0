"""Arbitration between teleoperation and the policy for one robot's controller groups (ARCHITECTURE §2).

Modes: ``teleop``, ``policy``, ``hold``. Per group the arbiter keeps the newest input of each source
and decides what to forward:
* the active source's input, if it is fresher than ``deadman_timeout_s`` (else hold: deadman);
* teleop -> policy: forwarded values blend from where the group was (its last output) into the
  policy's commands over ``blend_time_s``, starting with the first policy input after the switch;
  until that input arrives the group holds;
* policy -> teleop: immediate; with ``auto_override`` a fresh teleop input while in policy mode
  switches to teleop by itself;
* hold: nothing new is forwarded (the node repeats the last output; a base gets zero velocity).
Limits are the node's job. Pure: times are arguments. Imports numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("teleop", "policy", "hold")


@dataclass
class _Input:
    values: np.ndarray
    stamp_ns: int


@dataclass(frozen=True)
class Decision:
    """values: float64[G] to forward, or None to hold; reason: why it holds ('' when forwarding)."""

    values: np.ndarray | None
    reason: str


class ModeArbiter:
    """See module docstring."""

    def __init__(self, groups: tuple[str, ...], deadman_timeout_s: float, blend_time_s: float,
                 auto_override: bool, initial_mode: str = "hold") -> None:
        if initial_mode not in MODES:
            raise ValueError(f"initial_mode must be one of {', '.join(MODES)}, got {initial_mode!r}")
        self.groups = groups
        self.deadman_ns = round(deadman_timeout_s * 1e9)
        self.blend_ns = round(blend_time_s * 1e9)
        self.auto_override = auto_override
        self.mode = initial_mode
        self._inputs: dict[tuple[str, str], _Input] = {}
        self._blend_from: dict[str, np.ndarray] = {}
        self._blend_start_ns: dict[str, int] = {}
        self._switch_ns = 0

    def set_mode(self, mode: str, now_ns: int, last_outputs: dict[str, np.ndarray]) -> tuple[bool, str]:
        """Switch modes; returns (success, message). Entering policy arms the blend from ``last_outputs``."""
        if mode not in MODES:
            return False, f"unknown mode {mode!r}; expected one of {', '.join(MODES)}"
        if mode == "policy" and self.mode != "policy":
            self._blend_from = {g: v.copy() for g, v in last_outputs.items()}
            self._blend_start_ns = {}
        previous, self.mode, self._switch_ns = self.mode, mode, now_ns
        return True, f"mode {previous} -> {mode}"

    def on_input(self, source: str, group: str, values: np.ndarray, now_ns: int) -> bool:
        """Store an input; returns True when it caused an automatic switch to teleop (auto_override)."""
        self._inputs[(source, group)] = _Input(np.asarray(values, dtype=np.float64), now_ns)
        if source == "teleop" and self.mode == "policy" and self.auto_override:
            self.mode, self._switch_ns = "teleop", now_ns
            return True
        return False

    def decide(self, group: str, now_ns: int) -> Decision:
        if self.mode == "hold":
            return Decision(None, "mode hold")
        latest = self._inputs.get((self.mode, group))
        if latest is None or latest.stamp_ns < self._switch_ns and self.mode == "policy":
            return Decision(None, f"waiting for the first {self.mode} command")
        if now_ns - latest.stamp_ns > self.deadman_ns:
            return Decision(None, f"deadman: {self.mode} input {(now_ns - latest.stamp_ns) * 1e-9:.2f} s old")
        if self.mode == "policy" and group in self._blend_from:
            start_ns = self._blend_start_ns.setdefault(group, latest.stamp_ns)
            weight = 1.0 if self.blend_ns == 0 else min(1.0, (now_ns - start_ns) / self.blend_ns)
            if weight >= 1.0:
                del self._blend_from[group]
                return Decision(latest.values, "")
            start = self._blend_from[group]
            return Decision(start + weight * (latest.values - start), "")
        return Decision(latest.values, "")
