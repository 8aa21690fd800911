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
    assert (results["profile"], results["device"], results["cuda_graphs"], results["targets"]) == ("tiny-random", "cpu", [], {})
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


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_generate", ROOT / "bench" / "gpu_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_targets_and_agreement_are_judged_as_the_issue_states():
    import numpy as np

    bench = _bench_module()
    rows = {"one cut (ms)": {"plain": 192.0, "ours": 48.0}, "2-cut job (ms)": {"plain": 250.0, "ours": 71.0},
            "throughput at batch 8 (images/s)": {"plain": 21.0, "ours": 55.0}}
    assert bench.targets(rows) == {
        "one cut <= 50 ms": True, "one cut >= 3.8x plain": True, "2-cut job <= 70 ms": False,
        "throughput >= 50 images/s": True, "throughput >= 2.4x plain at batch 8": True,
    }
    image = np.full((8, 8, 3), 100, np.uint8)
    assert bench.agreement(image, image) == {"max_abs": 0, "mean_abs": 0.0, "psnr_db": None, "ok": True}
    off_by_two = image + 2  # MSE 4: PSNR = 10 log10(255² / 4) = 42.11 dB
    assert bench.agreement(image, off_by_two) == {"max_abs": 2, "mean_abs": 2.0, "psnr_db": 42.11, "ok": True}
    assert not bench.agreement(image, image + 5)["ok"]  # 34.2 dB, under the 40 dB floor
