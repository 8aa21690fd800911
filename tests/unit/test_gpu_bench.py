"""`bench/gpu_generate.py` on the CPU with tiny-random: the same code paths the GPU run takes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "bench/gpu_generate.py", "--device", "cpu", "--size", "64", "--iterations", "2",
         "--seconds", "0.3"]


def _run_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_gpu_benchmark_runs_on_the_cpu_and_reports_both_sides_with_ratios_and_checks(tmp_path):
    out = tmp_path / "results.json"
    completed = subprocess.run([*BENCH, "--json", str(out)], cwd=ROOT, env=_run_env(), capture_output=True,
                               text=True, timeout=400)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["status"] == "complete"
    assert (results["profile"], results["device"], results["cuda_graphs"], results["targets"]) == ("tiny-random", "cpu", [], {})
    # The preflight ran the tiny model through diffusers' PEFT backend, as the GPU image will.
    assert results["preflight"] == {"peft_installed": True, "peft_backend": True, "peft_forward": True,
                                    "renders": True, "cuda_graphs": []}
    assert results["weights_identical"] == dict.fromkeys(
        ("unet", "controlnet", "vae", "text_encoder", "text_encoder_2", "image_encoder"), True)
    rows = results["rows"]
    assert set(rows) == {"one cut (ms)", "one cut, cold caches (ms)", "2-cut job (ms)", "throughput at batch 8 (images/s)"}
    for figure, row in rows.items():
        assert row["plain"] > 0 and row["ours"] > 0, figure
    agreement = results["agreement"]
    assert set(agreement) == {"plain noise floor: batch 1 vs batch 2, same cut", "ours vs plain, one cut",
                              "ours vs plain, 2-cut batch", "ours batched vs alone, different swatches"}
    # In float32 on the CPU the fast path reproduces the pipeline: identical, or one grey level where
    # the pipeline encoded two prompts in one batch; every image compared is a real render.
    for name, check in agreement.items():
        assert check["ok"] and check["renders"] and check["max_abs"] <= 1 and check["mean_abs"] < 0.01, name
    assert agreement["ours vs plain, one cut"]["max_abs"] == 0
    for change, check in results["input_reaches_the_model"].items():
        assert check["ok"] and check["changed_mean_abs"] > 1 and check["other_row_max_abs"] == 0, change
    # Each phase left a timestamped line, in order, and the JSON kept them.
    phases = [phase["phase"] for phase in results["phases"]]
    assert phases[0].startswith("imports done") and phases[-1].startswith("done in")
    assert any(p.startswith("timed one cut, plain") for p in phases) and any("warm-up: batch 1" in p for p in phases)
    times = [phase["t_s"] for phase in results["phases"]]
    assert times == sorted(times)
    table = completed.stdout
    assert "| one cut (ms) |" in table and "ours ×" in table and "identical" in table and "[" in table.splitlines()[0]


def test_a_run_killed_midway_leaves_the_figures_it_finished(tmp_path):
    """The GPU machine kills a command at its limit: whatever was measured must already be on disk."""
    out = tmp_path / "results.json"
    process = subprocess.Popen([*BENCH, "--json", str(out)], cwd=ROOT, env=_run_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if out.exists() and json.loads(out.read_text()).get("rows"):
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        printed = process.communicate(timeout=30)[0]
    finally:
        process.kill()
    results = json.loads(out.read_text())
    assert results["status"] == "running"  # it never got to say otherwise
    assert results["rows"]["one cut (ms)"]["plain"] > 0
    assert results["weights_identical"]["unet"] and results["preflight"]["renders"]
    assert "timed one cut, plain" in printed  # unbuffered: the lines were out before the kill


def test_the_gpu_only_variants_run_on_the_cpu_with_the_eager_denoiser_in_place_of_graphs(tmp_path):
    """The branch that only a GPU takes (no-graphs and channels_last variants, graphs-vs-eager bit equality, the
    layout verdict) runs here first, so the one lent GPU run cannot die of a typo in it."""
    out = tmp_path / "results.json"
    completed = subprocess.run([*BENCH, "--simulate-graphs", "--seconds", "0.2", "--json", str(out)], cwd=ROOT,
                               env=_run_env(), capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["cuda_graphs"] == [1, 2, 4, 8]  # one stand-in "graph" per bucket, built at warm-up
    for figure, row in results["rows"].items():
        if figure != "one cut, cold caches (ms)":
            assert set(row) == {"plain", "ours", "ours without CUDA graphs", "ours with channels_last"}, figure
    graphs_vs_eager = results["agreement"]["ours with vs without CUDA graphs, 2-cut batch"]
    assert graphs_vs_eager["ok"] and graphs_vs_eager["max_abs"] == 0
    assert results["agreement"]["ours without vs with channels_last, 2-cut batch"]["ok"]
    assert all(check["vs_eager_max_abs"] == 0 for check in results["input_reaches_the_model"].values())
    assert results["layout"]["faster"] in {"channels_last", "NCHW", "mixed"}
    split = results["stage_split_batch_8"]
    # Both parts timed (which is larger is the GPU run's finding; on a loaded CPU the order flips).
    assert split["vae_decode_ms"] > 0 and split["denoiser_ms"] > 0 and split["vae_dtype"] == "float32"
    assert "layout:" in completed.stdout and "ours with channels_last ×" in completed.stdout


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_generate", ROOT / "bench" / "gpu_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_targets_and_agreement_are_judged_as_the_issue_states():
    bench = _bench_module()
    rows = {"one cut (ms)": {"plain": 192.0, "ours": 48.0}, "2-cut job (ms)": {"plain": 250.0, "ours": 71.0},
            "throughput at batch 8 (images/s)": {"plain": 21.0, "ours": 55.0}}
    assert bench.targets(rows) == {
        "one cut <= 50 ms": True, "one cut >= 3.8x plain": True, "2-cut job <= 70 ms": False,
        "throughput >= 50 images/s": True, "throughput >= 2.4x plain at batch 8": True,
    }
    image = np.random.default_rng(0).integers(0, 250, (8, 8, 3), dtype=np.uint8)
    exact = {"max_abs": 0, "mean_abs": 0.0, "psnr_db": None}
    assert bench.difference(image, image) == {**exact, "renders": True}
    off_by_two = image + 2  # MSE 4: PSNR = 10 log10(255² / 4) = 42.11 dB
    assert bench.difference(image, off_by_two) == {"max_abs": 2, "mean_abs": 2.0, "psnr_db": 42.11, "renders": True}

    # Two flat images are identical and still a failure: both sides broken is not agreement.
    black = np.zeros((8, 8, 3), np.uint8)
    assert not bench.identical(black, black)["ok"]
    assert not bench.close_to_plain(black, black, {"psnr_db": None})["ok"]
    # Graphs vs eager on one GPU: one grey level off is already a failure.
    assert bench.identical(image, image)["ok"] and not bench.identical(image, off_by_two)["ok"]

    # Ours vs plain is judged against plain's own noise floor (batch 1 vs batch 2 of one cut).
    assert bench.required_psnr({"psnr_db": None}) == 40.0  # plain agrees with itself exactly: 40 dB
    assert bench.required_psnr({"psnr_db": 70.0}) == 40.0
    assert bench.required_psnr({"psnr_db": 38.0}) == 32.0  # fp16 noise: 6 dB under plain's own floor
    assert bench.required_psnr({"psnr_db": 20.0}) == 30.0  # never below what a person would see
    assert bench.close_to_plain(image, off_by_two, {"psnr_db": None})["ok"]  # 42.1 dB >= 40
    assert not bench.close_to_plain(image, image + 5, {"psnr_db": None})["ok"]  # 34.2 dB
    assert bench.close_to_plain(image, image + 5, {"psnr_db": 38.0})["ok"]  # 34.2 >= 32
