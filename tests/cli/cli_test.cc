// Drives the `hearth` binary the way a user does: exit codes, messages, output files.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <vector>

#include "support/golden.h"
#include "support/scratch.h"

namespace cli_cli_suite {

namespace fs = std::filesystem;
using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::read_f32;
using hearth::testing::TempDir;
static const std::string& kGolden = hearth::testing::kGoldenDir;

namespace {

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  return worst;
}

}  // namespace

TEST_CASE("cli: hearth logits reproduces the golden logits through prefill, --decode and --no-mmap") {
  TempDir tmp("hearth-cli");
  const std::vector<float> expected = read_f32(kGolden + "/logits_1.f32");  // tokens 0,17,923,4,511
  for (const std::string extra : {"", " --decode", " -t 1", " --no-mmap"}) {
    const fs::path out = tmp.path / "out.f32";
    const CliRun r = run_hearth("logits -m " + kGolden + " --tokens 0,17,923,4,511 -o " + out.string() + extra);
    INFO(r.all());
    REQUIRE(r.code == 0);
    CHECK(max_abs_diff(read_f32(out), expected) <= 1e-3);
    CHECK(!fs::exists(out.string() + ".tmp"));
  }
}

TEST_CASE("cli: hearth info reports the configuration and byte counts") {
  const CliRun r = run_hearth("info -m " + kGolden);
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(r.all().find("deepseek_v32") != std::string::npos);
  CHECK(r.all().find("routed experts") != std::string::npos);
  CHECK(r.all().find("top-8 keys") != std::string::npos);
  // 3 MoE layers x 16 experts x 3 matrices of 96x256 FP8 values = 3.54 M params.
  CHECK(r.all().find("3.54 M") != std::string::npos);
}

TEST_CASE("cli: bad input gives one clear line and a non-zero exit") {
  TempDir tmp("hearth-cli");
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"", "usage"},
      {"frobnicate", "unknown command 'frobnicate'"},
      {"logits -m " + kGolden + " --tokens 0,x,3 -o " + (tmp.path / "a").string(), "'x' is not a token id"},
      {"logits -m " + kGolden + " --tokens 0,5000 -o " + (tmp.path / "a").string(), "outside the vocabulary"},
      {"logits -m " + kGolden + " --tokens 0 -o " + (tmp.path / "a").string() + " --bogus", "bogus"},
      {"logits -m " + kGolden + " -o " + (tmp.path / "a").string(), "--tokens is required"},
      {"logits -m " + (tmp.path / "nope").string() + " --tokens 0 -o " + (tmp.path / "a").string(), "does not exist"},
      {"info -m " + tmp.path.string(), "config.json"},
      {"logits -m " + kGolden + " --tokens 0 -o " + (tmp.path / "no-dir" / "a.f32").string(), "cannot write"},
      {"logits -m " + kGolden + " --tokens 0 -o " + (tmp.path / "a").string() + " -t x", "-t: 'x' is not a valid value"},
      {"generate -m " + kGolden + " --prompt hi --temp=warm", "--temp: 'warm' is not a valid value"},
  };
  for (const Case& c : cases) {
    const CliRun r = run_hearth(c.args);
    INFO("hearth " << c.args << "\n" << r.all());
    CHECK(r.code != 0);
    CHECK(r.code < 128);  // an error exit, not a crash
    CHECK(r.all().find(c.needle) != std::string::npos);
  }
}

TEST_CASE("cli: a model whose checkpoint lacks a tensor names it") {
  TempDir tmp("hearth-cli");
  // Same config, but a checkpoint holding only the embeddings.
  fs::copy_file(kGolden + "/config.json", tmp.path / "config.json");
  std::ifstream in(kGolden + "/model.safetensors", std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  in.read(header.data(), std::streamsize(n));
  const std::string hdr = R"({"model.embed_tokens.weight":{"dtype":"BF16","shape":[1024,256],"data_offsets":[0,524288]}})";
  std::string padded = hdr + std::string((8 - hdr.size() % 8) % 8, ' ');
  std::ofstream out(tmp.path / "model.safetensors", std::ios::binary);
  const uint64_t len = padded.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << padded << std::string(524288, '\0');
  out.close();
  const CliRun r = run_hearth("logits -m " + tmp.path.string() + " --tokens 0 -o " + (tmp.path / "x").string());
  INFO(r.all());
  CHECK(r.code == 1);
  CHECK(r.all().find("missing tensor") != std::string::npos);
}

}  // namespace cli_cli_suite
