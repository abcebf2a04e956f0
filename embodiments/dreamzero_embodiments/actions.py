"""Action chunk (model units, relative or absolute) -> absolute targets in ROS units (facts §1.4-1.6, §1.9).

Owns the first step of the adapter's chunk pipeline (ARCHITECTURE.md §2-3): validate a chunk as a
whole, add the anchor on relative dimensions, apply each action key's unit map. Smoothing, blending
and limits come after it (``smoothing``, ``execution``, ``limits``).

* Relative actions are relative to the state at the chunk start, one anchor per chunk (facts §1.9):
  absolute = relative + anchor, in model units, broadcast over the H steps. The chunk carries its
  anchor (the state at t_obs), so the result never depends on when the chunk arrives.
* The chunk's own ``relative`` flags decide, not ``spec.relative_mask``: the remote backend returns
  absolute targets for every dimension (the official server adds the state itself, facts §1.9) while
  the local backend returns the checkpoint's relative keys. A dimension may only be relative if the
  embodiment has a state of that name to be relative to (AgiBot ``base_vx`` never is, facts §1.5).
* Unit maps are applied after the anchor is added: AgiBot effector 0..1 -> raw 35..120 (facts §1.5),
  DROID gripper 0..1 -> 0..0.81 rad (urdf/README.md), YAM gripper 0..1 -> 0..0.04695 m.
  ``UnitMap.to_ros`` does not clip; ``limits`` does.
* Safety: a chunk with any NaN or inf value or anchor is rejected WHOLE (never patched), so the
  caller keeps executing or holding what it had (STYLE.md item 15).

Pure; imports numpy and sibling modules only (never rclpy or torch).

Dimensions: H steps per chunk (``spec.timing.horizon``, 24: facts §1.3), D = ``len(spec.action_names)``
action dimensions (DROID 8, AgiBot G1 22, YAM 14).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dreamzero_embodiments.spec import EmbodimentSpec


class ChunkError(ValueError):
    """A chunk cannot be executed; the message names the embodiment, what is wrong and where (step, dimension)."""


def _check_names(names: Sequence[str], spec: EmbodimentSpec, where: str) -> None:
    received, expected = tuple(str(n) for n in names), spec.action_names
    for index, (got, want) in enumerate(zip(received, expected)):
        if got != want:
            raise ChunkError(f"{where}: names[{index}] is {got!r}, expected {want!r} (action dimensions in model "
                             f"order: {list(expected)})")
    if len(received) != len(expected):
        extra = list(received[len(expected):]) or list(expected[len(received):])
        kind = "unexpected extra" if len(received) > len(expected) else "missing"
        raise ChunkError(f"{where}: {len(received)} names, expected {len(expected)}; {kind} {extra}")


def _first_non_finite(array: np.ndarray) -> tuple[int, ...] | None:
    bad = np.argwhere(~np.isfinite(array))
    return tuple(int(i) for i in bad[0]) if len(bad) else None


def anchor_from_state(state: np.ndarray, relative: np.ndarray | Sequence[bool], spec: EmbodimentSpec) -> np.ndarray:
    """float64[D]: the chunk anchor (ARCHITECTURE.md §5): for each relative action dimension the state
    of the same name at t_obs (``state`` in ``spec.state_names`` order, model units), 0 elsewhere."""
    index = {name: i for i, name in enumerate(spec.state_names)}
    return np.array([state[index[name]] if flag else 0.0 for name, flag in zip(spec.action_names, relative)],
                    dtype=np.float64)


def chunk_to_ros(values: np.ndarray, relative: np.ndarray | Sequence[bool], anchor: np.ndarray | Sequence[float],
                 names: Sequence[str], spec: EmbodimentSpec) -> np.ndarray:
    """Absolute targets in ROS units from a chunk as the policy publishes it (see module docstring).

    Args:
        values: float64[H, D], model units (de-normalised): relative to ``anchor`` where ``relative``,
            absolute elsewhere. H must equal ``spec.timing.horizon``.
        relative: bool[D], per dimension: the values are relative to the anchor (facts §1.9).
        anchor: float64[D], model units: the state at t_obs of each relative dimension (ignored, but
            still required finite, elsewhere; the message carries 0 there).
        names: D action dimension names; must equal ``spec.action_names`` in order.
        spec: the embodiment (names, horizon, state names, unit maps).

    Returns:
        float64[H, D], absolute, ROS units (rad, m, AgiBot effector raw units, twist m/s or rad/s), in
        ``spec.action_names`` order. A new array.

    Raises:
        ChunkError: names differ from the spec (the first difference is named); values not of shape
            (H, D); relative or anchor not of length D; a relative flag on a dimension without a state;
            any non-finite value (joint and step named) or anchor (joint named). The whole chunk is rejected.
    """
    where = f"chunk for embodiment {spec.name!r}"
    _check_names(names, spec, where)
    width, horizon = len(spec.action_names), spec.timing.horizon
    try:
        values = np.array(values, dtype=np.float64)
        relative_mask = np.asarray(relative)
        anchor = np.array(anchor, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ChunkError(f"{where}: values, relative and anchor must be numeric arrays: {error}") from error
    if values.shape != (horizon, width):
        raise ChunkError(f"{where}: values must have shape (H={horizon}, D={width}), got {values.shape}")
    if relative_mask.shape != (width,) or relative_mask.dtype != bool:
        raise ChunkError(f"{where}: relative must be bool[{width}], "
                         f"got {relative_mask.dtype}{list(relative_mask.shape)}")
    if anchor.shape != (width,):
        raise ChunkError(f"{where}: anchor must be float64[{width}], got shape {anchor.shape}")
    stateless = [n for n, r in zip(spec.action_names, relative_mask) if r and n not in spec.state_names]
    if stateless:
        raise ChunkError(f"{where}: dimensions {stateless} are flagged relative but the embodiment has no state "
                         f"of that name to be relative to")
    bad = _first_non_finite(values)
    if bad is not None:
        count = int(np.count_nonzero(~np.isfinite(values)))
        raise ChunkError(f"{where}: values[step {bad[0]}, {spec.action_names[bad[1]]!r}] is {values[bad]} "
                         f"({count} non-finite value(s)); the whole chunk is rejected")
    bad = _first_non_finite(anchor)
    if bad is not None:
        raise ChunkError(f"{where}: anchor[{spec.action_names[bad[0]]!r}] is {anchor[bad]}; the whole chunk is "
                         f"rejected")
    with np.errstate(over="ignore"):  # an overflow is reported below, not warned about
        absolute = values + np.where(relative_mask, anchor, 0.0)  # model units, facts §1.9
        start = 0
        for key in spec.action:
            stop = start + key.dim
            if key.unit_map is not None:
                absolute[:, start:stop] = key.unit_map.to_ros(absolute[:, start:stop])
            start = stop
    if not np.all(np.isfinite(absolute)):  # e.g. 1e308 + 1e308: finite inputs, overflowing sum
        bad = _first_non_finite(absolute)
        raise ChunkError(f"{where}: value at step {bad[0]}, {spec.action_names[bad[1]]!r} overflows to "
                         f"{absolute[bad]} after adding the anchor / unit map; the whole chunk is rejected")
    return absolute
