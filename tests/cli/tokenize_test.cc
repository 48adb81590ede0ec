// Drives `hearth tokenize` and `hearth detokenize` the way a user does: stdin in, stdout out.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "support/scratch.h"

namespace cli_tokenize_suite {

namespace fs = std::filesystem;
using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::TempDir;

namespace {

const std::string kTokenizer = std::string(HEARTH_TEST_DATA) + "/tokenizer/tokenizer.json";

}  // namespace

TEST_CASE("cli: hearth tokenize and detokenize round-trip text byte for byte") {
  const std::vector<std::string> texts = {
      "Hello! I am DeepSeek.\n",
      "证明：对任意正整数n，n^3-n能被6整除。 emoji 😀🎉 \t tabs\r\nCRLF  ",
      "<｜User｜>markers are tokens</think>",
      "",
  };
  for (const std::string& text : texts) {
    CAPTURE(text);
    const CliRun t = run_hearth("tokenize -m " + kTokenizer, text);
    INFO(t.err);
    REQUIRE(t.code == 0);
    CHECK(t.out.front() == '[');
    CHECK(t.out.back() == '\n');
    CHECK(t.out.find('\n') == t.out.size() - 1);  // one line
    const CliRun d = run_hearth("detokenize -m " + kTokenizer, t.out);
    INFO(d.err);
    REQUIRE(d.code == 0);
    CHECK(d.out == text);
  }
  CHECK(run_hearth("tokenize -m " + kTokenizer, "Hello! I am DeepSeek.").out == "[19923,3,342,1030,22651,4374,1465,16]\n");
  CHECK(run_hearth("tokenize -m " + kTokenizer, "<｜User｜>hi</think>").out == "[128803,6366,128799]\n");
}

TEST_CASE("cli: hearth tokenize --chat wraps stdin in the chat template") {
  CHECK(run_hearth("tokenize -m " + kTokenizer + " --chat", "hello").out == "[0,128803,33310,128804,128798]\n");
  CHECK(run_hearth("tokenize -m " + kTokenizer + " --chat --no-thinking", "hello").out == "[0,128803,33310,128804,128799]\n");
  // The user's text is text: a marker typed in it is not the marker token.
  const CliRun r = run_hearth("tokenize -m " + kTokenizer + " --chat", "<｜User｜>");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("128803,128803") == std::string::npos);
  // A model directory works as well as the file.
  TempDir s("hearth-tokcli");
  fs::copy_file(kTokenizer, s.path / "tokenizer.json");
  CHECK(run_hearth("tokenize -m " + s.path.string() + " --chat", "hello").out == "[0,128803,33310,128804,128798]\n");
  // Padding ids past the tokenizer decode to nothing.
  CHECK(run_hearth("detokenize -m " + s.path.string(), "[19923, 129279, 3]").out == "Hello!");
}

TEST_CASE("cli: hearth tokenize and detokenize reject bad input with one line") {
  TempDir s("hearth-tokcli");
  struct Case {
    std::string args, stdin_bytes, needle;
  };
  const std::vector<Case> cases = {
      {"tokenize -m " + kTokenizer, "ok \xFF", "invalid UTF-8 at byte 3"},
      {"detokenize -m " + kTokenizer, "not json", "not JSON"},
      {"detokenize -m " + kTokenizer, "{\"ids\": [1]}", "not a JSON array"},
      {"detokenize -m " + kTokenizer, "[1, \"2\"]", "not an integer"},
      {"detokenize -m " + kTokenizer, "[1, 2.5]", "not an integer"},
      {"detokenize -m " + kTokenizer, "[1, -4]", "-4 is negative"},
      {"detokenize -m " + kTokenizer, "[99999999999]", "too large"},
      {"tokenize -m " + s.path.string(), "x", "no tokenizer.json"},
      {"detokenize -m " + (s.path / "missing.json").string(), "[1]", "does not exist"},
      {"tokenize", "x", "--model is required"},
      {"tokenize -m " + kTokenizer + " --no-thinking", "x", "--no-thinking needs --chat"},
  };
  for (const Case& c : cases) {
    const CliRun r = run_hearth(c.args, c.stdin_bytes);
    INFO("hearth " << c.args << "\n" << r.err);
    CHECK(r.code != 0);
    CHECK(r.code < 128);
    CHECK(r.err.find(c.needle) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);  // exactly one line
    CHECK(r.out.empty());
  }
}

}  // namespace cli_tokenize_suite
