"""The ``demonstrator`` policy: the scripted demonstrator of ``sim/demonstrator.py`` answering as a backend.

``dreamzero eval-sim --checkpoint demonstrator`` runs it through the same graph as a model (policy_node
-> adapter_node -> control_mux -> sim_droid): the sanity row of an evaluation. It solves every task it
can plan, so a success rate well below 100 % points at the graph, its timing or the scoring, not at a
model.

It knows the episode's scene, which a model does not: :meth:`DemonstratorBackend.for_episode` plans
once, before the graph starts, from the initial scene of the episode's seed
(``plan_from_initial_scene``, as ``dreamzero collect`` does). Plan time 0 is the ``t_obs`` of the first
observation it answers (later sessions go on along the same plan: the arm is where the plan took it).
Each ``infer`` returns the plan's targets for ``t_obs + k dt``, k = 0 .. H-1 (ARCHITECTURE.md §3: step k
is the command for ``t_obs + k dt``), absolute (``relative`` all False), in model units: arm joints in
rad as in ROS, the gripper through the YAML's unit map (``droid.yaml``: 0 .. 0.81 rad -> 0 .. 1). It
follows one instruction, its task's: another prompt is refused (:class:`BackendError`). No predicted
video.

Plain Python (numpy and the sim modules); no rclpy, no torch.
"""
from __future__ import annotations

import numpy as np

from dreamzero_embodiments.limits import JointLimitSet
from dreamzero_embodiments.sim.demonstrator import Plan, plan_from_initial_scene
from dreamzero_embodiments.sim.droid_world import DroidWorld
from dreamzero_embodiments.sim.tasks import Task, find_task
from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_policy.backends.base import BackendError, BackendPrediction, Observation


class DemonstratorBackend:
    """A :class:`~dreamzero_policy.backends.base.PolicyBackend` that executes ``plan``, made for ``task``
    (module docstring).

    Raises:
        ValueError: ``spec``'s actions are not the plan's 7 arm joints and gripper (its state names, in order).
    """

    def __init__(self, spec: EmbodimentSpec, plan: Plan, task: Task) -> None:
        if spec.action_names != spec.state_names or len(spec.action_names) != plan.arm_q.shape[1] + 1:
            raise ValueError(f"{spec.name}: the demonstrator commands the arm joints then the gripper "
                             f"({plan.arm_q.shape[1]} + 1 state names), the actions are {list(spec.action_names)}")
        self._spec, self._plan, self._task = spec, plan, task
        self._t0_ns: int | None = None

    @classmethod
    def for_episode(cls, spec: EmbodimentSpec, seed: int, task: Task, limits: JointLimitSet) -> DemonstratorBackend:
        """Plan ``task`` from the initial scene of ``seed`` within ``limits`` (7 arm joints and the gripper, ROS
        units, as control_mux enforces them).

        Raises:
            PlanningError: the scene has a pose out of reach.
        """
        model = DroidWorld(seed, spec=spec)
        try:
            plan = plan_from_initial_scene(model, task, limits)
        finally:
            model.close()
        return cls(spec, plan, task)

    def reset(self, prompt: str, session_id: str) -> None:
        try:
            prompted = find_task(prompt)
        except ValueError as error:
            raise BackendError(f"the demonstrator follows known task instructions only: {error}") from error
        if prompted != self._task:
            raise BackendError(f"the demonstrator was planned for {self._task.instruction!r}, not {prompt!r}")

    def infer(self, observation: Observation) -> BackendPrediction:
        if self._t0_ns is None:
            self._t0_ns = observation.t_obs_ns
        timing = self._spec.timing
        times_s = (observation.t_obs_ns - self._t0_ns) * 1e-9 + np.arange(timing.horizon) * timing.dt
        targets = np.array([np.append(*self._plan.at(t)) for t in times_s])  # H, 8: ROS units
        start = 0
        for key in self._spec.action:
            if key.unit_map is not None:
                targets[:, start:start + key.dim] = key.unit_map.to_model(targets[:, start:start + key.dim])
            start += key.dim
        return BackendPrediction(actions=targets, relative=np.zeros(len(self._spec.action_names), dtype=bool))

    def close(self) -> None:
        """Nothing to release."""


__all__ = ["DemonstratorBackend"]
