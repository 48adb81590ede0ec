// `hearth generate` and `hearth chat` driven as a user would: exit codes, streams, and an
// interactive chat session through a pseudo-terminal (typing, Ctrl-C, commands).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace cli_generate_suite {

namespace fs = std::filesystem;
using hearth::testing::CliRun;
using hearth::testing::count_lines;
using hearth::testing::run_hearth;
using hearth::testing::slurp;
using hearth::testing::TempDir;

namespace {

std::string model() { return hearth::testing::tiny_chat_model_dir().string(); }

// A `hearth chat` child on a pseudo-terminal; every wait is bounded.
class PtySession {
 public:
  explicit PtySession(const std::vector<std::string>& args) {
    std::vector<std::string> argv_s = {HEARTH_CLI_BIN, "chat"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    pid_ = forkpty(&master_, nullptr, nullptr, nullptr);
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (std::string& a : argv_s) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~PtySession() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) close(master_);
  }

  void type(const std::string& s) { REQUIRE(write(master_, s.data(), s.size()) == ssize_t(s.size())); }

  // Waits until `needle` appears in the output after position `from`; returns the
  // position just past it, or fails the test after `seconds`.
  size_t wait_for(const std::string& needle, size_t from, double seconds = 30) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      const size_t at = out_.find(needle, from);
      if (at != std::string::npos) return at + needle.size();
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) {
        INFO("output so far: " << out_);
        FAIL("timed out waiting for '" << needle << "'");
      }
      pump(int(std::min<long long>(left, 200)));
    }
  }

  // Reads whatever arrives within `ms`.
  void pump(int ms) {
    pollfd pfd{master_, POLLIN, 0};
    if (poll(&pfd, 1, ms) > 0) {
      char buf[4096];
      const ssize_t n = read(master_, buf, sizeof buf);
      if (n > 0) out_.append(buf, size_t(n));
      else usleep(useconds_t(ms) * 1000);  // EIO once the child is gone
    }
  }

  // The exit status, or fails after `seconds`.
  int wait_exit(double seconds = 20) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      pump(50);
    }
    INFO("output so far: " << out_);
    FAIL("the chat did not exit");
    return -1;
  }

  const std::string& output() const { return out_; }

 private:
  pid_t pid_ = -1;
  int master_ = -1;
  bool exited_ = false;
  std::string out_;
};

}  // namespace

TEST_CASE("cli: hearth generate streams text and reports the statistics") {
  const CliRun r = run_hearth("generate -m " + model() + " -p 'Hello, world' -n 8 --seed 1");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(!r.out.empty());
  for (const char* s : {"prompt: 4 tokens", "prefill", "generated: 8 tokens", "decode", "tok/s", "time to first token"})
    CHECK(r.err.find(s) != std::string::npos);
  // Same seed, same text; -f reads the prompt from a file or stdin.
  TempDir s("hearth-gen");
  std::ofstream(s.path / "prompt.txt", std::ios::binary) << "Hello, world";
  CHECK(run_hearth("generate -m " + model() + " -f " + (s.path / "prompt.txt").string() + " -n 8 --seed 1").out == r.out);
  CHECK(run_hearth("generate -m " + model() + " -f - -n 8 --seed 1", "Hello, world").out == r.out);
  CHECK(run_hearth("generate -m " + model() + " -p 'Hello, world' -n 8 --seed 2").out != r.out);
}

TEST_CASE("cli: hearth generate --chat routes the reasoning") {
  const std::string base = "generate -m " + model() + " -p 'What is 1+1?' --chat -n 6 --temp 0";
  const CliRun show = run_hearth(base);
  INFO(show.err);
  REQUIRE(show.code == 0);
  // Six tokens of a random model never reach </think>: everything is reasoning, plain
  // (no escape codes) because stdout is not a terminal.
  REQUIRE(show.out.size() > 1);
  CHECK(show.out.find('\x1b') == std::string::npos);
  const CliRun hide = run_hearth(base + " --reasoning hide");
  CHECK(hide.code == 0);
  CHECK(hide.out.empty());
  const CliRun separate = run_hearth(base + " --reasoning separate");
  CHECK(separate.code == 0);
  CHECK(separate.out.empty());
  CHECK(separate.err.find(show.out.substr(0, show.out.size() - 1)) != std::string::npos);
  const CliRun plain = run_hearth(base + " --no-thinking --reasoning hide");  // no reasoning to hide
  CHECK(plain.code == 0);
  CHECK(!plain.out.empty());
  CHECK(plain.err.find("prompt: 11 tokens") != std::string::npos);  // BOS, User, 7 text tokens, Assistant, </think>
}

TEST_CASE("cli: hearth generate rejects bad input with one line") {
  TempDir s("hearth-gen");
  std::ofstream(s.path / "bad.txt", std::ios::binary) << "ok \xff\xfe then";
  std::ofstream(s.path / "empty.txt", std::ios::binary) << "";
  const std::string m = " -m " + model();
  const std::string golden = std::string(HEARTH_TEST_DATA) + "/tiny-v32";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"generate -m " + golden + " -p hi", "tokenizer.json not found"},
      {"generate" + m + " -f " + (s.path / "bad.txt").string(), "not valid UTF-8 (byte offset 3)"},
      {"generate" + m + " -f " + (s.path / "empty.txt").string(), "the prompt is empty"},
      {"generate" + m + " -p ''", "the prompt is empty"},
      {"generate" + m + " -f " + (s.path / "missing.txt").string(), "cannot read prompt file"},
      {"generate" + m + " -p 'a long prompt of several tokens' --ctx 4", "context holds only 4"},
      {"generate" + m + " -p hi --ctx 99999999", "exceeds the model's context"},
      {"generate" + m + " -p hi --temp -1", "--temp: must be a finite number"},
      {"generate" + m + " -p hi --temp abc", "abc"},
      {"generate" + m + " -p hi --top-p 0", "--top-p must be in (0, 1]"},
      {"generate" + m + " -p hi --top-p 1.5", "--top-p must be in (0, 1]"},
      {"generate" + m + " -p hi --top-k -3", "--top-k must be >= 0"},
      {"generate" + m + " -p hi --min-p 2", "--min-p must be in [0, 1]"},
      {"generate" + m + " -p hi -n 0", "--max-tokens: must be at least 1"},
      {"generate" + m + " -p hi --reasoning loud", "--reasoning: 'loud' is not one of"},
      {"generate" + m + " -p hi --stop ''", "--stop: the stop string is empty"},
      {"generate" + m + " -p hi -f x", "exactly one of -p TEXT or -f FILE"},
      {"generate" + m, "exactly one of -p TEXT or -f FILE"},
      {"generate" + m + " -p hi --cpu-gemm mkl", "--cpu-gemm: unknown choice 'mkl'"},
      {"generate -p hi", "--model is required"},
  };
  for (const auto& [args, message] : cases) {
    const CliRun r = run_hearth(args);
    INFO(args);
    INFO(r.err);
    CHECK(r.code != 0);
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(count_lines(r.err) == 1);
    CHECK(r.out.empty());
  }
}

TEST_CASE("cli: hearth chat on a terminal with turns and commands and Ctrl-C") {
  TempDir s("hearth-gen");
  const std::string saved = (s.path / "chat.json").string(), empty = (s.path / "empty.json").string();
  {
    PtySession chat({"-m", model(), "-n", "6", "--temp", "0", "--system", "Be brief."});
    size_t at = chat.wait_for("> ", 0);
    chat.type("What is 2+2?\n");
    at = chat.wait_for("time to first token", at);
    CHECK(chat.output().find("\x1b[2m", 0) != std::string::npos);  // reasoning is faint on a terminal
    at = chat.wait_for("> ", at);
    chat.type("/save " + saved + "\n");
    at = chat.wait_for("(saved 2 messages", at);
    at = chat.wait_for("> ", at);
    const nlohmann::json j = nlohmann::json::parse(slurp(saved));
    CHECK(j["format"] == "hearth-chat");
    CHECK(j["system"] == "Be brief.");
    REQUIRE(j["messages"].size() == 2);
    CHECK(j["messages"][0]["role"] == "user");
    CHECK(j["messages"][0]["content"] == "What is 2+2?");
    CHECK(j["messages"][1]["role"] == "assistant");
    CHECK(!fs::exists(saved + ".tmp"));
    chat.type("/reset\n");
    at = chat.wait_for("(conversation cleared)", at);
    chat.type("/save " + empty + "\n");
    at = chat.wait_for("(saved 0 messages", at);
    chat.type("/load " + saved + "\n");
    at = chat.wait_for("(loaded 2 messages", at);
    chat.type("/bogus\n");
    at = chat.wait_for("unknown command /bogus", at);
    chat.type("/help\n");
    at = chat.wait_for("/quit", at);
    chat.type("/quit\n");
    CHECK(chat.wait_exit() == 0);
  }
  CHECK(nlohmann::json::parse(slurp(empty))["messages"].empty());
  {
    // A long answer stopped by Ctrl-C; the session goes on; Ctrl-C at the prompt leaves.
    PtySession chat({"-m", model(), "-n", "100000", "--seed", "3"});
    size_t at = chat.wait_for("> ", 0);
    chat.type("Tell me a very long story.\n");
    at = chat.wait_for("story.", at);
    const size_t before = chat.output().size();
    for (int i = 0; i < 100 && chat.output().size() < before + 40; ++i) chat.pump(50);  // some answer streamed
    chat.type("\x03");
    at = chat.wait_for("(stopped)", at);
    at = chat.wait_for("stop: cancelled", at);
    at = chat.wait_for("> ", at);
    chat.type("/save " + saved + "\n");
    at = chat.wait_for("(saved 0 messages", at);  // the stopped turn is not kept
    at = chat.wait_for("> ", at);
    chat.type("\x03");
    CHECK(chat.wait_exit() == 0);
  }
}

}  // namespace cli_generate_suite
