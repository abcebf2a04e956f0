"""Helpers for rclpy tests: spin nodes in a background executor, collect messages, wait for conditions.

Tests stay deterministic by waiting for a condition (:mod:`waiting`), never by sleeping a fixed time.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from rclpy.node import Node
from rclpy.qos import QoSProfile

from dreamzero_policy.executor import OrderlyExecutor, spinning_in_background
from waiting import PATIENCE_S, wait_until

__all__ = ["PATIENCE_S", "MessageCollector", "message_fields", "spinning", "wait_until"]

MessageT = TypeVar("MessageT")


@contextmanager
def spinning(nodes: Iterable[Node], threads: int = 2) -> Iterator[OrderlyExecutor]:
    """Spin ``nodes`` on an OrderlyExecutor in a background thread for the ``with`` block."""
    executor = OrderlyExecutor(num_threads=threads)
    for node in nodes:
        executor.add_node(node)
    with spinning_in_background(executor, "test-executor"):
        yield executor


class MessageCollector(Generic[MessageT]):
    """Subscribe to a topic and keep every message received, and when (``node``'s clock), thread-safely."""

    def __init__(self, node: Node, msg_type: type[MessageT], topic: str, qos: QoSProfile | int = 10) -> None:
        self._lock = threading.Lock()
        self._clock = node.get_clock()
        self._messages: list[MessageT] = []
        self._arrivals_ns: list[int] = []
        self.subscription = node.create_subscription(msg_type, topic, self._store, qos)

    def _store(self, message: MessageT) -> None:
        with self._lock:
            self._messages.append(message)
            self._arrivals_ns.append(self._clock.now().nanoseconds)

    @property
    def messages(self) -> list[MessageT]:
        with self._lock:
            return list(self._messages)

    @property
    def arrivals_ns(self) -> list[int]:
        """When each message of :attr:`messages` was received (ns, the node's clock)."""
        with self._lock:
            return list(self._arrivals_ns)

    def wait_for(self, count: int, timeout_s: float = PATIENCE_S) -> list[MessageT]:
        """Block until at least ``count`` messages arrived; return them all."""
        wait_until(lambda: len(self.messages) >= count, f"{count} message(s) on {self.subscription.topic_name}",
                   timeout_s)
        return self.messages


def message_fields(message: Any) -> dict[str, Any]:
    """A message as a plain dict of its fields (arrays as lists), for whole-message comparison."""
    result = {}
    for field in message.get_fields_and_field_types():
        value = getattr(message, field)
        if hasattr(value, "get_fields_and_field_types"):
            value = message_fields(value)
        elif not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
            value = list(value)
        result[field] = value
    return result
