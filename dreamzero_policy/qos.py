"""QoS profiles chosen at the edge (ARCHITECTURE.md §2): cameras sensor-data by default, commands and
chunks reliable, modes latched."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

CAMERA_DEPTH = 5  # frames queued per camera; the node keeps its own stamped history
COMMAND_DEPTH = 10


def camera_qos(reliability: str) -> QoSProfile:
    """``best_effort`` (sensor data, the default for cameras) or ``reliable``."""
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=CAMERA_DEPTH, reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


def reliable_qos(depth: int = COMMAND_DEPTH) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def latched_qos() -> QoSProfile:
    """Late joiners get the last message (modes, descriptions)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
