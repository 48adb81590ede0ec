// TokenStream: what the batch scheduler streams with each token and why a request ends,
// on the real tokenizer (EOS, stop strings held back and cut, budgets, partial UTF-8).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "engine/token_stream.h"

namespace engine_token_stream_suite {

using namespace hearth;

namespace {

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::load(std::string(HEARTH_TEST_DATA) + "/tokenizer/tokenizer.json");
  return t;
}

GenerateRequest request(int64_t max_tokens, std::vector<std::string> stop = {}, bool stop_at_eos = true) {
  GenerateRequest r;
  r.max_tokens = max_tokens;
  r.stop = std::move(stop);
  r.stop_at_eos = stop_at_eos;
  return r;
}

}  // namespace

TEST_CASE("token stream: EOS ends generation without text and the stats count it") {
  const GenerateRequest req = request(10);
  TokenStream s(tok(), req, 7);
  s.admitted(3);
  const auto ids = tok().encode("Hello world");
  REQUIRE(ids.size() == 2);
  std::string out, piece;
  CHECK_FALSE(s.push(ids[0], 8, 100, piece).has_value());
  out += piece;
  CHECK_FALSE(s.push(ids[1], 9, 100, piece).has_value());
  out += piece;
  CHECK(s.push(tok().eos_id(), 10, 100, piece) == StopReason::kEos);
  CHECK(piece.empty());
  CHECK(out == "Hello world");
  const GenerationResult r = s.finish(StopReason::kEos);
  CHECK(r.text == "Hello world");
  CHECK(r.tokens == std::vector<int32_t>{ids[0], ids[1], tok().eos_id()});
  CHECK(r.stats.stop == StopReason::kEos);
  CHECK(r.stats.generated_tokens == 3);
  CHECK(r.stats.prompt_tokens == 7);
  CHECK(r.stats.reused_tokens == 3);
  CHECK(r.stats.ttft_seconds >= 0);

  // Without stop_at_eos, EOS is text like any token.
  const GenerateRequest keep = request(10, {}, false);
  TokenStream k(tok(), keep, 1);
  CHECK_FALSE(k.push(tok().eos_id(), 2, 100, piece).has_value());
  CHECK(piece == "<｜end▁of▁sentence｜>");
}

TEST_CASE("token stream: a possible stop string is held back, then cut or released") {
  const auto ids = tok().encode("Hello world");
  REQUIRE(ids.size() == 2);
  std::string piece;
  {
    const GenerateRequest req = request(10, {"lo w"});
    TokenStream s(tok(), req, 1);
    CHECK_FALSE(s.push(ids[0], 2, 100, piece).has_value());
    CHECK(piece == "Hel");  // "lo" may start the stop string
    CHECK(s.push(ids[1], 3, 100, piece) == StopReason::kStopString);
    CHECK(piece.empty());
    CHECK(s.finish(StopReason::kStopString).text == "Hel");
  }
  {
    // The budget ends it with the held-back text released with the last token.
    const GenerateRequest req = request(1, {"lo w"});
    TokenStream s(tok(), req, 1);
    CHECK(s.push(ids[0], 2, 100, piece) == StopReason::kMaxTokens);
    CHECK(piece == "Hello");
  }
  {
    // A cancel keeps the held-back text in the result without streaming it.
    const GenerateRequest req = request(10, {"lo w"});
    TokenStream s(tok(), req, 1);
    s.admitted(0);
    CHECK_FALSE(s.push(ids[0], 2, 100, piece).has_value());
    CHECK(piece == "Hel");
    s.abort();
    const GenerationResult r = s.finish(StopReason::kCancelled);
    CHECK(r.text == "Hello");
    CHECK(r.stats.stop == StopReason::kCancelled);
    CHECK(r.stats.generated_tokens == 1);
  }
  {
    // The context: the sequence holds all it may.
    const GenerateRequest req = request(10);
    TokenStream s(tok(), req, 1);
    CHECK(s.push(ids[0], 5, 5, piece) == StopReason::kContextFull);
    CHECK(piece == "Hello");
  }
}

TEST_CASE("token stream: a character split over tokens is streamed whole") {
  const std::string text = "\xF0\x9D\x94\x98\xF0\x9D\x94\x99";  // two 4-byte characters, rare enough to be byte tokens
  const auto ids = tok().encode(text);
  REQUIRE(ids.size() >= 3);
  const GenerateRequest req = request(100);
  TokenStream s(tok(), req, 1);
  std::string out, piece;
  for (int32_t id : ids) {
    CHECK_FALSE(s.push(id, 2, 100, piece).has_value());
    CHECK((piece.empty() || piece.size() % 4 == 0));
    out += piece;
  }
  CHECK(out == text);
}

}  // namespace engine_token_stream_suite
