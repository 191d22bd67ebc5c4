#!/usr/bin/env bash
# The GPU table (README): installs onnxruntime-gpu and what poseloop needs, builds the three
# networks and runs benchmarks/gpu_bench.py (CPU, CUDA, CUDA graph, CUDA fp16, TensorRT).
#
#   bash benchmarks/gpu.sh                  a GPU machine with internet: pip installs
#   bash benchmarks/gpu.sh --fetch DIR      here (with internet): download the wheels into DIR
#   bash benchmarks/gpu.sh --wheels DIR     a GPU machine without internet: install from DIR
#
# Python 3.12 and torch with CUDA are expected on the GPU machine (the lab's image, or
# pip install torch); the wheels fetched are for CPython 3.12, manylinux x86-64. Results go to
# $OUT (default runs/gpu): gpu.json and the models; the table is printed as Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/poseloop-gpu-site}
# What the GPU image may lack (torch, numpy, onnx, numba, opencv, pandas are expected there).
PACKAGES=(onnxruntime-gpu pydantic pydantic-core annotated-types typing-inspection
          typing-extensions pyzmq pyserial tqdm pyyaml)

case "${1:-}" in
  --fetch)
    dir=${2:?--fetch needs a folder}
    mkdir -p "$dir"
    for p in "${PACKAGES[@]}"; do
      "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir" "$p"
    done
    ls -la "$dir"
    exit 0 ;;
  --wheels)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
      "${2:?--wheels needs a folder}"/*.whl
    shift 2 ;;
  *)
    "$PY" -m pip install -q --upgrade --target "$SITE" "${PACKAGES[@]}" ;;
esac
# onnxruntime-gpu provides the module onnxruntime: first on the path, it shadows a CPU build.
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$PY" -c "import torch, onnxruntime as o; print('torch', torch.__version__, \
'cuda', torch.cuda.is_available(), '| onnxruntime', o.__version__, o.get_available_providers())"
"$PY" benchmarks/gpu_bench.py --out "${OUT:-runs/gpu}" "$@"
