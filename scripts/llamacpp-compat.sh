#!/usr/bin/env bash
# Cross-checks hearth's GGUF files against llama.cpp itself, both ways:
#   1. a GGUF written by `hearth quantize` is run by llama.cpp and by hearth on the same
#      tokens: the logits must agree (F32 and Q8_0 files);
#   2. llama.cpp's own quantizer (llama_model_quantize) requantizes hearth's F32 GGUF to
#      Q4_K_M / Q5_K_M / Q3_K_M / Q2_K, and hearth must run those files with llama.cpp's logits;
#   3. split models, as big quants are published: ggml's GGUF code splits one of them into
#      shards as gguf-split does, and `hearth quantize --split-max-size` writes shards; both
#      engines run both sets from the first shard, hearth with the single file's logits;
#   4. `hearth quantize --keep-types` copies llama.cpp's Q4_K_M as stored: both engines run it.
# llama.cpp comes from the node-llama-cpp npm package (prebuilt libllama, CPU build), installed
# into ~/.cache/hearth/llamacpp. Needs node, npm (and the npm registry), gcc, and a built hearth
# (build/cli/hearth). Not part of scripts/test.sh: it downloads ~200 MB.
#
#   scripts/llamacpp-compat.sh [WORKDIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
hearth="$root/build/cli/hearth"
work="${1:-$(mktemp -d)}"
cache="${HEARTH_CACHE:-$HOME/.cache/hearth}/llamacpp"
[[ -x "$hearth" ]] || { echo "llamacpp-compat: build hearth first (scripts/test.sh or cmake --build build)" >&2; exit 1; }

mkdir -p "$cache" "$work"
if [[ ! -d "$cache/node_modules/node-llama-cpp" ]]; then
  (cd "$cache" && npm init -y >/dev/null && npm install --no-audit --no-fund node-llama-cpp@3.22.1 >/dev/null)
fi
lib="$(dirname "$(find "$cache/node_modules/@node-llama-cpp/linux-x64" -name 'libllama*.so' | head -1)")"
gcc -O1 -o "$cache/llamacpp_quantize" "$root/tests/compat/llamacpp_quantize.c" \
    -L"$lib" -l:"$(basename "$(ls "$lib"/libllama.*so | head -1)")" -Wl,-rpath,"$lib"
gcc -O1 -o "$cache/llamacpp_gguf_split" "$root/tests/compat/llamacpp_gguf_split.c" \
    -L"$lib" -l:"$(basename "$(ls "$lib"/libggml-base*.so | head -1)")" -Wl,-rpath,"$lib"
cp "$root/tests/compat/llamacpp_logits.mjs" "$cache/"

# A tiny V3.2 model with the real tokenizer (llama.cpp needs one). index_topk covers every
# position, so both engines attend to all keys (see docs/gguf.md on DSA key selection).
ids=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(128000)) for _ in range(24)))")
rm -rf "$work/tiny"
"$hearth" synth -o "$work/tiny" --preset tiny --set index_topk=64 --tokenizer "$root/tests/data/tokenizer/tokenizer.json" >/dev/null

status=0
check() {  # check FILE: hearth's logits vs llama.cpp's on the same file
  "$hearth" logits -m "$1" --tokens "$ids" -o "$1.hearth.f32" >/dev/null
  echo "== $(basename "$1")"
  (cd "$cache" && node llamacpp_logits.mjs "$1" "$ids" "$1.hearth.f32" > "$1.compare.txt") || status=1
  tail -1 "$1.compare.txt"
}

for t in f32 q8_0; do
  "$hearth" quantize -m "$work/tiny" -o "$work/hearth-$t.gguf" --type "$t" -q >/dev/null
  check "$work/hearth-$t.gguf"
done
for ft in 15:Q4_K_M 17:Q5_K_M 12:Q3_K_M 10:Q2_K; do
  "$cache/llamacpp_quantize" "$work/hearth-f32.gguf" "$work/llamacpp-${ft#*:}.gguf" "${ft%%:*}" >/dev/null 2>&1
  check "$work/llamacpp-${ft#*:}.gguf"
done
# 3. A model split into shards by ggml's own GGUF code, as gguf-split lays them out (the
#    way big quants are published): both engines load it from its first shard, hearth
#    with exactly the logits it gives for the single file.
mkdir -p "$work/split"
first=$("$cache/llamacpp_gguf_split" "$work/llamacpp-Q4_K_M.gguf" "$work/split/llamacpp-Q4_K_M" 40 | head -1)
echo "== split into $(ls "$work/split" | grep -c 'of-.*gguf$') shards"
check "$first"
cmp "$first.hearth.f32" "$work/llamacpp-Q4_K_M.gguf.hearth.f32" && echo "hearth: shards = single file, bit for bit" || status=1
# ...and shards hearth writes (quantize --split-max-size) run in llama.cpp.
"$hearth" quantize -m "$work/tiny" -o "$work/split/hearth-q8_0.gguf" --type q8_0 --split-max-size 40M -q >/dev/null
first=$(ls "$work"/split/hearth-q8_0-00001-of-*.gguf)
echo "== hearth wrote $(ls "$work"/split/hearth-q8_0-*-of-*.gguf | wc -l) shards"
check "$first"
cmp "$first.hearth.f32" "$work/hearth-q8_0.gguf.hearth.f32" && echo "hearth: shards = single file, bit for bit" || status=1
# 4. llama.cpp's Q4_K_M through `hearth quantize --keep-types` (every tensor copied as
#    stored): llama.cpp runs the result, and both engines give the input's logits.
"$hearth" quantize -m "$work/llamacpp-Q4_K_M.gguf" -o "$work/kept-Q4_K_M.gguf" --keep-types -q >/dev/null
check "$work/kept-Q4_K_M.gguf"
cmp "$work/kept-Q4_K_M.gguf.hearth.f32" "$work/llamacpp-Q4_K_M.gguf.hearth.f32" && echo "hearth: --keep-types = input, bit for bit" || status=1
exit $status
