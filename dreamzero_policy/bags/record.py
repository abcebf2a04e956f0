"""``dreamzero record``: topics to a rosbag2 bag (MCAP or sqlite3) without rosbag2 (ARCHITECTURE.md §7).

A node subscribes each wanted topic with a raw subscription (the exact CDR bytes: rclpy's
``serialize_message`` may pad, environment.md G7) and writes the bytes with ``rosbags``, stamped with
the receive time (the middleware's, not the callback's) on the node clock (sim time with
``use_sim_time``: nothing is written before the first ``/clock``, as ``ros2 bag record
--use-sim-time``). Types outside the standard interfaces are
registered from their ``.msg`` files, so the bag carries every definition (``bag_types``).

Topics are discovered every :data:`DISCOVERY_PERIOD_S`, so the recorder may start before the robot:
a wanted topic is subscribed once it has a publisher, with a QoS that matches all its publishers
(best effort cameras included), and the publishers' QoS is stored in the bag for replay. A topic with
more than one type, or a type not installed here, is skipped with a warning naming it. Callbacks only
queue the bytes; one writer thread writes them (``BagWriterThread``).
"""
from __future__ import annotations

import functools
import queue
import threading
import time
from collections import Counter
from pathlib import Path

from rclpy.node import Node
from rclpy.subscription import MessageInfo
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from dreamzero_policy.bags.bag_types import (BagTypeError, message_class, qos_to_bag, subscription_qos,
                                             typestore_for)

DISCOVERY_PERIOD_S = 0.5
MAX_QUEUE_WAIT_NS = 60 * 10**9  # a longer wait in the queue is taken as this long (a clock step, not a lag)
NOT_RECORDED_WITH_ALL = ("/rosout", "/parameter_events")
BAG_VERSION = 9  # rosbag2 metadata version of Jazzy/Kilted
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def absolute_topic(topic: str) -> str:
    return topic if topic.startswith("/") else f"/{topic}"


def receive_stamp_ns(now_ns: int, wall_ns: int, received_ns: int, previous_ns: int | None) -> int:
    """The bag stamp of a message the callback got at node-clock ``now_ns`` (system clock ``wall_ns``) and
    the middleware received at system time ``received_ns``: ``now_ns`` less the wait in the queue, which
    is most of a second when the Python executor lags (measured: p95 0.56 s, max 0.89 s while replaying
    in the same process), so it is trusted up to :data:`MAX_QUEUE_WAIT_NS`. No receive time (0) or
    one in the future (a clock step) counts as no wait. Stamps of one topic strictly increase over
    ``previous_ns``: the two clocks are read a moment apart, and that jitter must not reorder messages
    published back to back (a bag is read in stamp order)."""
    waited_ns = 0 if received_ns <= 0 else min(max(0, wall_ns - received_ns), MAX_QUEUE_WAIT_NS)
    stamp_ns = max(now_ns - waited_ns, 0)  # sim time starts at 0: a wall-clock wait must not make it negative
    return stamp_ns if previous_ns is None else max(stamp_ns, previous_ns + 1)


class BagWriterThread:
    """A rosbags Writer owned by one thread (sqlite3 objects may only be used by the thread that made
    them), fed through a queue so subscription callbacks only enqueue. Connections are added in order
    with the messages, so a topic's connection exists before its first message is written."""

    def __init__(self, path: Path, storage: StoragePlugin) -> None:
        self.counts: Counter[str] = Counter()
        self.error: Exception | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        opened = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path, storage, opened), daemon=True,
                                        name="bag-writer")
        self._thread.start()
        opened.wait()
        if self.error is not None:
            raise self.error

    def _run(self, path: Path, storage: StoragePlugin, opened: threading.Event) -> None:
        try:
            writer = Writer(path, version=BAG_VERSION, storage_plugin=storage)
            writer.open()
        except Exception as error:  # noqa: BLE001 - handed to the constructor's caller
            self.error = error
            opened.set()
            return
        opened.set()
        connections = {}
        try:
            while (item := self._queue.get()) is not None:
                if item[0] == "connection":
                    _, topic, msgtype, typestore, offered = item
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore,
                                                               offered_qos_profiles=offered)
                else:
                    _, topic, stamp_ns, raw = item
                    writer.write(connections[topic], stamp_ns, raw)
                    self.counts[topic] += 1
        except Exception as error:  # noqa: BLE001 - reported by close()
            self.error = error
        finally:
            writer.close()

    def add_connection(self, topic: str, msgtype: str, typestore: Typestore, offered: list) -> None:
        self._queue.put(("connection", topic, msgtype, typestore, offered))

    def write(self, topic: str, stamp_ns: int, raw: bytes) -> None:
        if not self._closed:
            self._queue.put(("message", topic, stamp_ns, raw))

    def close(self) -> None:
        """Write what is queued, finish the bag; raises the error that stopped the writer, if any."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"writing the bag failed: {self.error}") from self.error


class BagRecorder(Node):
    """Records ``topics`` (absolute or relative to ``/``; empty: every topic) into a new bag at ``path``."""

    def __init__(self, path: Path, topics: list[str], storage: str = "mcap", **kwargs) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage {storage!r} is not one of {sorted(STORAGES)}")
        if path.exists():
            raise FileExistsError(f"bag {path} already exists; choose a new output path")
        super().__init__("dreamzero_recorder", **kwargs)
        self.path = path
        self.wanted = {absolute_topic(t) for t in topics}
        self._recorded: dict[str, object] = {}
        self._skipped: set[str] = set()
        self._last_stamp_ns: dict[str, int] = {}
        self._writer = BagWriterThread(path, STORAGES[storage])
        self._discover()
        self.create_timer(DISCOVERY_PERIOD_S, self._discover)

    @property
    def counts(self) -> Counter[str]:
        """Messages written per topic."""
        return self._writer.counts

    @property
    def topics(self) -> list[str]:
        """The topics being recorded."""
        return sorted(self._recorded)

    def _wants(self, topic: str) -> bool:
        return topic in self.wanted if self.wanted else topic not in NOT_RECORDED_WITH_ALL

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self._recorded or topic in self._skipped or not self._wants(topic):
                continue
            if len(types) != 1:
                self._skip(topic, f"it has {len(types)} types {types}")
                continue
            publishers = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
            if not publishers:
                continue  # only subscribers so far: wait for a publisher and its QoS
            try:
                cls = message_class(types[0])
                typestore = typestore_for([types[0]])
            except BagTypeError as error:
                self._skip(topic, str(error))
                continue
            self._writer.add_connection(topic, types[0], typestore, [qos_to_bag(p) for p in publishers])
            self._recorded[topic] = self.create_subscription(
                cls, topic, functools.partial(self._write, topic), subscription_qos(publishers), raw=True)
            self.get_logger().info(f"recording {topic} ({types[0]})")

    def _skip(self, topic: str, why: str) -> None:
        self._skipped.add(topic)
        self.get_logger().warning(f"not recording {topic}: {why}")

    def _write(self, topic: str, raw: bytes, info: MessageInfo) -> None:
        """Stamp with the node clock at reception (``receive_stamp_ns``), so a lagging executor does not
        bunch messages up. On simulated time the wall-clock wait in the queue is no measure of simulated
        time (a held world's clock stands still while wall time passes: subtracting it stamped lockstep
        frames up to a second before they were sent, and the bag tools then refused them as stamped ahead
        of their receive time), so the callback's simulated time is the stamp. The node's callbacks are
        mutually exclusive, so a topic's stamps are in order."""
        now_ns = self.get_clock().now().nanoseconds
        if now_ns > 0:  # 0: use_sim_time and no /clock yet
            received_ns = 0 if self.get_parameter("use_sim_time").value else info["received_timestamp"]
            stamp_ns = receive_stamp_ns(now_ns, time.time_ns(), received_ns, self._last_stamp_ns.get(topic))
            self._last_stamp_ns[topic] = stamp_ns
            self._writer.write(topic, stamp_ns, raw)

    def close(self) -> None:
        """Finish the bag (writes its metadata); later messages are dropped. Raises the writer's error, if any."""
        self._writer.close()

    def destroy_node(self) -> None:
        try:
            self.close()
        finally:
            super().destroy_node()
