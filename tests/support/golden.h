// The golden reference: tests/data/tiny-v32, a small random DeepSeek-V3.2 checkpoint with
// logits from DeepSeek's reference implementation for every position of 4 sequences.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "offload/thread_pool.h"

namespace hearth::testing {

inline const std::string kGoldenDir = std::string(HEARTH_TEST_DATA) + "/tiny-v32";

// A float32 little-endian file, whole.
inline std::vector<float> read_f32(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  std::vector<float> v(std::filesystem::file_size(p) / 4);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 4));
  return v;
}

struct GoldenCase {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [tokens][vocab]
};

// expected.json's sequences with their logits, read once per process.
inline const std::vector<GoldenCase>& golden_cases() {
  static const std::vector<GoldenCase> cases = [] {
    std::ifstream f(kGoldenDir + "/expected.json");
    const nlohmann::json j = nlohmann::json::parse(f);
    std::vector<GoldenCase> out;
    for (const auto& e : j) {
      GoldenCase g;
      g.tokens = e.at("tokens").get<std::vector<int32_t>>();
      g.logits = read_f32(kGoldenDir + "/" + e.at("logits").get<std::string>());
      const auto n = e.at("shape")[0].get<size_t>() * e.at("shape")[1].get<size_t>();
      if (g.logits.size() != n) throw std::runtime_error("golden logits file of the wrong size");
      out.push_back(std::move(g));
    }
    return out;
  }();
  return cases;
}

// The golden checkpoint, loaded once per process (its weights are mapped, never copied).
inline const Model& golden_model() {
  static const Model m = Model::load(kGoldenDir);
  return m;
}

// Runs `tokens` through m on a fresh cache of `type` (16-position pages), as one prefill
// chunk or one token per step (decode), and returns all logits.
inline std::vector<float> run_tokens(const Model& m, ThreadPool& pool, const std::vector<int32_t>& tokens,
                                     bool one_at_a_time, AttentionPath path, KvCacheType type = KvCacheType::kF32) {
  const int64_t V = m.config().vocab_size;
  Forward fwd(m, pool);
  KvCache cache(m.config(), 16, type);
  const SeqId s = cache.add_sequence();
  std::vector<float> logits(tokens.size() * size_t(V));
  if (!one_at_a_time) {
    fwd.step(cache, {{s, tokens}}, logits.data(), path);
  } else {
    for (size_t i = 0; i < tokens.size(); ++i)
      fwd.step(cache, {{s, std::span<const int32_t>(&tokens[i], 1)}}, logits.data() + i * size_t(V), path);
  }
  return logits;
}

// m's logits for every golden case, one prefill step each on a fresh cache (two threads):
// [case][tokens x vocab], in golden_cases() order.
inline std::vector<std::vector<float>> golden_logits(const Model& m) {
  ThreadPool pool(2);
  std::vector<std::vector<float>> out;
  for (const GoldenCase& g : golden_cases()) {
    Forward fwd(m, pool);
    KvCache cache(m.config(), 16);
    const SeqId s = cache.add_sequence();
    std::vector<float> logits(g.tokens.size() * size_t(m.config().vocab_size));
    fwd.step(cache, {{s, g.tokens}}, logits.data(), AttentionPath::kAuto);
    out.push_back(std::move(logits));
  }
  return out;
}

// Logits for every position of g against the reference: within 1e-3 and the same argmax
// at every position.
inline void check_golden_logits(const std::vector<float>& got, const GoldenCase& g, int64_t vocab) {
  REQUIRE(got.size() == g.logits.size());
  double worst = 0.0;
  int argmax_mismatch = 0;
  for (size_t t = 0; t < g.tokens.size(); ++t) {
    const float* a = got.data() + t * size_t(vocab);
    const float* b = g.logits.data() + t * size_t(vocab);
    int64_t ia = 0, ib = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      worst = std::max(worst, double(std::fabs(a[v] - b[v])));
      if (a[v] > a[ia]) ia = v;
      if (b[v] > b[ib]) ib = v;
    }
    argmax_mismatch += ia != ib;
  }
  CHECK(worst <= 1e-3);
  CHECK(argmax_mismatch == 0);
  MESSAGE("tokens=" << g.tokens.size() << " max|dlogit|=" << worst);
}

}  // namespace hearth::testing
