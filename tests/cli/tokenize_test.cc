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

namespace fs = std::filesystem;

namespace {

const std::string kTokenizer = std::string(HEARTH_TEST_DATA) + "/tokenizer/tokenizer.json";

struct Run {
  int code;
  std::string out;  // stdout
  std::string err;  // stderr
};

struct Scratch {
  fs::path dir;
  Scratch() {
    static int counter = 0;
    dir = fs::temp_directory_path() / ("hearth-tokcli-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(dir);
  }
  ~Scratch() { fs::remove_all(dir); }
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `hearth ARGS < stdin` with stdout and stderr captured separately.
Run hearth(const std::string& args, const std::string& stdin_bytes) {
  Scratch s;
  std::ofstream(s.dir / "in", std::ios::binary) << stdin_bytes;
  const std::string cmd = std::string(HEARTH_CLI_BIN) + " " + args + " < '" + (s.dir / "in").string() + "' > '" +
                          (s.dir / "out").string() + "' 2> '" + (s.dir / "err").string() + "'";
  const int status = std::system(cmd.c_str());
  Run r{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(s.dir / "out"), slurp(s.dir / "err")};
  return r;
}

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
    const Run t = hearth("tokenize -m " + kTokenizer, text);
    INFO(t.err);
    REQUIRE(t.code == 0);
    CHECK(t.out.front() == '[');
    CHECK(t.out.back() == '\n');
    CHECK(t.out.find('\n') == t.out.size() - 1);  // one line
    const Run d = hearth("detokenize -m " + kTokenizer, t.out);
    INFO(d.err);
    REQUIRE(d.code == 0);
    CHECK(d.out == text);
  }
  CHECK(hearth("tokenize -m " + kTokenizer, "Hello! I am DeepSeek.").out == "[19923,3,342,1030,22651,4374,1465,16]\n");
  CHECK(hearth("tokenize -m " + kTokenizer, "<｜User｜>hi</think>").out == "[128803,6366,128799]\n");
}

TEST_CASE("cli: hearth tokenize --chat wraps stdin in the chat template") {
  CHECK(hearth("tokenize -m " + kTokenizer + " --chat", "hello").out == "[0,128803,33310,128804,128798]\n");
  CHECK(hearth("tokenize -m " + kTokenizer + " --chat --no-thinking", "hello").out == "[0,128803,33310,128804,128799]\n");
  // The user's text is text: a marker typed in it is not the marker token.
  const Run r = hearth("tokenize -m " + kTokenizer + " --chat", "<｜User｜>");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("128803,128803") == std::string::npos);
  // A model directory works as well as the file.
  Scratch s;
  fs::copy_file(kTokenizer, s.dir / "tokenizer.json");
  CHECK(hearth("tokenize -m " + s.dir.string() + " --chat", "hello").out == "[0,128803,33310,128804,128798]\n");
  // Padding ids past the tokenizer decode to nothing.
  CHECK(hearth("detokenize -m " + s.dir.string(), "[19923, 129279, 3]").out == "Hello!");
}

TEST_CASE("cli: hearth tokenize and detokenize reject bad input with one line") {
  Scratch s;
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
      {"tokenize -m " + s.dir.string(), "x", "no tokenizer.json"},
      {"detokenize -m " + (s.dir / "missing.json").string(), "[1]", "does not exist"},
      {"tokenize", "x", "--model is required"},
      {"tokenize -m " + kTokenizer + " --no-thinking", "x", "--no-thinking needs --chat"},
  };
  for (const Case& c : cases) {
    const Run r = hearth(c.args, c.stdin_bytes);
    INFO("hearth " << c.args << "\n" << r.err);
    CHECK(r.code != 0);
    CHECK(r.code < 128);
    CHECK(r.err.find(c.needle) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);  // exactly one line
    CHECK(r.out.empty());
  }
}
