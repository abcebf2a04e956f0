"""``dreamzero eval-sim``: closed-loop success rates of a policy in the simulated DROID world.

Episodes. Episode ``i`` (0-based) runs seed ``seed_start + i`` (evaluation seeds only: from ``sim/tasks.py``'s
``EVALUATION_SEED_START`` on, so no scene was ever a ``dreamzero collect`` training episode) and task
``tasks[i % len(tasks)]``. The policy is prompted with the task's instruction or, for every episode, with
``prompt_override``; success and distance stay the task's (a policy that obeys an override naming the
other cube fails the task). When the override is itself a task's instruction, ``reached_prompted_object``
says whether that prompted task's success test held at some judged instant of the episode (the prompt
"Touch the blue cube." on the task ``touch_red_cube``: whether the gripper touched the blue cube);
with any other override it is null, and without an override absent.

The graph. Per episode, in one process on one executor, all fresh (so the policy starts a new session
and context): ``sim_droid`` (:func:`~dreamzero_policy.sim_episode.make_sim`: the seed, simulated time,
cameras in lockstep, :data:`TICK_RATE_HZ` ticks), the graph of ``dreamzero bringup`` (policy_node ->
adapter_node -> control_mux in policy mode -> the sim; the params file's sections, default
``launch/params/droid.yaml``, then :func:`graph_options`) and :class:`EpisodeMonitor`. Every node but the
sim runs on ``/clock`` (``use_sim_time``), adapter and mux at the tick rate.

Timing: the world waits for the policy. Simulated time advances only when the sim ticks, and every
backend call runs with it stopped (:class:`HeldSimBackend`, ``SimDroid.hold_time``), as in gym-style
simulation benchmarks, where the environment steps once the policy has answered. A chunk therefore
reaches the adapter a tick or two of simulated time after its ``t_obs``, whatever the model's wall
latency (tiny on 2 CPU cores, 14B on a GPU), and the frames fall on the same simulated instants
(lockstep), so a slow machine runs the same episode slower. Left machine dependent, as in ``dreamzero
collect``: on which tick a command reaches the sim (the sim resumes while the chunk is published, and
adapter, mux and sim exchange messages asynchronously). Left out on purpose: the effect of latency
(the real robot keeps moving while the model computes); ``bench/`` measures that.

Start and end. The sim is held from its construction until the graph is active (configured: the model
loaded), so loading competes with no rendering and simulated time starts with a policy ready. The
episode starts at the ``t_obs`` of the first chunk, the stamp of the first observation the policy acted
on: normally the first camera frame (``1 / camera_rate_hz``); later only if that frame was lost to
discovery, and before it the robot holds its ready pose and nothing in the scene moves, so the start's
simulated time never changes what happens in the episode. It ends :data:`HOLD_S` after the first success
or ``timeout_s`` simulated seconds after the start (:class:`~dreamzero_policy.sim_episode.Referee`, on
every joint state); ``time_to_success_s`` counts from the start. A policy without a chunk ``timeout_s``
simulated seconds after the graph came up, or simulated time standing still for :data:`STALL_S` wall
seconds (a hung model or sim), stops the evaluation with an error: that is a broken setup, not a failed
episode.

Checkpoints: a directory in the official layout, ``tiny`` or ``sim_touch`` (the local backend in its own process,
``policy_node.make_backend``), or ``demonstrator``: the scripted demonstrator as the policy
(``backends/demonstrator.py``), the sanity row, about 100 % success expected. Samplers:
:data:`SAMPLERS`. The report folder is written by :mod:`dreamzero_policy.eval_report`.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState

from dreamzero_embodiments.limits import JointLimitSet
from dreamzero_embodiments.sim.droid_world import DroidWorld, WorldState
from dreamzero_embodiments.sim.scoring import goal_distance
from dreamzero_embodiments.sim.tasks import EVALUATION_SEED_START, TASKS, Task, check_seeds, find_task
from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy import eval_report
from dreamzero_policy.backends.base import BackendPrediction, Observation, PolicyBackend
from dreamzero_policy.backends.demonstrator import DemonstratorBackend
from dreamzero_policy.bringup import GraphOptions, activate, build_graph
from dreamzero_policy.conversions import image_to_rgb, stamp_to_ns
from dreamzero_policy.lifecycle import serving
from dreamzero_policy.params import PolicySettings
from dreamzero_policy.paths import SHIPPED_CHECKPOINT
from dreamzero_policy.qos import camera_qos, reliable_qos
from dreamzero_policy.sim_episode import (HOLD_S, POLL_S, SIM_EMBODIMENT, TICK_RATE_HZ, Referee,
                                          demonstration_limits, make_sim)
from dreamzero_policy.video import FrameSetVideo

DEMONSTRATOR = "demonstrator"
SAMPLERS = {
    "standard": "UniPC, 16 steps, the official DiT cache schedule, CFG 5.0, noise seed 1140 (policy_node defaults, "
                "dreamzero_model.SamplerConfig())",
    "flash": "Euler, --steps steps (default 1), CFG 1.0, DiT cache on every step (dreamzero_model.FLASH_SAMPLER)",
}
STALL_S = 600.0  # wall s of standing simulated time: beyond a first 14B call with its warm-up (minutes)
# policy_node on simulated time: a camera is stale past this many frame periods (the newest frame is at most one
# period old when a query is due); frames for the model's history are matched within half a period, so the
# nearest lockstep frame always qualifies.
CAMERA_TIMEOUT_PERIODS = 3.0
FRAME_TOLERANCE_PERIODS = 0.5


@dataclass(frozen=True)
class EvalOptions:
    """What ``dreamzero eval-sim`` was asked for (module docstring; ``timeout_s`` in simulated seconds).

    Raises:
        ValueError: no task or episode; seeds outside the evaluation seeds (``check_seeds``); a checkpoint that is
            neither ``tiny``, ``demonstrator`` nor a directory; an unknown sampler, or ``steps`` without ``flash``;
            the demonstrator prompted with an instruction of no task; a camera rate that does not divide the tick
            rate; a timeout or render process count out of range.
    """

    output_dir: Path
    checkpoint: str
    tasks: tuple[Task, ...]
    episodes: int = 1
    seed_start: int = EVALUATION_SEED_START
    sampler: str = "standard"
    steps: int | None = None
    prompt_override: str = ""
    timeout_s: float = 30.0
    camera_rate_hz: float = 5.0
    render_processes: int = 3
    device: str = "cpu"
    namespace: str = ""
    params_file: str = ""

    def __post_init__(self) -> None:
        if not self.tasks or self.episodes < 1:
            raise ValueError(f"need at least one task and one episode, got {len(self.tasks)} and {self.episodes}")
        check_seeds(self.seed_start, self.episodes, "evaluation")
        if self.checkpoint not in ("tiny", SHIPPED_CHECKPOINT, DEMONSTRATOR) and not Path(self.checkpoint).is_dir():
            raise ValueError(f"checkpoint {self.checkpoint!r} is neither 'tiny', '{SHIPPED_CHECKPOINT}', "
                             f"'{DEMONSTRATOR}' nor a directory")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; one of {sorted(SAMPLERS)}")
        if self.steps is not None and (self.sampler != "flash" or self.steps < 1):
            raise ValueError(f"steps ({self.steps}) set the flash sampler's steps (at least 1); the standard sampler "
                             f"takes the official 16 (its DiT cache schedule is for 16 steps)")
        if self.checkpoint == DEMONSTRATOR and self.prompt_override and _prompted_task(self.prompt_override) is None:
            raise ValueError(f"the demonstrator follows task instructions only, not {self.prompt_override!r}; known: "
                             f"{[t.instruction for t in TASKS]}")
        periods = TICK_RATE_HZ / self.camera_rate_hz if self.camera_rate_hz > 0 else 0.0
        if periods < 1 or abs(periods - round(periods)) > 1e-9:
            raise ValueError(f"camera rate {self.camera_rate_hz:g} Hz must divide the tick rate {TICK_RATE_HZ:g} Hz "
                             f"(frames on every n-th tick, e.g. 5, 10, 15 or 30 Hz)")
        if self.timeout_s <= 0 or not 0 <= self.render_processes <= 3:
            raise ValueError(f"need a positive timeout and 0..3 render processes, got {self.timeout_s:g} s and "
                             f"{self.render_processes}")


def sampler_parameters(sampler: str, steps: int | None) -> dict[str, object]:
    """policy_node's sampler parameters for ``sampler`` (:data:`SAMPLERS`); imports the model package (torch)."""
    from dreamzero_model import FLASH_SAMPLER, SamplerConfig

    config = SamplerConfig() if sampler == "standard" else dataclasses.replace(
        FLASH_SAMPLER, num_steps=steps or FLASH_SAMPLER.num_steps)
    return {"solver": config.solver, "num_inference_steps": config.num_steps, "cfg_scale": config.cfg_scale,
            "cache_schedule": config.cache_schedule, "seed": config.seed}


def graph_options(options: EvalOptions, prompt: str) -> GraphOptions:
    """policy_node, adapter_node and control_mux of an episode (module docstring, "The graph")."""
    sim_time = {"use_sim_time": True}
    period_s = 1.0 / options.camera_rate_hz
    policy = {**sim_time, "device": options.device, "camera_timeout_s": CAMERA_TIMEOUT_PERIODS * period_s,
              "frame_tolerance_s": FRAME_TOLERANCE_PERIODS * period_s}
    if options.checkpoint != DEMONSTRATOR:
        policy.update(sampler_parameters(options.sampler, options.steps))
    # backend "local": the node's own factory builds the model's; the demonstrator replaces it (_backend_factory)
    return GraphOptions(embodiment=SIM_EMBODIMENT, backend="local", checkpoint=options.checkpoint, prompt=prompt,
                        namespace=options.namespace, params_file=options.params_file, overrides={
                            "policy_node": policy,
                            "adapter_node": {**sim_time, "command_rate_hz": TICK_RATE_HZ},
                            "control_mux": {**sim_time, "initial_mode": "policy", "command_rate_hz": TICK_RATE_HZ}})


class HeldSimBackend:
    """``backend`` whose ``reset`` and ``infer`` run with the sim's time stopped (module docstring, "Timing");
    every other attribute is the backend's (the policy node reads e.g. ``restarts``)."""

    def __init__(self, backend: PolicyBackend, hold_time: Callable[[bool], None]) -> None:
        self._backend, self._hold_time = backend, hold_time

    @contextmanager
    def _held(self) -> Iterator[None]:
        self._hold_time(True)
        try:
            yield
        finally:
            self._hold_time(False)

    def reset(self, prompt: str, session_id: str) -> None:
        with self._held():
            self._backend.reset(prompt, session_id)

    def infer(self, observation: Observation) -> BackendPrediction:
        with self._held():
            return self._backend.infer(observation)

    def close(self) -> None:
        self._backend.close()

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


class EpisodeMonitor(Node):
    """Watches one episode: on every joint state the referee judges and the goal distance (and, for a prompted
    task, its success) is measured on the judged state; the first chunk starts the referee and the video; camera
    frames and predicted mosaics go into the video. One callback group (the node's default): referee, model world
    and video see one callback at a time."""

    def __init__(self, spec: EmbodimentSpec, referee: Referee, prompted: Task | None, video: FrameSetVideo,
                 namespace: str = "") -> None:
        super().__init__("eval_monitor", namespace=namespace,
                         parameter_overrides=[Parameter("use_sim_time", value=True)])
        self._referee, self._prompted, self._video = referee, prompted, video
        self.chunks = 0  # chunks from the start to the end
        self.distances: list[tuple[float, float]] = []  # (simulated s from the start, goal distance m)
        self.reached_prompted = False
        self.final_state: WorldState | None = None
        self.create_subscription(JointState, spec.joint_states_topic, self._on_joint_state, reliable_qos())
        self.create_subscription(ActionChunk, "policy_node/action_chunk", self._on_chunk, reliable_qos())
        self.create_subscription(Image, "policy_node/predicted_video",
                                 lambda msg: video.add_predicted(image_to_rgb(msg)), reliable_qos(depth=8))
        for camera in spec.cameras:
            self.create_subscription(Image, camera.topic, lambda msg, key=camera.key: video.add_camera(
                key, stamp_to_ns(msg.header.stamp), image_to_rgb(msg)), camera_qos("reliable"))

    def _on_joint_state(self, msg: JointState) -> None:
        state = self._referee.judge()
        if state is None:
            return
        model = self._referee.model
        self.distances.append((state.time_s - self._referee.start_s, goal_distance(model, self._referee.task)))
        self.reached_prompted = self.reached_prompted or (self._prompted is not None and self._prompted.success(model))
        self.final_state = state

    def _on_chunk(self, msg: ActionChunk) -> None:
        if self._referee.done.is_set():
            return
        self.chunks += 1
        if self.chunks == 1:
            t_obs_ns = stamp_to_ns(msg.header.stamp)
            self._referee.start(t_obs_ns * 1e-9)
            self._video.start(t_obs_ns)


@dataclass(frozen=True)
class EpisodeResult:
    """One episode: its ``episodes.jsonl`` record (:func:`eval_report.episode_record`) and its goal distance
    over time, float64[N, 2]: simulated seconds from the start and metres, at each judged joint state."""

    record: dict
    distances: np.ndarray


def _backend_factory(hold_time: Callable[[bool], None], demonstrator: DemonstratorBackend | None):
    """policy_node's backend: the demonstrator or the node's own (``make_backend``), held (:class:`HeldSimBackend`)."""
    from dreamzero_policy.policy_node import make_backend

    def build(settings: PolicySettings, spec: EmbodimentSpec) -> PolicyBackend:
        return HeldSimBackend(demonstrator if demonstrator is not None else make_backend(settings, spec), hold_time)
    return build


def _run_to_end(referee: Referee, timeout_s: float, index: int) -> None:
    """Wait for the episode's end (module docstring, "Start and end"); raise on a missing first chunk or a stall."""
    came_up_s = seen_s = referee.last_sim_s
    seen_at = time.monotonic()
    while not referee.done.wait(POLL_S):
        if referee.last_sim_s != seen_s:
            seen_s, seen_at = referee.last_sim_s, time.monotonic()
        elif time.monotonic() - seen_at > STALL_S:
            raise TimeoutError(f"episode {index}: simulated time stood still at {seen_s:.2f} s for {STALL_S:g} s "
                               f"(a hung model or sim; see the node logs)")
        if referee.start_s is None and seen_s - came_up_s > timeout_s:
            raise RuntimeError(f"episode {index}: no chunk from the policy within {timeout_s:g} simulated seconds "
                               f"of the graph coming up; see the node logs")


def evaluate_episode(options: EvalOptions, index: int, limits: JointLimitSet,
                     observers: Callable[[], Sequence[Node]] | None = None) -> EpisodeResult:
    """Run episode ``index`` (module docstring) and write its video; returns its result.

    Args:
        observers: builds more nodes for the episode's graph (the demo's recorder, :mod:`dreamzero_policy.demo`),
            called once the graph is built; they spin with it and are destroyed with it, however the episode ends.

    Raises:
        PlanningError: the demonstrator cannot solve the scene (nothing is run). TimeoutError, RuntimeError: a
            stall or no chunk (see :func:`_run_to_end`); a node that failed to configure.
    """
    spec = load_embodiment(SIM_EMBODIMENT)
    seed, task = options.seed_start + index, options.tasks[index % len(options.tasks)]
    prompt = options.prompt_override or task.instruction
    prompted = _prompted_task(options.prompt_override)
    demonstrator = (DemonstratorBackend.for_episode(spec, seed, find_task(prompt), limits)
                    if options.checkpoint == DEMONSTRATOR else None)
    horizon_s = spec.timing.horizon * spec.timing.dt  # frames waiting for the first mosaic: at most one chunk's
    video = FrameSetVideo(options.output_dir / eval_report.video_name(index), options.camera_rate_hz,
                          [c.key for c in spec.cameras],
                          0 if demonstrator is not None else round(horizon_s * options.camera_rate_hz))
    started = time.monotonic()
    model = DroidWorld(seed, spec=spec)  # shows each judged state of the sim
    try:
        sim = make_sim(seed, options.camera_rate_hz, options.render_processes, options.namespace)
        sim.hold_time(True)  # until the graph is up: loading the model competes with nothing, and misses nothing
        nodes: list[Node] = [sim]
        try:
            referee = Referee(sim.world_state, model, task, HOLD_S, options.timeout_s)
            nodes = build_graph(graph_options(options, prompt), _backend_factory(sim.hold_time, demonstrator)) + nodes
            monitor = EpisodeMonitor(spec, referee, prompted, video, options.namespace)
            nodes.append(monitor)
            nodes += observers() if observers is not None else ()
        except Exception:
            for node in nodes:
                node.destroy_node()
            raise
        with serving(nodes, "eval-executor", threads=4):
            activate(nodes)
            sim.hold_time(False)
            _run_to_end(referee, options.timeout_s, index)
    finally:
        frames = video.close()
        model.close()
    distances = np.array(monitor.distances, dtype=np.float64).reshape(-1, 2)
    record = eval_report.episode_record(
        index=index, seed=seed, task=task, prompt=prompt, success=referee.success_s is not None,
        time_to_success_s=None if referee.success_s is None else referee.success_s - referee.start_s,
        min_distance_m=float(distances[:, 1].min()) if len(distances) else None, chunks=monitor.chunks,
        sim_s=referee.end_s - referee.start_s, wall_s=time.monotonic() - started, video_frames=frames,
        final_state=monitor.final_state, overridden=bool(options.prompt_override),
        reached_prompted_object=monitor.reached_prompted if prompted is not None else None)
    return EpisodeResult(record, distances)


def _prompted_task(prompt_override: str) -> Task | None:
    """The task whose instruction the override is, None without an override or for another text."""
    try:
        return find_task(prompt_override) if prompt_override else None
    except ValueError:
        return None


def run_eval(options: EvalOptions, report: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    """Evaluate ``options.episodes`` episodes in a row (rclpy must be initialised) into the report folder
    (:mod:`dreamzero_policy.eval_report`); ``report`` is called after each episode. The summary and the plot are
    written however the run ends, for the episodes done.

    Raises:
        FileExistsError: the report folder exists and is not empty (nothing is written).
    """
    folder = options.output_dir
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"report folder {folder} exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    limits = demonstration_limits(options.params_file)
    results: list[EpisodeResult] = []
    try:
        for index in range(options.episodes):
            results.append(evaluate_episode(options, index, limits))
            eval_report.append_record(folder, results[-1].record)
            if report is not None:
                report(results[-1])
    finally:
        if results:
            eval_report.write_summary(folder, [r.record for r in results], _settings(options))
            eval_report.plot(folder / eval_report.PLOT_NAME, [r.record for r in results],
                             [r.distances for r in results])
    return results


def _settings(options: EvalOptions) -> dict:
    """What the summary says was evaluated."""
    return {"checkpoint": options.checkpoint, "tasks": [t.name for t in options.tasks], "episodes": options.episodes,
            "seed_start": options.seed_start, "prompt_override": options.prompt_override or None,
            "sampler": None if options.checkpoint == DEMONSTRATOR else options.sampler,
            "steps": options.steps, "timeout_s": options.timeout_s, "camera_rate_hz": options.camera_rate_hz,
            "hold_s": HOLD_S, "tick_rate_hz": TICK_RATE_HZ}


__all__ = ["DEMONSTRATOR", "SAMPLERS", "EpisodeMonitor", "EpisodeResult", "EvalOptions", "HeldSimBackend",
           "evaluate_episode", "graph_options", "run_eval", "sampler_parameters"]
