"""Backends for testing the process wrapper: module-level, so a spawned child can import them."""
from __future__ import annotations

import os
import time

import numpy as np

from dreamzero_policy.backends.base import BackendError, BackendPrediction, Observation


class EchoBackend:
    """Returns the state repeated over the horizon; ``crash`` kills the process, ``fail`` raises,
    ``sleep:<s>`` takes s seconds."""

    def __init__(self, horizon: int = 24) -> None:
        self.horizon = horizon
        self.prompt = ""

    def reset(self, prompt: str, session_id: str) -> None:
        self.prompt = prompt

    def infer(self, observation: Observation) -> BackendPrediction:
        if observation.prompt == "crash":
            os._exit(3)
        if observation.prompt == "fail":
            raise BackendError("the model refused: fail")
        if observation.prompt.startswith("sleep:"):
            time.sleep(float(observation.prompt.removeprefix("sleep:")))
        actions = np.tile(observation.state, (self.horizon, 1))
        return BackendPrediction(actions=actions, relative=np.zeros(actions.shape[1], dtype=bool),
                                 seconds={"pid": float(os.getpid()), "nice": float(os.nice(0))})

    def close(self) -> None:
        pass


def broken_backend() -> EchoBackend:
    raise RuntimeError("no such checkpoint: /nowhere")
