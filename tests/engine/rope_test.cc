// Rotary embeddings (engine/rope.h): the rotations against a double-precision reference,
// and angles computed once per position against angles computed per call.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/config.h"
#include "engine/rope.h"
#include "engine/synth.h"

namespace engine_rope_suite {

using namespace hearth;

ModelConfig tiny_config(const std::vector<std::string>& sets) {
  return ModelConfig::from_json(synth_config_json("tiny", sets), "synthetic tiny");
}

TEST_CASE("rope: without scaling, pairs and halves turn by pos / theta^(2i/dim)") {
  const ModelConfig c = tiny_config({"rope_scaling=null"});
  const Rope rope(c);
  const int64_t dim = rope.dim(), half = dim / 2;
  REQUIRE(dim == c.qk_rope_head_dim);
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t pos : {0, 1, 37, 4095, 100000}) {
    CAPTURE(pos);
    std::vector<float> x(static_cast<size_t>(dim));
    for (float& v : x) v = g(rng);
    std::vector<float> pairs = x, halves = x;
    rope.apply_interleaved(pairs.data(), pos);
    rope.apply_halves(halves.data(), pos);
    for (int64_t i = 0; i < half; ++i) {
      // The reference's float32 frequency, then the angle and its rotation in double.
      const double a = double(float(pos) * (1.0f / std::pow(float(c.rope_theta), float(2 * i) / float(dim))));
      const double cs = std::cos(a), sn = std::sin(a);
      const double p0 = x[size_t(2 * i)], p1 = x[size_t(2 * i + 1)];
      CHECK(pairs[size_t(2 * i)] == doctest::Approx(p0 * cs - p1 * sn).epsilon(1e-5));
      CHECK(pairs[size_t(2 * i + 1)] == doctest::Approx(p0 * sn + p1 * cs).epsilon(1e-5));
      const double h0 = x[size_t(i)], h1 = x[size_t(i + half)];
      CHECK(halves[size_t(i)] == doctest::Approx(h0 * cs - h1 * sn).epsilon(1e-5));
      CHECK(halves[size_t(i + half)] == doctest::Approx(h0 * sn + h1 * cs).epsilon(1e-5));
    }
  }
}

TEST_CASE("rope: a position's angles computed once rotate every head to the same bits") {
  const Rope rope(tiny_config({}));  // YaRN, as the presets have it
  const int64_t dim = rope.dim(), heads = 5;
  std::mt19937 rng(8);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t pos : {0, 3, 5000, 163839}) {
    CAPTURE(pos);
    std::vector<float> x(static_cast<size_t>(heads * dim));
    for (float& v : x) v = g(rng);
    float cs[kMaxRopeFreqs], sn[kMaxRopeFreqs];
    rope.angles(pos, cs, sn);
    std::vector<float> once = x, per_call = x, once_h = x, per_call_h = x;
    for (int64_t h = 0; h < heads; ++h) {
      rope.apply_interleaved(once.data() + h * dim, cs, sn);
      rope.apply_interleaved(per_call.data() + h * dim, pos);
      rope.apply_halves(once_h.data() + h * dim, cs, sn);
      rope.apply_halves(per_call_h.data() + h * dim, pos);
    }
    CHECK(once == per_call);
    CHECK(once_h == per_call_h);
    if (pos > 0) CHECK(once != x);  // it did rotate
  }
}

}  // namespace engine_rope_suite
