"""Write the stored observation and expected chunk of the shipped checkpoint (tests/policy/test_shipped_checkpoint.py).

    python scripts/sim_touch/golden.py [CHECKPOINT] [OUTPUT]
    (defaults: checkpoints/sim_touch, tests/data/sim_touch_golden.npz)

The observation is the first query of an evaluation episode: the three cameras of the simulated DROID world of
evaluation seed 1,000,000 with the arm at its ready pose, that pose as the state, and the task's instruction. The
expected chunk is what the local backend (the live image path, the model with the standard sampler: UniPC 16
steps, the DiT cache, CFG 5, noise seed 1140) predicts for it. Rerun only when the checkpoint is retrained; a
change of the model code or the preprocessing must fail the test instead.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dreamzero_embodiments.sim.droid_world import READY_Q, DroidWorld
from dreamzero_embodiments.sim.tasks import EVALUATION_SEED_START
from dreamzero_embodiments.spec import load_embodiment
from dreamzero_embodiments.state import pack_state
from dreamzero_policy.backends.base import Observation
from dreamzero_policy.backends.local import LocalBackend

PROMPT = "Touch the red cube."
SEED = EVALUATION_SEED_START


def observation(seed: int = SEED, prompt: str = PROMPT) -> Observation:
    """The first query of the episode of ``seed`` (module docstring)."""
    spec = load_embodiment("droid")
    world = DroidWorld(seed, spec=spec)
    try:
        world.reset(READY_Q)
        views = {key: image[None] for key, image in world.render().items()}
        names, positions = world.joint_positions()
    finally:
        world.close()
    return Observation(t_obs_ns=0, views=views, state=pack_state(names, positions, spec), prompt=prompt,
                       session_id="golden", first_of_session=True)


def main(checkpoint: Path, output: Path) -> None:
    query = observation()
    backend = LocalBackend(load_embodiment("droid"), str(checkpoint), decode_video=False)
    try:
        backend.reset(query.prompt, query.session_id)
        prediction = backend.infer(query)
    finally:
        backend.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, state=query.state, actions=prediction.actions, relative=prediction.relative,
                        prompt=np.array(query.prompt), **{f"view_{k}": v for k, v in query.views.items()})
    print(f"{output}: actions {prediction.actions.shape}, first row {np.round(prediction.actions[0], 4)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("checkpoints/sim_touch"),
         Path(sys.argv[2]) if len(sys.argv) > 2 else Path("tests/data/sim_touch_golden.npz"))
