"""Which cube does a policy touch: the prompted one, or the one nearer the robot? (the sim_touch model card)

    python scripts/sim_touch/cube_choice.py runs/sim_touch/eval [--probe CHECKPOINT --probe-scenes N --probe-seed S]

For each eval-sim report folder under the root: of the episodes that touched a cube, how many touched the cube
nearer the robot (the smaller x of the two: the base stands at x = -0.2 m and faces +x) and how many the
other. Then, per 20 evaluation seeds from 1,000,000 on (tasks alternating red/blue as eval-sim assigns them), in
how many scenes the task's cube is the nearer one: where that share is far from half, a policy that ignores the
prompt and goes to the nearer cube scores far from half of its precision.

``--probe``: the first chunk of a checkpoint (local backend, standard sampler) at the first query of N scenes
(evaluation seeds from 1,000,000 on, or from ``--probe-seed``: 0 probes training scenes), once with each prompt:
the largest joint difference between the two chunks, and the red-minus-blue difference of the chunks' last arm
targets against the scripted demonstrator's (its plans for the two tasks at that step's instant): their length ratio
and cosine. A model that reads the instruction moves toward different cubes (ratio near 1, cosine near 1); one that
does not gives nearly the same chunk (ratio near 0, cosine at random).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dreamzero_embodiments.sim.demonstrator import plan_from_initial_scene
from dreamzero_embodiments.sim.droid_world import READY_Q, DroidWorld
from dreamzero_embodiments.sim.tasks import EVALUATION_SEED_START, TASKS, find_task
from dreamzero_embodiments.spec import load_embodiment

TOUCH = tuple(t for t in TASKS if t.kind == "touch")  # red, blue: eval-sim's task order in reproduce.sh
CUBES = tuple(t.target for t in TOUCH)


def nearer_cube(seed: int, spec) -> str:
    """The object name of the cube with the smaller x in the scene of ``seed``."""
    world = DroidWorld(seed, spec=spec)
    try:
        return min(CUBES, key=lambda cube: world.object_pose(cube)[0])
    finally:
        world.close()


def touched_cubes(record: dict) -> set[str]:
    """The cubes an episode record says were touched: the task's (success), the prompted one (prompt swap)."""
    cubes = {find_task(record["task"]).target} if record["success"] else set()
    if record.get("reached_prompted_object"):
        cubes.add(find_task(record["prompt"]).target)
    return cubes


def report_folders(root: Path, spec) -> None:
    nearer: dict[int, str] = {}
    for folder in sorted(p.parent for p in root.glob("*/episodes.jsonl")):
        records = [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines() if line.strip()]
        if any(find_task(r["task"]) not in TOUCH for r in records):
            continue  # not the touch tasks
        touched = near = far = 0
        for record in records:
            cubes = touched_cubes(record)
            if not cubes:
                continue
            side = nearer.setdefault(record["seed"], nearer_cube(record["seed"], spec))
            touched += 1
            near += side in cubes
            far += bool(cubes - {side})
        print(f"{folder.name}: {len(records)} episodes, {touched} touched a cube: the nearer {near}, the other {far}")


def report_seeds(spec, count: int = 200, group: int = 20) -> None:
    for first in range(EVALUATION_SEED_START, EVALUATION_SEED_START + count, group):
        agree = sum(nearer_cube(first + i, spec) == TOUCH[i % 2].target for i in range(group))
        print(f"seeds {first}..{first + group - 1}: the task's cube is the nearer one in {agree}/{group}")


def probe(checkpoint: str, scenes: int, first_seed: int, spec) -> None:
    from dreamzero_policy.backends.local import LocalBackend
    from dreamzero_policy.sim_episode import demonstration_limits
    from golden import observation  # scripts/sim_touch/golden.py: the first query of an evaluation episode

    backend, limits = LocalBackend(spec, checkpoint, decode_video=False), demonstration_limits("")
    last_step_s = (spec.timing.horizon - 1) * spec.timing.dt  # step k of a chunk commands t_obs + k dt
    ratios = []
    try:
        for seed in range(first_seed, first_seed + scenes):
            chunks, plans = {}, {}
            for task in TOUCH:
                query = observation(seed, task.instruction)
                backend.reset(task.instruction, query.session_id)
                chunks[task.target] = backend.infer(query).actions
                world = DroidWorld(seed, spec=spec)
                try:
                    world.reset(READY_Q)
                    plans[task.target] = plan_from_initial_scene(world, task, limits).at(last_step_s)[0]
                finally:
                    world.close()
            # the 7 arm joints come first (droid.yaml); both chunks are relative to the same state, so their
            # difference is that of the absolute targets
            first, second = (chunks[cube][:, :7] for cube in CUBES)
            model_step, demo_step = first[-1] - second[-1], plans[CUBES[0]] - plans[CUBES[1]]
            ratios.append(np.linalg.norm(model_step) / np.linalg.norm(demo_step))
            cosine = model_step @ demo_step / (np.linalg.norm(model_step) * np.linalg.norm(demo_step))
            print(f"seed {seed}: first chunk, red vs blue prompt: largest joint difference "
                  f"{np.abs(first - second).max():.4f} rad; against the demonstrator's: length ratio "
                  f"{ratios[-1]:.3f}, cosine {cosine:+.2f}")
        print(f"{checkpoint}: mean length ratio {np.mean(ratios):.3f} over {scenes} scenes")
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder of eval-sim report folders (runs/sim_touch/eval)")
    parser.add_argument("--probe", metavar="CHECKPOINT", help="also compare the first chunk under both prompts")
    parser.add_argument("--probe-scenes", type=int, default=20)
    parser.add_argument("--probe-seed", type=int, default=EVALUATION_SEED_START,
                        help="first scene of the probe (default: the first evaluation seed; 0: training scenes)")
    args = parser.parse_args()
    spec = load_embodiment("droid")
    report_folders(args.root, spec)
    report_seeds(spec)
    if args.probe:
        probe(args.probe, args.probe_scenes, args.probe_seed, spec)


if __name__ == "__main__":
    main()
