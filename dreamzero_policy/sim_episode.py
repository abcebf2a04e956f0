"""What ``dreamzero collect`` and ``dreamzero eval-sim`` share: an episode's simulated robot and its referee.

Both run each episode as a fresh graph in one process around :func:`make_sim`, a ``sim_droid`` that keeps
simulated time (``use_sim_clock``, its ``clock`` remapped to ``/clock`` so that the other nodes, on
``use_sim_time``, follow it under any namespace), renders the cameras in lockstep (frames fall on the
same simulated instants on a slow machine as on a fast one) and ticks, publishing joint states and the
clock, at :data:`TICK_RATE_HZ`. The seed places the tray and the cubes (``droid_world``).

:class:`Referee` judges an episode on the simulator's own state (``SimDroid.world_state`` shown in a
model :class:`~dreamzero_embodiments.sim.droid_world.DroidWorld` of the same seed, ``Task.success``),
never on what the topics say, whenever it is asked (both commands ask on every joint state). From
:meth:`Referee.start` on it records the first success and ends the episode :data:`HOLD_S` of simulated
time later (so the recording shows the result), or ``timeout_s`` of simulated time after the start.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from dreamzero_embodiments.limits import JointLimitSet
from dreamzero_embodiments.sim.droid_world import DroidWorld, WorldState
from dreamzero_embodiments.sim.tasks import Task
from dreamzero_embodiments.spec import load_embodiment
from dreamzero_policy.bringup import node_values, parameter_overrides, params_path
from dreamzero_policy.params import CONTROL_MUX_PARAMS

TICK_RATE_HZ = 30.0  # sim ticks, joint states, /clock and commands: a multiple of 5, 10, 15 and 30 Hz cameras
HOLD_S = 0.5  # simulated seconds an episode goes on after the first success (the recording shows the result)
READY_TIMEOUT_S = 120.0  # wall: render process start, discovery and the first frame on a busy machine
POLL_S = 0.05
SIM_EMBODIMENT = "droid"


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; raise TimeoutError naming ``what`` after ``timeout_s`` wall seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:g} s")
        time.sleep(POLL_S)


def make_sim(seed: int, camera_rate_hz: float, render_processes: int, namespace: str = "",
             start_offset_rad: Sequence[float] = (0.0,) * 7):
    """The episode's ``sim_droid`` (module docstring), its arm starting at the ready pose plus
    ``start_offset_rad``; destroy it with ``destroy_node``."""
    from dreamzero_policy.sim_droid import SimDroid

    return SimDroid(namespace=namespace, cli_args=["--ros-args", "-r", "clock:=/clock"],
                    parameter_overrides=parameter_overrides({
                        "seed": seed, "use_sim_clock": True, "lockstep_cameras": True,
                        "camera_rate_hz": camera_rate_hz, "joint_state_rate_hz": TICK_RATE_HZ,
                        "render_processes": render_processes,
                        "start_offset_rad": [float(v) for v in start_offset_rad]}))


def demonstration_limits(params_file: str) -> JointLimitSet:
    """The robot's limits over the DROID state names (7 arm joints, gripper; ROS units) as control_mux
    enforces them: ``urdf/droid.urdf.xacro`` and the mux's ``limits.*`` parameters (``params_file``, default
    the shipped ``launch/params/droid.yaml``). The scripted demonstrator plans within them."""
    from dreamzero_policy.robot_limits import LimitSettings, robot_limits

    defaults = {p.name: p.default for p in CONTROL_MUX_PARAMS}
    values = node_values(params_path(params_file, SIM_EMBODIMENT), "control_mux")
    spec = load_embodiment(SIM_EMBODIMENT)
    return robot_limits(spec, LimitSettings.from_values({**defaults, **values})).select(spec.state_names)


class Referee:
    """Judges one episode (module docstring).

    Args:
        world_state: the simulator's current state, None once it is gone (``SimDroid.world_state``).
        model: a DroidWorld of the episode's seed that shows each judged state (never stepped).
        task: whose success test judges.
        hold_s, timeout_s: simulated seconds, after the first success and after the start.

    Attributes (written by the thread that calls :meth:`judge`): ``start_s``, ``success_s`` (first success)
    and ``end_s``, simulated seconds or None; ``last_sim_s``, the simulated time last seen; ``done``, set when
    the episode has ended.
    """

    def __init__(self, world_state: Callable[[], WorldState | None], model: DroidWorld, task: Task, hold_s: float,
                 timeout_s: float) -> None:
        self.model, self.task = model, task
        self._world_state, self._hold_s, self._timeout_s = world_state, hold_s, timeout_s
        self.start_s: float | None = None
        self.success_s: float | None = None
        self.end_s: float | None = None
        self.last_sim_s = 0.0
        self.done = threading.Event()

    def start(self, t_s: float) -> None:
        """Judge from now on; the timeout counts from ``t_s`` (simulated seconds). Later calls change nothing."""
        if self.start_s is None:
            self.start_s = t_s

    def judge(self) -> WorldState | None:
        """Judge the simulator's current state, which :attr:`model` then shows until the next call; returns it,
        or None when nothing was judged (not started, ended, or the simulator gone)."""
        state = self._world_state()
        if state is None:
            return None
        self.last_sim_s = state.time_s
        if self.start_s is None or self.done.is_set():
            return None
        self.model.show(state)
        if self.success_s is None and self.task.success(self.model):
            self.success_s = state.time_s
        if (self.success_s is not None and state.time_s - self.success_s >= self._hold_s) or (
                state.time_s - self.start_s >= self._timeout_s):
            self.end_s = state.time_s
            self.done.set()
        return state


__all__ = ["HOLD_S", "READY_TIMEOUT_S", "SIM_EMBODIMENT", "TICK_RATE_HZ", "Referee", "demonstration_limits",
           "make_sim", "wait_for"]
