"""The model runs in a child process: results come back intact, failures become clear BackendErrors."""
from __future__ import annotations

import os

import numpy as np
import pytest

from dreamzero_policy.backends.base import BackendError, Observation
from dreamzero_policy.backends.process import ProcessBackend
from policy.fake_backends import EchoBackend, broken_backend


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


def test_backend_errors_pass_through_and_the_process_keeps_serving() -> None:
    backend = ProcessBackend(EchoBackend, startup_timeout_s=60)
    try:
        with pytest.raises(BackendError, match="the model refused: fail"):
            backend.infer(_observation("fail"))
        assert backend.infer(_observation()).actions.shape == (24, 3)
    finally:
        backend.close()


def test_a_dead_model_process_is_reported_with_its_exit_code() -> None:
    backend = ProcessBackend(EchoBackend, startup_timeout_s=60)
    try:
        with pytest.raises(BackendError, match="died during infer .exit code 3."):
            backend.infer(_observation("crash"))
        with pytest.raises(BackendError, match="not running"):
            backend.infer(_observation())
    finally:
        backend.close()


def test_a_backend_that_fails_to_start_names_the_cause() -> None:
    with pytest.raises(BackendError, match="no such checkpoint: /nowhere"):
        ProcessBackend(broken_backend, startup_timeout_s=60)
