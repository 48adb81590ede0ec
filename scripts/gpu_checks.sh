#!/usr/bin/env bash
# The checks only a GPU machine can run, on an already built tree (scripts/test.sh builds
# the CUDA code whenever nvcc exists; scripts/gpu_bundle.sh carries such a build to a GPU
# machine that lacks hearth's build dependencies):
# - every CUDA test, and the CUDA kernel throughput table;
# - the AVX-512 VNNI kernels run natively, where the CPU has them (GPU hosts usually do),
#   then every other test through ctest, and bench/dot_bench;
# - `hearth bench` on the pinned bench preset at Q8_0: on the CPU (its best kernels, then
#   capped at AVX2), with everything on the GPU, with half the routed experts on the CPU,
#   a prefill that streams every routed expert (its Chrome trace gives the upload/compute
#   overlap), and the all-GPU prefill with each GEMM policy (--cuda-gemm).
#
# The CUDA build links libcublas.so.13 dynamically (cuda::matmul's cuBLAS path). A GPU
# machine without the CUDA toolkit may have it only as the pip package nvidia-cublas: when
# the dynamic linker does not know libcublas.so.13, the package's lib folder is added to
# LD_LIBRARY_PATH below.
#
#   scripts/gpu_checks.sh [BUILD_DIR (build)] [OUT_DIR (gpu-checks)] [THREADS (all)]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)" || { echo "gpu_checks: no build directory ${1:-$root/build}" >&2; exit 1; }
out="${2:-$root/gpu-checks}"
threads="${3:-$(nproc)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
hearth="$build/cli/hearth"
status=0
# A build carried here by scripts/gpu_bundle.sh brings the libraries it links, and its
# tests find their data and the CLI through the source path it was built in: make that
# path lead here when it does not exist.
if [ -d "$build/bundled-lib" ]; then
  export LD_LIBRARY_PATH="$build/bundled-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -f "$build/source-dir" ]; then
  src="$(cat "$build/source-dir")"
  if [ "$src" != "$root" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" && ln -s "$root" "$src" && echo "gpu_checks: $src -> $root (the build's source path)"
  fi
fi
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
{
  lscpu | grep -E 'Model name|^CPU\(s\)|Socket|NUMA node\(s\)|L3'
  echo "AVX-512 flags: $(grep -o -w -E 'avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
} | tee "$out/machine.txt"
echo "== CUDA tests"
"$build/tests/hearth_tests" -tc='cuda*' > "$out/cuda_tests.txt" 2>&1 || status=1
tail -n 40 "$out/cuda_tests.txt"
echo "== CUDA kernel throughput"
"$build/bench/cuda_matmul_bench" 2>&1 | tee "$out/cuda_matmul_bench.md" || status=1
echo "== the AVX-512 VNNI kernels, natively where this CPU has them (else emulated)"
"$build/tests/hearth_tests" -tc='dot vnni*' 2>&1 | tail -n 4 || status=1
echo "== every other test"
(cd "$build" && ctest -j"$threads" -E '^cuda' --timeout 300 > "$out/ctest.txt" 2>&1) || status=1
tail -n 4 "$out/ctest.txt"
echo "== CPU kernel throughput (one thread)"
"$build/bench/dot_bench" --reps 2 --mb 32 2>&1 | tee "$out/dot_bench.md" || status=1

bench="bench --synthetic bench --type q8_0 -t $threads -r 2"
run_bench() {  # NAME ARGS...: one hearth bench run, its table in OUT/bench_NAME.md
  local name=$1
  shift
  echo "== bench: $name"
  $hearth $bench "$@" 2>&1 | grep -v -E 'building synthetic|repetition' | tee "$out/bench_$name.md" || status=1
}
run_bench cpu -p 128 -n 32 --batch 1,8
run_bench cpu_avx2 -p 128 -n 32 --batch 1,8 --isa avx2
run_bench gpu_kernels -p 512 -n 0 --offload cuda
run_bench gpu_cublas -p 512 -n 0 --offload cuda --cuda-gemm cublas-bf16
run_bench gpu -p 128 -n 32 --batch 1,8 --offload cuda
run_bench half -p 128 -n 32 --batch 1,8 --offload cuda --place 'ffn_exps\.[0-9]*[13579]$=cpu' \
  --trace "$out/trace_half.json"
run_bench stream -p 512 -n 0 --offload cuda --place 'ffn_exps=cpu' --stream-rows 1 --trace "$out/trace_stream.json"
exit $status
