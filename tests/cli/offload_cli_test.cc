// `hearth generate` and `hearth bench` with --offload sim: the same text as the CPU path,
// a Chrome trace of the device's work, and one-line errors for bad offload flags.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>

#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace cli_offload_cli_suite {

using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::slurp;
using hearth::testing::TempDir;

namespace {

std::string model() { return hearth::testing::tiny_chat_model_dir().string(); }

int count(const std::string& s, char c) {
  int n = 0;
  for (char x : s) n += x == c;
  return n;
}

}  // namespace

TEST_CASE("cli: generate --offload sim writes the CPU path's text and a Chrome trace") {
  TempDir s("hearth-offload");
  const std::string base = "generate -m " + model() + " -p 'Hello, world' -n 12 --temp 0 -t 2";
  const CliRun cpu = run_hearth(base);
  REQUIRE(cpu.code == 0);
  const std::string trace = (s.path / "trace.json").string();
  // Half the routed experts fit: the rest run on the CPU.
  const CliRun off = run_hearth(base + " --offload sim --place 'ffn_exps\\.[0-9]*[13579]$=cpu' --trace " + trace);
  INFO(off.err);
  REQUIRE(off.code == 0);
  CHECK(off.out == cpu.out);
  CHECK(off.err.find("offload: simulated device") != std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(slurp(trace));
  REQUIRE(j.contains("traceEvents"));
  int copies = 0, kernels = 0;
  for (const auto& e : j["traceEvents"]) {
    if (e.value("ph", "") != "X") continue;
    const std::string name = e.value("name", "");
    if (name == "attention") ++kernels;
    if (name == "hidden rows") ++copies;
    CHECK(e["dur"].get<double>() >= 0);
  }
  CHECK(kernels > 0);
  CHECK(copies > 0);
}

TEST_CASE("cli: bench --offload sim adds the device column") {
  const CliRun r = run_hearth("bench -m " + model() + " -p 8 -n 4 -r 1 -t 2 --offload sim");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("| device |") != std::string::npos);
  CHECK(r.out.find("offload: simulated device") != std::string::npos);
  CHECK(r.out.find("| sim ") != std::string::npos);
}

TEST_CASE("cli: bad offload flags get one line naming the flag") {
  const std::string base = "generate -m " + model() + " -p hi -n 2 ";
  for (const auto& [args, flag] : std::vector<std::pair<std::string, std::string>>{
           {"--offload tpu", "--offload"},
           {"--offload sim --gpu-mem lots", "--gpu-mem"},
           {"--offload sim --place 'x(=gpu'", "--place"},
           {"--offload sim --place 'attn=fpga'", "--place"},
           {"--gpu-mem 1G", "--gpu-mem"},
           {"--offload sim --gpu-mem 1K", "GPU budget"},
           {"--offload sim --expert-profile /nonexistent/p.json", "/nonexistent/p.json"},
           {"--offload sim --cuda-gemm fast", "--cuda-gemm"},         // not a policy
           {"--offload sim --cuda-gemm cublas-bf16", "--cuda-gemm"},  // only for --offload cuda
           {"--cuda-gemm kernels", "--cuda-gemm"},                    // without --offload
           {"--offload cuda --kv-cache fp8", "--kv-cache fp8: the CUDA device keeps a float cache"},
       }) {
    INFO(args);
    const CliRun r = run_hearth(base + args);
    CHECK(r.code != 0);
    CHECK(r.err.find(flag) != std::string::npos);
    CHECK(count(r.err, '\n') == 1);
  }
}

TEST_CASE("cli: prove --offload sim makes the same samples as the CPU path") {
  // The batch scheduler (shared prompt pages, copy-on-write forks, batched decode) over
  // the offloaded pass: a greedy round must give every sample the CPU's text.
  TempDir d("hearth-offload-prove");
  auto pool_texts = [](const std::filesystem::path& file) {
    std::map<std::string, std::string> texts;
    std::istringstream in(slurp(file));
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      texts[j.at("id").get<std::string>()] = j.at("text").get<std::string>();
    }
    return texts;
  };
  const std::string base = "prove -m " + model() +
                           " --problem 'Show that 2 is even.' --samples 2 --verifications 1 --rounds 1 --max-tokens 8"
                           " --no-thinking --temperature 0 -t 2 --kv-budget 64 --out '";
  const CliRun cpu = run_hearth(base + (d.path / "cpu").string() + "'");
  REQUIRE(cpu.code == 0);
  const CliRun off = run_hearth(base + (d.path / "sim").string() + "' --offload sim --place 'ffn_exps\\.[0-7]$=cpu'");
  INFO(off.err);
  REQUIRE(off.code == 0);
  CHECK(off.err.find("offload: simulated device") != std::string::npos);
  const auto a = pool_texts(d.path / "cpu" / "pool.jsonl"), b = pool_texts(d.path / "sim" / "pool.jsonl");
  CHECK(a.size() == 4);  // 2 generations, each verified once
  CHECK(a == b);
}

}  // namespace cli_offload_cli_suite
