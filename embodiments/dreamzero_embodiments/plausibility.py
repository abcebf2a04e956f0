"""Refusing implausible joint states and chunks before they can move the arm.

Clamping to the URDF limits (:mod:`dreamzero_embodiments.limits`) is the last line of defence, not
the check: a joint reading of 1e6 rad or a chunk 10 rad away, clamped, still drives a joint to its
limit at full speed. The checks here refuse such inputs, naming the joint, the value and the bound;
the nodes count the refusals in diagnostics and hold. The bounds come from the URDF (position range,
velocity) and the embodiment YAML's ``safety`` section (:class:`dreamzero_embodiments.spec.SafetySpec`):

* :class:`JointStateGate`, per joint reading (ROS units): every checked joint within its URDF range
  widened by ``range_tolerance`` of that range on each side, and moved since the last accepted
  reading by at most ``state_velocity_margin`` x URDF velocity x the time between their stamps, plus
  the same tolerance. A refused reading never becomes the reference for the next one (nor an anchor).
* :func:`check_chunk`, per chunk (targets in ROS units, after relative -> absolute): every target
  within the widened URDF range; for relative dimensions the chunk's anchor (model units) within
  ``anchor_tolerance`` of the measured state at t_obs; and the first step that will be executed
  within URDF velocity x ``first_target_reach_s`` (plus the tolerance) of the measured state now.
  Dimensions in ``free_jump`` (grippers) are exempt from the target checks: their commands
  legitimately jump open/closed and the model's values overshoot fully open/closed a little (a
  random-weight model by a lot); the limiter clamps them into range.

Dimensions without URDF position limits (a base twist) are not checked here. Pure; imports numpy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dreamzero_embodiments.limits import JointLimitSet
from dreamzero_embodiments.spec import EmbodimentSpec, SafetySpec


class ImplausibleError(ValueError):
    """An input is refused; the message names the joint, the value and the bound it broke."""


def _range_tolerance(limits: JointLimitSet, index: int, safety: SafetySpec) -> float:
    return safety.range_tolerance * float(limits.upper[index] - limits.lower[index])


def _outside_range(name: str, value: float, limits: JointLimitSet, safety: SafetySpec) -> str | None:
    index = limits.names.index(name)
    tolerance = _range_tolerance(limits, index, safety)
    lower, upper = limits.lower[index] - tolerance, limits.upper[index] + tolerance
    if not lower <= value <= upper:  # also refuses NaN
        return f"{name}={value:.6g} is outside [{lower:.6g}, {upper:.6g}] (URDF range +- {tolerance:.3g})"
    return None


def _checked_names(names: Sequence[str], limits: JointLimitSet) -> list[str]:
    """The names that have URDF position limits (not twist dimensions)."""
    return [n for n in names if n in limits.names and not limits.twist[limits.names.index(n)]]


class JointStateGate:
    """Accepts or refuses joint readings one by one (see module docstring); keeps the last accepted one."""

    def __init__(self, limits: JointLimitSet, safety: SafetySpec) -> None:
        self.limits = limits
        self.safety = safety
        self._last: tuple[int, dict[str, float]] | None = None

    def check(self, stamp_ns: int, positions: Mapping[str, float]) -> None:
        """Accept the reading (it becomes the reference for the next one) or raise.

        Args:
            stamp_ns: the reading's header stamp.
            positions: joint name -> position in ROS units; joints without limits are ignored.

        Raises:
            ImplausibleError: every joint outside its range or moved too fast, with value and bound.
        """
        names = _checked_names(list(positions), self.limits)
        problems = [p for p in (_outside_range(n, positions[n], self.limits, self.safety) for n in names) if p]
        if not problems and self._last is not None:
            last_ns, last = self._last
            elapsed_s = max(stamp_ns - last_ns, 0) * 1e-9
            for name in (n for n in names if n in last):
                index = self.limits.names.index(name)
                bound = (self.safety.state_velocity_margin * self.limits.max_velocity[index] * elapsed_s
                         + _range_tolerance(self.limits, index, self.safety))
                jump = abs(positions[name] - last[name])
                if jump > bound:
                    problems.append(f"{name} jumped {jump:.6g} (from {last[name]:.6g} to {positions[name]:.6g}) in "
                                    f"{elapsed_s:.3f} s; at most {bound:.3g} is possible at the URDF velocity")
        if problems:
            raise ImplausibleError("implausible joint state: " + "; ".join(problems))
        self._last = (stamp_ns, {n: float(positions[n]) for n in names})

    def reset(self) -> None:
        """Forget the last accepted reading (the next one is range-checked only)."""
        self._last = None


def _model_units(spec: EmbodimentSpec, positions: Mapping[str, float]) -> dict[str, float]:
    """ROS-unit positions of the action dimensions -> model units (unit maps applied)."""
    out = {}
    for key in spec.action:
        for name in (n for n in key.names if n in positions):
            value = np.array([positions[name]])
            out[name] = float((key.unit_map.to_model(value) if key.unit_map else value)[0])
    return out


def check_chunk(targets: np.ndarray, first_step: int, relative: np.ndarray, anchor: np.ndarray,
                state_at_t_obs: Mapping[str, float] | None, state_now: Mapping[str, float],
                spec: EmbodimentSpec, limits: JointLimitSet, safety: SafetySpec) -> None:
    """Refuse an implausible chunk (see module docstring).

    Args:
        targets: float64[H, D] absolute targets in ROS units, ``spec.action_names`` order.
        first_step: index of the first step that will be executed (the first not in the past).
        relative, anchor: the chunk's per-dimension flags and anchor (model units).
        state_at_t_obs: the measured joint positions (ROS units) nearest the chunk's t_obs, or None
            when none is known near it (then a chunk with relative dimensions is refused).
        state_now: the newest measured joint positions (ROS units).
        spec, limits, safety: the embodiment, its command limits (action dimensions), its bounds.

    Raises:
        ImplausibleError: naming each offending dimension with its value and bound.
    """
    names = spec.action_names
    checked = [n for n in _checked_names(names, limits) if n not in safety.free_jump]
    problems = []
    for name in checked:
        for step, value in enumerate(targets[:, names.index(name)]):
            problem = _outside_range(name, float(value), limits, safety)
            if problem:
                problems.append(f"target at step {step}: {problem}")
                break
    relative_names = [n for n, r in zip(names, relative) if r]
    if relative_names and state_at_t_obs is None:
        problems.append("no measured joint state near t_obs to check the anchor against")
    elif relative_names:
        measured = _model_units(spec, state_at_t_obs)
        for name in (n for n in relative_names if n in measured):
            value = float(anchor[names.index(name)])
            if not abs(value - measured[name]) <= safety.anchor_tolerance:
                problems.append(f"anchor {name}={value:.6g} but the measured state at t_obs is {measured[name]:.6g} "
                                f"(bound {safety.anchor_tolerance:g})")
    for name in (n for n in checked if n in state_now):
        index = limits.names.index(name)
        target = float(targets[first_step, names.index(name)])
        bound = limits.max_velocity[index] * safety.first_target_reach_s + _range_tolerance(limits, index, safety)
        if not abs(target - state_now[name]) <= bound:
            problems.append(f"first executed target {name}={target:.6g} is {abs(target - state_now[name]):.3g} from "
                            f"the measured {state_now[name]:.6g} (bound {bound:.3g})")
    if problems:
        raise ImplausibleError("implausible chunk: " + "; ".join(problems))
