"""Message types and QoS across the rosbags / rclpy boundary (reference/environment.md G7-G8).

* Type definitions for bags: the rosbags Kilted type store knows the standard interfaces; any other
  type (``dreamzero_msgs/msg/ActionChunk``, a lab's own messages) is registered from its ``.msg``
  file in the ament index (``share/<package>/msg/<Name>.msg`` under ``AMENT_PREFIX_PATH``), so the
  bag carries its definition and ``ros2 bag``, Foxglove and rosbags can read it.
* Message classes for rclpy: ``pkg/msg/Name`` -> the generated Python class, so raw CDR bytes from a
  bag are published or decoded exactly as a live subscription would (rosbags bytes -> rclpy is safe;
  rclpy ``serialize_message`` is not, G7, which is why the recorder uses raw subscriptions).
* QoS: rclpy profiles <-> the ``offered_qos_profiles`` a rosbag2 bag stores per topic. The enum
  values of rclpy and rosbags are the same numbers (reliable 1, best effort 2; transient local 1,
  volatile 2).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

RECORD_DEPTH = 1000  # queued per recorded topic while the executor is busy
REPLAY_DEPTH = 100  # reliable KEEP_LAST drops unacknowledged samples when full: room for fast replays
_ZERO = QosTime(0, 0)


class BagTypeError(LookupError):
    """A message type has no definition or no Python class here; the message names the type."""


def _split(msgtype: str) -> tuple[str, str]:
    package, kind, name = (msgtype.split("/") + ["", ""])[:3]
    if kind != "msg" or not package or not name:
        raise BagTypeError(f"{msgtype!r} is not a message type of the form package/msg/Name")
    return package, name


def find_msg_file(msgtype: str) -> Path:
    """``share/<package>/msg/<Name>.msg`` of ``msgtype`` in the ament index; raises BagTypeError if absent."""
    package, name = _split(msgtype)
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in prefixes:
        candidate = Path(prefix, "share", package, "msg", f"{name}.msg")
        if candidate.is_file():
            return candidate
    raise BagTypeError(f"no definition of {msgtype}: {package}/msg/{name}.msg is in none of AMENT_PREFIX_PATH "
                       f"{prefixes or '(unset)'}; source the workspace that builds {package}")


def typestore_for(msgtypes: list[str] | set[str]) -> Typestore:
    """The Kilted type store with every type of ``msgtypes`` it lacks registered from its ``.msg`` file
    (with the other messages of that package, which nested fields may use)."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    for msgtype in sorted(set(msgtypes)):
        if msgtype in typestore.fielddefs:
            continue
        folder = find_msg_file(msgtype).parent
        package = _split(msgtype)[0]
        definitions = {}
        for path in sorted(folder.glob("*.msg")):
            definitions.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
        typestore.register(definitions)
    return typestore


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name``; raises BagTypeError when the package is not installed."""
    package, name = _split(msgtype)
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as error:
        raise BagTypeError(f"message type {msgtype} is not installed here ({error})") from error


def qos_to_bag(profile: QoSProfile) -> Qos:
    """An rclpy profile as a rosbag2 offered QoS entry (durations are left at 'default')."""
    return Qos(history=QosHistory(int(profile.history)), depth=int(profile.depth),
               reliability=QosReliability(int(profile.reliability)), durability=QosDurability(int(profile.durability)),
               deadline=_ZERO, lifespan=_ZERO, liveliness=QosLiveliness(int(profile.liveliness)),
               liveliness_lease_duration=_ZERO, avoid_ros_namespace_conventions=False)


def _policy(value: object, enum: type, default: object) -> object:
    try:
        chosen = enum(int(value.value))  # type: ignore[attr-defined]
    except ValueError:
        return default
    return default if chosen.name in ("SYSTEM_DEFAULT", "UNKNOWN", "BEST_AVAILABLE") else chosen


def qos_from_bag(offered: list[Qos]) -> QoSProfile:
    """The profile to replay a topic with, like ``ros2 bag play``: the recorded publishers' reliability
    and durability when they agree; reliable and volatile otherwise or when nothing was recorded. The
    depth is at least :data:`REPLAY_DEPTH`."""
    reliability, durability, depth = ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE, REPLAY_DEPTH
    if offered:
        reliabilities = {_policy(q.reliability, ReliabilityPolicy, ReliabilityPolicy.RELIABLE) for q in offered}
        durabilities = {_policy(q.durability, DurabilityPolicy, DurabilityPolicy.VOLATILE) for q in offered}
        reliability = reliabilities.pop() if len(reliabilities) == 1 else ReliabilityPolicy.RELIABLE
        durability = durabilities.pop() if len(durabilities) == 1 else DurabilityPolicy.VOLATILE
        depth = max([REPLAY_DEPTH] + [int(q.depth) for q in offered])
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability,
                      liveliness=LivelinessPolicy.AUTOMATIC)


def subscription_qos(publisher_profiles: list[QoSProfile]) -> QoSProfile:
    """A recording subscription that matches every publisher: best effort if any offers best effort,
    transient local only if all offer it (so late-joining recorders still get latched messages)."""
    best_effort = any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in publisher_profiles)
    latched = bool(publisher_profiles) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                               for p in publisher_profiles)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
