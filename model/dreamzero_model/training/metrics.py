"""Progress of a run: ``metrics.jsonl``, the loss-curve PNG and the run summary (rank 0 only).

``metrics.jsonl`` has one JSON object per line: training lines ``{"step", "loss", "video_loss",
"action_loss", "lr", "grad_norm", "samples_per_s", "elapsed_s"}`` and validation lines ``{"step",
"val_loss", "val_video_loss", "val_action_loss"}`` (``step`` counts optimizer steps from 0, the loss
is the global batch's). A resumed run first drops the lines of steps it will repeat, so the file
always reads as one uninterrupted run. ``loss.png`` plots both losses against the step
(matplotlib, Agg backend). Imports the standard library (matplotlib when plotting).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


class MetricsLog:
    """Appends metric lines to ``OUTPUT/metrics.jsonl``; a no-op object on ranks other than 0."""

    def __init__(self, output: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.path = output / METRICS_FILE
        self.enabled = enabled
        if enabled and resume_step is not None:
            self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        """Keep only lines of steps before ``step`` (a killed run may have logged past its checkpoint)."""
        if not self.path.is_file():
            return
        kept = [line for line in self.read() if line["step"] < step]
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(line) + "\n" for line in kept))
        os.replace(temporary, self.path)

    def write(self, line: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(text) for text in self.path.read_text().splitlines() if text.strip()]

    def plot(self) -> Path | None:
        """Redraw ``loss.png`` from the file; returns its path (None when disabled or empty)."""
        if not self.enabled:
            return None
        lines = self.read()
        train = [(m["step"], m["loss"]) for m in lines if "loss" in m]
        validation = [(m["step"], m["val_loss"]) for m in lines if "val_loss" in m]
        if not train:
            return None
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        figure, axis = pyplot.subplots(figsize=(7, 4), dpi=100)
        axis.plot(*zip(*train), label="train loss", linewidth=1)
        if validation:
            axis.plot(*zip(*validation), "o-", label="validation loss (held-out episodes)")
        axis.set_xlabel("step")
        axis.set_ylabel("flow-matching loss (video + action)")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
        figure.tight_layout()
        path = self.path.parent / PLOT_FILE
        temporary = path.with_name(".loss.tmp.png")
        figure.savefig(temporary)
        pyplot.close(figure)
        os.replace(temporary, path)
        return path
