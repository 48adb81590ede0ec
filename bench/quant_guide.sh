#!/usr/bin/env bash
# The table of docs/quantization.md: what each `hearth quantize` preset costs in size and
# in quality, measured with `hearth kld` against the FP8 original on a synthetic model.
#
#   bench/quant_guide.sh [WORKDIR] [PRESET...]
#
# The model is the `small` synth preset with the real tokenizer and index_topk raised past
# the context (dense attention): a random indexer is uncorrelated with attention, so its
# key choices flip under any rounding and the KL would measure that chaos, not the
# quantization (docs/quantization.md explains). Text: the project's own docs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
hearth="${HEARTH:-$root/build/cli/hearth}"
work="${1:-$(mktemp -d)}"
shift || true
presets=("$@")
[[ ${#presets[@]} -gt 0 ]] || presets=(Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K MOE_Q4_K MOE_Q2_K)
mkdir -p "$work"
base="$work/small-fp8"
[[ -d "$base" ]] || "$hearth" synth -o "$base" --preset small --set index_topk=4096 \
    --tokenizer "$root/tests/data/tokenizer/tokenizer.json" >/dev/null
cat "$root/README.md" "$root"/docs/*.md > "$work/text.txt"

echo "| preset | file size | KLD mean | KLD median | KLD p99 | top-1 agreement | PPL ratio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for p in "${presets[@]}"; do
  out="$work/small-$p.gguf"
  [[ -f "$out" ]] || "$hearth" quantize -m "$base" -o "$out" --type "$p" -q >/dev/null
  "$hearth" kld -m "$base" -m "$out" -f "$work/text.txt" --ctx 256 --chunks 8 --json 2>/dev/null > "$work/kld-$p.json"
  python3 - "$p" "$work/kld-$p.json" "$out" "$base" <<'PY'
import json, os, sys
p, path, out, base = sys.argv[1:]
j = json.load(open(path))
k = j["kld"]
size = os.path.getsize(out)
print(f'| {p} | {size / 1e6:.1f} MB | {k["mean"]:.5f} | {k["median"]:.5f} | {k["p99"]:.4f} | '
      f'{100 * j["top1_agreement"]:.2f} % | {j["candidate"]["perplexity"] / j["base"]["perplexity"]:.4f} |')
PY
done
echo
echo "base: $(du -sh "$base" | cut -f1) FP8 checkpoint; $(python3 -c "import json;j=json.load(open('$work/kld-${presets[0]}.json'));print(j['scored'],'positions scored in',j['chunks'],'chunks of',j['ctx'],'tokens')")"
