// Perplexity and KL divergence (engine/eval.*): the math on hand-made distributions with
// closed-form answers, and the chunked evaluation against the test's own double-precision
// computation over Forward's logits on tiny synthetic models with the real tokenizer.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/eval.h"
#include "engine/forward.h"
#include "engine/synth.h"
#include "engine/tokenizer.h"
#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace engine_eval_suite {

using namespace hearth;

namespace {

constexpr int64_t kCtx = 16;
const char* kText =
    "The quick brown fox jumps over the lazy dog. A proof by induction first checks the base case, "
    "then shows that the statement for n implies the statement for n + 1. Every positive integer "
    "greater than one is a product of primes, and that factorization is unique up to order.";

struct Fixture {
  Model model = Model::load(testing::tiny_chat_model_dir().string());
  Tokenizer tok = Tokenizer::load(testing::tiny_chat_model_dir() / "tokenizer.json");

  std::vector<int32_t> tokens() const {
    std::vector<int32_t> ids{tok.bos_id()};
    const auto body = tok.encode(kText, /*parse_special=*/false);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  }
  EvalOptions options(int64_t chunks) const {
    EvalOptions o;
    o.ctx = kCtx;
    o.max_chunks = chunks;
    o.n_vocab = tok.size();
    o.bos = tok.bos_id();
    return o;
  }
};

// The test's own reference: log-softmax rows in double over the first n ids.
std::vector<double> log_softmax(const float* row, int64_t n) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double(row[i]));
  double z = 0;
  for (int64_t i = 0; i < n; ++i) z += std::exp(double(row[i]) - mx);
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = double(row[i]) - mx - std::log(z);
  return out;
}

// All-position logits of one chunk (BOS in front) from an empty cache.
std::vector<float> chunk_logits(const Model& m, std::vector<int32_t> chunk, int32_t bos) {
  ThreadPool pool(2);
  Forward fwd(m, pool);
  KvCache cache(m.config());
  const SeqId seq = cache.add_sequence();
  chunk[0] = bos;
  std::vector<float> logits(chunk.size() * size_t(m.config().vocab_size));
  fwd.step(cache, {{seq, chunk}}, logits.data(), AttentionPath::kAuto, false);
  return logits;
}

std::vector<int32_t> chunk_of(const std::vector<int32_t>& tokens, int64_t c) {
  return {tokens.begin() + c * kCtx, tokens.begin() + (c + 1) * kCtx};
}

}  // namespace

TEST_CASE("eval: log-sum-exp, NLL and KL on hand-made distributions match closed forms") {
  // P = (1/2, 1/2), Q = (9/10, 1/10): KL = 1/2 ln(25/9) = ln(5/3).
  const std::vector<float> p = {std::log(0.5f), std::log(0.5f)};
  const std::vector<float> q = {std::log(0.9f), std::log(0.1f)};
  CHECK(kl_divergence(p, q) == doctest::Approx(std::log(5.0 / 3.0)).epsilon(1e-6));
  // KL(Q || P) = 0.9 ln 1.8 + 0.1 ln 0.2.
  CHECK(kl_divergence(q, p) == doctest::Approx(0.9 * std::log(1.8) + 0.1 * std::log(0.2)).epsilon(1e-6));
  // Softmax ignores a constant shift of the logits.
  const std::vector<float> q_shifted = {q[0] + 40.0f, q[1] + 40.0f};
  CHECK(kl_divergence(p, q_shifted) == doctest::Approx(std::log(5.0 / 3.0)).epsilon(1e-5));
  // Uniform over n against Q ∝ (e^a, 1, ..., 1): KL = ln(e^a + n - 1) - ln n - a/n.
  const int n = 1000;
  const float a = 3.0f;
  std::vector<float> uniform(n, 0.0f), peaked(n, 0.0f);
  peaked[17] = a;
  CHECK(kl_divergence(uniform, peaked) == doctest::Approx(std::log(std::exp(3.0) + n - 1) - std::log(n) - 3.0 / n).epsilon(1e-9));
  // Identical rows: exactly zero.
  CHECK(kl_divergence(peaked, peaked) == 0.0);
  CHECK(kl_divergence(q, q) == 0.0);
  // Large logits neither overflow nor underflow: P ≈ (1, e^-1000), Q = (1/2, 1/2) → ln 2.
  const std::vector<float> sharp = {1000.0f, 0.0f}, flat = {0.0f, 0.0f};
  CHECK(kl_divergence(sharp, flat) == doctest::Approx(std::log(2.0)).epsilon(1e-12));
  CHECK(log_sum_exp(sharp) == doctest::Approx(1000.0).epsilon(1e-12));
  CHECK(std::isinf(kl_divergence(flat, std::vector<float>{0.0f, -INFINITY})));  // Q has no mass where P has
  CHECK(kl_divergence(std::vector<float>{0.0f, -INFINITY}, flat) == doctest::Approx(std::log(2.0)));  // 0·log 0 = 0

  // NLL: logits (0, ln 3) → p = (1/4, 3/4).
  const std::vector<float> l = {0.0f, std::log(3.0f)};
  CHECK(negative_log_likelihood(l, 0) == doctest::Approx(std::log(4.0)).epsilon(1e-7));
  CHECK(negative_log_likelihood(l, 1) == doctest::Approx(std::log(4.0 / 3.0)).epsilon(1e-6));
  CHECK_THROWS_AS(negative_log_likelihood(l, 2), std::invalid_argument);
  CHECK_THROWS_AS(kl_divergence(l, std::vector<float>{0.0f}), std::invalid_argument);

  // Restricting the softmax to the first ids (the tokenizer's) drops the padding's mass.
  const std::vector<float> padded = {std::log(0.5f), std::log(0.5f), 50.0f};
  CHECK(kl_divergence(std::span(padded).first(2), q) == doctest::Approx(std::log(5.0 / 3.0)).epsilon(1e-6));

  CHECK(argmax(std::vector<float>{1, 3, 3, 2}) == 1);  // ties: the first
}

TEST_CASE("eval: summary statistics interpolate percentiles between ranks") {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);  // unsorted on purpose
  const Summary s = summarize(v);
  CHECK(s.mean == doctest::Approx(50.5));
  CHECK(s.median == doctest::Approx(50.5));
  CHECK(s.p99 == doctest::Approx(99.01));
  CHECK(s.max == 100.0);
  const Summary one = summarize({0.25});
  CHECK(one.mean == 0.25);
  CHECK(one.median == 0.25);
  CHECK(one.p99 == 0.25);
  CHECK(one.max == 0.25);
  CHECK(summarize({}).max == 0.0);
}

TEST_CASE("eval: perplexity equals exp of the mean NLL computed directly from Forward logits") {
  Fixture f;
  const std::vector<int32_t> tokens = f.tokens();
  REQUIRE(int64_t(tokens.size()) >= 2 * kCtx);
  ThreadPool pool(2);
  std::vector<int64_t> progress;
  EvalOptions o = f.options(2);
  o.progress = [&](const EvalProgress& p) {
    progress.push_back(p.chunk);
    CHECK(p.chunks == 2);
    CHECK(p.scored == p.chunk * (kCtx - 1 - kCtx / 2));
  };
  const PerplexityResult r = evaluate_perplexity(f.model, pool, tokens, o);
  CHECK(progress == std::vector<int64_t>{1, 2});

  // The reference: llama.cpp's window, rows [ctx/2, ctx-1) predict the next token.
  std::vector<double> nll;
  for (int64_t c = 0; c < 2; ++c) {
    const std::vector<int32_t> chunk = chunk_of(tokens, c);
    const std::vector<float> logits = chunk_logits(f.model, chunk, f.tok.bos_id());
    for (int64_t pos = kCtx / 2; pos < kCtx - 1; ++pos) {
      const auto lp = log_softmax(logits.data() + pos * f.model.config().vocab_size, f.tok.size());
      nll.push_back(-lp[size_t(chunk[size_t(pos + 1)])]);
    }
  }
  REQUIRE(r.nll.size() == nll.size());
  CHECK(r.chunks == 2);
  double sum = 0;
  for (size_t i = 0; i < nll.size(); ++i) {
    CHECK(r.nll[i] == doctest::Approx(nll[i]).epsilon(1e-12));
    sum += nll[i];
  }
  const double expected = std::exp(sum / double(nll.size()));
  CHECK(r.mean_nll == doctest::Approx(sum / double(nll.size())).epsilon(1e-12));
  CHECK(r.perplexity == doctest::Approx(expected).epsilon(1e-12));
  CHECK(r.perplexity > 1.0);

  // The padding ids are outside the softmax: over the whole padded vocabulary the numbers differ.
  EvalOptions padded = f.options(1);
  padded.n_vocab = 0;
  const PerplexityResult rp = evaluate_perplexity(f.model, pool, tokens, padded);
  REQUIRE(rp.nll.size() == size_t(kCtx - 1 - kCtx / 2));
  CHECK(rp.nll[0] != doctest::Approx(r.nll[0]).epsilon(1e-9));
  CHECK(rp.nll[0] > r.nll[0]);  // more ids share the mass
}

TEST_CASE("eval: KLD of a model against itself is exactly zero with full top-1 agreement") {
  Fixture f;
  const Model again = Model::load(testing::tiny_chat_model_dir().string());
  ThreadPool pool(2);
  const std::vector<int32_t> tokens = f.tokens();
  const KldResult r = evaluate_kld(f.model, again, pool, tokens, f.options(2));
  REQUIRE(r.kld.size() == size_t(2 * (kCtx - 1 - kCtx / 2)));
  for (double k : r.kld) CHECK(k == 0.0);
  for (uint8_t s : r.top1_same) CHECK(s == 1);
  CHECK(r.kld_summary.mean == 0.0);
  CHECK(r.kld_summary.max == 0.0);
  CHECK(r.top1_agreement == 1.0);
  CHECK(r.base.perplexity == r.candidate.perplexity);
  CHECK(r.base_bytes == r.candidate_bytes);
  CHECK(r.base_bytes == uint64_t(f.model.footprint().total().bytes));
  // The base side is the plain perplexity.
  const PerplexityResult p = evaluate_perplexity(f.model, pool, tokens, f.options(2));
  CHECK(r.base.perplexity == p.perplexity);
}

TEST_CASE("eval: KLD between two different models matches a direct double-precision KL") {
  Fixture f;
  testing::TempDir dir("hearth-eval");
  SynthOptions so;
  so.out_dir = dir.path / "other";
  so.preset = "tiny";
  so.seed = 8;
  so.sets = {"num_nextn_predict_layers=0"};
  so.tokenizer = std::filesystem::path(HEARTH_TEST_DATA) / "tokenizer/tokenizer.json";
  so.log = nullptr;
  synthesize_checkpoint(so);
  const Model other = Model::load(so.out_dir.string());
  REQUIRE(other.config().vocab_size == f.model.config().vocab_size);

  ThreadPool pool(3);
  const std::vector<int32_t> tokens = f.tokens();
  const KldResult r = evaluate_kld(f.model, other, pool, tokens, f.options(2));

  const int64_t V = f.model.config().vocab_size, n = f.tok.size();
  std::vector<double> kld, nll_a, nll_b;
  int64_t agree = 0;
  for (int64_t c = 0; c < 2; ++c) {
    const std::vector<int32_t> chunk = chunk_of(tokens, c);
    const std::vector<float> la = chunk_logits(f.model, chunk, f.tok.bos_id());
    const std::vector<float> lb = chunk_logits(other, chunk, f.tok.bos_id());
    for (int64_t pos = kCtx / 2; pos < kCtx - 1; ++pos) {
      const auto pa = log_softmax(la.data() + pos * V, n), pb = log_softmax(lb.data() + pos * V, n);
      double k = 0;
      for (int64_t i = 0; i < n; ++i) k += std::exp(pa[size_t(i)]) * (pa[size_t(i)] - pb[size_t(i)]);
      kld.push_back(k);
      const int32_t next = chunk[size_t(pos + 1)];
      nll_a.push_back(-pa[size_t(next)]);
      nll_b.push_back(-pb[size_t(next)]);
      agree += std::max_element(pa.begin(), pa.end()) - pa.begin() == std::max_element(pb.begin(), pb.end()) - pb.begin();
    }
  }
  REQUIRE(r.kld.size() == kld.size());
  double sum = 0, sa = 0, sb = 0;
  for (size_t i = 0; i < kld.size(); ++i) {
    CHECK(kld[i] > 0);
    CHECK(r.kld[i] == doctest::Approx(kld[i]).epsilon(1e-9));
    sum += kld[i], sa += nll_a[i], sb += nll_b[i];
  }
  std::vector<double> sorted = kld;
  std::sort(sorted.begin(), sorted.end());
  CHECK(r.kld_summary.mean == doctest::Approx(sum / double(kld.size())).epsilon(1e-9));
  CHECK(r.kld_summary.max == doctest::Approx(sorted.back()).epsilon(1e-9));
  CHECK(r.kld_summary.median == doctest::Approx(summarize(kld).median).epsilon(1e-9));
  CHECK(r.kld_summary.mean > 0);
  CHECK(r.top1_agreement == doctest::Approx(double(agree) / double(kld.size())));
  CHECK(r.base.perplexity == doctest::Approx(std::exp(sa / double(kld.size()))).epsilon(1e-12));
  CHECK(r.candidate.perplexity == doctest::Approx(std::exp(sb / double(kld.size()))).epsilon(1e-12));
  CHECK(r.candidate_bytes == uint64_t(other.footprint().total().bytes));
}

TEST_CASE("eval: bad inputs are rejected with what is wrong") {
  Fixture f;
  ThreadPool pool(1);
  const std::vector<int32_t> tokens = f.tokens();
  EvalOptions o = f.options(0);
  const std::vector<int32_t> few(tokens.begin(), tokens.begin() + 10);
  try {
    evaluate_perplexity(f.model, pool, few, o);
    FAIL("no error for a short text");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("10 tokens") != std::string::npos);
  }
  o.ctx = 2;
  CHECK_THROWS_AS(evaluate_perplexity(f.model, pool, tokens, o), std::invalid_argument);
  o.ctx = kCtx;
  o.max_chunks = -1;
  CHECK_THROWS_AS(eval_chunk_count(100, o), std::invalid_argument);
  o.max_chunks = 0;
  CHECK(eval_chunk_count(47, o) == 2);
  o.max_chunks = 1;
  CHECK(eval_chunk_count(47, o) == 1);
  std::vector<int32_t> bad = tokens;
  bad[5] = int32_t(f.tok.size());  // a padding id: not scoreable
  CHECK_THROWS_AS(evaluate_perplexity(f.model, pool, bad, o), std::invalid_argument);
  o.ctx = f.model.config().max_position_embeddings + 1;
  try {
    evaluate_perplexity(f.model, pool, tokens, o);
    FAIL("no error for a chunk past the model's context");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("exceeds the model's context") != std::string::npos);
  }

  const Model small = Model::load(std::string(HEARTH_TEST_DATA) + "/tiny-v32");  // vocab 1024
  try {
    evaluate_kld(f.model, small, pool, tokens, f.options(1));
    FAIL("no error for different vocabularies");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("vocabularies differ") != std::string::npos);
  }
}

}  // namespace engine_eval_suite
