// `hearth tokenize -m FILE.gguf`: the tokenizer comes from the GGUF file's metadata and
// must give the ids tokenizer.json gives. The GGUF here carries only tokenizer metadata.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/gguf_tokenizer.h"
#include "engine/tokenizer.h"
#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace cli_gguf_tokenize_suite {

namespace fs = std::filesystem;
using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::TempDir;

namespace {

const std::string kTokenizer = std::string(HEARTH_TEST_DATA) + "/tokenizer/tokenizer.json";

void check_one_line_error(const CliRun& r, const std::string& needle) {
  INFO(r.err);
  CHECK(r.code != 0);
  CHECK(r.code < 128);
  CHECK(r.out.empty());
  CHECK(r.err.find(needle) != std::string::npos);
  CHECK(r.err.find('\n') == r.err.size() - 1);
}

}  // namespace

TEST_CASE("cli: hearth tokenize -m a .gguf file uses the tokenizer in its metadata") {
  TempDir s("hearth-ggufcli");
  const fs::path gguf = s.path / "model.gguf";
  const hearth::Tokenizer json_tok = hearth::Tokenizer::load(kTokenizer);
  {
    hearth::GgufWriter w(gguf);
    w.add("general.architecture", "deepseek2");
    hearth::GgufTokenizerExtras x;
    x.vocab_size = 129280;
    hearth::add_gguf_tokenizer(w, json_tok, x);
    w.finish();
  }
  // One text with CJK, emoji, whitespace runs and markers: the ids tokenizer.json gives.
  const std::string text =
      "Hello! I am DeepSeek.\n证明：对任意正整数n，n^3-n能被6整除。 emoji 😀🎉 \t tabs\r\nCRLF  "
      "<｜User｜>markers are tokens</think><｜Assistant｜>";
  std::string want = "[";
  for (int32_t id : json_tok.encode(text)) want += (want.size() > 1 ? "," : "") + std::to_string(id);
  want += "]\n";
  CHECK(want.find(",128803,") != std::string::npos);  // the marker is one token
  const CliRun got = run_hearth("tokenize -m " + gguf.string(), text);
  INFO(got.err);
  REQUIRE(got.code == 0);
  CHECK(got.out == want);
  const CliRun back = run_hearth("detokenize -m " + gguf.string(), got.out);
  REQUIRE(back.code == 0);
  CHECK(back.out == text);
  CHECK(run_hearth("tokenize -m " + gguf.string(), "Hello! I am DeepSeek.").out == "[19923,3,342,1030,22651,4374,1465,16]\n");
  CHECK(run_hearth("tokenize -m " + gguf.string() + " --chat", "hello").out == "[0,128803,33310,128804,128798]\n");
  // Padding ids of the GGUF vocab decode to nothing.
  CHECK(run_hearth("detokenize -m " + gguf.string(), "[19923, 128815, 129279, 3]").out == "Hello!");
}

TEST_CASE("cli: a .gguf file without a tokenizer is a one-line error") {
  TempDir s("hearth-ggufcli");
  const fs::path bare = s.path / "bare.gguf";
  {
    hearth::GgufWriter w(bare);
    w.add("general.architecture", "deepseek2");
    w.finish();
  }
  check_one_line_error(run_hearth("tokenize -m " + bare.string(), "x"), bare.string() + " has no tokenizer.ggml.tokens");
  const fs::path wrong = s.path / "wrong.gguf";
  {
    hearth::GgufWriter w(wrong);
    w.add("tokenizer.ggml.model", "llama");
    w.add("tokenizer.ggml.tokens", std::vector<std::string>{"a"});
    w.finish();
  }
  check_one_line_error(run_hearth("detokenize -m " + wrong.string(), "[0]"), "tokenizer.ggml.model: 'llama'");
  // generate loads the tokenizer before the model: the same error, with the flag to use.
  check_one_line_error(run_hearth("generate -m " + bare.string() + " -p hi -n 1"),
                       bare.string() + " has no tokenizer.ggml.tokens (no tokenizer inside); pass --tokenizer FILE");
  check_one_line_error(run_hearth("generate -m " + bare.string() + " --tokenizer " + (s.path / "none.json").string() + " -p hi"),
                       "--tokenizer: '" + (s.path / "none.json").string() + "' is not a file");
  // With --tokenizer the GGUF's (missing) tokenizer is not looked at; what fails next is
  // the model itself, which has no tensors.
  const CliRun g = run_hearth("generate -m " + bare.string() + " --tokenizer " + kTokenizer + " -p hi -n 1");
  INFO(g.err);
  CHECK(g.code != 0);
  CHECK(g.code < 128);
  CHECK(g.err.find("tokenizer.ggml") == std::string::npos);
}

TEST_CASE("cli: hearth generate --tokenizer replaces the model's tokenizer") {
  // The tiny chat model without its tokenizer.json (the weights linked, not copied).
  const fs::path model = hearth::testing::tiny_chat_model_dir();
  TempDir s("hearth-ggufcli");
  for (const auto& e : fs::directory_iterator(model))
    if (e.path().filename() != "tokenizer.json") fs::create_symlink(e.path(), s.path / e.path().filename());
  const std::string args = " -p 'Hello, world' -n 6 --seed 3";
  const CliRun want = run_hearth("generate -m " + model.string() + args);
  INFO(want.err);
  REQUIRE(want.code == 0);
  const CliRun without = run_hearth("generate -m " + s.path.string() + args);
  check_one_line_error(without, "tokenizer.json not found");
  CHECK(without.err.find("--tokenizer FILE") != std::string::npos);
  const CliRun got = run_hearth("generate -m " + s.path.string() + " --tokenizer " + kTokenizer + args);
  INFO(got.err);
  REQUIRE(got.code == 0);
  CHECK(got.out == want.out);
}

}  // namespace cli_gguf_tokenize_suite
