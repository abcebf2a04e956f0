"""``dreamzero collect``: scripted demonstrations in the simulation, through the ROS graph, into bags.

Per episode ``i`` (0-based) the seed is ``seed_start + i`` (it places the tray and cubes,
``droid_world``; training seeds only: below ``sim/tasks.py``'s ``EVALUATION_SEED_START``) and the task is
``tasks[i % len(tasks)]`` (``sim/tasks.py``). The arm starts at the ready pose, or, in a fraction
``random_start`` of the episodes, at a random pose (``demonstrator.random_start``; whether and where are
drawn from the seed, :func:`start_pose`), so the demonstrations also show the way to a cube from states
away from the ready pose. In one process, on one executor, fresh for every episode:

* ``sim_droid`` (:func:`~dreamzero_policy.sim_episode.make_sim`: seed, start pose, ``use_sim_clock``,
  ``lockstep_cameras``; joint states and the clock at :data:`TICK_RATE_HZ`; its ``clock`` remapped to ``/clock``),
* ``control_mux`` (the params file's ``control_mux`` section, ``initial_mode`` teleop, on sim time at
  :data:`TICK_RATE_HZ`, so it limits, forwards and times out in simulated time),
* a :class:`~dreamzero_policy.bags.record.BagRecorder` on sim time (bag stamps are simulated time)
  recording the cameras, ``joint_states``, every controller group's ``command_topic`` and ``/clock``,
* :class:`Demonstrator`, the teleoperator: its plan (``sim/demonstrator.py``) is made before the graph
  starts, from the seed's initial scene (``plan_from_initial_scene``); from the first joint state at or
  after :data:`START_S` of simulated time (later only if the recorder was not recording every topic yet) it
  publishes, on every joint state, the plan's command for that state's stamp on ``teleop/<group>`` (arm,
  gripper), which control_mux forwards to the sim's controllers.

Success is tested on every joint state from the simulator's state by a
:class:`~dreamzero_policy.sim_episode.Referee` started at the demonstrator's first command: an episode ends
``hold_s`` (default :data:`HOLD_S`) of simulated time after the first success, the demonstrator
holding the plan's last pose (a longer hold shows a policy that staying at the goal is what follows it), or
``timeout_s`` of simulated time after the demonstration started, and is kept either way (``success`` false). Everything follows the sim's clock, the
sim renders the cameras in lockstep and the plan and its start depend on the seed only, so a slow machine
runs slower but records the same episode at the same simulated instants (frames, joint states, the start).
What still depends on the machine is which simulated tick a command reaches the sim on: the demonstrator,
control_mux's timer and the sim exchange messages asynchronously, and a loaded executor delays or skips a
mux tick. Measured on the loaded 2-core development machine, two runs of one seed reach success within a
tick of each other, their joint states differ by 0.01 rad on average and 0.09 rad at most (2-3 ticks of
motion), and their frames match where the arm is still. Also machine dependent: where the bag begins (the
recorder's discovery; before :data:`START_S`).

Output (``DIR`` = ``--output``; the folder of one episode must not exist yet)::

    DIR/episode_0000/metadata.json   {"instruction", "seed", "success", "duration_s", "task", "start_q"}
    DIR/episode_0000/bag/            the rosbag2 bag (MCAP, or sqlite3), stamped in simulated time

``metadata.json`` lies in the episode folder, beside (not inside) the bag folder: tools that take a
bag folder (``dreamzero dataset``) read ``instruction`` from the bag folder's parent. ``duration_s`` is
simulated seconds from the demonstrator's first command to the episode's end (the bag starts a
little earlier, at rest); ``task`` is the task's name (``touch_red_cube``); ``start_q`` the arm's 7 start
joint positions (rad).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.limits import JointLimitSet
from dreamzero_embodiments.sim.demonstrator import Plan, plan_from_initial_scene, random_start
from dreamzero_embodiments.sim.droid_world import READY_Q, DroidWorld
from dreamzero_embodiments.sim.tasks import Task, check_seeds
from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_policy.bags.record import BagRecorder
from dreamzero_policy.bringup import activate, node_values, parameter_overrides, params_path
from dreamzero_policy.conversions import joint_state_arrays, stamp_to_ns
from dreamzero_policy.lifecycle import serving
from dreamzero_policy.qos import reliable_qos
from dreamzero_policy.sim_episode import (HOLD_S, READY_TIMEOUT_S, SIM_EMBODIMENT, TICK_RATE_HZ, Referee,
                                          demonstration_limits, make_sim, wait_for)

START_S = 1.0  # simulated: the demonstration starts here, after the recorder's discovery (every 0.5 s)
RANDOM_START_STREAM = 1  # start_pose draws from numpy's generator seeded (seed, this): independent of the scene
WALL_PER_SIM_S = 20.0  # wall seconds allowed per simulated second before an episode counts as stalled


@dataclass(frozen=True)
class CollectOptions:
    """What ``dreamzero collect`` was asked for (see module docstring).

    Raises:
        ValueError: no task, fewer than one episode, or seeds outside the training seeds (``check_seeds``).
    """

    output_dir: Path
    episodes: int
    tasks: tuple[Task, ...]
    seed_start: int = 0
    camera_rate_hz: float = 15.0
    render_processes: int = 3
    timeout_s: float = 30.0
    storage: str = "mcap"
    namespace: str = ""
    params_file: str = ""
    random_start: float = 0.0
    hold_s: float = HOLD_S

    def __post_init__(self) -> None:
        if not self.tasks or self.episodes < 1:
            raise ValueError(f"need at least one task and one episode, got {len(self.tasks)} and {self.episodes}")
        if not 0.0 <= self.random_start <= 1.0:
            raise ValueError(f"random_start is the fraction of episodes from a random pose, in [0, 1]; got "
                             f"{self.random_start}")
        if not self.hold_s >= 0.0:
            raise ValueError(f"hold_s must be at least 0 simulated seconds, got {self.hold_s}")
        check_seeds(self.seed_start, self.episodes, "training")


@dataclass(frozen=True)
class EpisodeResult:
    """One episode: its metadata (as written), the folder, the bag's message counts per topic, the wall
    seconds it took (nodes up to nodes down) and the simulated seconds the sim ran (pre-roll included)."""

    metadata: dict
    folder: Path
    counts: dict[str, int]
    wall_s: float
    sim_s: float


class Demonstrator(Node):
    """The teleoperator stand-in (see module docstring): publishes ``plan.at(t)`` on ``teleop/<group>`` for
    each joint state's stamp t, then asks ``referee`` to judge; the first command starts the referee."""

    def __init__(self, spec: EmbodimentSpec, referee: Referee, start_at_s: float, namespace: str = "") -> None:
        super().__init__("demonstrator", namespace=namespace,
                         parameter_overrides=[Parameter("use_sim_time", value=True)])
        arm_names, gripper_names = spec.state_names[:7], spec.state_names[7:]
        groups = {g.names: g for g in spec.controller_groups}
        if arm_names not in groups or gripper_names not in groups:
            raise ValueError(f"{spec.name}: no controller groups for the arm {arm_names} and the gripper "
                             f"{gripper_names}: {[g.names for g in spec.controller_groups]}")
        self._names = spec.state_names
        self._arm_pub = self.create_publisher(Float64MultiArray, f"teleop/{groups[arm_names].name}", reliable_qos())
        self._gripper_pub = self.create_publisher(Float64MultiArray, f"teleop/{groups[gripper_names].name}",
                                                  reliable_qos())
        self._referee, self._start_at_s = referee, start_at_s
        self._lock = threading.Lock()
        self._positions: np.ndarray | None = None
        self._plan: Plan | None = None
        self.create_subscription(JointState, spec.joint_states_topic, self._on_joint_state, reliable_qos())

    @property
    def positions(self) -> np.ndarray | None:
        """The newest joint state in the spec's state order (float64[8]), or None before the first."""
        with self._lock:
            return self._positions

    def start(self, plan: Plan) -> None:
        """Execute ``plan`` from the first joint state at or after ``start_at_s`` (simulated) on."""
        with self._lock:
            self._plan = plan

    def _on_joint_state(self, msg: JointState) -> None:
        names, values = joint_state_arrays(msg)
        by_name = dict(zip(names, values))
        if not all(n in by_name for n in self._names):
            return
        t_s = stamp_to_ns(msg.header.stamp) * 1e-9
        with self._lock:
            self._positions = np.array([by_name[n] for n in self._names])
            plan = self._plan
            if plan is None or self._referee.done.is_set() or t_s < self._start_at_s - 1e-6:
                return
            self._referee.start(t_s)
        arm, gripper = plan.at(t_s - self._referee.start_s)
        self._arm_pub.publish(Float64MultiArray(data=arm.tolist()))
        self._gripper_pub.publish(Float64MultiArray(data=[gripper]))
        self._referee.judge()


def recorded_topics(spec: EmbodimentSpec, namespace: str) -> list[str]:
    """The absolute topics a collect bag records: cameras, joint states, the controller commands, /clock."""
    prefix = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
    relative = [c.topic for c in spec.cameras] + [spec.joint_states_topic] + [
        g.command_topic for g in spec.controller_groups]
    return [f"{prefix}/{t}" for t in relative] + ["/clock"]


def start_pose(model: DroidWorld, seed: int, random_fraction: float, limits: JointLimitSet) -> np.ndarray:
    """The arm's start joints (float64[7], rad) for ``seed``'s episode: with probability ``random_fraction`` (a
    draw from the generator seeded (seed, :data:`RANDOM_START_STREAM`)) a random pose from the same generator
    (``demonstrator.random_start``, solved on ``model``), else ``droid_world.READY_Q``."""
    rng = np.random.default_rng((seed, RANDOM_START_STREAM))
    if rng.random() >= random_fraction:
        return READY_Q.copy()
    return random_start(model, limits, rng)


def _graph(options: CollectOptions, seed: int, start_q: np.ndarray, bag: Path, spec: EmbodimentSpec):
    """The episode's sim, mux and recorder (see module docstring)."""
    from dreamzero_policy.control_mux import ControlMux

    sim = make_sim(seed, options.camera_rate_hz, options.render_processes, options.namespace, start_q - READY_Q)
    try:
        mux_values = node_values(params_path(options.params_file, SIM_EMBODIMENT), "control_mux", {
            "embodiment": SIM_EMBODIMENT, "initial_mode": "teleop", "command_rate_hz": TICK_RATE_HZ,
            "use_sim_time": True})
        mux = ControlMux(namespace=options.namespace, parameter_overrides=parameter_overrides(mux_values))
        recorder = BagRecorder(bag, recorded_topics(spec, options.namespace), options.storage,
                               parameter_overrides=[Parameter("use_sim_time", value=True)])
    except Exception:
        sim.destroy_node()
        raise
    return sim, mux, recorder


def collect_episode(options: CollectOptions, index: int, limits: JointLimitSet) -> EpisodeResult:
    """Run episode ``index`` (see module docstring) and write its folder; returns what happened.

    Raises:
        FileExistsError: the episode folder exists. TimeoutError: the graph did not come up, or stalled.
        PlanningError: the demonstrator cannot solve this seed's scene (nothing is written then).
    """
    spec = load_embodiment(SIM_EMBODIMENT)
    seed, task = options.seed_start + index, options.tasks[index % len(options.tasks)]
    folder = options.output_dir / f"episode_{index:04d}"
    if folder.exists():
        raise FileExistsError(f"{folder} exists")
    started = time.monotonic()
    model = DroidWorld(seed, spec=spec)  # kinematic model: the plan's IK and the success test
    try:
        start_q = start_pose(model, seed, options.random_start, limits)
        model.reset(start_q)
        plan = plan_from_initial_scene(model, task, limits)
        folder.mkdir(parents=True)
        sim, mux, recorder = _graph(options, seed, start_q, folder / "bag", spec)
        wanted = recorded_topics(spec, options.namespace)
        streams = [t for t in wanted if not t.endswith(tuple(g.command_topic for g in spec.controller_groups))]
        referee = Referee(sim.world_state, model, task, options.hold_s, options.timeout_s)
        try:
            demonstrator = Demonstrator(spec, referee, START_S, options.namespace)
        except Exception:
            for node in (sim, mux, recorder):
                node.destroy_node()
            raise
        with serving([sim, mux, recorder, demonstrator], "collect-executor", threads=4):
            activate([mux])
            wait_for(lambda: set(recorder.topics) == set(wanted) and all(recorder.counts[t] > 0 for t in streams)
                     and demonstrator.positions is not None, READY_TIMEOUT_S, f"recording of every topic {wanted}")
            demonstrator.start(plan)
            stalled_s = READY_TIMEOUT_S + WALL_PER_SIM_S * options.timeout_s
            if not referee.done.wait(stalled_s):
                raise TimeoutError(f"dreamzero collect: episode {index} did not end within {stalled_s:g} s "
                                   f"(simulated time {referee.last_sim_s:.1f} s)")
        counts = dict(recorder.counts)
    finally:
        model.close()
    metadata = {"instruction": task.instruction, "seed": seed, "success": referee.success_s is not None,
                "duration_s": round(referee.end_s - referee.start_s, 6), "task": task.name,
                "start_q": [round(float(q), 6) for q in start_q]}
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return EpisodeResult(metadata, folder, counts, time.monotonic() - started, referee.end_s)


def run_collect(options: CollectOptions, report: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    """Collect ``options.episodes`` episodes in a row (rclpy must be initialised); ``report`` is called after
    each one."""
    limits = demonstration_limits(options.params_file)
    results = []
    for index in range(options.episodes):
        results.append(collect_episode(options, index, limits))
        if report is not None:
            report(results[-1])
    return results


def summary(results: Sequence[EpisodeResult]) -> dict:
    """Counts and per-episode means of wall and simulated time, for the command's last line."""
    return {"episodes": len(results), "successes": sum(r.metadata["success"] for r in results),
            "wall_s_per_episode": round(float(np.mean([r.wall_s for r in results])), 2),
            "sim_s_per_episode": round(float(np.mean([r.sim_s for r in results])), 2),
            "demonstration_s_per_episode": round(float(np.mean([r.metadata["duration_s"] for r in results])), 2)}


__all__ = ["CollectOptions", "Demonstrator", "EpisodeResult", "collect_episode", "demonstration_limits",
           "recorded_topics", "run_collect", "start_pose", "summary"]
