"""The language-conditioned tasks of the simulated DROID world and their success tests.

A task is an instruction about the objects of :class:`~dreamzero_embodiments.sim.droid_world.DroidWorld`
(a tray and a red and a blue cube, placed on the table by the world's seed, so every seed is another
episode of the same task). :data:`TASKS` is the family:

* ``touch_red_cube`` / ``touch_blue_cube``: "Touch the red cube." / "Touch the blue cube.". Success:
  some part of the gripper (hand or fingers) is within :data:`TOUCH_DISTANCE_M` of the named cube.
* ``put_red_cube_in_tray`` / ``put_blue_cube_in_tray``: "Put the red cube in the tray." (blue). Success:
  the cube's centre lies over the tray's flat floor (within ``TRAY_INNER_HALF_M`` of the tray's centre
  in x and y), the cube rests low in the tray (its centre at most :data:`RESTING_SLACK_M` above where it
  would lie on the floor), and the gripper has let go (farther than :data:`RELEASED_DISTANCE_M`).

Seeds. A seed is one episode of a task (it places the objects). The seed space is split once, at
:data:`EVALUATION_SEED_START`: demonstrations for training (``dreamzero collect``) take seeds below it,
closed-loop evaluation (``dreamzero eval-sim``) seeds at or above it, so no evaluated scene was ever
trained on; :func:`check_seeds` enforces it for both.

Success is computed from the simulator state only (object poses, joint positions, pybullet's closest
points), at the instant of the call: a world that is stepped, or a model world that :meth:`DroidWorld.show`
put into a snapshot of another one (``dreamzero collect`` tests the sim node's state that way).

Imports numpy and ``droid_world`` (pybullet) only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamzero_embodiments.sim.droid_world import (CUBE_HALF_M, TRAY_FLOOR_TOP_M, TRAY_INNER_HALF_M, DroidWorld)

# pybullet reports a resting contact between -1 mm and 0 (penetration); a 2 mm gap still counts as a
# touch, so a light touch is not lost to contact jitter, while a hover 1 cm above does not.
TOUCH_DISTANCE_M = 0.002
RELEASED_DISTANCE_M = 0.005  # the fingers have opened away from the cube
RESTING_SLACK_M = 0.015  # a cube tilted on the rim's foot sits up to ~1 cm higher than on the floor
KINDS = ("touch", "put_in_tray")
EVALUATION_SEED_START = 1_000_000  # first evaluation seed; training seeds lie below (module docstring)
SEED_USES = ("training", "evaluation")


@dataclass(frozen=True)
class Task:
    """One task of the family (see module docstring).

    Attributes:
        name: identifier, e.g. ``touch_red_cube``.
        instruction: the language instruction, e.g. "Touch the red cube.".
        kind: one of :data:`KINDS`.
        target: the object it is about (``droid_world.OBJECT_NAMES``), e.g. ``red_cube``.
    """

    name: str
    instruction: str
    kind: str
    target: str

    def success(self, world: DroidWorld) -> bool:
        """Whether ``world``'s current state satisfies the task (module docstring)."""
        if self.kind == "touch":
            return world.gripper_distance(self.target, TOUCH_DISTANCE_M) <= TOUCH_DISTANCE_M
        return cube_in_tray(world, self.target) and (
            world.gripper_distance(self.target, RELEASED_DISTANCE_M) > RELEASED_DISTANCE_M)


def cube_in_tray(world: DroidWorld, cube: str) -> bool:
    """The cube's centre over the tray's floor and low in the tray (module docstring); ignores the gripper."""
    tray, block = world.object_pose("tray"), world.object_pose(cube)
    offset = block[:3] - tray[:3]
    return bool(np.all(np.abs(offset[:2]) <= TRAY_INNER_HALF_M)
                and offset[2] <= TRAY_FLOOR_TOP_M + CUBE_HALF_M + RESTING_SLACK_M)


TASKS: tuple[Task, ...] = tuple(
    [Task(f"touch_{color}_cube", f"Touch the {color} cube.", "touch", f"{color}_cube") for color in ("red", "blue")]
    + [Task(f"put_{color}_cube_in_tray", f"Put the {color} cube in the tray.", "put_in_tray", f"{color}_cube")
       for color in ("red", "blue")])


def _normalised(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def find_task(text: str) -> Task:
    """The task whose instruction (case, surrounding space and a final full stop ignored) or name is ``text``.

    Raises:
        ValueError: no such task; the message lists the instructions.
    """
    wanted = _normalised(text)
    for task in TASKS:
        if wanted in (_normalised(task.instruction), task.name):
            return task
    raise ValueError(f"unknown task {text!r}; known: {[t.instruction for t in TASKS]} (or their names "
                     f"{[t.name for t in TASKS]})")


def check_seeds(first: int, count: int, use: str) -> None:
    """Refuse seeds ``first`` .. ``first + count - 1`` for ``use`` (:data:`SEED_USES`) when they cross the split.

    Raises:
        ValueError: a seed on the wrong side of :data:`EVALUATION_SEED_START` (the message names the range and
            the split), a negative first seed or count below 1, or an unknown use.
    """
    if use not in SEED_USES:
        raise ValueError(f"unknown seed use {use!r}; one of {SEED_USES}")
    if first < 0 or count < 1:
        raise ValueError(f"seeds start at 0 and an episode range holds at least one, got first {first}, count {count}")
    last = first + count - 1
    if use == "training" and last >= EVALUATION_SEED_START:
        raise ValueError(f"training seeds {first}..{last} reach the evaluation seeds (from {EVALUATION_SEED_START} "
                         f"on): choose seeds below {EVALUATION_SEED_START}")
    if use == "evaluation" and first < EVALUATION_SEED_START:
        raise ValueError(f"evaluation seeds {first}..{last} include training seeds (below {EVALUATION_SEED_START}): "
                         f"choose seeds from {EVALUATION_SEED_START} on")


__all__ = ["EVALUATION_SEED_START", "KINDS", "RELEASED_DISTANCE_M", "SEED_USES", "TASKS", "TOUCH_DISTANCE_M", "Task",
           "check_seeds", "cube_in_tray", "find_task"]
