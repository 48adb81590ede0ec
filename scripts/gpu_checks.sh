#!/usr/bin/env bash
# The checks only a GPU can run, on an already built tree (scripts/test.sh builds the CUDA
# code whenever nvcc exists): every CUDA test, the kernel throughput table, and
# `hearth bench` on the pinned bench preset without offload, with everything on the GPU,
# with half the routed experts on the CPU, and a prefill that streams every routed expert
# (its Chrome trace shows the upload/compute overlap), and the all-GPU prefill again with
# the cuBLAS GEMM policy (--cuda-gemm cublas-bf16).
#
# The CUDA build links libcublas.so.13 dynamically (cuda::matmul's cuBLAS path). A GPU
# machine without the CUDA toolkit may have it only as the pip package nvidia-cublas: when
# the dynamic linker does not know libcublas.so.13, the package's lib folder is added to
# LD_LIBRARY_PATH below.
#
#   scripts/gpu_checks.sh [BUILD_DIR] [OUT_DIR] [THREADS]
set -uo pipefail
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.13'; then
  # The package's own folder (nvidia/cublas/lib), else wherever under the nvidia namespace
  # its wheel put libcublas.so.13 (CUDA 13 wheels may use nvidia/cu13/lib).
  cublas_lib=$(python3 - 2>/dev/null <<'PY'
import glob, os
dirs = []
try:
    import nvidia.cublas
    dirs += [os.path.join(p, "lib") for p in nvidia.cublas.__path__]
except Exception:
    pass
try:
    import nvidia
    for root in nvidia.__path__:
        dirs += [os.path.dirname(f) for f in glob.glob(os.path.join(root, "**", "libcublas.so.13*"), recursive=True)]
except Exception:
    pass
for d in dirs:
    if glob.glob(os.path.join(d, "libcublas.so.13*")):
        print(d)
        break
PY
)
  if [ -n "$cublas_lib" ]; then
    export LD_LIBRARY_PATH="$cublas_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "gpu_checks: libcublas.so.13 from $cublas_lib"
  else
    echo "gpu_checks: libcublas.so.13 is neither known to ldconfig nor in the pip package nvidia-cublas" >&2
  fi
fi

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
echo "== bench: prefill all on the GPU, cuBLAS bf16 GEMMs"
$hearth $bench -p 512 -n 0 --offload cuda --cuda-gemm cublas-bf16 2>&1 | tee "$out/bench_gpu_cublas.md" || status=1
echo "== bench: prefill all on the GPU, hearth's kernels (the baseline for the line above)"
$hearth $bench -p 512 -n 0 --offload cuda 2>&1 | tee "$out/bench_gpu_kernels.md" || status=1
exit $status
