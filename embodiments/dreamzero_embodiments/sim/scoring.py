"""Scores of a closed-loop evaluation in the simulated DROID world (``dreamzero eval-sim``).

* :func:`wilson_interval`: the Wilson score interval of a success rate (E. B. Wilson, "Probable
  inference, the law of succession, and statistical inference", JASA 22 (1927) 209-212). Unlike the
  normal approximation p +- z sqrt(p (1 - p) / n) it stays inside [0, 1] and does not collapse to a
  point at 0 or n successes, which matters for the few tens of episodes an evaluation runs:
  ``centre = (p + z^2 / 2n) / (1 + z^2 / n)``, ``half = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)``.
* :func:`goal_distance`: how far a world is from a task's goal, in metres, so a failed episode still
  says how close it came. ``touch``: the smallest distance between the gripper (hand and fingers) and
  the named cube, pybullet's closest points (<= 0 in contact), the very quantity the task's success
  test compares with ``TOUCH_DISTANCE_M``, so an episode's smallest distance is at most that iff
  the touch succeeded at a judged instant. ``put_in_tray``: the horizontal distance between the
  cube's centre and the tray's centre; success also needs the cube low in the tray and released
  (``sim/tasks.py``), so a small distance alone is no success.

Imports numpy only; the world and the task are passed in (``droid_world.DroidWorld``,
``tasks.Task``).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dreamzero_embodiments.sim.droid_world import DroidWorld
    from dreamzero_embodiments.sim.tasks import Task

Z_95 = 1.959963984540054  # standard normal quantile at 0.975: a two-sided 95 % interval
# Search radius of the gripper-cube closest-point query: beyond any two points of the 1.5 m x 1 m table
# (droid_world: table/table.urdf), so the distance is always finite.
DISTANCE_SEARCH_M = 2.0


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (module docstring) of ``successes`` out of ``trials``.

    Returns:
        (low, high), fractions in [0, 1]; 95 % by default (``z`` = :data:`Z_95`).

    Raises:
        ValueError: fewer than one trial, successes outside 0..trials, or z not positive.
    """
    if trials < 1 or not 0 <= successes <= trials or z <= 0:
        raise ValueError(f"need 0 <= successes <= trials, trials >= 1 and z > 0; got {successes} of {trials}, z {z}")
    p, n, z2 = successes / trials, float(trials), z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def goal_distance(world: DroidWorld, task: Task) -> float:
    """Distance (m) of ``world``'s current state from ``task``'s goal (module docstring).

    Raises:
        ValueError: a task kind without a distance.
    """
    if task.kind == "touch":
        return world.gripper_distance(task.target, DISTANCE_SEARCH_M)
    if task.kind == "put_in_tray":
        offset = world.object_pose(task.target)[:2] - world.object_pose("tray")[:2]
        return float(np.linalg.norm(offset))
    raise ValueError(f"task {task.name}: no goal distance for kind {task.kind!r}")


__all__ = ["DISTANCE_SEARCH_M", "Z_95", "goal_distance", "wilson_interval"]
