"""The report folder of ``dreamzero eval-bag``: numbers in ``report.json`` and ``report.md``, plots as PNG.

* ``report.md`` / ``report.json``: per action dimension the count, MAE, RMSE and max of
  |predicted - recorded| against the joint states and (when recorded) the commands, ROS units
  (rad, m, ...); the MAE per horizon step; backend latency percentiles; per camera the offset of
  the frames used from the times they were wanted for (``frame_offsets_ms``: max, p95, ...; a wanted
  time older than the camera's history counts from its oldest frame, the left-pad); query attempts
  that could not be assembled, by cause.
* ``errors_per_step.png``: MAE over the horizon (how error grows with the prediction's reach).
* ``trajectories.png``: per dimension the recorded joint state and every predicted chunk over it.
* ``latency_hist.png``: backend wall seconds per chunk.
* ``predicted_video.mp4`` is written during the pass (``evaluation``); listed here when present.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402

from dreamzero_embodiments.evaluation import ErrorStats, error_stats  # noqa: E402
from dreamzero_embodiments.spec import EmbodimentSpec  # noqa: E402
from dreamzero_policy.bags.evaluation import EvalResult  # noqa: E402

VIDEO_NAME = "predicted_video.mp4"


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p95": None, "mean": None, "max": None}
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "mean": float(values.mean()), "max": float(values.max())}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _markdown(summary: dict[str, Any]) -> str:
    commands = {row["name"]: row for row in summary["errors_vs_commands"] or []}
    lines = [f"# eval-bag: {summary['bag']}", "",
             f"Embodiment {summary['embodiment']}, backend {summary['backend']}, prompt {summary['prompt']!r}. "
             f"{summary['chunks']} chunks from {summary['messages']} messages; backend latency p50 "
             f"{_cell(summary['latency_s']['p50'])} s, p95 {_cell(summary['latency_s']['p95'])} s.", "",
             "Absolute error of the predicted targets (ROS units) against the recorded joint states and commands at "
             "each step's time:", "",
             "| dimension | n | MAE | RMSE | max | MAE vs commands |", "|---|---|---|---|---|---|"]
    for row in summary["errors_vs_joint_states"]:
        vs_command = commands.get(row["name"], {}).get("mae")
        lines.append(f"| {row['name']} | {row['count']} | {_cell(row['mae'])} | {_cell(row['rmse'])} | "
                     f"{_cell(row['max'])} | {_cell(vs_command)} |")
    lines += ["", "Offset of the frames used from the times they were wanted for, ms (a wanted time older than the "
              "camera's history counts from its oldest frame, the left-pad):", "",
              "| camera | max | p95 |", "|---|---|---|"]
    lines += [f"| {key} | {_cell(row['max'])} | {_cell(row['p95'])} |"
              for key, row in summary["frame_offsets_ms"].items()]
    if summary["blocked"]:
        lines += ["", "Query attempts that could not be assembled (retried at the next frame):", ""]
        lines += [f"- {cause}: {count} (e.g. {summary['blocked_example'][cause]})"
                  for cause, count in summary["blocked"].items()]
    lines += ["", "Files: " + ", ".join(summary["files"]), ""]
    return "\n".join(lines)


def _plot_per_step(stats: ErrorStats, commands: ErrorStats | None, dt_s: float, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 4))
    steps = np.arange(len(stats.mae_per_step))
    axis.plot(steps * dt_s, stats.mae_per_step, marker="o", label="vs joint states")
    if commands is not None:
        axis.plot(steps * dt_s, commands.mae_per_step, marker="x", label="vs commands")
    axis.set_xlabel("time after t_obs (s)")
    axis.set_ylabel("MAE over dimensions (ROS units)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _plot_trajectories(result: EvalResult, spec: EmbodimentSpec, path: Path) -> None:
    names = spec.action_names
    origin = int(result.t_obs_ns[0]) if len(result.t_obs_ns) else 0
    figure, axes = plt.subplots(len(names), 1, figsize=(9, 1.7 * len(names)), sharex=True, squeeze=False)
    step_s = np.arange(spec.timing.horizon) * spec.timing.dt
    for d, (axis, name) in enumerate(zip(axes[:, 0], names)):
        stamps, values = result.state_series[name]
        if len(stamps):
            axis.plot((stamps - origin) * 1e-9, values, color="black", linewidth=1, label="recorded")
        for n, t_obs in enumerate(result.t_obs_ns):
            axis.plot((t_obs - origin) * 1e-9 + step_s, result.predicted[n, :, d], color="tab:orange",
                      linewidth=1, label="predicted" if n == 0 else None)
        axis.set_ylabel(name, fontsize=7)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time since the first t_obs (s)")
    figure.tight_layout()
    figure.savefig(path, dpi=70)
    plt.close(figure)


def _plot_latency(latencies: np.ndarray, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(latencies, bins=max(1, min(30, len(latencies))))
    axis.set_xlabel("backend seconds per chunk")
    axis.set_ylabel("chunks")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def write_report(result: EvalResult, spec: EmbodimentSpec, folder: Path, about: dict[str, Any]) -> dict[str, Any]:
    """Write the report files into ``folder`` (created); returns the summary (also ``report.json``).
    ``about``: bag, embodiment, backend, prompt and other settings to record."""
    folder.mkdir(parents=True, exist_ok=True)
    states = error_stats(result.predicted, result.state_reference, spec.action_names)
    has_commands = bool(np.isfinite(result.command_reference).any())
    commands = error_stats(result.predicted, result.command_reference, spec.action_names) if has_commands else None
    files = ["report.md", "report.json", "errors_per_step.png", "trajectories.png", "latency_hist.png"]
    if (folder / VIDEO_NAME).is_file():
        files.append(VIDEO_NAME)

    def per_step(stats: ErrorStats) -> list[float | None]:
        return [float(x) if np.isfinite(x) else None for x in stats.mae_per_step]

    summary = {
        **about,
        "chunks": int(len(result.t_obs_ns)),
        "messages": result.messages,
        "topics": {"cameras": result.topics.cameras, "joint_states": result.topics.joint_states,
                   "commands": result.topics.commands},
        "latency_s": _percentiles(result.latencies_s),
        "frame_offsets_ms": {key: _percentiles(offsets * 1e-6) for key, offsets in result.frame_offsets_ns.items()},
        "errors_vs_joint_states": states.as_rows(),
        "errors_vs_commands": commands.as_rows() if commands else None,
        "mae_per_step_vs_joint_states": per_step(states),
        "mae_per_step_vs_commands": per_step(commands) if commands else None,
        "blocked": dict(result.blocked),
        "blocked_example": result.blocked_example,
        "video_frames": result.video_frames,
        "files": files,
    }
    _plot_per_step(states, commands, spec.timing.dt, folder / "errors_per_step.png")
    _plot_trajectories(result, spec, folder / "trajectories.png")
    _plot_latency(result.latencies_s, folder / "latency_hist.png")
    (folder / "report.json").write_text(json.dumps(summary, indent=2))
    (folder / "report.md").write_text(_markdown(summary))
    return summary
