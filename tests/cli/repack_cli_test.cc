// `--repack TYPE` through the CLI: logits and info convert at load, bad names are errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/golden.h"
#include "support/scratch.h"

namespace cli_repack_cli_suite {

namespace fs = std::filesystem;
using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::read_f32;
using hearth::testing::TempDir;
static const std::string& kGolden = hearth::testing::kGoldenDir;

TEST_CASE("cli repack: hearth logits --repack f32 and q8_0 follow the golden logits") {
  TempDir tmp("hearth-repack");
  const std::vector<float> expected = read_f32(kGolden + "/logits_1.f32");  // tokens 0,17,923,4,511
  const int64_t V = 1024;
  for (const std::string type : {"F32", "q8_0"}) {
    const fs::path out = tmp.path / "out.f32";
    const CliRun r = run_hearth("logits -m " + kGolden + " --tokens 0,17,923,4,511 -t 2 --repack " + type + " -o " +
                                out.string());
    INFO(type << "\n" << r.all());
    REQUIRE(r.code == 0);
    const std::vector<float> got = read_f32(out);
    REQUIRE(got.size() == expected.size());
    double worst = 0;
    int same = 0;
    for (int64_t t = 0; t < 5; ++t) {
      int64_t ig = 0, ie = 0;
      for (int64_t v = 0; v < V; ++v) {
        const size_t i = size_t(t * V + v);
        worst = std::max(worst, double(std::fabs(got[i] - expected[i])));
        if (got[i] > got[size_t(t * V + ig)]) ig = v;
        if (expected[i] > expected[size_t(t * V + ie)]) ie = v;
      }
      same += ig == ie;
    }
    if (type == "F32") CHECK(worst <= 1e-3);
    CHECK(same == 5);
  }
}

TEST_CASE("cli repack: hearth info --repack reports the formats and the converted sizes") {
  const CliRun plain = run_hearth("info -m " + kGolden);
  const CliRun r = run_hearth("info -m " + kGolden + " --repack q4_k -t 2");
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(r.all().find("repack       to Q4_K:") != std::string::npos);
  CHECK(r.all().find("Q8_0") != std::string::npos);  // 96-, 128- and 192-wide rows fall back
  CHECK(plain.all().find("repack") == std::string::npos);
  CHECK(r.out != plain.out);
}

TEST_CASE("cli repack: an unknown type is a one-line error naming it") {
  TempDir tmp("hearth-repack");
  for (const std::string& args : {"logits -m " + kGolden + " --tokens 0 --repack q9_9 -o " + (tmp.path / "a").string(),
                                 "info -m " + kGolden + " --repack q9_9",
                                 "generate -m " + kGolden + " -p hi --repack q9_9"}) {
    const CliRun r = run_hearth(args);
    INFO("hearth " << args << "\n" << r.all());
    CHECK(r.code != 0);
    CHECK(r.code < 128);
    CHECK(r.all().find("--repack: 'q9_9'") != std::string::npos);
  }
}

}  // namespace cli_repack_cli_suite

namespace cli_repack_cli_suite {

TEST_CASE("cli repack: Q4_K weights are interleaved by default, --no-interleave keeps them, cuda never gets them") {
  TempDir tmp("hearth-interleave");
  const CliRun info = run_hearth("info -m " + kGolden + " --repack q4_k -t 2");
  INFO(info.all());
  REQUIRE(info.code == 0);
  CHECK(info.out.find("interleave   121 Q4_K weights as Q4_K_R8") != std::string::npos);
  const CliRun kept = run_hearth("info -m " + kGolden + " --repack q4_k --no-interleave -t 2");
  CHECK(kept.code == 0);
  CHECK(kept.out.find("interleave") == std::string::npos);
  // Nothing to interleave (FP8): no line.
  const CliRun fp8 = run_hearth("info -m " + kGolden + " -t 2");
  CHECK(fp8.code == 0);
  CHECK(fp8.out.find("interleave") == std::string::npos);

  // The same tokens through the plain and the interleaved Q4_K model: rounding apart, the
  // same network (the top token at every position of this sequence).
  const int64_t V = 1024;
  std::vector<std::vector<float>> outs;
  for (const std::string flags : {" --no-interleave", ""}) {
    const fs::path out = tmp.path / "out.f32";
    const CliRun r = run_hearth("logits -m " + kGolden + " --tokens 0,17,923,4,511 -t 2 --repack q4_k" + flags +
                                " -o " + out.string());
    INFO(flags << "\n" << r.all());
    REQUIRE(r.code == 0);
    outs.push_back(read_f32(out));
  }
  REQUIRE(outs[0].size() == size_t(5 * V));
  REQUIRE(outs[1].size() == outs[0].size());
  CHECK(outs[0] != outs[1]);  // another kernel ran
  for (int64_t t = 0; t < 5; ++t) {
    auto top = [&](const std::vector<float>& l) {
      return std::max_element(l.begin() + t * V, l.begin() + (t + 1) * V) - l.begin();
    };
    CHECK(top(outs[0]) == top(outs[1]));
  }
}

}  // namespace cli_repack_cli_suite
