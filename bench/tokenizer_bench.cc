// tokenizer_bench TOKENIZER_JSON CASES_JSON [--min-bytes N] [--seconds S]
// Encodes the texts of CASES_JSON ([{"text", "ids"}]) at least N bytes long (default
// 1000: the long proof texts) on one thread, repeatedly for S seconds (default 3), after
// checking each against its expected ids. Prints the load time, MB/s and tokens/s.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tokenizer.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON CASES_JSON [--min-bytes N] [--seconds S]\n", argv[0]);
    return 2;
  }
  size_t min_bytes = 1000;
  double seconds = 3.0;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--min-bytes")) min_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    else if (!std::strcmp(argv[i], "--seconds")) seconds = std::strtod(argv[i + 1], nullptr);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }

  const double t0 = now();
  const hearth::Tokenizer tok = hearth::Tokenizer::load(argv[1]);
  const double load_s = now() - t0;

  std::ifstream f(argv[2], std::ios::binary);
  if (!f) throw std::runtime_error(std::string(argv[2]) + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  const nlohmann::json cases = nlohmann::json::parse(ss.str());
  std::vector<std::string> texts;
  size_t bytes = 0, mismatches = 0;
  for (const auto& c : cases) {
    std::string text = c.at("text").get<std::string>();
    if (text.size() < min_bytes) continue;
    if (tok.encode(text) != c.at("ids").get<std::vector<int32_t>>()) ++mismatches;
    bytes += text.size();
    texts.push_back(std::move(text));
  }
  if (texts.empty()) throw std::runtime_error("no text of at least " + std::to_string(min_bytes) + " bytes");

  size_t rounds = 0, tokens = 0;
  const double t1 = now();
  double elapsed = 0;
  do {
    for (const std::string& t : texts) tokens += tok.encode(t).size();
    ++rounds;
    elapsed = now() - t1;
  } while (elapsed < seconds);

  std::printf("load %.3f s, %zu texts (%zu bytes, >= %zu each), %zu mismatching the expected ids\n", load_s,
              texts.size(), bytes, min_bytes, mismatches);
  std::printf("encode: %.2f MB/s, %.0f tokens/s (%zu rounds in %.2f s, one thread)\n", double(bytes * rounds) / elapsed / 1e6,
              double(tokens) / elapsed, rounds, elapsed);
  return mismatches ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: error: %s\n", e.what());
    return 1;
  }
}
