// `hearth imatrix` end to end on the tiny synthetic model: which tensors get entries,
// the routed experts' row counts, one entry's values against activations computed here
// from the model's own weights, and `hearth quantize --imatrix` consuming the file.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/imatrix.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "quant/weight_matrix.h"
#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace cli_imatrix_suite {

using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::TempDir;

namespace {

const char* kCalibration =
    "The quick brown fox jumps over the lazy dog. A proof by induction first checks the base case, "
    "then shows that the statement for n implies the statement for n + 1. Every positive integer "
    "greater than one is a product of primes, and that factorization is unique up to order.\n";

}  // namespace

TEST_CASE("cli: hearth imatrix collects per-weight activation statistics that quantize uses") {
  const std::filesystem::path model_dir = hearth::testing::tiny_chat_model_dir();
  TempDir tmp("hearth-imatrix-cli");
  const std::string text = (tmp.path / "calib.txt").string(), out = (tmp.path / "imatrix.gguf").string();
  std::ofstream(text, std::ios::binary) << kCalibration;
  const int64_t ctx = 16, chunks = 2;

  const CliRun r = run_hearth("imatrix -m " + model_dir.string() + " -f " + text + " -o " + out +
                              " --ctx 16 --chunks 2 -t 2");
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(r.err.find("chunk 2/2") != std::string::npos);

  const hearth::ImportanceMatrix im = hearth::ImportanceMatrix::load(out);
  CHECK(im.chunk_count() == uint32_t(chunks));
  CHECK(im.chunk_size() == uint32_t(ctx));
  REQUIRE(im.datasets().size() == 1);
  CHECK(im.datasets()[0] == "calib.txt");

  const hearth::Model model = hearth::Model::load(model_dir.string());
  const hearth::ModelConfig& c = model.config();
  const int64_t H = c.hidden_size, tokens = ctx * chunks;
  REQUIRE(c.first_k_dense_replace >= 1);  // layer 0 dense, layer 1 MoE
  REQUIRE(model.layers.size() >= 2);
  REQUIRE(model.layers[1].is_moe);

  // Dense MLP, head and attention: one matrix with one row per token.
  for (const char* name : {"blk.0.ffn_gate.weight", "blk.0.ffn_down.weight", "blk.0.attn_q_a.weight",
                           "blk.0.attn_q_b.weight", "blk.0.attn_kv_a_mqa.weight", "blk.0.attn_output.weight",
                           "blk.1.ffn_gate_shexp.weight", "output.weight"}) {
    INFO(name);
    CHECK(im.shape(name).second == 1);
    CHECK(im.count(name, 0) == tokens);
  }
  CHECK(im.shape("blk.0.ffn_gate.weight").first == H);
  CHECK(im.shape("blk.0.ffn_down.weight").first == c.intermediate_size);
  CHECK(im.shape("output.weight").first == H);

  // Routed experts: every token reaches num_experts_per_tok experts of the merged tensor.
  for (const char* name : {"blk.1.ffn_gate_exps.weight", "blk.1.ffn_down_exps.weight"}) {
    INFO(name);
    REQUIRE(im.shape(name).second == c.n_routed_experts);
    int64_t total = 0, used = 0;
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      total += im.count(name, e);
      used += im.count(name, e) > 0;
    }
    CHECK(total == tokens * c.num_experts_per_tok);
    CHECK(used >= 2);
  }
  CHECK(im.shape("blk.1.ffn_down_exps.weight").first == c.moe_intermediate_size);

  // blk.0.attn_q_a's input is RMSNorm(embedding) of each chunk's tokens (BOS first):
  // recomputed here in double from the weights and the tokenizer's ids.
  const hearth::Tokenizer tok = hearth::Tokenizer::load(model_dir / "tokenizer.json");
  std::vector<int32_t> ids{tok.bos_id()};
  for (int32_t id : tok.encode(kCalibration, false)) ids.push_back(id);
  REQUIRE(int64_t(ids.size()) >= tokens);
  std::vector<double> want(static_cast<size_t>(H), 0.0);
  std::vector<float> e(static_cast<size_t>(H));
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (int64_t j = 0; j < ctx; ++j) {
      const int32_t id = j == 0 ? tok.bos_id() : ids[size_t(ch * ctx + j)];
      hearth::dequantize_row(model.embed, id, 0, H, e.data());
      double ss = 0;
      for (float v : e) ss += double(v) * v;
      const double inv = 1.0 / std::sqrt(ss / double(H) + c.rms_norm_eps);
      for (int64_t i = 0; i < H; ++i) {
        const double x = double(e[size_t(i)]) * inv * model.layers[0].attn_norm[size_t(i)];
        want[size_t(i)] += x * x / double(tokens);
      }
    }
  const float* got = im.weights("blk.0.attn_q_a.weight", 0, H);
  REQUIRE(got != nullptr);
  for (int64_t i = 0; i < H; ++i) {
    INFO("column " << i);
    CHECK(std::abs(got[i] - want[size_t(i)]) <= 1e-4 * want[size_t(i)] + 1e-12);
  }

  // The file feeds quantize.
  const std::string gguf = (tmp.path / "q4km.gguf").string();
  const CliRun q = run_hearth("quantize -m " + model_dir.string() + " -o " + gguf + " --type q4_k_m --imatrix " + out + " -t 2");
  INFO(q.all());
  REQUIRE(q.code == 0);
  const size_t at = q.out.find("importance matrix used for ");
  REQUIRE(at != std::string::npos);
  CHECK(std::stoll(q.out.substr(at + 27)) > 0);
}

TEST_CASE("cli: hearth imatrix rejects a text shorter than one chunk in one line") {
  TempDir tmp("hearth-imatrix-cli");
  const std::string text = (tmp.path / "short.txt").string();
  std::ofstream(text, std::ios::binary) << "too short";
  const CliRun r = run_hearth("imatrix -m " + hearth::testing::tiny_chat_model_dir().string() + " -f " + text + " -o " +
                              (tmp.path / "x.gguf").string() + " --ctx 64");
  INFO(r.all());
  CHECK(r.code != 0);
  CHECK(r.err.find("fewer than one chunk") != std::string::npos);
  CHECK(!std::filesystem::exists(tmp.path / "x.gguf"));
}

}  // namespace cli_imatrix_suite
