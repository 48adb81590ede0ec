#!/usr/bin/env bash
# The checks only a GPU can run, on an already built tree (scripts/test.sh builds the CUDA
# code whenever nvcc exists): every CUDA test, the kernel throughput table, and
# `hearth bench` on the pinned bench preset without offload, with everything on the GPU,
# with half the routed experts on the CPU, and a prefill that streams every routed expert
# (its Chrome trace shows the upload/compute overlap).
#
#   scripts/gpu_checks.sh [BUILD_DIR] [OUT_DIR] [THREADS]
set -uo pipefail
build=${1:-build}
out=${2:-gpu-checks}
threads=${3:-0}
mkdir -p "$out"
hearth="$build/cli/hearth"
status=0

nvidia-smi -L || { echo "gpu_checks: no GPU (nvidia-smi failed)"; exit 1; }
echo "== CUDA tests"
"$build/tests/hearth_tests" -tc='cuda*' 2>&1 | tee "$out/cuda_tests.txt" | tail -n 60 || status=1
echo "== CUDA kernel throughput"
"$build/bench/cuda_matmul_bench" 2>&1 | tee "$out/cuda_matmul_bench.md" || status=1

bench="bench --synthetic bench --type q8_0 -t $threads -r 2"
echo "== bench: CPU only"
$hearth $bench -p 128 -n 32 --batch 1,8 2>&1 | tee "$out/bench_cpu.md" || status=1
echo "== bench: all on the GPU"
$hearth $bench -p 128 -n 32 --batch 1,8 --offload cuda 2>&1 | tee "$out/bench_gpu.md" || status=1
echo "== bench: half the routed experts on the CPU"
$hearth $bench -p 128 -n 32 --batch 1,8 --offload cuda --place 'ffn_exps\.[0-9]*[13579]$=cpu' \
  --trace "$out/trace_half.json" 2>&1 | tee "$out/bench_half.md" || status=1
echo "== bench: prefill streaming every routed expert"
$hearth $bench -p 512 -n 0 --offload cuda --place 'ffn_exps=cpu' --stream-rows 1 --trace "$out/trace_stream.json" 2>&1 |
  tee "$out/bench_stream.md" || status=1
exit $status
