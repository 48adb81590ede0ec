#!/usr/bin/env bash
# Packs a CUDA build for scripts/gpu_checks.sh on a GPU machine that has neither hearth's
# build dependencies nor its Debian libraries (a rented or lent GPU box): the executables
# the checks run, the CTest files, and every shared library they link that is not part of
# the C/C++ runtime or CUDA (oneDNN, hwloc, mimalloc, PCRE2, cpp-httplib and what those
# need), into one archive of paths relative to the repository root.
#
#   scripts/gpu_bundle.sh [BUILD_DIR (build)] [ARCHIVE (gpu-bundle.tar.xz)]
#
# On the GPU machine, in a checkout of the same commit:
#   tar -xJf gpu-bundle.tar.xz && scripts/gpu_checks.sh BUILD_DIR OUT_DIR
# gpu_checks.sh puts BUILD_DIR/bundled-lib on the library path and, where the build's source
# path (BUILD_DIR/source-dir; the tests find their data through it) does not exist there,
# links it to the checkout. Build for the GPU's architecture, e.g. for an H100 or H200:
#   cmake -S . -B build-gpu -DHEARTH_CUDA_ARCHS=90 && cmake --build build-gpu -j
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
archive="${2:-$root/gpu-bundle.tar.xz}"
case "$build/" in
  "$root"/*) rel="${build#"$root"/}" ;;
  *) echo "gpu_bundle: $build is not inside $root" >&2; exit 1 ;;
esac
bins=(cli/hearth tests/hearth_tests bench/cuda_matmul_bench bench/dot_bench)
for b in "${bins[@]}"; do
  [ -x "$build/$b" ] || { echo "gpu_bundle: $build/$b is missing: build it first (with CUDA for cuda_matmul_bench)" >&2; exit 1; }
done

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$rel/bundled-lib"
grep '^CMAKE_HOME_DIRECTORY:' "$build/CMakeCache.txt" | cut -d= -f2- > "$stage/$rel/source-dir"
# Libraries every Linux machine has in a compatible version, and CUDA's, which come with
# the GPU's driver or its toolkit (gpu_checks.sh finds cuBLAS).
skip='^(linux-vdso|ld-linux|libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libcuda|libcudart|libcublas|libcublasLt)\.'
for b in "${bins[@]}"; do
  ldd "$build/$b" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    [[ "$name" =~ $skip ]] && continue
    cp -L "$path" "$stage/$rel/bundled-lib/$name"
  done
done
# The staged files (source-dir, libraries), then the build's own: executables and CTest files.
tar -cf "$stage/bundle.tar" -C "$stage" "$rel/source-dir" "$rel/bundled-lib"
mapfile -t ctest_files < <(cd "$root" && find "$rel" -name 'CTestTestfile.cmake' -o -name 'hearth_tests_*.cmake')
(cd "$root" && tar -rf "$stage/bundle.tar" "${bins[@]/#/$rel/}" "${ctest_files[@]}")
xz -T0 -6 -c "$stage/bundle.tar" > "$archive.tmp" && mv "$archive.tmp" "$archive"
echo "gpu_bundle: $archive ($(du -h "$archive" | cut -f1)): ${bins[*]} and $(ls "$stage/$rel/bundled-lib" | wc -l) libraries from $rel"
