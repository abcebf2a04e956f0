"""The report folder of ``dreamzero eval-sim`` (``-o REPORT_DIR``).

* ``episodes.jsonl``: one JSON object per episode, appended when it ends: ``index``, ``seed``, ``task``
  (name), ``instruction`` (the task's), ``prompt`` (what the policy was told), ``success``,
  ``time_to_success_s`` (simulated, from the episode's start; null without success), ``min_distance_m``
  (the smallest goal distance at a judged instant, ``sim/scoring.py``: touch, gripper to cube, <= 0 in
  contact; put in tray, cube centre to tray centre, horizontal), ``reached_prompted_object`` (only with a
  prompt override: whether the prompted task's success test held; null when the override is no task's
  instruction), ``chunks`` (from the start to the end), ``sim_s`` (simulated seconds, start to end),
  ``wall_s`` (graph up to graph down, model loading included), ``video``, ``video_frames`` and
  ``final_state``: the last judged simulator state (``time_s``; ``robot_q``, 9 values, the arm's 7 joints
  in rad and the two fingers in m; ``object_poses``, tray, red cube, blue cube, each x y z in m and
  quaternion x y z w), so that success can be judged again offline (``DroidWorld(seed).show``).
* ``episode_XXXX.mp4``: the three cameras side by side and the newest predicted-video mosaic, one frame
  per camera frame, from the episode's start, playing in simulated time (``video.FrameSetVideo``).
* ``summary.json`` / ``summary.md``: overall and per task, the success rate with its 95 % Wilson interval
  (``sim/scoring.py``), the mean time to success (over the successful episodes), the mean smallest
  distance; what was evaluated (``settings``), and whether every episode asked for ran (``complete``).
* ``plot.png``: the goal distance over simulated time of every episode, and each episode's smallest one
  (green: success, red: failure).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamzero_embodiments.sim.droid_world import WorldState
from dreamzero_embodiments.sim.scoring import wilson_interval
from dreamzero_embodiments.sim.tasks import Task

EPISODES_NAME, SUMMARY_NAME, PLOT_NAME = "episodes.jsonl", "summary.json", "plot.png"
DIGITS = 6  # decimals kept of seconds and metres (µs, µm)


def video_name(index: int) -> str:
    return f"episode_{index:04d}.mp4"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), DIGITS)


def episode_record(index: int, seed: int, task: Task, prompt: str, success: bool, time_to_success_s: float | None,
                   min_distance_m: float | None, chunks: int, sim_s: float, wall_s: float, video_frames: int,
                   final_state: WorldState | None, overridden: bool,
                   reached_prompted_object: bool | None) -> dict[str, Any]:
    """One line of ``episodes.jsonl`` (module docstring); ``reached_prompted_object`` is kept only when
    ``overridden``."""
    record = {"index": index, "seed": seed, "task": task.name, "instruction": task.instruction, "prompt": prompt,
              "success": success, "time_to_success_s": _rounded(time_to_success_s),
              "min_distance_m": _rounded(min_distance_m)}
    if overridden:
        record["reached_prompted_object"] = reached_prompted_object
    record.update({"chunks": chunks, "sim_s": _rounded(sim_s), "wall_s": round(wall_s, 2), "video": video_name(index),
                   "video_frames": video_frames, "final_state": None if final_state is None else {
                       "time_s": _rounded(final_state.time_s), "robot_q": final_state.robot_q.tolist(),
                       "object_poses": final_state.object_poses.tolist()}})
    return record


def append_record(folder: Path, record: dict[str, Any]) -> None:
    with (folder / EPISODES_NAME).open("a") as lines:
        lines.write(json.dumps(record) + "\n")


def _mean(values: list[float]) -> float | None:
    return _rounded(np.mean(values)) if values else None


def _scores(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts, the success rate with its 95 % Wilson interval and the means of ``records``."""
    successes = sum(r["success"] for r in records)
    low, high = wilson_interval(successes, len(records))
    scores = {"episodes": len(records), "successes": successes, "success_rate": round(successes / len(records), 4),
              "success_rate_ci95": [round(low, 4), round(high, 4)],
              "mean_time_to_success_s": _mean([r["time_to_success_s"] for r in records if r["success"]]),
              "mean_min_distance_m": _mean([r["min_distance_m"] for r in records if r["min_distance_m"] is not None])}
    judged = [r["reached_prompted_object"] for r in records if r.get("reached_prompted_object") is not None]
    if judged:
        scores["reached_prompted_object"] = sum(judged)
    return scores


def summarise(records: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` (module docstring) of the episodes done."""
    tasks = sorted({r["task"] for r in records}, key=[r["task"] for r in records].index)
    return {"settings": settings, "complete": len(records) == settings["episodes"], **_scores(records),
            "per_task": {task: _scores([r for r in records if r["task"] == task]) for task in tasks},
            "chunks_per_episode": _mean([r["chunks"] for r in records]),
            "sim_s_per_episode": _mean([r["sim_s"] for r in records]),
            "wall_s_per_episode": round(float(np.mean([r["wall_s"] for r in records])), 2)}


def _cell(value: float | None, unit: str, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.2f} {unit}"


def _markdown(summary: dict[str, Any]) -> str:
    settings = summary["settings"]
    lines = [f"# eval-sim: {settings['checkpoint']}", "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None), ""]
    if not summary["complete"]:
        lines += [f"Incomplete: {summary['episodes']} of {settings['episodes']} episodes ran.", ""]
    lines += ["| task | episodes | successes | success rate (95 % CI) | mean time to success | mean min distance |",
              "|---|---|---|---|---|---|"]
    for name, scores in [*summary["per_task"].items(), ("all", summary)]:
        low, high = scores["success_rate_ci95"]
        lines.append(f"| {name} | {scores['episodes']} | {scores['successes']} | {scores['success_rate']:.0%} "
                     f"({low:.0%} .. {high:.0%}) | {_cell(scores['mean_time_to_success_s'], 's')} | "
                     f"{_cell(scores['mean_min_distance_m'], 'mm', 1000.0)} |")
    if "reached_prompted_object" in summary:
        lines += ["", f"Reached the prompted object: {summary['reached_prompted_object']} of {summary['episodes']}."]
    return "\n".join(lines) + "\n"


def write_summary(folder: Path, records: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` and ``summary.md`` of ``records``; returns the summary."""
    summary = summarise(records, settings)
    (folder / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "summary.md").write_text(_markdown(summary))
    return summary


def plot(path: Path, records: Sequence[dict[str, Any]], distances: Sequence[np.ndarray]) -> None:
    """``plot.png`` (module docstring); ``distances``: per record float64[N, 2], simulated s and m."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour = {True: "tab:green", False: "tab:red"}
    figure, (over_time, smallest) = plt.subplots(2, 1, figsize=(9, 7))
    for record, series in zip(records, distances):
        over_time.plot(series[:, 0], series[:, 1] * 1000.0, color=colour[record["success"]], alpha=0.7, linewidth=1)
    over_time.set_xlabel("simulated time from the episode's start (s)")
    over_time.set_ylabel("goal distance (mm)")
    over_time.set_title("goal distance per episode (green: success)")
    minima = [np.nan if r["min_distance_m"] is None else r["min_distance_m"] * 1000.0 for r in records]
    smallest.bar([r["index"] for r in records], minima, color=[colour[r["success"]] for r in records])
    smallest.set_xticks([r["index"] for r in records], [f"{r['index']}\n{r['task']}" for r in records], fontsize=7)
    smallest.set_ylabel("smallest goal distance (mm)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


__all__ = ["EPISODES_NAME", "PLOT_NAME", "SUMMARY_NAME", "append_record", "episode_record", "plot", "summarise",
           "video_name", "write_summary"]
