#!/usr/bin/env bash
# The GPU check of issue 36 (see benchmarks/gpu_check.py): ViT-L/14-shape fp16 photos/s at batch 64
# and 256, exact search of a res-5-sized fp16 gallery on the GPU against FAISS CPU, and the archive
# end to end on CUDA when geoindex's dependencies are installed. Needs torch with CUDA; everything
# else is optional. Stops itself at 8 minutes; writes benchmarks/results/gpu.json.
#
#   bash benchmarks/gpu_check.sh              # on one GPU
#   bash benchmarks/gpu_check.sh --dry-run    # anywhere: tiny shapes on the CPU, checks the script
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 480 "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
