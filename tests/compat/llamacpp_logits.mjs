// Runs a GGUF file through llama.cpp (the prebuilt library that the node-llama-cpp npm
// package ships) and compares its logits with the ones hearth wrote for the same tokens.
//
//   node llamacpp_logits.mjs MODEL.gguf IDS HEARTH_LOGITS.f32
//
// IDS: comma-separated token ids. HEARTH_LOGITS.f32: `hearth logits -m MODEL.gguf --tokens
// IDS -o FILE` output, float32 [tokens][vocab]. Prints, per position, llama.cpp's argmax
// and hearth's, the max |Δlogit| over the vocabulary, and the KL divergence of llama.cpp's
// distribution from hearth's; exits non-zero when KL > KL_MAX (default 1e-3) or the argmaxes
// differ by more than a near-tie (hearth's logit of llama.cpp's choice more than TIE
// (default 1e-2) below its own best).
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, idsArg, hearthPath] = process.argv.slice(2);
if (!hearthPath) {
  console.error("usage: node llamacpp_logits.mjs MODEL.gguf IDS HEARTH_LOGITS.f32");
  process.exit(2);
}
const ids = idsArg.split(",").map((s) => Number.parseInt(s, 10));
const klMax = Number(process.env.KL_MAX ?? "1e-3");
const tie = Number(process.env.TIE ?? "1e-2");

const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: Math.max(64, ids.length + 8), batchSize: ids.length });
const seq = context.getSequence();
const out = await seq.controlledEvaluate(ids.map((t) => [t, { generateNext: { logits: true } }]));

const raw = fs.readFileSync(hearthPath);
const hearth = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
const n = hearth.length / ids.length;
let worst = 0, worstKl = 0, bad = 0;
for (let p = 0; p < ids.length; ++p) {
  const mine = hearth.subarray(p * n, (p + 1) * n);
  const theirs = new Float64Array(n);
  for (const [tok, v] of out[p].next.logits) theirs[tok] = v;
  const lse = (a) => { let m = -Infinity; for (const v of a) m = Math.max(m, v); let s = 0; for (const v of a) s += Math.exp(v - m); return m + Math.log(s); };
  const lm = lse(mine), lt = lse(theirs);
  let kl = 0, dmax = 0, am = 0, at = 0;
  for (let i = 0; i < n; ++i) {
    const pt = Math.exp(theirs[i] - lt);
    kl += pt > 0 ? pt * ((theirs[i] - lt) - (mine[i] - lm)) : 0;
    dmax = Math.max(dmax, Math.abs(theirs[i] - mine[i]));
    if (mine[i] > mine[am]) am = i;
    if (theirs[i] > theirs[at]) at = i;
  }
  worst = Math.max(worst, dmax);
  worstKl = Math.max(worstKl, kl);
  if (kl > klMax || mine[at] < mine[am] - tie) ++bad;
  console.log(`pos ${p}: argmax llama.cpp ${at} hearth ${am}  max|dlogit| ${dmax.toExponential(2)}  KL ${kl.toExponential(2)}`);
}
console.log(`${ids.length} positions, vocab ${n}; worst max|dlogit| ${worst.toExponential(2)}, worst KL ${worstKl.toExponential(2)}, positions failing: ${bad}`);
await context.dispose();
await model.dispose();
process.exit(bad ? 1 : 0);
