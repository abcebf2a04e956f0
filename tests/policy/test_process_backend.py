"""The model runs in a child process: results come back intact, failures become clear BackendErrors."""
from __future__ import annotations

import os

import numpy as np
import pytest

from dreamzero_policy.backends.base import BackendError, BackendRecoveringError, Observation, SessionLostError
from dreamzero_policy.backends.process import ProcessBackend
from policy.fake_backends import EchoBackend, broken_backend
from waiting import PATIENCE_S


def _observation(prompt: str = "wave") -> Observation:
    views = {"cam": np.zeros((9, 4, 6, 3), dtype=np.uint8)}
    return Observation(t_obs_ns=1, views=views, state=np.arange(3.0), prompt=prompt, session_id="s",
                       first_of_session=False)


def test_results_come_back_from_another_process() -> None:
    backend = ProcessBackend(EchoBackend, startup_timeout_s=60)
    try:
        backend.reset("wave", "s")
        prediction = backend.infer(_observation())
        assert prediction.actions.shape == (24, 3) and np.array_equal(prediction.actions[5], [0.0, 1.0, 2.0])
        assert prediction.seconds["pid"] != os.getpid()
    finally:
        backend.close()


def test_the_model_process_runs_at_a_lower_priority_when_asked() -> None:
    """The model yields the CPU to the robot-side processes (policy node parameter model_nice)."""
    backend = ProcessBackend(EchoBackend, startup_timeout_s=PATIENCE_S, niceness=5)
    try:
        assert backend.infer(_observation()).seconds["nice"] == os.nice(0) + 5
    finally:
        backend.close()


def test_backend_errors_pass_through_and_the_process_keeps_serving() -> None:
    backend = ProcessBackend(EchoBackend, startup_timeout_s=60)
    try:
        with pytest.raises(BackendError, match="the model refused: fail"):
            backend.infer(_observation("fail"))
        assert backend.infer(_observation()).actions.shape == (24, 3)
    finally:
        backend.close()


def test_a_dead_model_process_is_reported_then_restarted_after_its_backoff_with_a_new_session() -> None:
    """Issue 12 item 7: the model process killed (here by itself) comes back without an operator."""
    backend = ProcessBackend(EchoBackend, startup_timeout_s=PATIENCE_S, restart_backoff_s=(3600.0,))
    try:
        first_pid = backend.infer(_observation()).seconds["pid"]
        with pytest.raises(BackendRecoveringError, match=r"died during infer \(exit code 3\); restarting it in 3600 s"):
            backend.infer(_observation("crash"))
        with pytest.raises(BackendRecoveringError, match="model process is down .exit code 3.; restarting it in"):
            backend.infer(_observation())  # within the backoff: fails at once, no restart yet
        backend._restart_at = 0.0  # the backoff has passed
        with pytest.raises(SessionLostError, match="has no session"):
            backend.infer(_observation())  # restarted, but the model's session (KV cache) is gone
        backend.reset("wave", "s2")
        assert backend.infer(_observation()).seconds["pid"] != first_pid
        assert backend.restarts == 1
    finally:
        backend.close()


def test_a_call_over_the_timeout_stops_the_process_and_the_first_call_after_a_start_may_warm_up() -> None:
    backend = ProcessBackend(EchoBackend, startup_timeout_s=PATIENCE_S, call_timeout_s=0.5, restart_backoff_s=(0.0,))
    try:
        backend.infer(_observation("sleep:1"))  # the first call includes warm-up: the start-up timeout applies
        with pytest.raises(BackendRecoveringError, match="did not answer infer within 0.5 s; stopped it"):
            backend.infer(_observation("sleep:30"))
        backend.reset("wave", "s2")  # restarts it: again a first call
        assert backend.restarts == 1
        with pytest.raises(BackendRecoveringError, match="did not answer infer"):
            backend.infer(_observation("sleep:30"))  # later calls: the call timeout again
    finally:
        backend.close()


def test_after_max_failures_in_the_window_it_gives_up_with_an_error() -> None:
    backend = ProcessBackend(EchoBackend, startup_timeout_s=PATIENCE_S, restart_backoff_s=(0.0,), max_failures=2)
    try:
        with pytest.raises(BackendRecoveringError):
            backend.infer(_observation("crash"))
        backend.reset("wave", "s2")
        with pytest.raises(BackendError, match="failed 2 times within 300 s; not restarting it") as caught:
            backend.infer(_observation("crash"))
        assert not isinstance(caught.value, BackendRecoveringError)
        with pytest.raises(BackendError, match="reconfigure the node"):
            backend.reset("wave", "s3")
        assert backend.restarts == 1
    finally:
        backend.close()


def test_a_backend_that_fails_to_start_names_the_cause() -> None:
    with pytest.raises(BackendError, match="no such checkpoint: /nowhere"):
        ProcessBackend(broken_backend, startup_timeout_s=60)
