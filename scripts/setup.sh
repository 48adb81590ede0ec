#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install what is missing, build, and run
# hearth on a generated demo model (a tiny random DeepSeek-V3.2 checkpoint with the real
# DeepSeek tokenizer): print its configuration, then generate a chat answer.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib/deps.sh"
hearth_install_deps
hearth_build "$root"
hearth="${HEARTH_BUILD_DIR:-$root/build}/cli/hearth"
demo="$root/demo"
mkdir -p "$demo"
if [ ! -f "$demo/tiny/tokenizer.json" ]; then
  rm -rf "$demo/tiny"  # a demo model from before it carried the tokenizer
  "$hearth" synth -o "$demo/tiny" --preset tiny --seed 1 \
    --tokenizer "$root/tests/data/tokenizer/tokenizer.json"
fi
"$hearth" info -m "$demo/tiny"
# Random weights: the text is gibberish, the pipeline (template, tokenizer, sampling,
# streaming, statistics) is the real one.
"$hearth" generate -m "$demo/tiny" -p "Prove that the square root of 2 is irrational." --chat -n 32 --seed 1
echo
echo "hearth is built: $hearth  (try: $hearth --help)"
