"""Can the first frame tell the red cube from the blue one? Linear probes on a run's cached encodings (the
sim_touch model card, "why the prompt goes unread").

    python scripts/sim_touch/vision_probe.py [RUN] [DATASET]
    (defaults: runs/sim_touch/run_standard, runs/sim_touch/ds)

For every training episode whose first clip (start step 0) is in ``RUN/encodings`` (``dreamzero train
--cache-encodings``): the first latent frame of the VAE (channels x 8 x 16) and the CLIP tokens of the first
frame, against the cubes' table positions in that scene (``DroidWorld(seed)``; episode i of the dataset is
training seed i, as ``reproduce.sh`` collects them). Ridge regression, 5-fold cross-validation, the
regularisation picked by the folds' error: R^2 and RMSE of each cube's (x, y), and the accuracy of two
colour-bound questions (is the red cube left of the blue one? nearer the robot?) against always guessing the
more frequent answer. A probe that reads the red cube's position but not "which cube is red where" would say the
colour is lost before the DiT.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from dreamzero_embodiments.sim.droid_world import DroidWorld

FOLDS = 5
ALPHAS = np.logspace(-2, 4, 13)


def first_clip(encodings: Path, episode: int) -> dict[str, np.ndarray] | None:
    clips = sorted((encodings / f"e{episode}").glob("a0_k*.safetensors"))
    return load_file(clips[0]) if clips else None


def ridge_cv(features: np.ndarray, targets: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions of standardised ridge regression at the alpha with the least squared error."""
    best_error, best = np.inf, None
    for alpha in ALPHAS:
        predicted = np.zeros_like(targets)
        for fold in range(FOLDS):
            train, test = folds != fold, folds == fold
            mean, scale = features[train].mean(0), features[train].std(0) + 1e-8
            x, offset = (features[train] - mean) / scale, targets[train].mean(0)
            # the dual form: fewer samples than features
            weights = x.T @ np.linalg.solve(x @ x.T + alpha * np.eye(len(x)), targets[train] - offset)
            predicted[test] = (features[test] - mean) / scale @ weights + offset
        error = ((predicted - targets) ** 2).sum()
        if error < best_error:
            best_error, best = error, predicted
    return best


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sim_touch/run_standard")
    dataset = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/sim_touch/ds")
    episodes = [json.loads(line)["episode_index"] for line in (dataset / "meta/episodes.jsonl").read_text().splitlines()]
    latents, tokens, red, blue = [], [], [], []
    for episode in episodes:
        clip = first_clip(run / "encodings", episode)
        if clip is None:
            continue
        latents.append(clip["latents"][:, 0].ravel())
        tokens.append(clip["image"].ravel())
        world = DroidWorld(seed=episode)
        try:
            red.append(world.object_pose("red_cube")[:2])
            blue.append(world.object_pose("blue_cube")[:2])
        finally:
            world.close()
    red, blue = np.array(red), np.array(blue)
    folds = np.random.default_rng(0).permutation(len(red)) % FOLDS
    print(f"{len(red)} scenes with a cached first clip in {run / 'encodings'}")
    questions = {"red left of blue": red[:, 1] > blue[:, 1], "red nearer than blue": red[:, 0] < blue[:, 0]}
    for name, features in (("VAE latent, first frame", np.array(latents)), ("CLIP tokens", np.array(tokens))):
        for cube, positions in (("red", red), ("blue", blue)):
            predicted = ridge_cv(features, positions, folds)
            r2 = 1 - ((predicted - positions) ** 2).sum(0) / ((positions - positions.mean(0)) ** 2).sum(0)
            rmse = 100 * np.sqrt(((predicted - positions) ** 2).mean(0))
            print(f"{name}: {cube} cube x, y: R^2 {r2[0]:.2f}, {r2[1]:.2f}; RMSE {rmse[0]:.1f}, {rmse[1]:.1f} cm")
        for question, answer in questions.items():
            predicted = ridge_cv(features, np.where(answer, 1.0, -1.0)[:, None], folds)[:, 0] > 0
            print(f"{name}: {question}: accuracy {(predicted == answer).mean():.2f} "
                  f"(chance {max(answer.mean(), 1 - answer.mean()):.2f})")


if __name__ == "__main__":
    main()
