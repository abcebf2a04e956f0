"""Helpers for rclpy tests: spin nodes in a background executor, collect messages, wait with timeouts.

Tests stay deterministic by waiting for a condition with a deadline, never by sleeping a fixed time.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from rclpy.node import Node
from rclpy.qos import QoSProfile

from dreamzero_policy.executor import OrderlyExecutor, spinning_in_background

MessageT = TypeVar("MessageT")


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(poll_s)


@contextmanager
def spinning(nodes: Iterable[Node], threads: int = 2) -> Iterator[OrderlyExecutor]:
    """Spin ``nodes`` on an OrderlyExecutor in a background thread for the ``with`` block."""
    executor = OrderlyExecutor(num_threads=threads)
    for node in nodes:
        executor.add_node(node)
    with spinning_in_background(executor, "test-executor"):
        yield executor


class MessageCollector(Generic[MessageT]):
    """Subscribe to a topic and keep every message received, thread-safely."""

    def __init__(self, node: Node, msg_type: type[MessageT], topic: str, qos: QoSProfile | int = 10) -> None:
        self._lock = threading.Lock()
        self._messages: list[MessageT] = []
        self.subscription = node.create_subscription(msg_type, topic, self._store, qos)

    def _store(self, message: MessageT) -> None:
        with self._lock:
            self._messages.append(message)

    @property
    def messages(self) -> list[MessageT]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, timeout_s: float) -> list[MessageT]:
        """Block until at least ``count`` messages arrived; return them all."""
        wait_until(lambda: len(self.messages) >= count, timeout_s,
                   f"{count} message(s) on {self.subscription.topic_name}")
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
