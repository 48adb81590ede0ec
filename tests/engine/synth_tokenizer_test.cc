// hearth synth --tokenizer: the tokenizer travels with the checkpoint and the vocabulary
// grows to cover its ids.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "engine/config.h"
#include "engine/synth.h"
#include "support/tiny_chat_model.h"

#include "support/scratch.h"

namespace engine_synth_tokenizer_suite {

namespace fs = std::filesystem;
using hearth::testing::TempDir;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}


}  // namespace

TEST_CASE("synth tokenizer: id count and the DeepSeek vocabulary") {
  const fs::path real = fs::path(HEARTH_TEST_DATA) / "tokenizer/tokenizer.json";
  CHECK(hearth::tokenizer_id_count(real) == 128815);
  const fs::path dir = hearth::testing::tiny_chat_model_dir();  // synthesized with --tokenizer
  CHECK(hearth::ModelConfig::load(dir / "config.json").vocab_size == 129280);
  CHECK(slurp(dir / "tokenizer.json") == slurp(real));
}

TEST_CASE("synth tokenizer: other sizes round up to 128 and a larger vocabulary stays") {
  TempDir tmp;
  const fs::path tok = tmp.path / "tokenizer.json";
  std::ofstream(tok) << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1999}},
                            "added_tokens": [{"id": 2000, "content": "<x>"}]})";
  CHECK(hearth::tokenizer_id_count(tok) == 2001);
  hearth::SynthOptions o;
  o.out_dir = tmp.path / "m";
  o.tokenizer = tok;
  o.log = nullptr;
  CHECK(hearth::synthesize_checkpoint(o).config.vocab_size == 2048);
  CHECK(fs::exists(o.out_dir / "tokenizer.json"));
  o.out_dir = tmp.path / "m2";
  o.sets = {"vocab_size=4096"};
  CHECK(hearth::synthesize_checkpoint(o).config.vocab_size == 4096);

  std::ofstream(tok) << R"({"added_tokens": []})";
  o.out_dir = tmp.path / "m3";
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("no model.vocab"), std::runtime_error);
  o.tokenizer = tmp.path / "missing.json";
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("cannot open the tokenizer"), std::runtime_error);
  CHECK(!fs::exists(tmp.path / "m3"));
}

}  // namespace engine_synth_tokenizer_suite
