#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install what is missing, build, and run
# hearth on a generated demo model (a tiny random DeepSeek-V3.2 checkpoint).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib/deps.sh"
hearth_install_deps
hearth_build "$root"
hearth="${HEARTH_BUILD_DIR:-$root/build}/cli/hearth"
demo="$root/demo"
mkdir -p "$demo"
if [ ! -f "$demo/tiny/config.json" ]; then
  "$hearth" synth -o "$demo/tiny" --preset tiny --seed 1
fi
"$hearth" info -m "$demo/tiny"
"$hearth" logits -m "$demo/tiny" --tokens 0,17,923,4,511 -o "$demo/logits.f32"
echo
echo "hearth is built: $hearth  (try: $hearth --help)"
