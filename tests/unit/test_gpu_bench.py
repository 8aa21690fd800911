"""`bench/gpu_generate.py` on the CPU with tiny-random: the same code paths the GPU run takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_runs_on_the_cpu_and_reports_both_sides_with_ratios(tmp_path):
    out = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "bench/gpu_generate.py", "--device", "cpu", "--size", "64", "--iterations", "2",
         "--seconds", "0.3", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())
    assert (results["profile"], results["device"], results["cuda_graphs"]) == ("tiny-random", "cpu", [])
    rows = results["rows"]
    assert set(rows) == {"one cut (ms)", "one cut, cold caches (ms)", "2-cut job (ms)", "throughput at batch 8 (images/s)"}
    for figure, row in rows.items():
        assert row["plain"] > 0 and row["ours"] > 0, figure
    # In float32 on the CPU the fast path reproduces the pipeline: identical, or one grey level where
    # the pipeline encoded two prompts in one batch.
    for name, check in results["agreement"].items():
        assert check["ok"] and check["max_abs"] <= 1 and check["mean_abs"] < 0.01, name
    assert results["agreement"]["ours vs plain, one cut"]["max_abs"] == 0
    table = completed.stdout
    assert "| one cut (ms) |" in table and "ours ×" in table and "identical" in table
