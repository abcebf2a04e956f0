"""``dreamzero replay BAG``: a rosbag2 bag (MCAP or sqlite3) back onto topics, like ``ros2 bag play``.

Messages are published as their recorded CDR bytes (``publish(bytes)``, environment.md G8) at their
recorded receive times, scaled by ``rate`` (ros2-anchors §6.1), once every topic has a subscriber
(waiting up to ``wait_for_subscribers_s``) and ``delay_s`` more (time for both ends to match). With ``clock_hz`` > 0 the bag time goes out on ``/clock`` at that rate and
just before every message (ros2 bag play's ``--clock`` plus ``--clock-topics-all``), so nodes with
``use_sim_time`` see time follow the bag and never see a message from their future; a ``/clock``
recorded in the bag is then not replayed. On ``loop`` the bag starts again and the clock jumps back,
as with ros2 bag play. At the end, ``play`` waits (up to ``ACK_TIMEOUT_S``) until reliable
subscribers have acknowledged every message, so a player that exits at once does not take the
last messages with it (ros2 bag play's ``--wait-for-all-acked``). Each topic is published with the QoS its recorded publishers offered
(``bag_types.qos_from_bag``): a best-effort camera stays best effort. Header stamps inside the
messages are the recorded ones.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.node import Node
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock

from dreamzero_policy.bags.bag_types import message_class, qos_from_bag
from dreamzero_policy.bags.record import absolute_topic
from dreamzero_policy.conversions import ns_to_stamp
from dreamzero_policy.params import parse_pairs
from dreamzero_policy.qos import reliable_qos

CLOCK_TOPIC = "/clock"
ACK_TIMEOUT_S = 30.0  # the longest ``play`` waits for reliable subscribers to acknowledge the last messages


@dataclass(frozen=True)
class ReplayOptions:
    """What ``dreamzero replay`` takes: see the module docstring. ``topics`` empty: every topic.
    ``remap``: recorded topic -> published topic."""

    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    delay_s: float = 0.0
    wait_for_subscribers_s: float = 0.0
    clock_hz: float = 0.0
    topics: tuple[str, ...] = ()
    remap: dict[str, str] = field(default_factory=dict)


def parse_remaps(entries: list[str]) -> dict[str, str]:
    """``['/a:=/b', ...]`` -> {'/a': '/b'} (absolute names); raises ValueError naming a malformed entry."""
    pairs = parse_pairs(entries, ":=", "remap", "/recorded/topic:=/new/topic")
    return {absolute_topic(source): absolute_topic(target) for source, target in pairs.items()}


class BagPlayer:
    """Publishes a bag with its timing (see module docstring); ``play`` blocks until done or ``stop``."""

    def __init__(self, path: Path, options: ReplayOptions, node: Node) -> None:
        if options.rate <= 0:
            raise ValueError(f"rate must be > 0, got {options.rate}")
        self.options = options
        self.node = node
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._reader = Reader(path)
        self._reader.open()
        try:
            self._connections = self._select(options)
            self._start_ns = self._reader.start_time + round(options.start_offset_s * 1e9)
            if not self._reader.start_time <= self._start_ns <= self._reader.end_time:
                raise ValueError(f"start offset {options.start_offset_s} s is outside the bag, which lasts "
                                 f"{(self._reader.end_time - self._reader.start_time) * 1e-9:.3f} s")
            self._publishers = {}
            for connection in self._connections:
                if connection.topic not in self._publishers:
                    self._publishers[connection.topic] = node.create_publisher(
                        message_class(connection.msgtype), options.remap.get(connection.topic, connection.topic),
                        qos_from_bag(list(connection.ext.offered_qos_profiles)))
            self._clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, reliable_qos(depth=1)) \
                if options.clock_hz > 0 else None
        except Exception:
            self._reader.close()
            raise

    def _select(self, options: ReplayOptions) -> list:
        recorded = sorted({c.topic for c in self._reader.connections})
        wanted = {absolute_topic(t) for t in options.topics} or set(recorded)
        if options.clock_hz > 0:
            wanted.discard(CLOCK_TOPIC)
        unknown = sorted((wanted | set(options.remap)) - set(recorded))
        if unknown:
            raise ValueError(f"topics {unknown} are not in the bag; it has {recorded}")
        return [c for c in self._reader.connections if c.topic in wanted]

    def stop(self) -> None:
        self._stop.set()

    def _publish_clock(self, bag_ns: int) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=ns_to_stamp(bag_ns)))

    def _wait_until(self, wall_ns: int, wall0_ns: int) -> None:
        """Sleep until ``wall_ns``, publishing the bag time on /clock every clock period meanwhile."""
        period_ns = round(1e9 / self.options.clock_hz) if self._clock_pub is not None else 50_000_000
        while not self._stop.is_set():
            now = time.monotonic_ns()
            if now >= wall_ns:
                return
            self._publish_clock(self._start_ns + round((now - wall0_ns) * self.options.rate))
            time.sleep(min(wall_ns - now, period_ns) * 1e-9)

    def _wait_for_subscribers(self) -> None:
        """Up to ``wait_for_subscribers_s``: until every replayed topic has a subscriber (else a warning)."""
        deadline = time.monotonic() + self.options.wait_for_subscribers_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(p.get_subscription_count() > 0 for p in self._publishers.values()):
                return
            time.sleep(0.05)
        lonely = sorted(p.topic_name for p in self._publishers.values() if p.get_subscription_count() == 0)
        if self.options.wait_for_subscribers_s > 0 and lonely:
            self.node.get_logger().warning(f"starting without subscribers on {lonely}")

    def play(self) -> int:
        """Publish the bag (again and again with ``loop``); returns the number of messages published."""
        published = 0
        self._wait_for_subscribers()
        if self.options.delay_s > 0:
            self._stop.wait(self.options.delay_s)
        while not self._stop.is_set():
            wall0 = time.monotonic_ns()
            for connection, stamp_ns, raw in self._reader.messages(self._connections, start=self._start_ns):
                self._wait_until(wall0 + round((stamp_ns - self._start_ns) / self.options.rate), wall0)
                if self._stop.is_set():
                    break
                self._publish_clock(stamp_ns)
                self._publishers[connection.topic].publish(raw)
                self.counts[connection.topic] += 1
                published += 1
            if not self.options.loop:
                break
        if not self._stop.is_set():
            self._wait_for_acknowledgements()
        return published

    def _wait_for_acknowledgements(self) -> None:
        """Until reliable subscribers acknowledged everything published, or ACK_TIMEOUT_S (then a warning)."""
        deadline = time.monotonic() + ACK_TIMEOUT_S
        publishers = list(self._publishers.values()) + ([self._clock_pub] if self._clock_pub is not None else [])
        unacknowledged = [p for p in publishers
                          if not p.wait_for_all_acked(Duration(seconds=max(deadline - time.monotonic(), 0.0)))]
        if unacknowledged:
            self.node.get_logger().warning(f"not every message was acknowledged within {ACK_TIMEOUT_S:g} s on "
                                           f"{sorted(p.topic_name for p in unacknowledged)}")

    def close(self) -> None:
        for publisher in self._publishers.values():
            self.node.destroy_publisher(publisher)
        if self._clock_pub is not None:
            self.node.destroy_publisher(self._clock_pub)
        self._reader.close()
