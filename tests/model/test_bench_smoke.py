"""bench/model_bench.py keeps working: one quick CPU run, every case reported with a positive time."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "model_bench.py"


def test_model_bench_reports_every_cpu_case() -> None:
    result = subprocess.run([sys.executable, str(BENCH), "--repeats", "1", "--json"], capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [r["case"] for r in report["results"]]
    assert names == ["kv_cache+official_8_of_16", "recompute+official_8_of_16", "kv_cache+all_16",
                     "kv_cache+flash_1_step"]
    assert all(r["ms_per_chunk"] > 0 and r["chunks_timed"] == 4 for r in report["results"])
