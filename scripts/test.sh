#!/usr/bin/env bash
# Builds hearth and runs every test suite (CTest over the doctest binary).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib/deps.sh"
hearth_install_deps
build="${HEARTH_BUILD_DIR:-$root/build}"
gpu=""
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  gpu="$(nvidia-smi -L | sed -n '1{s/^GPU [0-9]*: //;s/ (UUID.*//;p;}')"
fi
# With a CUDA toolkit but no GPU (CI), the kernels can only be compiled, never run: build
# them once, to PTX for compute_90 ("90-virtual": every .cu file goes through nvcc's whole
# front end, only the machine-code assembly that no GPU here could use is skipped),
# instead of machine code for the default four architectures, which would multiply
# nvcc's share of CI's time budget for nothing. With a GPU the default list stays.
if [ -z "$gpu" ] && { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  cmake -S "$root" -B "$build" -DHEARTH_CUDA_ARCHS=90-virtual >/dev/null
fi
hearth_build "$root"
cd "$build"
ctest --output-on-failure -j"$(nproc)" --timeout 600
# The CUDA suites skip themselves without a GPU (or without the CUDA backend, which builds
# cuda_matmul_bench): say which happened.
if [ -z "$gpu" ]; then
  echo "CUDA tests: skipped: no GPU"
elif [ ! -x bench/cuda_matmul_bench ]; then
  echo "CUDA tests: skipped: this build has no CUDA backend"
else
  echo "CUDA tests: ran on $gpu"
fi
