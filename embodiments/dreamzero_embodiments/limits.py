"""Position, velocity and acceleration limits on commands: the last pure step before a controller.

The model's actions are never clipped upstream (facts §4: "no joint, velocity, acceleration,
workspace or collision limits anywhere"), so the adapter enforces them here:

* :class:`JointLimitSet`: per action dimension lower/upper position, max velocity, max acceleration.
  :func:`limits_from_urdf` builds it: joints take position and velocity limits from the robot's URDF
  (urdf/README.md gives each value's source); acceleration is the caller's (URDFs carry none);
  dimensions the URDF lacks (AgiBot ``base_vx``, ``base_wz``) or whose ROS units differ from the URDF
  joint's come from ``extra``. A dimension with no source is an error, never a default.
* :func:`clamp_positions`: clip to [lower, upper].
* :class:`RateLimiter`: one command per tick from the previous command towards a target, within
  max velocity and max acceleration, then clamped to the position limits. Guarantees for position
  dimensions: every command lies in [lower, upper]; consecutive commands differ by at most
  ``max_velocity * dt``; a command never passes its target (it lies between the previous command
  and the target). A non-finite target is refused (``ValueError``) and the caller holds.
* :func:`tick_interval_s`: the ``dt_s`` for the limiter from the measured time since the last
  command, so a late tick is not limited as if it came on time, capped so a stall never licenses
  a larger step than a few periods of motion.
* Twist dimensions (a base velocity, ``controller_groups`` kind ``twist``) are velocities, not
  positions: nothing is integrated. :func:`clamp_twist` and the limiter clip them to [lower, upper]
  (the commanded velocity range) and nothing else; ``max_velocity``/``max_acceleration`` are unused
  there. What a base does on hold (zero velocity) is the caller's decision.

Pure; imports numpy only (``robot_description.JointLimits`` for type checking). Never reads a clock:
``dt_s`` is an argument.

Dimensions: D limited dimensions. Units per dimension: rad, rad/s, rad/s^2 (revolute); m, m/s, m/s^2
(prismatic); raw units for AgiBot effectors; m/s or rad/s bounds for twist dimensions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotation only: importing robot_description would pull in xacro
    from dreamzero_embodiments.robot_description import JointLimits

# Relative tolerance under which a limited command that lands on its target is snapped onto it: the
# round-off of q + (target - q) / dt * dt (float64 epsilon scale), far below any encoder resolution.
_SNAP_RTOL = 1e-12
# A tick later than this many nominal periods is limited as if it were this late: after a stall the
# command catches up over several ticks instead of jumping by what the whole stall would allow.
MAX_TICK_PERIODS = 4.0


class LimitsError(ValueError):
    """Limits cannot be built: the message names the dimension and what is missing or invalid."""


def _readonly(values: np.ndarray | Sequence[float], name: str, width: int, kind: type = np.float64) -> np.ndarray:
    array = np.array(values, dtype=kind)
    if array.shape != (width,):
        raise LimitsError(f"JointLimitSet.{name} must have shape ({width},), got {array.shape}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class JointLimitSet:
    """Limits of D command dimensions (see module docstring for units).

    Attributes:
        names: D dimension names (joint names, ``base_vx``, ...).
        lower, upper: float64[D] position bounds (twist: velocity bounds); -inf/+inf for unbounded.
        max_velocity: float64[D] > 0, per second (+inf: unlimited). Unused on twist dimensions.
        max_acceleration: float64[D] > 0, per second squared (+inf: unlimited). Unused on twist dimensions.
        twist: bool[D], True for velocity dimensions (clipped only, see module docstring).
    Arrays are read-only copies.
    """

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray
    twist: np.ndarray = field(default=None)  # type: ignore[assignment]  # None: no twist dimensions

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        width = len(names)
        object.__setattr__(self, "names", names)
        if len(set(names)) != width:
            raise LimitsError(f"JointLimitSet: duplicate names {sorted({n for n in names if names.count(n) > 1})}")
        for attribute in ("lower", "upper", "max_velocity", "max_acceleration"):
            object.__setattr__(self, attribute, _readonly(getattr(self, attribute), attribute, width))
        twist = np.zeros(width, dtype=bool) if self.twist is None else self.twist
        object.__setattr__(self, "twist", _readonly(twist, "twist", width, bool))
        for index, name in enumerate(names):
            lo, hi = self.lower[index], self.upper[index]
            v, a = self.max_velocity[index], self.max_acceleration[index]
            if np.isnan(lo) or np.isnan(hi) or lo > hi:
                raise LimitsError(f"JointLimitSet: {name!r} needs lower <= upper, got [{lo}, {hi}]")
            if not (v > 0 and a > 0):  # also refuses NaN
                raise LimitsError(f"JointLimitSet: {name!r} needs max_velocity > 0 and max_acceleration > 0 "
                                  f"(+inf for none), got {v} and {a}")

    @property
    def dim(self) -> int:
        return len(self.names)

    def select(self, names: Sequence[str]) -> JointLimitSet:
        """The limits of ``names`` (e.g. one controller group), in that order.

        Raises:
            LimitsError: a name is not in this set (all unknown names are listed).
        """
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise LimitsError(f"JointLimitSet.select: unknown dimensions {unknown} (known: {list(self.names)})")
        index = [self.names.index(n) for n in names]
        return JointLimitSet(tuple(names), self.lower[index], self.upper[index], self.max_velocity[index],
                             self.max_acceleration[index], self.twist[index])


def limits_from_urdf(names: Sequence[str], urdf_limits: Mapping[str, JointLimits],
                     acceleration: float | Mapping[str, float],
                     extra: Mapping[str, tuple[float, float, float]] | None = None,
                     twist: Sequence[str] = ()) -> JointLimitSet:
    """Limits of the dimensions ``names`` (see module docstring).

    Args:
        names: D dimensions in command order (e.g. ``spec.action_names``).
        urdf_limits: joint name -> limits, from ``robot_description.load_joint_limits``.
        acceleration: max acceleration per second squared: one value for every dimension, or one
            per name (every name needed). URDFs carry none; it is a deployment parameter.
        extra: name -> (lower, upper, max_velocity) for dimensions the URDF does not have (a base
            twist: lower/upper bound the velocity command), or whose ROS units differ from the
            URDF joint's (AgiBot effectors are commanded in raw 35..120, facts §1.5, while the URDF
            gives 0..0.7854 rad). An entry here wins over the URDF. Every key must be in ``names``.
        twist: names of velocity dimensions (clipped only, not rate limited); each must be in ``extra``.

    Returns:
        The limit set, in ``names`` order.

    Raises:
        LimitsError: a dimension is in neither source, an acceleration is missing, an ``extra`` or
            ``twist`` name is not a dimension, a twist dimension is not in ``extra``, or a value is
            invalid (lower > upper, non-positive rate). Every offending name is listed.
    """
    names = tuple(names)
    extra = dict(extra or {})
    problems = []
    strays = [n for n in list(extra) + list(twist) if n not in names]
    if strays:
        problems.append(f"extra/twist name dimensions that are not commanded: {strays} (dimensions: {list(names)})")
    not_extra = [n for n in twist if n not in extra]
    if not_extra:
        problems.append(f"twist dimensions {not_extra} need their velocity bounds in extra")
    missing = [n for n in names if n not in extra and n not in urdf_limits]
    if missing:
        problems.append(f"no limits for {missing}: not joints of the URDF (joints: {list(urdf_limits)}); pass them "
                        f"in extra as (lower, upper, max_velocity)")
    if isinstance(acceleration, Mapping):
        no_acceleration = [n for n in names if n not in acceleration]
        if no_acceleration:
            problems.append(f"no acceleration limit for {no_acceleration}")
    if problems:
        raise LimitsError("limits_from_urdf: " + "; ".join(problems))
    rows = []
    for name in names:
        if name in extra:
            lower, upper, velocity = (float(v) for v in extra[name])
        else:
            joint = urdf_limits[name]
            lower, upper, velocity = joint.lower, joint.upper, joint.velocity
        accel = float(acceleration[name]) if isinstance(acceleration, Mapping) else float(acceleration)
        rows.append((lower, upper, velocity, accel))
    columns = np.array(rows, dtype=np.float64).reshape(len(names), 4).T
    return JointLimitSet(names, *columns, twist=np.array([n in twist for n in names], dtype=bool))


def _checked(values: np.ndarray, limits: JointLimitSet, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (limits.dim,):
        raise ValueError(f"{what}: expected float64[{limits.dim}] for {list(limits.names)}, got shape {values.shape}")
    bad = [f"{n}={v}" for n, v in zip(limits.names, values) if not np.isfinite(v)]
    if bad:
        raise ValueError(f"{what}: non-finite {', '.join(bad)}")
    return values


def clamp_positions(q: np.ndarray, limits: JointLimitSet) -> tuple[np.ndarray, np.ndarray]:
    """Clip positions to [lower, upper].

    Args:
        q: float64[D] positions (ROS units), in ``limits.names`` order.
        limits: the bounds.

    Returns:
        (float64[D] clipped positions, bool[D] True where clipping changed the value).

    Raises:
        ValueError: wrong shape or a non-finite value (NaN would pass ``np.clip``; the caller holds).
    """
    q = _checked(q, limits, "clamp_positions")
    clipped = np.clip(q, limits.lower, limits.upper)
    return clipped, clipped != q


def clamp_twist(v: np.ndarray, limits: JointLimitSet) -> tuple[np.ndarray, np.ndarray]:
    """Clip velocity commands (a base twist: m/s, rad/s) to [lower, upper]; nothing is integrated.

    Args:
        v: float64[D] velocities in ``limits.names`` order.
        limits: ``lower``/``upper`` are the velocity bounds of each dimension.

    Returns:
        (float64[D] clipped velocities, bool[D] True where clipping changed the value).

    Raises:
        ValueError: wrong shape or a non-finite value.
    """
    v = _checked(v, limits, "clamp_twist")
    clipped = np.clip(v, limits.lower, limits.upper)
    return clipped, clipped != v


def _braking_speed(distance: np.ndarray, accel: np.ndarray, dt_s: float) -> np.ndarray:
    """Largest speed from which n steps of deceleration ``accel`` stop within ``distance`` (discrete time).

    Starting at v = n a dt and slowing by a dt per step, q += v dt covers a dt^2 n (n + 1) / 2; solving
    for n gives v = a dt (sqrt(1/4 + 2 d / (a dt^2)) - 1/2). Unlimited acceleration: no braking bound.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        step = accel * dt_s
        speed = step * (np.sqrt(0.25 + 2.0 * distance / (step * dt_s)) - 0.5)
    return np.where(np.isinf(accel), np.inf, speed)


class RateLimiter:
    """Moves commands towards targets within velocity, acceleration and position limits.

    Per position dimension and tick (``dt_s`` seconds):

    1. The target is clipped into [lower, upper], so the limiter brakes towards a reachable point.
    2. Desired velocity = the target's own velocity (its change since the last tick) plus a
       correction of the previous tracking error, capped at the speed from which the remaining
       distance can still be braked in discrete steps. A target that moves within the limits is
       therefore followed exactly, and a jump is approached without overshoot.
    3. That velocity is clipped to [v_prev - a dt, v_prev + a dt] and to [-v_max, v_max].
    4. The command q_prev + v dt is clipped to [lower, upper] again, and to the interval between
       q_prev and the target: a command never passes its target. Both only move it back towards
       q_prev, so the velocity bound still holds. Where braking within the acceleration limit
       cannot stop at the target (a target that stops or reverses suddenly, or a tick later than
       the one the braking speed was computed for), stopping at the target wins over the
       acceleration limit.

    Twist dimensions are clipped to [lower, upper] only. ``limited`` is True where the command
    differs from the unclipped target.
    """

    def __init__(self, limits: JointLimitSet, initial: np.ndarray) -> None:
        """Args:
            limits: the limits, D dimensions.
            initial: float64[D], where the commands start (the measured positions; twist: the
                current velocity command), clipped into the limits.

        Raises:
            ValueError: ``initial`` of the wrong shape or not finite.
        """
        self.limits = limits
        self.reset(initial)

    def reset(self, initial: np.ndarray) -> None:
        """Restart from ``initial`` (clipped into the limits) at rest. Raises ValueError as the constructor."""
        start = np.clip(_checked(initial, self.limits, "RateLimiter initial"), self.limits.lower, self.limits.upper)
        self._command = start
        self._target = start.copy()  # the previous (clipped) target, for the target's velocity
        self._velocity = np.zeros(self.limits.dim)

    @property
    def command(self) -> np.ndarray:
        """float64[D]: the last command (a copy)."""
        return self._command.copy()

    def step(self, target: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The next command towards ``target`` (see class docstring).

        Args:
            target: float64[D], ROS units, in ``limits.names`` order.
            dt_s: seconds since the previous command, > 0.

        Returns:
            (float64[D] command, bool[D] limited: True where it differs from ``target``).

        Raises:
            ValueError: ``target`` non-finite or of the wrong shape, or ``dt_s`` not positive and
                finite. The state is unchanged: the caller holds its last command.
        """
        target = _checked(target, self.limits, "RateLimiter.step target")
        if not (np.isfinite(dt_s) and dt_s > 0):
            raise ValueError(f"RateLimiter.step: dt_s must be positive and finite, got {dt_s}")
        lim = self.limits
        goal = np.clip(target, lim.lower, lim.upper)
        with np.errstate(over="ignore", invalid="ignore"):  # only unbounded dimensions with ~1e308 targets
            target_velocity = (goal - self._target) / dt_s
            error = self._target - self._command  # tracking error left after the previous tick
            correction = np.sign(error) * np.minimum(np.abs(error) / dt_s,
                                                     _braking_speed(np.abs(error), lim.max_acceleration, dt_s))
            velocity = np.clip(target_velocity + correction, self._velocity - lim.max_acceleration * dt_s,
                               self._velocity + lim.max_acceleration * dt_s)
            velocity = np.clip(velocity, -lim.max_velocity, lim.max_velocity)
            # An overflowed velocity (inf - inf) holds its dimension for this tick rather than moving on NaN.
            velocity = np.where(np.isfinite(velocity), velocity, 0.0)
            command = self._command + velocity * dt_s
        command = np.where(np.isfinite(command), command, self._command)
        on_goal = np.abs(command - goal) <= _SNAP_RTOL * np.maximum(1.0, np.abs(goal))
        command = np.where(on_goal, goal, command)
        command = np.clip(command, np.minimum(self._command, goal), np.maximum(self._command, goal))  # no overshoot
        command = np.clip(command, lim.lower, lim.upper)
        command = np.where(lim.twist, goal, command)  # velocities: clipped only
        self._velocity = np.where(lim.twist, 0.0, (command - self._command) / dt_s)
        self._command, self._target = command, goal
        return command.copy(), command != target


def tick_interval_s(previous_ns: int | None, now_ns: int, period_s: float) -> float:
    """Seconds to limit the command of the tick at ``now_ns`` over (see module docstring).

    Args:
        previous_ns: when the previous command was made (same clock), or None for the first one.
        now_ns: now.
        period_s: the nominal tick period, > 0.

    Returns:
        ``now - previous`` in seconds, at most ``MAX_TICK_PERIODS * period_s``; ``period_s`` for the
        first tick or when the clock did not advance (a simulated clock that was reset or paused).
    """
    if previous_ns is None or now_ns <= previous_ns:
        return period_s
    return min((now_ns - previous_ns) * 1e-9, MAX_TICK_PERIODS * period_s)
