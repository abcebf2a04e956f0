"""The evaluation table of the sim_touch model card from the eval-sim report folders of reproduce.sh.

    python scripts/sim_touch/table.py runs/sim_touch/eval

Each row reads the ``episodes.jsonl`` of its folder(s) (:mod:`dreamzero_policy.eval_report`; the shipped model's
standard-sampler row: two folders of 20 seeds each); the prompt-swap row counts ``reached_prompted_object`` (the
policy reached the cube it was told to, not the task's; no time is recorded for it), the others ``success``.
Rates come with their 95 % Wilson interval. A missing folder is a row of dashes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dreamzero_embodiments.sim.scoring import wilson_interval

ROWS = (  # (label, folders, counted field, target)
    ("scripted demonstrator", ("demonstrator",), "success", "about 100 %"),
    ("random-weight tiny model (standard sampler)", ("random_tiny",), "success", "at most 5 %"),
    ("trained (sim_touch: standard training, 3,000 steps), standard sampler (UniPC 16 steps, DiT cache, CFG 5)",
     ("standard", "standard_next"), "success", "at least 80 %"),
    ("sim_touch, prompt swapped to the other cube (reached the prompted cube)",
     ("swap_red_to_blue", "swap_blue_to_red"), "reached_prompted_object", "at least 70 %"),
    ("sim_touch (standard training, 3,000 steps), 1 Euler step (CFG 1)", ("standard_euler1",), "success", "measured"),
    ("Flash training (3,000 steps), 1 Euler step (CFG 1)", ("flash_euler1",), "success", "at least the row above"),
    ("experiment run_long (sim_touch + 6,000 steps), standard sampler", ("long_standard",), "success", "-"),
)


def _episodes(folder: Path) -> list[dict]:
    path = folder / "episodes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def table(root: Path) -> str:
    lines = ["| policy | episodes | rate (95 % CI) | mean time to success | target |", "|---|---|---|---|---|"]
    for label, folders, field, target in ROWS:
        episodes = [e for folder in folders for e in _episodes(root / folder)]
        if not episodes:
            lines.append(f"| {label} | - | - | - | {target} |")
            continue
        hits = sum(bool(e.get(field)) for e in episodes)
        low, high = wilson_interval(hits, len(episodes))
        times = [e["time_to_success_s"] for e in episodes if e["success"]] if field == "success" else []
        mean_time = f"{sum(times) / len(times):.2f} s" if times else "-"
        lines.append(f"| {label} | {len(episodes)} | {hits}/{len(episodes)} = {hits / len(episodes):.0%} "
                     f"({low:.0%} .. {high:.0%}) | {mean_time} | {target} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(table(Path(sys.argv[1])), end="")
