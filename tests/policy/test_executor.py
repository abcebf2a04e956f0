"""The orderly executors: a shutdown while a callback runs lets it finish, with no error from rclpy's guard."""
from __future__ import annotations

import gc
import threading
import time

import pytest
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from dreamzero_policy.executor import OrderlyExecutor, OrderlySingleThreadedExecutor, orderly_executor
from waiting import PATIENCE_S, wait_until


def _spin_in_thread(executor, errors: list[BaseException]) -> threading.Thread:
    def spin() -> None:
        try:
            executor.spin()
        except BaseException as error:  # noqa: BLE001 - the test asserts there is none
            errors.append(error)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread


def test_shutdown_lets_running_and_waiting_callbacks_finish_without_errors(ros_context, unique_name, capfd) -> None:
    """Two slow callbacks (an inference, a render) hold both worker threads at shutdown, and a third
    callback waits for a thread. rclpy's own shutdown destroys its guard condition first, so the
    waiting callback fails ("cannot use Destroyable"); this executor lets all three finish."""
    node = Node(f"slow_{unique_name}")
    started = [threading.Event(), threading.Event()]
    finished = [threading.Event(), threading.Event()]
    quick_calls: list[float] = []

    def slow(index: int) -> None:
        started[index].set()
        time.sleep(0.5)
        finished[index].set()

    for index in range(2):
        node.create_timer(0.02, lambda index=index: slow(index), callback_group=MutuallyExclusiveCallbackGroup())
    node.create_timer(0.02, lambda: quick_calls.append(time.monotonic()), callback_group=MutuallyExclusiveCallbackGroup())
    executor = OrderlyExecutor(num_threads=2)
    executor.add_node(node)
    errors: list[BaseException] = []
    thread = _spin_in_thread(executor, errors)
    try:
        assert all(event.wait(PATIENCE_S) for event in started), "the slow callbacks never ran"
        # the quick timer fires meanwhile and its callback waits in the pool for a free thread (or, on a
        # machine slow enough that the slow ones finished first, it already ran)
        wait_until(lambda: executor._executor._work_queue.qsize() > 0 or quick_calls, "the quick callback queued")
        assert executor.shutdown(timeout_sec=PATIENCE_S)
        assert all(event.is_set() for event in finished)  # shutdown returned after the running callbacks ended
        assert quick_calls  # the waiting callback ran too (rclpy's shutdown fails it before it runs)
        thread.join(timeout=PATIENCE_S)
        assert not thread.is_alive() and errors == []
    finally:
        node.destroy_node()
    del executor, thread
    gc.collect()  # rclpy reports a failed, unretrieved callback when the executor's tasks are collected
    assert "never retrieved" not in capfd.readouterr().err


def test_single_threaded_shutdown_waits_for_the_running_callback(ros_context, unique_name) -> None:
    """The command-path nodes' executor (one thread): shutdown from another thread while a callback runs
    returns after it ended, and spin returns without error."""
    node = Node(f"single_{unique_name}")
    started, finished = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.5)
        finished.set()

    node.create_timer(0.02, slow)
    executor = orderly_executor(threads=1)
    assert isinstance(executor, OrderlySingleThreadedExecutor)
    executor.add_node(node)
    errors: list[BaseException] = []
    thread = _spin_in_thread(executor, errors)
    try:
        assert started.wait(PATIENCE_S), "the callback never ran"
        assert executor.shutdown(timeout_sec=PATIENCE_S)
        assert finished.is_set()  # shutdown returned after the running callback ended
        thread.join(timeout=PATIENCE_S)
        assert not thread.is_alive() and errors == []
    finally:
        node.destroy_node()


@pytest.mark.parametrize("threads", [1, 2])
def test_shutdown_before_spin_and_spin_after_shutdown_return(ros_context, threads: int) -> None:
    executor = orderly_executor(threads)
    assert executor.shutdown(timeout_sec=PATIENCE_S)
    errors: list[BaseException] = []
    thread = _spin_in_thread(executor, errors)
    thread.join(timeout=PATIENCE_S)
    assert not thread.is_alive() and errors == []
