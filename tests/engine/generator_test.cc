// The generator on a tiny synthetic model with the real tokenizer: greedy decoding against
// an independent argmax over Forward's logits, cache reuse, stop conditions, errors.
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "engine/generator.h"
#include "support/tiny_chat_model.h"

namespace engine_generator_suite {

using namespace hearth;

namespace {

using Fixture = testing::TinyChat;

GenerateRequest greedy(int64_t n) {
  GenerateRequest r;
  r.sampling.temperature = 0;
  r.max_tokens = n;
  return r;
}

// Greedy decoding through Forward directly: all-position logits for the prompt, then
// one token at a time through the absorbed decode path; argmax over the tokenizer's ids.
std::vector<int32_t> reference_greedy(const Fixture& f, const std::vector<int32_t>& prompt, int n) {
  ThreadPool pool(2);
  Forward fwd(f.model, pool);
  KvCache cache(f.model.config());
  const SeqId seq = cache.add_sequence();
  const int64_t V = f.model.config().vocab_size;
  std::vector<float> logits(prompt.size() * size_t(V));
  fwd.step(cache, {{seq, prompt}}, logits.data(), AttentionPath::kPrefill);
  const float* row = logits.data() + (prompt.size() - 1) * size_t(V);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    int32_t best = 0;
    for (int32_t id = 1; id < int32_t(f.tok.size()); ++id)
      if (row[id] > row[best]) best = id;
    out.push_back(best);
    fwd.step(cache, {{seq, std::span<const int32_t>(&out.back(), 1)}}, logits.data(), AttentionPath::kDecode);
    row = logits.data();
  }
  return out;
}

}  // namespace

TEST_CASE("generator: greedy decoding is deterministic and matches argmax over Forward's logits") {
  Fixture f;
  REQUIRE(f.model.config().vocab_size == 129280);
  const auto prompt = f.prompt("The quick brown fox");
  Generator gen(f.model, f.tok, {2, 0});
  std::string streamed;
  const GenerationResult a = gen.generate(prompt, greedy(12), [&](std::string_view t) { streamed += t; });
  CHECK(a.tokens.size() == 12);
  CHECK(a.stats.stop == StopReason::kMaxTokens);
  CHECK(a.stats.prompt_tokens == int64_t(prompt.size()));
  CHECK(a.stats.generated_tokens == 12);
  CHECK(a.stats.decode_tok_s > 0);
  CHECK(a.stats.ttft_seconds > 0);
  CHECK(a.tokens == reference_greedy(f, prompt, 12));
  CHECK(streamed == a.text);
  CHECK(a.text == f.tok.decode(a.tokens));
  for (int32_t id : a.tokens) CHECK(id < f.tok.size());

  Generator other(f.model, f.tok, {1, 0});  // another instance, another thread count
  CHECK(other.generate(prompt, greedy(12)).tokens == a.tokens);
  gen.reset();
  CHECK(gen.generate(prompt, greedy(12)).tokens == a.tokens);
}

TEST_CASE("generator: a prompt extending the cached ids prefills only the new suffix") {
  Fixture f;
  const auto p1 = f.prompt("Once upon a time");
  Generator gen(f.model, f.tok, {2, 0});
  const GenerationResult r1 = gen.generate(p1, greedy(4));
  CHECK(r1.stats.reused_tokens == 0);
  // The cache holds the prompt and the generated tokens but the last.
  CHECK(gen.cached_ids().size() == p1.size() + 3);

  std::vector<int32_t> p2 = p1;
  p2.insert(p2.end(), r1.tokens.begin(), r1.tokens.end());
  const auto more = f.tok.encode(" and then");
  p2.insert(p2.end(), more.begin(), more.end());
  const GenerationResult r2 = gen.generate(p2, greedy(5));
  CHECK(r2.stats.reused_tokens == int64_t(p1.size() + 3));
  Generator fresh(f.model, f.tok, {2, 0});
  CHECK(fresh.generate(p2, greedy(5)).tokens == r2.tokens);

  // A prompt departing from the cache keeps only the common prefix.
  std::vector<int32_t> p3(p1.begin(), p1.begin() + 2);
  const auto other = f.tok.encode(" different story");
  p3.insert(p3.end(), other.begin(), other.end());
  const GenerationResult r3 = gen.generate(p3, greedy(5));
  CHECK(r3.stats.reused_tokens == 2);
  CHECK(fresh.generate(p3, greedy(5)).tokens == r3.tokens);
  // The same prompt again: everything but its last token is reused.
  const GenerationResult r4 = gen.generate(p3, greedy(5));
  CHECK(r4.stats.reused_tokens == int64_t(p3.size() - 1));
  CHECK(r4.tokens == r3.tokens);
}

TEST_CASE("generator: stop strings across token boundaries and the token budget") {
  Fixture f;
  const auto prompt = f.prompt("Write a story:");
  Generator gen(f.model, f.tok, {2, 0});
  const GenerationResult full = gen.generate(prompt, greedy(16));
  REQUIRE(full.tokens.size() == 16);

  // A stop string made of the end of token 5's text and the start of token 6's.
  const std::string t5 = f.tok.token_bytes(full.tokens[5]), t6 = f.tok.token_bytes(full.tokens[6]);
  REQUIRE(!t5.empty());
  REQUIRE(!t6.empty());
  const std::string stop = t5.substr(t5.size() - 1) + t6.substr(0, 1);
  const size_t at = full.text.find(stop);
  REQUIRE(at != std::string::npos);
  GenerateRequest req = greedy(16);
  req.stop = {"never appears \x01", stop};
  std::string streamed;
  const GenerationResult r = gen.generate(prompt, req, [&](std::string_view t) { streamed += t; });
  CHECK(r.stats.stop == StopReason::kStopString);
  CHECK(r.text == full.text.substr(0, at));
  CHECK(streamed == r.text);
  CHECK(r.tokens.size() <= 7);

  const GenerationResult b = gen.generate(prompt, greedy(3));
  CHECK(b.tokens.size() == 3);
  CHECK(b.stats.stop == StopReason::kMaxTokens);
  CHECK(b.tokens == std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + 3));

  // Sampling with a seed reproduces, and never picks a padding id.
  GenerateRequest s;
  s.sampling.seed = 5;
  s.max_tokens = 8;
  const GenerationResult s1 = gen.generate(prompt, s), s2 = gen.generate(prompt, s);
  CHECK(s1.tokens == s2.tokens);
  for (int32_t id : s1.tokens) CHECK(id < f.tok.size());
}

TEST_CASE("generator: context limit and cancel flag and errors") {
  Fixture f;
  Generator gen(f.model, f.tok, {2, 10});
  CHECK(gen.context() == 10);
  CHECK_THROWS_WITH_AS(gen.generate({}, greedy(4)), doctest::Contains("empty"), std::invalid_argument);
  const std::vector<int32_t> eleven(11, 100);
  CHECK_THROWS_WITH_AS(gen.generate(eleven, greedy(4)), doctest::Contains("context holds only 10"), std::invalid_argument);
  const std::vector<int32_t> bad = {0, 200000};
  CHECK_THROWS_WITH_AS(gen.generate(bad, greedy(4)), doctest::Contains("outside the vocabulary"), std::invalid_argument);
  GenerateRequest zero = greedy(0);
  CHECK_THROWS_AS(gen.generate(eleven, zero), std::invalid_argument);

  // A prompt of 7 tokens leaves room to feed back 3: 4 tokens, then the context is full.
  const std::vector<int32_t> seven(7, 100);
  const GenerationResult r = gen.generate(seven, greedy(100));
  CHECK(r.tokens.size() == 4);
  CHECK(r.stats.stop == StopReason::kContextFull);
  const std::vector<int32_t> ten(10, 100);
  CHECK(gen.generate(ten, greedy(100)).tokens.size() == 1);

  std::atomic<bool> cancel{true};
  const GenerationResult c = gen.generate(seven, greedy(100), {}, &cancel);
  CHECK(c.stats.stop == StopReason::kCancelled);
  CHECK(c.tokens.empty());
  // Cancelled from the text callback (as a signal handler would): stops at the next token.
  Generator big(f.model, f.tok, {2, 0});
  cancel = false;
  int chunks = 0;
  const GenerationResult d = big.generate(seven, greedy(100), [&](std::string_view) {
    if (++chunks == 3) cancel = true;
  }, &cancel);
  CHECK(d.stats.stop == StopReason::kCancelled);
  CHECK(d.tokens.size() < 10);

  CHECK_THROWS_AS(Generator(f.model, f.tok, {1, -1}), std::invalid_argument);
}

}  // namespace engine_generator_suite
