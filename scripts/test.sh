#!/usr/bin/env bash
# Builds hearth and runs every test suite (CTest over the doctest binary).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib/deps.sh"
hearth_install_deps
hearth_build "$root"
build="${HEARTH_BUILD_DIR:-$root/build}"
cd "$build"
ctest --output-on-failure -j"$(nproc)" --timeout 600
