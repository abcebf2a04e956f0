"""policy_node: hosts the World Action Model and publishes action chunks (ARCHITECTURE.md §2-5).

Graph: subscribes the embodiment's cameras (Image or CompressedImage, topics from the YAML or
``camera_topics``) and ``joint_states``; ``~/prompt`` (std_msgs/String) changes the instruction and
starts a new session; services ``~/reset`` (std_srvs/Trigger) and ``~/enable`` (std_srvs/SetBool).
Publishes ``~/action_chunk`` (dreamzero_msgs/ActionChunk: relative flags, anchor = state at t_obs,
values in model units), ``~/predicted_video`` (sensor_msgs/Image, the decoded predicted mosaic) and
``diagnostics``. Parameters: :data:`dreamzero_policy.params.POLICY_NODE_PARAMS`.

Lifecycle: configure loads the embodiment and the backend (a model load can take minutes);
activate starts a session and lets the tick timer query; deactivate stops querying (a running call
finishes and its chunk is dropped). Inference runs on one worker thread, so executors never wait on
the model and there is never more than one call in flight.

Safe behaviour: no chunk is published when a camera is stale, the joint state is missing, NaN or
out of tolerance, or the backend fails; diagnostics name the cause. A local model process that dies
or hangs is restarted by its backend (``backends/process.py``): WARN while it recovers (the next query
starts a new session), ERROR once it gave up. A chunk older than ``max_chunk_age_s`` (by default its
horizon: none of its steps could still be executed) when computed is not published; diagnostics
report the age of the call in flight and of the last chunk, WARN past one horizon without a chunk,
ERROR past ``call_timeout_s``. Joint readings outside the URDF
range or jumping faster than the URDF velocity allows (``plausibility.JointStateGate``), and frames or
readings stamped zero or more than ``max_future_stamp_s`` ahead of the node clock, are refused,
counted and named in diagnostics; a refused reading is never a chunk's anchor. A frame declaring more
than ``max_image_pixels_factor`` times its camera's pixels is refused before decoding; each camera
and the joint states have their own callback group, so one slow camera starves nothing else. Downstream the adapter holds
position when chunks stop.
"""
from __future__ import annotations

import functools
import logging
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from dreamzero_embodiments.actions import anchor_from_state
from dreamzero_embodiments.assembly import ObservationAssembler, ObservationError
from dreamzero_embodiments.images import ImageTooLargeError
from dreamzero_embodiments.plausibility import JointStateGate
from dreamzero_embodiments.scheduling import QueryScheduler
from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.backends.base import (BackendError, BackendRecoveringError, Observation, PolicyBackend,
                                            SessionLostError, route_backend_logs, wanted_frame_mode)
from dreamzero_policy.conversions import (Chunk, chunk_to_message, image_to_rgb, joint_state_arrays, rgb_to_image,
                                          stamp_to_ns)
from dreamzero_policy.diagnostics import ERROR, OK, WARN, diagnostic_array
from dreamzero_policy.lifecycle import ManagedNode, spin_node
from dreamzero_policy.params import LIMIT_PARAMS, POLICY_NODE_PARAMS, PolicySettings, declare, read
from dreamzero_policy.qos import camera_qos, reliable_qos
from dreamzero_policy.robot_limits import LimitSettings, robot_embodiment, robot_limits

LATENCY_WINDOW = 50  # chunks kept for latency percentiles and the chunk rate
RETRY_AFTER_ERROR_S = 1.0  # pause before querying again after a failed call
PROMPT_LOG_CHARS = 200  # a prompt is logged up to this length


def make_backend(settings: PolicySettings, spec: EmbodimentSpec) -> PolicyBackend:
    """The backend named by ``settings.backend``; the local model runs in a child process
    (:mod:`dreamzero_policy.backends.process` says why)."""
    if settings.backend == "remote":
        from dreamzero_policy.backends.remote import RemoteBackend

        return RemoteBackend(spec, settings.server_url, token=settings.server_token or None,
                             call_timeout_s=settings.call_timeout_s, connect_timeout_s=settings.connect_timeout_s,
                             frame_mode=settings.frame_mode)
    from dreamzero_model import SamplerConfig
    from dreamzero_policy.backends.local import LocalBackend
    from dreamzero_policy.backends.process import ProcessBackend

    sampler = SamplerConfig(solver=settings.solver, num_steps=settings.num_inference_steps,
                            cfg_scale=settings.cfg_scale, cache_schedule=settings.cache_schedule,
                            seed=None if settings.seed < 0 else settings.seed)
    factory = functools.partial(LocalBackend, spec, settings.checkpoint, device=settings.device, dtype=settings.dtype,
                                sampler=sampler, tokenizer_path=settings.tokenizer_path,
                                decode_video=settings.publish_predicted_video, cpu_threads=settings.cpu_threads)
    return ProcessBackend(factory, call_timeout_s=settings.call_timeout_s, niceness=settings.model_nice)


class PolicyNode(ManagedNode):
    """See module docstring. ``backend_factory`` builds the backend on configure from the settings and the
    embodiment (default :func:`make_backend`); an in-process supervisor may pass another, e.g. ``dreamzero
    eval-sim`` its scripted demonstrator."""

    def __init__(self, backend_factory: Callable[[PolicySettings, EmbodimentSpec], PolicyBackend] = make_backend,
                 **kwargs) -> None:
        super().__init__("policy_node", **kwargs)
        declare(self, POLICY_NODE_PARAMS)
        self._backend_factory = backend_factory
        self.declare_parameter("autostart", False)
        self._settings: PolicySettings | None = None
        self._spec: EmbodimentSpec | None = None
        self._backend: PolicyBackend | None = None
        self._unroute_backend_logs = None
        self._assembler: ObservationAssembler | None = None
        self._state_gate: JointStateGate | None = None
        self._scheduler: QueryScheduler | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._inflight: Future | None = None
        self._chunk_pub = self._video_pub = self._diagnostics_pub = None
        self._entities: list = []
        self._lock = threading.Lock()
        self._active = False
        self._enabled = True
        self._prompt = ""
        self._session_id = ""
        self._first_of_session = True
        self._chunk_id = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._chunk_times: deque[int] = deque(maxlen=LATENCY_WINDOW)
        self._blocked = ""
        self._last_error = ""
        self._recovering = False
        self._inflight_since_ns = 0
        self._active_since_ns = 0
        self._too_old = 0  # chunks older than their horizon when done: not published
        self._last_too_old = ""
        self._last_too_old_ns = 0
        self._dropped_images = 0
        self._refused = {"joint_states": 0, "zero_stamped_frames": 0, "future_frames": 0, "oversized_frames": 0}
        self._max_pixels: dict[str, int] = {}
        self._last_refusal = ""
        self._last_refusal_ns = 0
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ---------------------------------------------------------------- lifecycle
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _setup(self) -> None:
        settings = self._settings = PolicySettings.from_node(self)
        robot = LimitSettings.from_values(read(self, LIMIT_PARAMS))
        spec = self._spec = robot_embodiment(settings.embodiment, robot)
        overrides = settings.topic_overrides()
        unknown = sorted(set(overrides) - {c.key for c in spec.cameras})
        if unknown:
            raise ValueError(f"camera_topics names unknown cameras {unknown}; {spec.name} has "
                             f"{[c.key for c in spec.cameras]}")
        self._prompt = settings.prompt
        # frame_mode auto: training until the backend says otherwise (_follow_backend_frame_mode); a session's
        # first query carries one frame in every mode, and the remote backend knows its server by then.
        self._assembler = ObservationAssembler(spec, frame_mode=wanted_frame_mode(None, settings.frame_mode),
                                               camera_timeout_s=settings.camera_timeout_s,
                                               frame_tolerance_s=settings.frame_tolerance_s,
                                               state_tolerance_s=settings.state_tolerance_s)
        self._state_gate = JointStateGate(robot_limits(spec, robot), spec.safety)
        self._scheduler = QueryScheduler(settings.execute_steps, spec.timing.dt)
        self._unroute_backend_logs = route_backend_logs(self._log_from_backend)
        self._backend = self._backend_factory(settings, spec)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-inference")
        self._chunk_pub = self.create_lifecycle_publisher(ActionChunk, "~/action_chunk", reliable_qos())
        self._video_pub = self.create_lifecycle_publisher(Image, "~/predicted_video", reliable_qos(depth=8))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "diagnostics", reliable_qos())
        # One callback group per camera and one for the joint states: a slow camera (a large frame to decode)
        # delays only itself, never the state or the other cameras.
        self._max_pixels = {c.key: round(settings.max_image_pixels_factor * c.resolution[0] * c.resolution[1])
                            for c in spec.cameras}
        for camera in spec.cameras:
            msg_type = CompressedImage if camera.type == "CompressedImage" else Image
            self._entities.append(self.create_subscription(
                msg_type, overrides.get(camera.key, camera.topic), lambda msg, key=camera.key: self._on_image(key, msg),
                camera_qos(settings.camera_reliability), callback_group=MutuallyExclusiveCallbackGroup()))
        self._entities += [
            self.create_subscription(JointState, spec.joint_states_topic, self._on_joint_state, reliable_qos(),
                                     callback_group=MutuallyExclusiveCallbackGroup()),
            self.create_subscription(String, "~/prompt", self._on_prompt, reliable_qos()),
            self.create_service(Trigger, "~/reset", self._on_reset),
            self.create_service(SetBool, "~/enable", self._on_enable),
            self.create_timer(1.0 / settings.tick_rate_hz, self._tick, callback_group=MutuallyExclusiveCallbackGroup()),
            self.create_timer(1.0 / settings.diagnostics_rate_hz, self._publish_diagnostics),
        ]
        self.get_logger().info(f"configured: embodiment {spec.name}, backend {settings.backend}")

    def _set_active(self, active: bool) -> None:
        if active:
            self._start_session()
            self._active_since_ns = self.get_clock().now().nanoseconds
        self._active = active
    def _teardown(self) -> None:
        """One cleanup path for cleanup, shutdown and a failed configure; tolerates partial state."""
        self._active = False
        self.destroy_entities(self._entities)
        self._entities = []
        for publisher in (self._chunk_pub, self._video_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
        self._chunk_pub = self._video_pub = self._diagnostics_pub = None
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
        if self._backend is not None:
            self._backend.close()
        if self._unroute_backend_logs is not None:
            self._unroute_backend_logs()
        self._worker = self._backend = self._inflight = self._unroute_backend_logs = None

    # ---------------------------------------------------------------- callbacks
    def _on_image(self, key: str, msg: Image | CompressedImage) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        problem = self._stamp_problem(stamp_ns)
        if problem:
            self._refuse("zero_stamped_frames" if stamp_ns == 0 else "future_frames", f"frame from camera {key}: {problem}")
            return
        try:
            self._assembler.push_frame(key, stamp_ns, image_to_rgb(msg, self._max_pixels[key]))
        except ImageTooLargeError as error:
            self._refuse("oversized_frames", f"frame from camera {key}: {error}")
        except ValueError as error:
            self._dropped_images += 1
            self.get_logger().warning(f"dropped image from camera {key}: {error}", throttle_duration_sec=5.0)

    def _on_joint_state(self, msg: JointState) -> None:
        """A reading is kept only if its stamp is plausible and ``JointStateGate`` accepts it (within the URDF
        range, no jump faster than the URDF velocity): a refused reading never becomes a chunk's anchor."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            problem = self._stamp_problem(stamp_ns)
            if problem:
                raise ValueError(problem)
            names, positions = joint_state_arrays(msg)
            self._state_gate.check(stamp_ns, dict(zip(names, positions.tolist())))
        except ValueError as error:  # plausibility.ImplausibleError too
            self._refuse("joint_states", f"joint state: {error}")
            return
        self._assembler.push_state(stamp_ns, names, positions)

    def _stamp_problem(self, stamp_ns: int) -> str:
        """Why a message stamp cannot be used ('' when it can): zero, or ahead of the node clock."""
        if stamp_ns == 0:
            return "zero stamp (the driver does not stamp its messages)"
        ahead_s = (stamp_ns - self.get_clock().now().nanoseconds) * 1e-9
        if ahead_s > self._settings.max_future_stamp_s:
            return (f"stamped {ahead_s:.3f} s ahead of this node's clock (max_future_stamp_s "
                    f"{self._settings.max_future_stamp_s:g} s)")
        return ""

    def _refuse(self, counter: str, what: str) -> None:
        """Count and name a refused message (log, throttled, and diagnostics)."""
        self._refused[counter] += 1
        self._last_refusal = f"refused {what}"
        self._last_refusal_ns = self.get_clock().now().nanoseconds
        self.get_logger().warning(self._last_refusal, throttle_duration_sec=2.0)

    def _on_prompt(self, msg: String) -> None:
        shown = msg.data if len(msg.data) <= PROMPT_LOG_CHARS else f"{msg.data[:PROMPT_LOG_CHARS]}... ({len(msg.data)} characters)"
        self.get_logger().info(f"new prompt: {shown!r} (new session)")
        self._prompt = msg.data
        self._start_session()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._start_session()
        response.success, response.message = True, f"new session {self._session_id}"
        return response

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data and not self._enabled:
            self._start_session()
        self._enabled = bool(request.data)
        response.success, response.message = True, "enabled" if self._enabled else "disabled: no new queries"
        return response

    def _start_session(self) -> None:
        with self._lock:
            self._session_id = uuid.uuid4().hex[:12]
            self._first_of_session = True
            self._chunk_id = 0
            if self._scheduler is not None:
                self._scheduler.reset()

    def _tick(self) -> None:
        if not (self._active and self._enabled) or (self._inflight is not None and not self._inflight.done()):
            return
        now_ns = self.get_clock().now().nanoseconds
        if not self._scheduler.due(now_ns):
            return
        self._follow_backend_frame_mode()
        try:
            assembled = self._assembler.assemble(now_ns, first_of_session=self._first_of_session)
        except ObservationError as error:
            self._blocked = str(error)
            return
        self._blocked = ""
        observation = Observation(t_obs_ns=assembled.t_obs_ns, views=assembled.views, state=assembled.state,
                                  prompt=self._prompt, session_id=self._session_id,
                                  first_of_session=self._first_of_session)
        self._inflight_since_ns = now_ns
        self._inflight = self._worker.submit(self._infer, observation)

    def _follow_backend_frame_mode(self) -> None:
        """frame_mode auto: the frames the backend asks for (remote: from the server's handshake, known once
        connected; other backends ask for nothing and keep training)."""
        wanted = wanted_frame_mode(self._backend, self._settings.frame_mode)
        if wanted != self._assembler.schedule.mode:
            self.get_logger().info(f"frame_mode {self._settings.frame_mode}: continuation queries carry the "
                                   f"frames of mode {wanted}")
            self._assembler.set_frame_mode(wanted)

    def _log_from_backend(self, level: int, message: str) -> None:
        """Backend :mod:`logging` records (``route_backend_logs``) in this node's log."""
        logger = self.get_logger()
        if level >= logging.ERROR:
            logger.error(message)
        elif level >= logging.WARNING:
            logger.warning(message)
        elif level >= logging.INFO:
            logger.info(message)
        else:
            logger.debug(message)

    # ---------------------------------------------------------------- worker thread
    def _infer(self, observation: Observation) -> None:
        """Runs on the worker thread: the only place that calls the backend."""
        try:
            if observation.first_of_session:
                self._backend.reset(observation.prompt, observation.session_id)
            prediction = self._backend.infer(observation)
        except Exception as error:  # noqa: BLE001 - thread boundary: report, never crash the node
            detail = str(error) if isinstance(error, BackendError) else traceback.format_exc()
            self._last_error = f"{type(error).__name__}: {detail}"
            self._recovering = isinstance(error, BackendRecoveringError)  # restarting by itself: WARN, not ERROR
            if isinstance(error, SessionLostError):
                self._start_session()  # the restarted model has no context: the next query starts a session
            log = self.get_logger().warning if self._recovering else self.get_logger().error
            log(f"inference failed: {self._last_error}", throttle_duration_sec=5.0)
            self._scheduler.hold_until(self.get_clock().now().nanoseconds + int(RETRY_AFTER_ERROR_S * 1e9))
            return
        now_ns = self.get_clock().now().nanoseconds
        latency_s = (now_ns - observation.t_obs_ns) * 1e-9
        max_age_s = self._max_chunk_age_s()
        with self._lock:
            if not self._active or observation.session_id != self._session_id:
                return  # deactivated or a new session started while this call ran: drop its chunk
            self._first_of_session = False
            too_old = latency_s > max_age_s
            if not too_old:
                self._chunk_id += 1
            chunk_id = self._chunk_id
        if too_old:  # every step is in the past: the robot could not execute any of it
            self._too_old += 1
            self._last_too_old_ns = now_ns
            self._last_too_old = (f"a chunk was {latency_s:.2f} s old when computed, older than max_chunk_age_s "
                                  f"{max_age_s:.2f} s: not published")
            self.get_logger().warning(self._last_too_old, throttle_duration_sec=5.0)
            self._scheduler.record(observation.t_obs_ns, latency_s)
            self._last_error = ""
            return
        self._publish(observation, prediction, chunk_id)

    def _publish(self, observation: Observation, prediction, chunk_id: int) -> None:
        spec = self._spec
        relative = np.asarray(prediction.relative, dtype=bool)
        anchor = anchor_from_state(observation.state, relative, spec)
        now_ns = self.get_clock().now().nanoseconds
        latency = (now_ns - observation.t_obs_ns) * 1e-9
        self._chunk_pub.publish(chunk_to_message(Chunk(
            t_obs_ns=observation.t_obs_ns, embodiment=spec.name, session_id=observation.session_id, chunk_id=chunk_id,
            names=spec.action_names, relative=relative, anchor=anchor, values=prediction.actions, dt=spec.timing.dt,
            latency=latency)))
        if prediction.frames is not None and self._settings.publish_predicted_video:
            step_ns = round(spec.timing.frame_stride * spec.timing.dt * 1e9)
            for index, frame in enumerate(prediction.frames):
                self._video_pub.publish(rgb_to_image(frame, observation.t_obs_ns + (index + 1) * step_ns, spec.name))
        self._scheduler.record(observation.t_obs_ns, latency)
        self._latencies.append(latency)
        self._chunk_times.append(now_ns)
        self._last_error = ""

    # ---------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        latencies = np.array(self._latencies) if self._latencies else np.zeros(1)
        span_s = (self._chunk_times[-1] - self._chunk_times[0]) * 1e-9 if len(self._chunk_times) > 1 else 0.0
        values: dict[str, object] = {
            "active": self._active, "enabled": self._enabled, "backend": self._settings.backend,
            "session_id": self._session_id, "chunks_published": self._chunk_id,
            "chunk_rate_hz": (len(self._chunk_times) - 1) / span_s if span_s > 0 else 0.0,
            "latency_p50_s": float(np.percentile(latencies, 50)), "latency_p95_s": float(np.percentile(latencies, 95)),
            "dropped_images": self._dropped_images, "blocked": self._blocked or "no", "last_error": self._last_error or "none",
            **{f"refused_{name}": count for name, count in self._refused.items()},
            "model_process_restarts": getattr(self._backend, "restarts", 0),
            "call_in_flight_s": self._call_age_s(now_ns), "last_chunk_age_s": self._chunk_age_s(now_ns),
            "chunks_too_old": self._too_old,
            "last_refusal": self._last_refusal or "none",
        }
        for key, age in self._assembler.camera_ages_s(now_ns).items():
            values[f"camera_age_s.{key}"] = age
        connection = getattr(self._backend, "connection_status", None)  # remote backend: its server connection
        if connection is not None:
            values.update(connection.diagnostic_values())
        blocked = self._blocked
        if blocked and self._last_refusal_ns > (self._chunk_times[-1] if self._chunk_times else 0):
            blocked += f"; last {self._last_refusal}"  # e.g. why no joint state is near t_obs
        if self._last_error:
            level, message = (WARN if self._recovering else ERROR), f"backend error: {self._last_error}"
        elif blocked:
            level, message = WARN, f"no chunk: {blocked}"
        else:
            level, message = self._progress(now_ns)
        self._diagnostics_pub.publish(diagnostic_array(now_ns, f"{self.get_name()}: policy", self._spec.name, level,
                                                       message, values))


    def _max_chunk_age_s(self) -> float:
        """``max_chunk_age_s``, or when 0 the chunk's horizon (after it no step can still be executed)."""
        return self._settings.max_chunk_age_s or self._spec.timing.horizon * self._spec.timing.dt

    def _call_age_s(self, now_ns: int) -> float:
        """Seconds the call in flight has run (0 when none)."""
        running = self._inflight is not None and not self._inflight.done()
        return (now_ns - self._inflight_since_ns) * 1e-9 if running else 0.0

    def _chunk_age_s(self, now_ns: int) -> float:
        """Seconds since the last chunk was published (since activation before the first; 0 inactive)."""
        if not (self._active and self._enabled):
            return 0.0
        since_ns = max(self._chunk_times[-1] if self._chunk_times else 0, self._active_since_ns)
        return (now_ns - since_ns) * 1e-9

    def _progress(self, now_ns: int) -> tuple[int, str]:
        """OK while fresh chunks come; WARN once none is newer than ``max_chunk_age_s`` (by default one horizon:
        the robot holds) or one was too old to publish; ERROR when none came for ``call_timeout_s``."""
        if not (self._active and self._enabled):
            return OK, "inactive" if not self._active else "disabled"
        max_age_s = self._max_chunk_age_s()
        age_s, call_s = self._chunk_age_s(now_ns), self._call_age_s(now_ns)
        what = f"no chunk for {age_s:.1f} s (call in flight for {call_s:.1f} s)"
        if age_s > self._settings.call_timeout_s:
            return ERROR, f"{what}, longer than call_timeout_s {self._settings.call_timeout_s:g} s"
        if self._last_too_old_ns > (self._chunk_times[-1] if self._chunk_times else 0):
            return WARN, self._last_too_old
        if age_s > max_age_s:
            return WARN, f"{what}, longer than max_chunk_age_s {max_age_s:.2f} s: the robot holds"
        return OK, "publishing chunks"


def main(args: list[str] | None = None) -> None:
    """Console script ``policy_node``."""
    spin_node(PolicyNode, args)



__all__ = ["PolicyNode", "main", "make_backend"]
