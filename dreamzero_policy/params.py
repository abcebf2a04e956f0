"""Parameter tables of the nodes (STYLE.md item 10): name, default, description, read-only flag, range.

Each node declares its whole table in the constructor and reads it once in ``on_configure`` into a
frozen settings dataclass; nothing reads parameters later. Robot facts are not parameters: they live
in the embodiment YAML (the ``embodiment`` parameter picks it).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


@dataclass(frozen=True)
class Param:
    """One declared parameter; ``choices`` and ``bounds`` are checked when the node configures."""

    name: str
    default: Any
    description: str
    read_only: bool = True
    choices: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        text = self.description + (f" One of: {', '.join(self.choices)}." if self.choices else "")
        descriptor = ParameterDescriptor(description=text, read_only=self.read_only)
        if self.bounds is not None and not isinstance(self.default, bool):
            low, high = self.bounds
            if isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
            elif isinstance(self.default, float):
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        return descriptor


def declare(node: Node, table: tuple[Param, ...]) -> None:
    """Declare every parameter of ``table`` on ``node`` with its descriptor."""
    for param in table:
        node.declare_parameter(param.name, param.default, param.descriptor())


def parse_pairs(entries: tuple[str, ...] | list[str], separator: str, what: str, example: str) -> dict[str, str]:
    """``['a<separator>b', ...]`` as {a: b} (stripped); raises ValueError naming ``what`` and the malformed entry."""
    pairs = {}
    for entry in entries:
        key, sep, value = entry.partition(separator)
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what} {entry!r} must look like '{example}'")
        pairs[key.strip()] = value.strip()
    return pairs


def checked(table: tuple[Param, ...], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (one per parameter of ``table``); raises ValueError naming each one outside its
    choices or bounds."""
    problems = []
    for param in table:
        value = values[param.name]
        if param.choices and value not in param.choices:
            problems.append(f"{param.name}={value!r} is not one of {', '.join(param.choices)}")
        if param.bounds is not None and not (param.bounds[0] <= value <= param.bounds[1]):
            problems.append(f"{param.name}={value!r} is outside [{param.bounds[0]}, {param.bounds[1]}]")
    if problems:
        raise ValueError("invalid parameters: " + "; ".join(problems))
    return values


def read(node: Node, table: tuple[Param, ...]) -> dict[str, Any]:
    """Current values of ``table`` on ``node``, checked (see :func:`checked`)."""
    return checked(table, {param.name: node.get_parameter(param.name).value for param in table})


LIMIT_PARAMS: tuple[Param, ...] = (
    Param("robot_description_file", "", "URDF or xacro file overriding the embodiment's (empty: "
                                        "urdf/<robot_description> from the package share)."),
    Param("xacro_args", [""], "xacro arguments 'name=value' for the robot description, e.g. arm_id=fr3."),
    Param("joint_name_map", [""], "Renames the embodiment's joints for a robot that names them otherwise: "
                                  "'yaml_name=robot_name' or 'yaml_prefix*=robot_prefix*' (FR3 on DROID: "
                                  "panda_*=fr3_* with xacro_args arm_id=fr3)."),
    Param("limits.max_acceleration", 10.0, "Acceleration limit per joint (rad/s^2 or m/s^2); URDFs carry none.",
          bounds=(0.01, 1000.0)),
    Param("limits.base_linear_m_s", 0.5, "Bound of the base's linear velocity command (twist groups).",
          bounds=(0.0, 10.0)),
    Param("limits.base_angular_rad_s", 0.5, "Bound of the base's angular velocity command (twist groups).",
          bounds=(0.0, 10.0)),
)
"""The robot itself, for every node that reads its joints: the robot description and its joint names, where
commands are limited (adapter and mux) and joint readings checked (all three), and what a URDF does not give."""

POLICY_NODE_PARAMS: tuple[Param, ...] = (
    Param("embodiment", "droid", "Embodiment YAML name (embodiments/dreamzero_embodiments/robots/<name>.yaml) or path."),
    Param("backend", "local", "Where the model runs: in-process or on a WebSocket server.", choices=("local", "remote")),
    Param("checkpoint", "tiny", "Checkpoint directory in the official layout, 'tiny' for a random-weight tiny model "
                                "created on first use (tests), or 'sim_touch', the shipped trained tiny model of the "
                                "simulated touch task (demo)."),
    Param("tokenizer_path", "", "Local umT5 tokenizer directory; empty: as recorded in the checkpoint."),
    Param("device", "cpu", "torch device of the local backend, e.g. cpu or cuda:0."),
    Param("cpu_threads", 0, "torch CPU threads of the local backend (0: torch's default). On a CPU-only machine "
                            "leave a core to the ROS callbacks.", bounds=(0, 256)),
    Param("model_nice", 0, "Niceness added to the local backend's model process, so that on a CPU shared with the "
                           "adapter, mux and controllers the model yields to them (bench/jitter_bench.py; the "
                           "shipped params files set 10); 0: same priority.",
          bounds=(0, 19)),
    Param("dtype", "", "torch dtype of the local backend; empty: bfloat16 on CUDA, float32 otherwise.",
          choices=("", "float32", "bfloat16", "float16")),
    Param("server_url", "ws://127.0.0.1:8000", "WebSocket URL of the remote backend."),
    Param("server_token", "", "Bearer token sent to the remote server (the official server ignores it)."),
    Param("call_timeout_s", 120.0, "Longest wait for one backend call's reply (remote: once connected; a first GPU "
                                   "call can take minutes).", bounds=(0.1, 3600.0)),
    Param("connect_timeout_s", 10.0, "Remote backend: longest connection attempt (TCP, WebSocket upgrade, the "
                                     "server's handshake). A failed attempt fails the query at once (ERROR, cause "
                                     "named); attempts back off 0.5, 1, 2, 4 s.", bounds=(0.1, 600.0)),
    Param("prompt", "", "Initial instruction; change it at run time on ~/prompt.", read_only=False),
    Param("execute_steps", 24, "Steps of a chunk executed before the next chunk is due; the next query starts "
                               "that many steps after the previous t_obs minus the measured latency. 24 = the "
                               "official execute-then-requery cadence.", bounds=(1, 24)),
    Param("solver", "unipc", "Flow sampler of the local backend.", choices=("unipc", "euler")),
    Param("num_inference_steps", 16, "Denoising steps (16 official; 1 or 4 for Flash).", bounds=(1, 100)),
    Param("cache_schedule", "official", "DiT step caching: official 8 of 16, all, dynamic, or stepsN = the "
                                        "official NUM_DIT_STEPS=N mask of 16 steps (steps8 = official).",
          choices=("official", "all", "dynamic", "steps5", "steps6", "steps7", "steps8")),
    Param("cfg_scale", 5.0, "Classifier-free guidance on video (1.0 disables the unconditional branch).",
          bounds=(1.0, 20.0)),
    Param("seed", 1140, "Seed of each call's initial noise (official 1140); -1 for fresh noise.", bounds=(-1, 2**31 - 1)),
    Param("frame_mode", "auto", "Frame history per continuation query: training = 9 frames at the training "
                                "spacing; official = the official server's 4 frames at steps -23/-16/-8/0; auto = "
                                "local backend training, remote backend as the server's handshake says (key "
                                "frame_mode; absent, as from the official server: official).",
          choices=("auto", "training", "official")),
    Param("camera_topics", [""], "Topic overrides 'camera_key=topic' (default topics come from the embodiment YAML)."),
    Param("camera_reliability", "best_effort", "QoS reliability of camera subscriptions.",
          choices=("best_effort", "reliable")),
    Param("camera_timeout_s", 0.5, "A camera whose newest frame is older than this blocks new chunks.",
          bounds=(0.01, 60.0)),
    Param("frame_tolerance_s", 0.15, "Largest distance between a wanted frame time and the frame used.",
          bounds=(0.001, 10.0)),
    Param("state_tolerance_s", 0.1, "Largest distance between t_obs and the joint state used.", bounds=(0.001, 10.0)),
    Param("max_future_stamp_s", 0.2, "Frames and joint states stamped further than this ahead of the node clock "
                                     "are refused.", bounds=(0.0, 60.0)),
    Param("max_image_pixels_factor", 4.0, "A frame declaring more than this many times its camera's pixels "
                                          "(embodiment YAML resolution) is refused before decoding.",
          bounds=(1.0, 1000.0)),
    Param("max_chunk_age_s", 0.0, "A chunk older than this (from t_obs) when computed is not published; 0: its "
                                  "horizon (24 steps x dt), after which no step of it could still be executed.",
          bounds=(0.0, 3600.0)),
    Param("publish_predicted_video", True, "Publish the decoded predicted mosaic frames on ~/predicted_video."),
    Param("diagnostics_rate_hz", 1.0, "Rate of /diagnostics messages.", bounds=(0.1, 100.0)),
    Param("tick_rate_hz", 50.0, "Rate at which the node checks whether a query is due.", bounds=(1.0, 1000.0)),
) + LIMIT_PARAMS


@dataclass(frozen=True)
class PolicySettings:
    """The policy node's parameters, read once in ``on_configure``."""

    embodiment: str
    backend: str
    checkpoint: str
    tokenizer_path: str
    device: str
    cpu_threads: int
    model_nice: int
    dtype: str
    server_url: str
    server_token: str
    call_timeout_s: float
    connect_timeout_s: float
    prompt: str
    execute_steps: int
    solver: str
    num_inference_steps: int
    cache_schedule: str
    cfg_scale: float
    seed: int
    frame_mode: str
    camera_topics: tuple[str, ...]
    camera_reliability: str
    camera_timeout_s: float
    frame_tolerance_s: float
    state_tolerance_s: float
    max_future_stamp_s: float
    max_image_pixels_factor: float
    max_chunk_age_s: float
    publish_predicted_video: bool
    diagnostics_rate_hz: float
    tick_rate_hz: float

    @classmethod
    def from_node(cls, node: Node) -> PolicySettings:
        return cls._from(read(node, POLICY_NODE_PARAMS))

    @classmethod
    def from_values(cls, **overrides: Any) -> PolicySettings:
        """The defaults of :data:`POLICY_NODE_PARAMS` with ``overrides``, checked; for tools that run a
        backend without a node (``dreamzero eval-bag``)."""
        unknown = sorted(set(overrides) - {p.name for p in POLICY_NODE_PARAMS})
        if unknown:
            raise ValueError(f"unknown policy parameters {unknown}")
        return cls._from(checked(POLICY_NODE_PARAMS, {**{p.name: p.default for p in POLICY_NODE_PARAMS},
                                                      **overrides}))

    @classmethod
    def _from(cls, values: dict[str, Any]) -> PolicySettings:
        values["camera_topics"] = tuple(v for v in values["camera_topics"] if v)
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def topic_overrides(self) -> dict[str, str]:
        """``camera_topics`` as {camera key: topic}; raises ValueError on an entry without '='."""
        return parse_pairs(self.camera_topics, "=", "camera_topics entry", "camera_key=topic")


ADAPTER_NODE_PARAMS: tuple[Param, ...] = (
    Param("embodiment", "droid", "Embodiment YAML name or path; its URDF gives the joint limits."),
    Param("chunk_topic", "policy_node/action_chunk", "ActionChunk input topic."),
    Param("command_rate_hz", 100.0, "Rate of streamed commands (interpolated between action steps).",
          bounds=(1.0, 1000.0)),
    Param("output_mode", "stream", "stream: one command per tick; trajectory: the remaining chunk as one "
                                   "JointTrajectory per group on each new chunk.", choices=("stream", "trajectory")),
    Param("stream_message", "float64_multi_array", "Message of streamed joint commands.",
          choices=("float64_multi_array", "joint_trajectory")),
    Param("smoothing.enabled", True, "Savitzky-Golay smoothing of each chunk (2x upsampled) with the executed history."),
    Param("smoothing.window", 0, "Savitzky-Golay window on the upsampled chunk; 0: the measured default.",
          bounds=(0, 99)),
    Param("smoothing.polyorder", 0, "Savitzky-Golay polynomial order; 0: the measured default.", bounds=(0, 10)),
    Param("blend.steps", 3, "Action steps over which a new chunk is cross-faded in.", bounds=(0, 24)),
    Param("watchdog.periods", 2.0, "Hold once no chunk step covers now for this many action periods.",
          bounds=(0.0, 100.0)),
    Param("joint_state_timeout_s", 0.5, "Joint states older than this cannot seed the first command, and one "
                                        "further than this from a chunk's t_obs cannot check its anchor.",
          bounds=(0.01, 60.0)),
    Param("max_future_stamp_s", 0.2, "A chunk stamped further than this ahead of the node clock is refused.",
          bounds=(0.0, 60.0)),
    Param("diagnostics_rate_hz", 1.0, "Rate of diagnostics messages.", bounds=(0.1, 100.0)),
) + LIMIT_PARAMS

CONTROL_MUX_PARAMS: tuple[Param, ...] = (
    Param("embodiment", "droid", "Embodiment YAML name or path: controller groups and their command topics."),
    Param("initial_mode", "hold", "Mode after activation.", choices=("teleop", "policy", "hold")),
    Param("deadman_timeout_s", 0.5, "An input older than this is not forwarded: the group holds.", bounds=(0.01, 60.0)),
    Param("blend_time_s", 1.0, "Teleop -> policy handoff: time to blend from where each group was into the policy.",
          bounds=(0.0, 60.0), read_only=False),
    Param("auto_override", True, "A teleop command while in policy mode switches to teleop at once."),
    Param("command_rate_hz", 100.0, "Rate at which the mux forwards commands to the controllers.", bounds=(1.0, 1000.0)),
    Param("policy_reset_service", "policy_node/reset", "Trigger service called on a switch to policy (new session)."),
    Param("joint_state_timeout_s", 0.5, "Joint states older than this cannot seed the first command.",
          bounds=(0.01, 60.0)),
    Param("diagnostics_rate_hz", 1.0, "Rate of diagnostics messages.", bounds=(0.1, 100.0)),
) + LIMIT_PARAMS

SIM_DROID_PARAMS: tuple[Param, ...] = (
    Param("seed", 0, "Places the tray and the cubes; the same seed gives the same scene.", bounds=(0, 2**31 - 1)),
    Param("physics_rate_hz", 240.0, "Physics steps per simulated second (fixed step; pybullet's default 240).",
          bounds=(60.0, 2000.0)),
    Param("camera_rate_hz", 15.0, "Rate of rendered frames for all cameras (DROID 15 Hz). TinyRenderer costs "
                                  "~40-60 ms per camera: 3 cameras at 15 Hz need ~1.8 cores; use e.g. 5 Hz in CI.",
          bounds=(0.1, 60.0)),
    Param("joint_state_rate_hz", 50.0, "Rate of the physics tick, which steps the world and publishes joint_states.",
          bounds=(1.0, 1000.0)),
    Param("use_sim_clock", False, "Keep a simulated time (one tick period per tick), publish it on 'clock' and "
                                  "stamp with it; false: follow and stamp with the node clock."),
    Param("render_processes", 3, "Child processes the cameras are rendered in (cameras split over them); 0 renders "
                                 "in this process, which stalls the physics tick while rendering.", bounds=(0, 3)),
    Param("start_offset_rad", [0.0] * 7, "Where the arm starts: 7 joint offsets (rad) added to the ready pose "
                                         "(droid_world.READY_Q), clipped to the limits; zeros: the ready pose "
                                         "(dreamzero collect --random-start sets it)."),
    Param("lockstep_cameras", False, "With use_sim_clock: render the cameras every 1/camera_rate_hz of simulated "
                                     "time inside the physics tick, which waits for the frames, so they fall on the "
                                     "same simulated instants however slow the machine (the sim runs slower "
                                     "instead). Pick joint_state_rate_hz a multiple of camera_rate_hz."),
)
