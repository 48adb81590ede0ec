// Shared test helpers: scratch directories, whole-file reads, and running the CLI.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace hearth::testing {

// A fresh directory under the system temp dir, removed with everything in it. Names
// carry the pid because CTest runs test cases as parallel processes.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "hearth") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// Deterministic, non-repeating-looking bytes for round-trip tests.
inline std::vector<uint8_t> pattern(uint64_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = uint8_t(seed * 31 + i * 7 + (i >> 8));
  return v;
}

// The number of newline characters in s (one per line of a command's output).
inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct CliRun {
  int code;         // exit status, or 128 + signal
  std::string out;  // stdout
  std::string err;  // stderr
  std::string all() const { return out + err; }
};

// Runs `hearth ARGS` (ARGS is shell text) with `stdin_text` on its standard input, under
// a 60 s timeout so a hang fails the test instead of stalling the suite.
inline CliRun run_hearth(const std::string& args, const std::string& stdin_text = "") {
  TempDir s("hearth-cli");
  const auto in = s.path / "in", out = s.path / "out", err = s.path / "err";
  std::ofstream(in, std::ios::binary) << stdin_text;
  const std::string cmd = "timeout 60 " + std::string(HEARTH_CLI_BIN) + " " + args + " < '" + in.string() +
                          "' > '" + out.string() + "' 2> '" + err.string() + "'";
  const int status = std::system(cmd.c_str());
  return CliRun{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(out), slurp(err)};
}

}  // namespace hearth::testing
