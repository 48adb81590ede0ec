// ModelLoadOptions::in_memory (--no-mmap): every weight read in place from a mapped file
// is copied into memory the model owns, and the forward pass gives the same logits to the
// bit. Checked on the golden checkpoint (FP8 with block scales, safetensors), on a GGUF
// written from it (merged expert tensors, k_b / v_b), and after a repack (whose converted
// weights are in memory already and must not be copied again).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "engine/model.h"
#include "offload/memory.h"
#include "support/golden.h"
#include "support/golden_gguf.h"
#include "support/scratch.h"

namespace engine_in_memory_suite {

using namespace hearth;
using hearth::testing::golden_logits;
using hearth::testing::kGoldenDir;
using hearth::testing::TempDir;

namespace {

// How many of the model's weight pointers (data and FP8 scales) lie in a mapped file.
int in_files(const Model& m) {
  const auto files = file_mapped_ranges();
  auto mapped = [&](const void* p) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    return p && std::any_of(files.begin(), files.end(), [&](const auto& r) { return a >= r.first && a < r.second; });
  };
  int n = 0;
  auto count = [&](const WeightMatrix& w) { n += mapped(w.data) + mapped(w.scale); };
  count(m.embed);
  count(m.lm_head);
  for (const Layer& L : m.layers) {
    for (const WeightMatrix* w : {&L.attn.q_a, &L.attn.q_b, &L.attn.kv_a, &L.attn.kv_b, &L.attn.k_b, &L.attn.v_b, &L.attn.o,
                                  &L.attn.indexer.wq_b, &L.attn.indexer.wk, &L.attn.indexer.weights_proj})
      count(*w);
    for (const WeightMatrix* w : {&L.dense.gate, &L.dense.up, &L.dense.down, &L.moe.router, &L.moe.shared.gate,
                                  &L.moe.shared.up, &L.moe.shared.down})
      count(*w);
    for (const Mlp& e : L.moe.experts)
      for (const WeightMatrix* w : {&e.gate, &e.up, &e.down}) count(*w);
  }
  return n;
}

void check_copy(const std::string& path, ModelLoadOptions o) {
  const Model mapped = Model::load(path, o);
  o.in_memory = true;
  const Model copied = Model::load(path, o);
  CHECK(in_files(mapped) > 0);
  CHECK(in_files(copied) == 0);
  CHECK(golden_logits(copied) == golden_logits(mapped));
}

}  // namespace

TEST_CASE("in-memory load: the golden checkpoint's FP8 weights and scales, same logits") {
  REQUIRE(!file_mapped_ranges().empty());
  check_copy(kGoldenDir, {});
}

TEST_CASE("in-memory load: a GGUF file, and weights a repack already holds are not copied again") {
  TempDir dir("hearth-in-memory");
  check_copy(hearth::testing::golden_as_gguf(dir.path / "tiny-q8_0.gguf", uniform_type_for(DType::Q8_0)).string(), {});
  ModelLoadOptions r;
  r.repack = DType::Q8_0;
  check_copy(kGoldenDir, r);
}

}  // namespace engine_in_memory_suite
