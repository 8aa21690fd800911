#!/usr/bin/env bash
# Runs bench/gpu_generate.py on a GPU machine that has torch and transformers but not the project's
# other packages (the lent H100/H200 of docs/PERFORMANCE.md). The pure-Python wheels it lacks travel
# in .gpu-wheels/ (`make gpu-wheels`) and are unpacked onto PYTHONPATH; results go to $OUT.
#
# GPU time is scarce and a command is killed at its limit: the whole run is bounded by
# SASTRE_GPU_BENCH_TIMEOUT (default 420 s, inside the device's 600 s limit), output is unbuffered,
# and the benchmark rewrites $OUT/gpu_generate.json after every phase, so a run cut short still
# returns every figure it had.
#   usage: bash bench/lent_gpu.sh [gpu_generate.py options]
set -uo pipefail
out=${OUT:-$PWD}
site=$(mktemp -d)
for wheel in .gpu-wheels/*.whl; do
  python3 -m zipfile -e "$wheel" "$site" || exit 1  # a pure-Python wheel is importable once unpacked
done
export PYTHONPATH="$PWD:$site" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c 'import importlib.util as u; print("peft present:", u.find_spec("peft") is not None)'
timeout --kill-after=15 "${SASTRE_GPU_BENCH_TIMEOUT:-420}" \
  python3 -u bench/gpu_generate.py --json "$out/gpu_generate.json" "$@" 2>&1 | tee "$out/gpu_generate.txt"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu_generate.py stopped at its time limit; $out/gpu_generate.json holds the phases it finished"
exit "$status"
