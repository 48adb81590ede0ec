// DeepSeek models as GGUF files: tiny-v32 exported and loaded back against the golden
// logits, llama.cpp's tensor layout (merged experts, k_b / v_b) checked element by element
// against values computed here from the Hugging Face tensors, the metadata round trip,
// and the errors of broken files.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine/bench.h"
#include "engine/forward.h"
#include "engine/gguf_export.h"
#include "engine/gguf_model.h"
#include "engine/quantize.h"
#include "engine/synth.h"
#include "quant/block_formats.h"
#include "quant/recipe.h"
#include "support/errors.h"
#include "support/golden.h"
#include "support/golden_gguf.h"
#include "support/scratch.h"

namespace engine_gguf_model_suite {

using namespace hearth;
namespace fs = std::filesystem;
using hearth::testing::check_error;
using hearth::testing::golden_cases;
using hearth::testing::golden_logits;
using hearth::testing::GoldenCase;
using hearth::testing::kGoldenDir;
using hearth::testing::TempDir;

namespace {

const Model& hf_model() { return hearth::testing::golden_model(); }

std::function<DType(const GgufExportTensor&)> all(DType d) {
  return [d](const GgufExportTensor&) { return d; };
}

// tiny-v32 written as a GGUF file.
fs::path export_tiny(const TempDir& dir, const std::string& file, std::function<DType(const GgufExportTensor&)> type_for,
                     bool split_kv_b = true) {
  return hearth::testing::golden_as_gguf(dir.path / file, std::move(type_for), split_kv_b);
}

struct Agreement {
  double max_diff = 0.0;
  double argmax_agree = 0.0;  // fraction of positions
};

Agreement against_golden(const std::vector<std::vector<float>>& got) {
  const int64_t V = 1024;
  Agreement a;
  int64_t positions = 0, same = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    const GoldenCase& g = golden_cases()[k];
    for (size_t t = 0; t < g.tokens.size(); ++t, ++positions) {
      const float* x = got[k].data() + t * V;
      const float* y = g.logits.data() + t * V;
      int64_t ix = 0, iy = 0;
      for (int64_t v = 0; v < V; ++v) {
        a.max_diff = std::max(a.max_diff, double(std::fabs(x[v] - y[v])));
        if (x[v] > x[ix]) ix = v;
        if (y[v] > y[iy]) iy = v;
      }
      same += ix == iy;
    }
  }
  a.argmax_agree = double(same) / double(positions);
  return a;
}

const float* f32_data(const GgufFile& f, const std::string& name) {
  const GgufTensor& t = f.tensor(name);
  REQUIRE(t.type() == GgmlType::F32);
  return static_cast<const float*>(t.data);
}

// Row r of a Hugging Face weight, decoded (FP8 block scales applied).
std::vector<float> hf_row(const WeightMatrix& w, int64_t r) {
  std::vector<float> v(size_t(w.cols));
  dequantize_row(w, r, 0, w.cols, v.data());
  return v;
}

// Writes `c`'s GGUF from `store` as F32, with hooks to drop or change metadata and
// tensors (a changed tensor's dims get zero data of the new size).
void write_f32_gguf(const fs::path& path, const ModelConfig& c, const WeightStore& store,
                    const std::function<bool(GgufKeyValue&)>& keep_kv,
                    const std::function<bool(GgufExportTensor&)>& keep_tensor, bool split_kv_b = true) {
  std::vector<GgufExportTensor> plan = plan_gguf_export(c, store, {.split_kv_b = split_kv_b});
  GgufWriter w(path);
  for (GgufKeyValue& kv : gguf_model_metadata(c, "test"))
    if (keep_kv(kv)) w.add(kv.key, kv.value);
  std::vector<GgufExportTensor*> kept;
  std::vector<std::vector<int64_t>> orig_dims;
  for (GgufExportTensor& t : plan) {
    const std::vector<int64_t> dims = t.dims;
    if (!keep_tensor(t)) continue;
    w.add_tensor(t.name, GgmlType::F32, t.dims);
    kept.push_back(&t);
    orig_dims.push_back(dims);
  }
  for (size_t i = 0; i < kept.size(); ++i) {
    std::vector<float> v(size_t(kept[i]->numel()), 0.0f);
    if (kept[i]->dims == orig_dims[i]) kept[i]->rows(0, kept[i]->rows(), v.data());
    w.write(kept[i]->name, v.data(), v.size() * 4);
  }
  w.finish();
}

bool keep_all_kv(GgufKeyValue&) { return true; }
bool keep_all_tensors(GgufExportTensor&) { return true; }

// A config written as metadata only and read back.
ModelConfig metadata_round_trip(const ModelConfig& c) {
  TempDir tmp("hearth-gguf-meta");
  const fs::path p = tmp.path / "meta.gguf";
  {
    GgufWriter w(p);
    add_gguf_model_metadata(w, c);
    w.finish();
  }
  return config_from_gguf(GgufFile(p));
}

// The config a GGUF gives back: a GGUF holds no FP8 weights.
nlohmann::json without_fp8(ModelConfig c) {
  c.quantization = Fp8Quantization{};
  return c.to_json();
}

}  // namespace

TEST_CASE("gguf model: tiny-v32 as an F32 GGUF reproduces the golden logits") {
  TempDir tmp("hearth-gguf");
  const fs::path p = export_tiny(tmp, "tiny-f32.gguf", all(DType::F32));
  const Model m = Model::load(p.string());
  CHECK(m.config().model_type == "deepseek_v32");
  CHECK(m.embed.dtype == DType::F32);
  const Agreement a = against_golden(golden_logits(m));
  MESSAGE("F32 GGUF vs reference: max|dlogit| = " << a.max_diff << ", argmax agreement " << a.argmax_agree);
  CHECK(a.max_diff <= 1e-3);
  CHECK(a.argmax_agree == 1.0);
}

TEST_CASE("gguf model: tiny-v32 as a BF16 GGUF - golden, dense and repack comparisons") {
  TempDir tmp("hearth-gguf");
  const fs::path p = export_tiny(tmp, "tiny-bf16.gguf", uniform_type_for(DType::BF16));
  auto file = std::make_shared<const GgufFile>(p);
  CHECK(file->tensor("blk.1.ffn_up_exps.weight").type() == GgmlType::BF16);
  CHECK(file->tensor("blk.1.ffn_gate_inp.weight").type() == GgmlType::F32);  // the router stays F32
  CHECK(file->tensor("blk.1.attn_norm.weight").type() == GgmlType::F32);
  CHECK(file->get_u32("general.file_type") == 32);
  const Model m = Model::load(p.string());

  // Against the reference the target was max|dlogit| <= 2e-2 with >= 99% argmax
  // agreement. Not reachable on this model: its FP8 block scales are not powers of two,
  // so BF16 rounds the weights (relative error up to 2^-9), and with random weights and
  // index_topk 8 that flips the indexer's key selection and some expert choices, after
  // which a random network's logits are unrelated (tests/engine/repack_test.cc measures
  // the same for --repack bf16). The numbers are reported; the checks below are the
  // dense comparison (no key selection) and identity with --repack bf16.
  const Agreement golden = against_golden(golden_logits(m));
  MESSAGE("BF16 GGUF vs reference, all positions: max|dlogit| = " << golden.max_diff << ", argmax agreement "
                                                                  << golden.argmax_agree);
  // Up to index_topk positions no key is dropped: there the reference is still reachable.
  const int64_t topk = m.config().index_topk, V = 1024;
  double early = 0.0;
  const auto got = golden_logits(m);
  for (size_t k = 0; k < got.size(); ++k)
    for (int64_t t = 0; t < std::min<int64_t>(topk, int64_t(golden_cases()[k].tokens.size())); ++t)
      for (int64_t v = 0; v < V; ++v)
        early = std::max(early, double(std::fabs(got[k][size_t(t * V + v)] - golden_cases()[k].logits[size_t(t * V + v)])));
  MESSAGE("BF16 GGUF vs reference, positions < index_topk: max|dlogit| = " << early);

  // Dense attention (no key selection) isolates the weight format: BF16 GGUF against the
  // FP8 checkpoint, both with index_topk past every sequence.
  ModelConfig dc = m.config();
  dc.index_topk = 1 << 16;
  const Model dense_gguf(dc, gguf_weight_store(file, dc));
  ModelConfig hc = hf_model().config();
  hc.index_topk = 1 << 16;
  const Model dense_hf(hc, WeightStore::open(kGoldenDir));
  const auto a = golden_logits(dense_gguf), b = golden_logits(dense_hf);
  double dense_diff = 0.0;
  int64_t same = 0, positions = 0;
  for (size_t k = 0; k < a.size(); ++k)
    for (size_t t = 0; t < a[k].size() / size_t(V); ++t, ++positions) {
      int64_t ia = 0, ib = 0;
      for (int64_t v = 0; v < V; ++v) {
        const size_t i = t * size_t(V) + size_t(v);
        dense_diff = std::max(dense_diff, double(std::fabs(a[k][i] - b[k][i])));
        if (a[k][i] > a[k][t * size_t(V) + size_t(ia)]) ia = v;
        if (b[k][i] > b[k][t * size_t(V) + size_t(ib)]) ib = v;
      }
      same += ia == ib;
    }
  MESSAGE("BF16 GGUF vs FP8 checkpoint, dense attention: max|dlogit| = " << dense_diff << ", argmax agreement "
                                                                          << double(same) / double(positions));
  // Regression bounds from the measured 3.6 and 88% (2 threads), with margin.
  CHECK(dense_diff <= 5.0);
  CHECK(double(same) / double(positions) >= 0.85);

  // The same weights as --repack bf16 (FP8 decoded, rounded to BF16; norms, embeddings
  // and the router hold the same values), so the same logits.
  ModelLoadOptions ro;
  ro.repack = DType::BF16;
  const Model repacked = Model::load(kGoldenDir, ro);
  double vs_repack = 0.0;
  const auto r = golden_logits(repacked);
  for (size_t k = 0; k < r.size(); ++k)
    for (size_t i = 0; i < r[k].size(); ++i) vs_repack = std::max(vs_repack, double(std::fabs(r[k][i] - got[k][i])));
  MESSAGE("BF16 GGUF vs --repack bf16: max|dlogit| = " << vs_repack);
  CHECK(vs_repack == 0.0);
}

TEST_CASE("gguf model: split attn_k_b + attn_v_b and a whole attn_kv_b give identical logits") {
  TempDir tmp("hearth-gguf");
  for (DType d : {DType::F32, DType::BF16}) {
    INFO("type " << dtype_name(d));
    const fs::path split = export_tiny(tmp, "split.gguf", all(d), true);
    const fs::path whole = export_tiny(tmp, "whole.gguf", all(d), false);
    {
      const GgufFile fs_(split), fw(whole);
      CHECK(fs_.find_tensor("blk.2.attn_k_b.weight"));
      CHECK(fs_.find_tensor("blk.2.attn_v_b.weight"));
      CHECK_FALSE(fs_.find_tensor("blk.2.attn_kv_b.weight"));
      CHECK(fw.find_tensor("blk.2.attn_kv_b.weight"));
      CHECK_FALSE(fw.find_tensor("blk.2.attn_k_b.weight"));
    }
    const Model ms = Model::load(split.string()), mw = Model::load(whole.string());
    // Rebuilt from k_b / v_b in the files' own element type, byte for byte the whole one.
    CHECK(ms.layers[2].attn.kv_b.dtype == d);
    CHECK(std::memcmp(ms.layers[2].attn.kv_b.data, mw.layers[2].attn.kv_b.data, size_t(mw.layers[2].attn.kv_b.bytes())) == 0);
    CHECK(golden_logits(ms) == golden_logits(mw));
  }
}

TEST_CASE("gguf model: k_b and v_b hold kv_b's rows per head as llama.cpp lays them out") {
  TempDir tmp("hearth-gguf");
  const GgufFile f(export_tiny(tmp, "tiny-f32.gguf", all(DType::F32)));
  const ModelConfig& c = hf_model().config();
  const int64_t nh = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim, kvl = c.kv_lora_rank;
  for (int64_t L : {0, 3}) {
    const WeightMatrix& kv_b = hf_model().layers[size_t(L)].attn.kv_b;
    const std::string b = "blk." + std::to_string(L) + ".";
    CHECK(f.tensor(b + "attn_k_b.weight").dims == std::vector<int64_t>{nope, kvl, nh});
    CHECK(f.tensor(b + "attn_v_b.weight").dims == std::vector<int64_t>{kvl, v, nh});
    const float* kb = f32_data(f, b + "attn_k_b.weight");
    const float* vb = f32_data(f, b + "attn_v_b.weight");
    int64_t bad = 0;
    for (int64_t h = 0; h < nh; ++h) {
      for (int64_t i = 0; i < nope; ++i) {  // k_b element (i, c, h) = kv_b[h (nope + v) + i][c]
        const std::vector<float> row = hf_row(kv_b, h * (nope + v) + i);
        for (int64_t col = 0; col < kvl; ++col) bad += kb[(h * kvl + col) * nope + i] != row[size_t(col)];
      }
      for (int64_t j = 0; j < v; ++j) {  // v_b element (c, j, h) = kv_b[h (nope + v) + nope + j][c]
        const std::vector<float> row = hf_row(kv_b, h * (nope + v) + nope + j);
        for (int64_t col = 0; col < kvl; ++col) bad += vb[(h * v + j) * kvl + col] != row[size_t(col)];
      }
    }
    CHECK(bad == 0);
  }
}

namespace {

// Logits of the 24-token golden case decoded one token per step: every step takes the
// absorbed attention path (the one that uses Attention::k_b / v_b).
std::vector<float> decode_logits(const Model& m) {
  ThreadPool pool(2);
  Forward fwd(m, pool);
  KvCache cache(m.config(), 16);
  const SeqId s = cache.add_sequence();
  const std::vector<int32_t>& tokens = golden_cases()[2].tokens;
  REQUIRE(tokens.size() == 24);
  const size_t V = size_t(m.config().vocab_size);
  std::vector<float> logits(tokens.size() * V);
  for (size_t i = 0; i < tokens.size(); ++i)
    fwd.step(cache, {{s, std::span<const int32_t>(&tokens[i], 1)}}, logits.data() + i * V, AttentionPath::kAuto);
  return logits;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0.0;
  int64_t not_finite = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    not_finite += !std::isfinite(a[i]) || !std::isfinite(b[i]);
    d = std::max(d, double(std::fabs(a[i] - b[i])));
  }
  CHECK(not_finite == 0);
  return d;
}

}  // namespace

TEST_CASE("gguf model: block-format k_b and v_b are used as stored by absorbed attention") {
  TempDir tmp("hearth-gguf");
  const ModelConfig& c = hf_model().config();
  const int64_t nh = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim, kvl = c.kv_lora_rank;
  // Dense attention (index_topk past every sequence) and every expert routed to, so that
  // no rounding difference can flip a key or expert choice of this random model (which
  // would change its logits by whole units).
  ModelConfig dc = c;
  dc.index_topk = 1 << 16;
  dc.num_experts_per_tok = dc.n_routed_experts;
  dc.n_group = dc.topk_group = 1;

  // Q8_0: k_b and v_b stay in the file's format beside the F32 kv_b rebuilt from them.
  auto q8 = std::make_shared<const GgufFile>(export_tiny(tmp, "tiny-q8.gguf", uniform_type_for(DType::Q8_0)));
  const Model m(dc, gguf_weight_store(q8, dc));
  for (const Layer& L : m.layers) {
    const Attention& A = L.attn;
    REQUIRE(A.k_b.data);
    CHECK(A.k_b.dtype == DType::Q8_0);
    CHECK(A.v_b.dtype == DType::Q8_0);
    CHECK((A.k_b.rows == nh * kvl && A.k_b.cols == nope));
    CHECK((A.v_b.rows == nh * v && A.v_b.cols == kvl));
    CHECK(A.kv_b.dtype == DType::F32);
    // k_b row (h, c) holds column c of head h's W_uk; v_b row (h, j) is W_uv's row j:
    // the values of the rebuilt kv_b, exactly.
    int64_t bad = 0;
    std::vector<float> row(static_cast<size_t>(kvl)), kbrow(static_cast<size_t>(nope));
    for (int64_t h = 0; h < nh; ++h) {
      for (int64_t col = 0; col < kvl; ++col) {
        dequantize_row(A.k_b, h * kvl + col, 0, nope, kbrow.data());
        for (int64_t i = 0; i < nope; ++i) {
          float kv;
          dequantize_row(A.kv_b, h * (nope + v) + i, col, col + 1, &kv);
          bad += kbrow[size_t(i)] != kv;
        }
      }
      for (int64_t j = 0; j < v; ++j) {
        std::vector<float> kvrow(static_cast<size_t>(kvl));
        dequantize_row(A.v_b, h * v + j, 0, kvl, row.data());
        dequantize_row(A.kv_b, h * (nope + v) + nope + j, 0, kvl, kvrow.data());
        bad += row != kvrow;
      }
    }
    CHECK(bad == 0);
  }
  // Against the same model on its F32 kv_b, and both against the F32 model: the k_b and
  // v_b products quantize their activations (q_nope and the attended latents) to Q8_0, as
  // every other Q8_0 weight of the model already does, and that must not take the model
  // measurably further from full precision than its Q8_0 weights already are.
  Model on_kv_b(dc, gguf_weight_store(q8, dc));
  for (Layer& L : on_kv_b.layers) L.attn.k_b = L.attn.v_b = WeightMatrix{};
  auto f32 = std::make_shared<const GgufFile>(export_tiny(tmp, "tiny-f32.gguf", all(DType::F32)));
  const std::vector<float> split = decode_logits(m), whole = decode_logits(on_kv_b);
  const std::vector<float> full = decode_logits(Model(dc, gguf_weight_store(f32, dc)));
  const double d = max_abs_diff(split, whole), d_split = max_abs_diff(split, full), d_whole = max_abs_diff(whole, full);
  MESSAGE("decode max|dlogit|: Q8_0 k_b/v_b vs its F32 kv_b " << d << "; vs the F32 model: with k_b/v_b " << d_split
                                                            << ", with kv_b " << d_whole);
  CHECK(d > 0.0);  // the k_b path ran
  CHECK(d_split <= 1.5 * d_whole);
  // hearth bench counts what decode reads: k_b and v_b, not the F32 kv_b.
  int64_t attention = 0;
  for (const Layer& L : m.layers) {
    const Attention& A = L.attn;
    for (const WeightMatrix* w : {&A.q_a, &A.q_b, &A.kv_a, &A.k_b, &A.v_b, &A.o}) attention += w->bytes();
    attention += int64_t((A.q_a_norm.size() + A.kv_a_norm.size()) * sizeof(float));
  }
  CHECK(describe_model(m, "tiny", 1).active.attention == attention);
  const int64_t layers = int64_t(m.layers.size());
  const Attention& A0 = m.layers[0].attn;
  CHECK(describe_model(on_kv_b, "tiny", 1).active.attention ==
        attention + layers * (A0.kv_b.bytes() - A0.k_b.bytes() - A0.v_b.bytes()));

  // F32 k_b and v_b put in by hand: the same products in float, so only the summation
  // order differs from the kv_b path.
  Model fm(dc, gguf_weight_store(f32, dc));
  const Model fw(dc, gguf_weight_store(f32, dc));
  for (size_t l = 0; l < fm.layers.size(); ++l) {
    Attention& A = fm.layers[l].attn;
    CHECK_FALSE(A.k_b.data);  // float files keep kv_b in their own type and need no split
    const std::string b = "blk." + std::to_string(l) + ".";
    A.k_b = WeightMatrix{DType::F32, nh * kvl, nope, f32->tensor(b + "attn_k_b.weight").data};
    A.v_b = WeightMatrix{DType::F32, nh * v, kvl, f32->tensor(b + "attn_v_b.weight").data};
  }
  const double fd = max_abs_diff(decode_logits(fm), decode_logits(fw));
  MESSAGE("F32 k_b/v_b vs F32 kv_b, decode: max|dlogit| = " << fd);
  CHECK(fd <= 1e-4);
}

TEST_CASE("gguf model: merged expert slices are the Hugging Face experts") {
  TempDir tmp("hearth-gguf");
  const ModelConfig& c = hf_model().config();
  const int64_t E = c.n_routed_experts, M = c.moe_intermediate_size, H = c.hidden_size;
  {  // F32: the file's bytes, and the views the store makes of them
    auto file = std::make_shared<const GgufFile>(export_tiny(tmp, "tiny-f32.gguf", all(DType::F32)));
    CHECK(file->tensor("blk.1.ffn_gate_exps.weight").dims == std::vector<int64_t>{H, M, E});
    CHECK(file->tensor("blk.1.ffn_down_exps.weight").dims == std::vector<int64_t>{M, H, E});
    const WeightStore store = gguf_weight_store(file, config_from_gguf(*file));
    const Model& hf = hf_model();
    int64_t bad = 0;
    for (int64_t L : {1, 3}) {
      const float* up = f32_data(*file, "blk." + std::to_string(L) + ".ffn_up_exps.weight");
      const float* down = f32_data(*file, "blk." + std::to_string(L) + ".ffn_down_exps.weight");
      for (int64_t e = 0; e < E; ++e) {
        const Mlp& x = hf.layers[size_t(L)].moe.experts[size_t(e)];
        const TensorView& vu = store.get("model.layers." + std::to_string(L) + ".mlp.experts." + std::to_string(e) + ".up_proj.weight");
        CHECK(vu.shape == std::vector<int64_t>{M, H});
        CHECK(vu.data == up + e * M * H);  // a zero-copy slice
        for (int64_t r = 0; r < M; ++r) {
          const std::vector<float> want = hf_row(x.up, r);
          for (int64_t col = 0; col < H; ++col) bad += up[(e * M + r) * H + col] != want[size_t(col)];
        }
        for (int64_t r = 0; r < H; ++r) {
          const std::vector<float> want = hf_row(x.down, r);
          for (int64_t col = 0; col < M; ++col) bad += down[(e * H + r) * M + col] != want[size_t(col)];
        }
      }
    }
    CHECK(bad == 0);
  }
  {  // Q8_0: expert e's slice is the quantization of its own rows
    const GgufFile f(export_tiny(tmp, "tiny-q8.gguf", uniform_type_for(DType::Q8_0)));
    const GgufTensor& t = f.tensor("blk.2.ffn_gate_exps.weight");
    REQUIRE(t.type() == GgmlType::Q8_0);
    const int64_t rb = row_bytes(GgmlType::Q8_0, H);
    std::vector<uint8_t> q(static_cast<size_t>(rb));
    int64_t bad = 0;
    for (int64_t e = 0; e < E; e += 5)
      for (int64_t r = 0; r < M; r += 7) {
        const std::vector<float> row = hf_row(hf_model().layers[2].moe.experts[size_t(e)].gate, r);
        block_format(GgmlType::Q8_0).quantize_row(row.data(), q.data(), H, nullptr);
        bad += std::memcmp(q.data(), static_cast<const uint8_t*>(t.data) + (e * M + r) * rb, size_t(rb)) != 0;
      }
    CHECK(bad == 0);
  }
}

TEST_CASE("gguf model: the written file has llama.cpp's tensor names and metadata") {
  TempDir tmp("hearth-gguf");
  const GgufFile f(export_tiny(tmp, "tiny-f32.gguf", all(DType::F32)));
  // The expected names, spelled out here (not from the name table): tiny has layer 0
  // dense, layers 1-3 MoE with one shared expert, and MTP block 4.
  std::set<std::string> want{"token_embd.weight", "output_norm.weight", "output.weight"};
  for (int L = 0; L <= 4; ++L) {
    const std::string b = "blk." + std::to_string(L) + ".";
    for (const char* n : {"attn_norm.weight", "attn_q_a.weight", "attn_q_a_norm.weight", "attn_q_b.weight",
                          "attn_kv_a_mqa.weight", "attn_kv_a_norm.weight", "attn_k_b.weight", "attn_v_b.weight",
                          "attn_output.weight", "indexer.attn_q_b.weight", "indexer.attn_k.weight",
                          "indexer.k_norm.weight", "indexer.k_norm.bias", "indexer.proj.weight", "ffn_norm.weight"})
      want.insert(b + n);
    if (L == 0) {
      for (const char* n : {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}) want.insert(b + n);
    } else {
      for (const char* n : {"ffn_gate_inp.weight", "exp_probs_b.bias", "ffn_gate_exps.weight", "ffn_up_exps.weight",
                            "ffn_down_exps.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight"})
        want.insert(b + n);
    }
    if (L == 4)
      for (const char* n : {"nextn.eh_proj.weight", "nextn.enorm.weight", "nextn.hnorm.weight",
                            "nextn.shared_head_norm.weight", "nextn.shared_head_head.weight", "nextn.embed_tokens.weight"})
        want.insert(b + n);
  }
  std::set<std::string> got;
  for (const GgufTensor& t : f.tensors()) got.insert(t.name);
  CHECK(got == want);
  CHECK(f.tensor("token_embd.weight").dims == std::vector<int64_t>{256, 1024});
  CHECK(f.tensor("blk.4.nextn.eh_proj.weight").dims == std::vector<int64_t>{512, 256});
  CHECK(f.tensor("blk.1.exp_probs_b.bias").dims == std::vector<int64_t>{16});
  CHECK(f.tensor("blk.1.ffn_gate_inp.weight").dims == std::vector<int64_t>{256, 16});

  // Metadata as llama.cpp's converter writes it for this config.
  CHECK(f.get_string("general.architecture") == "deepseek32");
  CHECK(f.get_string("general.name") == "tiny");
  CHECK(f.get_u32("general.quantization_version") == 2);
  CHECK(f.get_u32("general.file_type") == 0);
  CHECK(f.get_u32("deepseek32.block_count") == 5);
  CHECK(f.get_u32("deepseek32.nextn_predict_layers") == 1);
  CHECK(f.get_u32("deepseek32.context_length") == 163840);
  CHECK(f.get_u32("deepseek32.embedding_length") == 256);
  CHECK(f.get_u32("deepseek32.feed_forward_length") == 384);
  CHECK(f.get_u32("deepseek32.attention.head_count") == 4);
  CHECK(f.get_u32("deepseek32.attention.head_count_kv") == 1);
  CHECK(f.get_u32("deepseek32.attention.q_lora_rank") == 192);
  CHECK(f.get_u32("deepseek32.attention.kv_lora_rank") == 128);
  CHECK(f.get_u32("deepseek32.attention.key_length") == 128 + 32);
  CHECK(f.get_u32("deepseek32.attention.value_length") == 128);
  CHECK(f.get_u32("deepseek32.attention.key_length_mla") == 64 + 32);
  CHECK(f.get_u32("deepseek32.attention.value_length_mla") == 64);
  CHECK(f.get_u32("deepseek32.rope.dimension_count") == 32);
  CHECK(f.get_string("deepseek32.rope.scaling.type") == "yarn");
  CHECK(f.get_f32("deepseek32.rope.scaling.factor") == 40.0f);
  CHECK(f.get_u32("deepseek32.rope.scaling.original_context_length") == 4096);
  CHECK(f.get_f32("deepseek32.rope.scaling.yarn_log_multiplier") == 0.1f);
  CHECK(f.get_f32("deepseek32.rope.freq_base") == 10000.0f);
  CHECK(f.get_f32("deepseek32.attention.layer_norm_rms_epsilon") == 1e-6f);
  CHECK(f.get_u32("deepseek32.leading_dense_block_count") == 1);
  CHECK(f.get_u32("deepseek32.vocab_size") == 1024);
  CHECK(f.get_u32("deepseek32.expert_count") == 16);
  CHECK(f.get_u32("deepseek32.expert_used_count") == 4);
  CHECK(f.get_u32("deepseek32.expert_shared_count") == 1);
  CHECK(f.get_u32("deepseek32.expert_feed_forward_length") == 96);
  CHECK(f.get_u32("deepseek32.expert_group_count") == 4);
  CHECK(f.get_u32("deepseek32.expert_group_used_count") == 2);
  CHECK(f.get_u32("deepseek32.expert_gating_func") == 2);
  CHECK(f.get_f32("deepseek32.expert_weights_scale") == 2.5f);
  CHECK(f.get_bool("deepseek32.expert_weights_norm"));
  CHECK(f.get_u32("deepseek32.attention.indexer.head_count") == 16);
  CHECK(f.get_u32("deepseek32.attention.indexer.key_length") == 128);
  CHECK(f.get_u32("deepseek32.attention.indexer.top_k") == 8);
  CHECK_FALSE(f.has("tokenizer.ggml.model"));  // the tokenizer is written elsewhere
  CHECK_FALSE(f.has("hearth.rope.scaling.mscale"));

  // The name table maps every one-to-one Hugging Face tensor both ways.
  for (const TensorSpec& s : checkpoint_tensor_specs(hf_model().config())) {
    if (s.name.ends_with("_scale_inv") || s.name.find(".experts.") != std::string::npos ||
        s.name.ends_with("kv_b_proj.weight"))
      continue;
    const std::optional<std::string> g = gguf_tensor_name(s.name);
    REQUIRE_MESSAGE(g, s.name);
    CHECK_MESSAGE(got.count(*g) == 1, *g);
    CHECK(hf_tensor_name(*g) == s.name);
  }
  CHECK_FALSE(gguf_tensor_name("model.layers.1.mlp.experts.3.up_proj.weight"));
  CHECK_FALSE(gguf_tensor_name("model.layers.1.self_attn.q_a_proj.weight_scale_inv"));
  CHECK_FALSE(hf_tensor_name("blk.1.attn_k_b.weight"));
  CHECK_FALSE(hf_tensor_name("blk.01.attn_norm.weight"));
}

TEST_CASE("gguf model: metadata round trip gives the same config") {
  for (const char* preset : {"tiny", "small", "bench"}) {
    INFO("preset " << preset);
    const ModelConfig c = ModelConfig::from_json(synth_config_json(preset, {}));
    CHECK(gguf_architecture(c) == (c.has_indexer() ? "deepseek32" : "deepseek2"));
    CHECK(without_fp8(metadata_round_trip(c)) == without_fp8(c));
  }
  // Values away from the presets' defaults, including what only hearth keys can carry.
  const ModelConfig odd = ModelConfig::from_json(synth_config_json(
      "tiny", {"rms_norm_eps=1e-5", "rope_theta=50000", "routed_scaling_factor=1.8", "norm_topk_prob=false",
               "moe_layer_freq=2", "first_k_dense_replace=2", "n_group=8", "topk_group=3", "index_topk=2048",
               R"(rope_scaling={"type":"yarn","factor":4,"original_max_position_embeddings":8192,"beta_fast":16,)"
               R"("beta_slow":2,"mscale":0.707,"mscale_all_dim":0.3})",
               "bos_token_id=0", "eos_token_id=1"}));
  const ModelConfig back = metadata_round_trip(odd);
  CHECK(without_fp8(back) == without_fp8(odd));
  CHECK(back.rope_scaling.mscale == 0.707);
  CHECK(back.rope_scaling.mscale_all_dim == 0.3);
  CHECK(back.moe_layer_freq == 2);
  // Softmax routing without YaRN, on deepseek2.
  const ModelConfig v2 = ModelConfig::from_json(synth_config_json(
      "bench", {R"(scoring_func="softmax")", R"(topk_method="group_limited_greedy")", "rope_scaling=null"}));
  CHECK(without_fp8(metadata_round_trip(v2)) == without_fp8(v2));
  // deepseek2 files have no MTP layers (llama.cpp's converter skips them).
  const ModelConfig v3_mtp = ModelConfig::from_json(synth_config_json("bench", {"num_nextn_predict_layers=1"}));
  CHECK(gguf_block_count(v3_mtp) == v3_mtp.num_hidden_layers);
  CHECK(metadata_round_trip(v3_mtp).num_nextn_predict_layers == 0);
}

TEST_CASE("gguf model: older and foreign metadata read with llama.cpp's meanings") {
  TempDir tmp("hearth-gguf-old");
  const fs::path p = tmp.path / "old.gguf";
  {
    // A DeepSeek-V2-style file: per-head key/value lengths without the _mla keys,
    // head_count_kv = head_count, no gating function, norm or vocab_size keys.
    GgufWriter w(p);
    w.add("general.architecture", "deepseek2");
    w.add("deepseek2.block_count", uint32_t(3));
    w.add("deepseek2.context_length", uint32_t(4096));
    w.add("deepseek2.embedding_length", uint32_t(64));
    w.add("deepseek2.feed_forward_length", uint32_t(96));
    w.add("deepseek2.attention.head_count", uint32_t(2));
    w.add("deepseek2.attention.head_count_kv", uint32_t(2));
    w.add("deepseek2.attention.layer_norm_rms_epsilon", 1e-6f);
    w.add("deepseek2.leading_dense_block_count", uint32_t(1));
    w.add("deepseek2.attention.q_lora_rank", uint32_t(48));
    w.add("deepseek2.attention.kv_lora_rank", uint32_t(32));
    w.add("deepseek2.attention.key_length", uint32_t(24));  // nope 16 + rope 8
    w.add("deepseek2.attention.value_length", uint32_t(16));
    w.add("deepseek2.rope.dimension_count", uint32_t(8));
    w.add("deepseek2.expert_feed_forward_length", uint32_t(32));
    w.add("deepseek2.expert_count", uint32_t(8));
    w.add("deepseek2.expert_used_count", uint32_t(2));
    w.add("deepseek2.expert_weights_scale", 1.0f);
    w.add_tensor("token_embd.weight", GgmlType::F32, {64, 500});
    const std::vector<float> zeros(64 * 500);
    w.write("token_embd.weight", zeros.data(), zeros.size() * 4);
    w.finish();
  }
  const ModelConfig c = config_from_gguf(GgufFile(p));
  CHECK(c.model_type == "deepseek_v3");
  CHECK(c.num_hidden_layers == 3);
  CHECK(c.qk_nope_head_dim == 16);
  CHECK(c.qk_rope_head_dim == 8);
  CHECK(c.v_head_dim == 16);
  CHECK(c.vocab_size == 500);  // from token_embd
  CHECK(c.scoring_func == "softmax");
  CHECK(c.topk_method == "greedy");
  CHECK_FALSE(c.norm_topk_prob);
  CHECK(c.n_shared_experts == 0);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK_FALSE(c.rope_scaling.yarn);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.tie_word_embeddings);  // token_embd without output
}

TEST_CASE("gguf model: broken files fail naming the file and the tensor or key") {
  TempDir tmp("hearth-gguf-err");
  const Model& hf = hf_model();
  const ModelConfig& c = hf.config();
  auto load = [](const fs::path& p) { return [p] { Model::load(p.string()); }; };

  const fs::path no_router = tmp.path / "no-router.gguf";
  write_f32_gguf(no_router, c, hf.store(), keep_all_kv,
                 [](GgufExportTensor& t) { return t.name != "blk.2.ffn_gate_inp.weight"; });
  check_error(load(no_router), {no_router.string(), "missing tensor 'blk.2.ffn_gate_inp.weight'"});

  const fs::path no_kv_b = tmp.path / "no-kv-b.gguf";
  write_f32_gguf(no_kv_b, c, hf.store(), keep_all_kv,
                 [](GgufExportTensor& t) { return t.name != "blk.1.attn_v_b.weight"; });
  check_error(load(no_kv_b), {no_kv_b.string(), "missing tensor 'blk.1.attn_v_b.weight'"});

  const fs::path bad_shape = tmp.path / "bad-shape.gguf";
  write_f32_gguf(bad_shape, c, hf.store(), keep_all_kv, [](GgufExportTensor& t) {
    if (t.name == "blk.0.attn_q_a.weight") std::swap(t.dims[0], t.dims[1]);
    return true;
  });
  check_error(load(bad_shape), {bad_shape.string(), "tensor 'blk.0.attn_q_a.weight'", "[192, 256]", "[256, 192]"});

  const fs::path bad_experts = tmp.path / "bad-experts.gguf";
  write_f32_gguf(bad_experts, c, hf.store(), keep_all_kv, [](GgufExportTensor& t) {
    if (t.name == "blk.3.ffn_down_exps.weight") t.dims[2] = 15;
    return true;
  });
  check_error(load(bad_experts), {bad_experts.string(), "tensor 'blk.3.ffn_down_exps.weight'", "[96, 256, 15]"});

  const fs::path no_key = tmp.path / "no-key.gguf";
  write_f32_gguf(no_key, c, hf.store(), [](GgufKeyValue& kv) { return kv.key != "deepseek32.embedding_length"; },
                 keep_all_tensors);
  check_error(load(no_key), {no_key.string(), "missing metadata key 'deepseek32.embedding_length'"});

  const fs::path bad_value = tmp.path / "bad-value.gguf";
  write_f32_gguf(bad_value, c, hf.store(), [](GgufKeyValue& kv) {
    if (kv.key == "deepseek32.expert_used_count") kv.value = GgufValue(uint32_t(17));
    return true;
  }, keep_all_tensors);
  check_error(load(bad_value), {bad_value.string(), "deepseek32.expert_used_count", "17"});

  const fs::path llama = tmp.path / "llama.gguf";
  write_f32_gguf(llama, c, hf.store(), [](GgufKeyValue& kv) {
    if (kv.key == "general.architecture") kv.value = GgufValue("llama");
    return true;
  }, [](GgufExportTensor& t) { return t.layer < 0; });
  check_error(load(llama), {llama.string(), "unsupported architecture 'llama'"});

  check_error(load(tmp.path / "absent.gguf"), {"absent.gguf", "does not exist"});
  const fs::path text = tmp.path / "notes.txt";
  std::ofstream(text) << "not a model";
  check_error(load(text), {"notes.txt", "neither a directory", "nor a GGUF file"});
}

TEST_CASE("quantize: requantizing the F32 GGUF gives the same file as quantizing the checkpoint") {
  TempDir tmp("hearth-gguf-rq");
  const fs::path f32 = export_tiny(tmp, "tiny-f32.gguf", all(DType::F32));
  QuantizeOptions o;
  o.type_for = uniform_type_for(DType::Q4_K);
  o.threads = 2;
  o.name = "tiny";
  o.input = kGoldenDir;
  o.output = tmp.path / "from-hf.gguf";
  const QuantizeResult a = quantize_model(o);
  o.input = f32;
  o.output = tmp.path / "from-gguf.gguf";
  const QuantizeResult b = quantize_model(o);
  CHECK(hearth::testing::slurp(tmp.path / "from-hf.gguf") == hearth::testing::slurp(tmp.path / "from-gguf.gguf"));
  CHECK(a.by_type.at(DType::Q4_K).tensors == b.by_type.at(DType::Q4_K).tensors);
  // Q4_K where rows are whole super-blocks, Q8_0 for attn_k_b (rows of 64), F16 for
  // none (every row length here is a multiple of 32), F32 for 1-D, router and indexer.proj.
  const GgufFile f(tmp.path / "from-hf.gguf");
  CHECK(f.tensor("blk.1.ffn_up_exps.weight").type() == GgmlType::Q4_K);
  CHECK(f.tensor("blk.1.ffn_down_exps.weight").type() == GgmlType::Q8_0);  // rows of 96
  CHECK(f.tensor("blk.1.attn_k_b.weight").type() == GgmlType::Q8_0);
  CHECK(f.tensor("blk.1.indexer.proj.weight").type() == GgmlType::F32);
  CHECK(f.tensor("blk.1.exp_probs_b.bias").type() == GgmlType::F32);
  int64_t tensors = 0;
  uint64_t bytes = 0;
  for (const auto& [d, n] : a.by_type) tensors += n.tensors, bytes += n.bytes;
  CHECK(tensors == int64_t(f.tensors().size()));
  CHECK(bytes == a.tensor_bytes);
  CHECK(a.file_bytes == fs::file_size(tmp.path / "from-hf.gguf"));
}

TEST_CASE("quantize: importance vectors reach the quantizer per tensor and per expert") {
  TempDir tmp("hearth-gguf-imp");
  QuantizeOptions o;
  o.input = kGoldenDir;
  o.output = tmp.path / "imp.gguf";
  o.type_for = uniform_type_for(DType::Q4_K);
  o.threads = 2;
  std::deque<std::vector<float>> store;  // stable pointers: one vector per call
  std::set<int64_t> experts_seen;
  std::map<std::string, std::set<int64_t>> ne0_of;  // every row length asked for, by tensor
  o.importance = [&](const std::string& name, int64_t expert, int64_t ne0) -> const float* {
    if (name == "blk.1.ffn_up_exps.weight") experts_seen.insert(expert);
    if (name.find("_exps.") == std::string::npos) experts_seen.insert(expert == -1 ? -1 : -100);
    ne0_of[name].insert(ne0);
    std::vector<float> v(static_cast<size_t>(ne0));
    for (int64_t i = 0; i < ne0; ++i) v[size_t(i)] = 1.0f + float((i * 7 + expert * 13 + 50) % 17);
    store.push_back(std::move(v));
    return store.back().data();
  };
  const QuantizeResult r = quantize_model(o);
  std::set<int64_t> want_experts{-1};  // -1 from the tensors that are not merged experts
  for (int64_t e = 0; e < 16; ++e) want_experts.insert(e);
  CHECK(experts_seen == want_experts);
  // Every tensor but those copied as stored: the checkpoint's F32 router biases stay F32.
  const GgufFile f(o.output);
  CHECK(r.copied == 4);  // three MoE layers and the MTP layer
  CHECK(ne0_of.size() + size_t(r.copied) == f.tensors().size());
  for (const GgufTensor& t : f.tensors()) {
    if (t.name.find("exp_probs_b") != std::string::npos) {
      CHECK_MESSAGE(!ne0_of.count(t.name), t.name);
      continue;
    }
    CHECK_MESSAGE(ne0_of[t.name] == std::set<int64_t>{t.dims[0]}, t.name);
  }

  // Expert 5's first row of blk.1.ffn_up_exps is quantized with expert 5's vector.
  const GgufTensor& t = f.tensor("blk.1.ffn_up_exps.weight");
  const int64_t H = 256, rb = row_bytes(GgmlType::Q4_K, H);
  const std::vector<float> row = hf_row(hf_model().layers[1].moe.experts[5].up, 0);
  std::vector<float> imp(static_cast<size_t>(H));
  for (int64_t i = 0; i < H; ++i) imp[size_t(i)] = 1.0f + float((i * 7 + 5 * 13 + 50) % 17);
  std::vector<uint8_t> with(static_cast<size_t>(rb)), without(static_cast<size_t>(rb));
  block_format(GgmlType::Q4_K).quantize_row(row.data(), with.data(), H, imp.data());
  block_format(GgmlType::Q4_K).quantize_row(row.data(), without.data(), H, nullptr);
  const uint8_t* got = static_cast<const uint8_t*>(t.data) + 5 * 96 * rb;
  CHECK(std::memcmp(got, with.data(), size_t(rb)) == 0);
  CHECK(with != without);  // the vector changed the result: the check above means something
}

TEST_CASE("quantize: tensors whose type does not change are copied as the input GGUF stores them") {
  TempDir tmp("hearth-gguf-copy");
  const int n_layers = int(hf_model().config().num_hidden_layers);
  auto by = [n_layers](const QuantRecipe& r) {
    return [r, n_layers](const GgufExportTensor& t) { return r.type_for(RecipeTensor{t.name, t.dims, int(t.layer), n_layers}); };
  };
  QuantizeOptions a;
  a.input = kGoldenDir;
  a.output = tmp.path / "a.gguf";
  a.type_for = by(QuantRecipe::preset("Q4_K_M"));
  a.threads = 2;
  a.name = "tiny";
  CHECK(quantize_model(a).copied == 4);  // from the FP8 checkpoint only its F32 router biases

  // The same recipe on its own output: every tensor copied, so the same bytes.
  QuantizeOptions b = a;
  b.input = a.output;
  b.output = tmp.path / "b.gguf";
  const QuantizeResult rb = quantize_model(b);
  const GgufFile fa(a.output), fb(b.output);
  REQUIRE(fa.tensors().size() == fb.tensors().size());
  CHECK(rb.copied == int64_t(fb.tensors().size()));
  std::set<GgmlType> types;
  for (size_t i = 0; i < fa.tensors().size(); ++i) {
    const GgufTensor &x = fa.tensors()[i], &y = fb.tensors()[i];
    types.insert(x.type());
    CHECK(x.type() == y.type());
    CHECK_MESSAGE(std::memcmp(x.data, y.data, x.nbytes) == 0, x.name);
  }
  CHECK(types.count(GgmlType::Q4_K));  // the mix: K-quants, fallbacks (attn_k_b) and F32
  CHECK(types.count(GgmlType::Q6_K));
  CHECK(types.count(GgmlType::Q8_0));

  // What the copy spares: decoding a K-quant row and quantizing it again can move its
  // blocks (the scale search does not return to its own result: here Q6_K's).
  int64_t moved = 0, rows = 0;
  for (const GgufTensor& t : fa.tensors()) {
    if (t.type() != GgmlType::Q6_K) continue;
    const BlockFormat& f = block_format(t.type());
    const int64_t n = t.row_elems(), rbytes = f.row_bytes(n);
    std::vector<float> row(static_cast<size_t>(n));
    std::vector<uint8_t> again(static_cast<size_t>(rbytes));
    for (int64_t r = 0; r < t.rows(); ++r, ++rows) {
      const uint8_t* stored = static_cast<const uint8_t*>(t.data) + r * rbytes;
      f.dequantize_row(stored, row.data(), n);
      f.quantize_row(row.data(), again.data(), n, nullptr);
      moved += std::memcmp(stored, again.data(), size_t(rbytes)) != 0;
    }
  }
  MESSAGE("Q6_K rows changed by a decode and requantize: " << moved << " of " << rows);
  CHECK(moved > 0);

  // Another recipe: what keeps its type is copied, the rest converted.
  QuantizeOptions c = b;
  c.output = tmp.path / "c.gguf";
  c.type_for = by(QuantRecipe::moe(DType::Q4_K, DType::Q8_0));
  const QuantizeResult rc = quantize_model(c);
  const GgufFile fc(c.output);
  int64_t same = 0, changed = 0;
  for (size_t i = 0; i < fa.tensors().size(); ++i) {
    const GgufTensor &x = fa.tensors()[i], &z = fc.tensors()[i];
    if (x.type() != z.type()) {
      ++changed;
      continue;
    }
    ++same;
    CHECK_MESSAGE(std::memcmp(x.data, z.data, x.nbytes) == 0, x.name);
  }
  CHECK(rc.copied == same);
  CHECK(changed > 0);
}

TEST_CASE("quantize: a cancel leaves neither the output nor its temporary file") {
  TempDir tmp("hearth-gguf-cancel");
  std::atomic<bool> cancel{false};
  QuantizeOptions o;
  o.input = kGoldenDir;
  o.output = tmp.path / "out.gguf";
  o.type_for = uniform_type_for(DType::Q8_0);
  o.threads = 1;
  o.cancel = &cancel;
  int calls = 0;
  bool tmp_existed = false;
  o.progress = [&](const QuantizeProgress& p) {
    tmp_existed = tmp_existed || fs::exists(tmp.path / "out.gguf.tmp");
    CHECK(p.bytes_in_done <= p.bytes_in_total);
    if (++calls == 3) cancel = true;
  };
  check_error([&] { quantize_model(o); }, {"cancelled"});
  CHECK(tmp_existed);  // it was being written
  CHECK_FALSE(fs::exists(tmp.path / "out.gguf"));
  CHECK_FALSE(fs::exists(tmp.path / "out.gguf.tmp"));
}

TEST_CASE("quantize: types that cannot hold a tensor are errors naming it") {
  TempDir tmp("hearth-gguf-types");
  QuantizeOptions o;
  o.input = kGoldenDir;
  o.output = tmp.path / "out.gguf";
  o.type_for = all(DType::Q4_K);  // no fallback: the first misfit is a norm of 192
  check_error([&] { quantize_model(o); }, {"blk.0.attn_q_a_norm.weight", "192", "Q4_K"});
  o.type_for = all(DType::F8_E4M3);
  check_error([&] { quantize_model(o); }, {"token_embd.weight", "F8_E4M3"});
  CHECK_FALSE(fs::exists(o.output));
  CHECK_FALSE(fs::exists(tmp.path / "out.gguf.tmp"));
}

}  // namespace engine_gguf_model_suite
