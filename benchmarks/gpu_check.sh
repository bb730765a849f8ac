#!/usr/bin/env bash
# Correctness (GPU vs CPU, bf16 vs fp32) and throughput of medXGAN training and inversion on one CUDA GPU.
# Needs PyTorch and this repository (installed with `pip install -e .`, or not: src/ is put on PYTHONPATH);
# no network. At most ~5 minutes. Results: benchmarks/results/gpu_check_<hostname>.{json,md}.
#
#   benchmarks/gpu_check.sh                # on the GPU machine
#   benchmarks/gpu_check.sh --cpu-smoke    # everything on the CPU with tiny sizes (< 60 s): tests the script
#   benchmarks/gpu_check.sh --no-compile   # skip the torch.compile measurement
#
# Without a CUDA GPU (and without --cpu-smoke) it prints "no CUDA GPU: nothing to check" and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
