#!/usr/bin/env bash
# Runs bench/gpu_generate.py on a GPU machine that has torch and transformers but not the project's
# other packages (the lent H100/H200 of docs/PERFORMANCE.md). The pure-Python wheels it lacks travel
# in .gpu-wheels/ (`make gpu-wheels`) and are unpacked onto PYTHONPATH; results go to $OUT.
#   usage: bash bench/lent_gpu.sh [gpu_generate.py options]
set -euo pipefail
out=${OUT:-$PWD}
site=$(mktemp -d)
for wheel in .gpu-wheels/*.whl; do
  python3 -m zipfile -e "$wheel" "$site"   # a pure-Python wheel is importable once unpacked
done
export PYTHONPATH="$PWD:$site" HF_HUB_OFFLINE=1
python3 - <<'PY'
import diffusers, torch, transformers, controlnet_aux.canny, deployments.generation
print(f"torch {torch.__version__}, transformers {transformers.__version__}, diffusers {diffusers.__version__} "
      f"from {diffusers.__file__}; cuda: {torch.cuda.is_available()}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 bench/gpu_generate.py --json "$out/gpu_generate.json" "$@" | tee "$out/gpu_generate.txt"
