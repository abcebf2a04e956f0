"""Joint positions by name -> the checkpoint's state vector, and back (facts §1.4-1.6, §1.9).

The one place that orders ``JointState`` names (STYLE.md item 34). Matching is by exact name: the
input may come in any order and carry joints the model does not use (they are ignored), but every
state dimension of the embodiment must be present, finite and given once. A name that appears twice
is refused rather than resolved (a malformed or merged message; picking one would hide it), but only
if the embodiment uses that joint. Unit maps convert ROS units to model units (``UnitMap.to_model``,
which clips to the model range as the dataset converters do: e.g. AgiBot effector raw 35..120 -> 0..1,
facts §1.5; DROID gripper 0..0.81 rad -> 0..1).

Pure; imports numpy and sibling modules only.

Dimensions: N names in the input message, S = ``len(spec.state_names)`` state dimensions in
checkpoint order (DROID 8, AgiBot G1 20, YAM 14).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from dreamzero_embodiments.spec import EmbodimentSpec


class StateError(ValueError):
    """Joint positions cannot be packed: the message names every missing, duplicated or non-finite joint."""


def pack_state(names: Sequence[str], positions: Sequence[float] | np.ndarray, spec: EmbodimentSpec) -> np.ndarray:
    """The model's state vector from joint positions given by name.

    Args:
        names: N joint names, any order (e.g. ``JointState.name``).
        positions: float[N] positions in ROS units (rad, m, or raw units such as AgiBot's effector
            35..120), aligned with ``names``.
        spec: the embodiment; its ``state`` keys give the order and the unit maps.

    Returns:
        float64[S] in the order of ``spec.state_names``, model units (unit maps applied).

    Raises:
        StateError: names and positions differ in length; a state joint is missing (all are named),
            given twice, or NaN/inf (all are named).
    """
    values = np.asarray(positions, dtype=np.float64).reshape(-1)
    where = f"joint state for embodiment {spec.name!r}"
    if len(names) != values.size:
        raise StateError(f"{where}: {len(names)} names but {values.size} positions")
    wanted = spec.state_names
    counts = Counter(names)
    duplicated = [n for n in wanted if counts[n] > 1]
    if duplicated:
        raise StateError(f"{where}: joints given more than once: {duplicated}")
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise StateError(f"{where}: missing joints {missing} (expected all of {list(wanted)}; received "
                         f"{list(names)})")
    state = values[[index[n] for n in wanted]]
    bad = [f"{n}={v}" for n, v in zip(wanted, state) if not np.isfinite(v)]
    if bad:
        raise StateError(f"{where}: non-finite positions {', '.join(bad)}")
    start = 0
    for key in spec.state:
        stop = start + key.dim
        if key.unit_map is not None:
            state[start:stop] = key.unit_map.to_model(state[start:stop])
        start = stop
    return state


def split_state(state: np.ndarray, spec: EmbodimentSpec) -> dict[str, np.ndarray]:
    """Checkpoint state key -> its slice of ``state``, e.g. DROID ``joint_position`` (7) and ``gripper_position`` (1).

    Args:
        state: float64[S] in ``spec.state_names`` order, model units.

    Returns:
        key -> float64[D_key] (copies), in ``spec.state`` order.

    Raises:
        ValueError: ``state`` is not of length S.
    """
    state = np.asarray(state, dtype=np.float64)
    if state.shape != (len(spec.state_names),):
        raise ValueError(f"split_state: embodiment {spec.name!r} needs float64[{len(spec.state_names)}], "
                         f"got shape {state.shape}")
    out, start = {}, 0
    for key in spec.state:
        out[key.key] = state[start:start + key.dim].copy()
        start += key.dim
    return out


def unpack_state(state: np.ndarray, spec: EmbodimentSpec) -> dict[str, float]:
    """Joint name -> position in ROS units (``UnitMap.to_ros``): the inverse of :func:`pack_state` inside the ranges.

    Raises:
        ValueError: ``state`` is not of length S.
    """
    by_name: dict[str, float] = {}
    for key, values in zip(spec.state, split_state(state, spec).values()):
        ros = key.unit_map.to_ros(values) if key.unit_map is not None else values
        by_name.update(zip(key.names, (float(v) for v in ros)))
    return by_name
