// hearth bench through the CLI: the table, the JSON, the profile, the RAM refusal and
// the flag errors. No timing thresholds: only that numbers are there and positive.
#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/synth.h"
#include "quant/weight_matrix.h"
#include "support/scratch.h"

namespace cli_bench_suite {

using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::TempDir;

namespace {

// The markdown table's rows by test name: every cell, trimmed.
std::map<std::string, std::vector<std::string>> table_rows(const std::string& md) {
  std::map<std::string, std::vector<std::string>> rows;
  std::istringstream in(md);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| ", 0) != 0 || line.find("---") != std::string::npos) continue;
    std::vector<std::string> cells;
    size_t pos = 1;
    while (pos < line.size()) {
      const size_t bar = line.find('|', pos);
      if (bar == std::string::npos) break;
      std::string cell = line.substr(pos, bar - pos);
      cell.erase(0, cell.find_first_not_of(' '));
      cell.erase(cell.find_last_not_of(' ') + 1);
      cells.push_back(cell);
      pos = bar + 1;
    }
    if (cells.size() >= 7 && cells[0] != "model") rows[cells[5]] = cells;
  }
  return rows;
}

// Options that keep the runs short.
const std::string kQuick = " -p 16 -n 4 --batch 1,2 -r 1 -t 2";

}  // namespace

TEST_CASE("cli bench: the tiny synthetic preset gives a table with every test and positive numbers") {
  const CliRun r = run_hearth("bench --synthetic tiny" + kQuick);
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(r.out.find("read bandwidth: ") != std::string::npos);
  CHECK(r.out.find("always active: ") != std::string::npos);
  CHECK(r.out.find("weights read where they lie: ") != std::string::npos);
  const auto rows = table_rows(r.out);
  for (const std::string name : {"pp16", "tg4", "tg4@b2"}) {
    CAPTURE(name);
    REQUIRE(rows.count(name) == 1);
    const std::vector<std::string>& c = rows.at(name);
    REQUIRE(c.size() == 13);
    CHECK(c[0] == "tiny (synthetic)");
    CHECK(c[1].find("GiB") != std::string::npos);
    CHECK(c[3] == "F8_E4M3");
    CHECK(c[4] == "2");
    CHECK(std::atof(c[6].c_str()) > 0);  // "mean ± sd"
    CHECK(c[6].find(" ± ") != std::string::npos);
    if (name == "pp16") {
      CHECK(c[7] == "-");
      CHECK(c[11] == "-");
    } else {
      CHECK(std::atof(c[7].c_str()) > 0);   // MB/step
      CHECK(std::atof(c[8].c_str()) > 0);   // GB/s read around the test
      CHECK(std::atof(c[9].c_str()) > 0);   // wall t/s
      CHECK(std::atof(c[10].c_str()) > 0);  // efficiency %
      // wall t/s = GB/s / MB per step * batch (1 for tg4, 2 for tg4@b2), to the printed digits
      // (MB/step has one decimal: about 5.0 here, so up to 1 % off).
      const double wall = std::atof(c[8].c_str()) * 1e3 / std::atof(c[7].c_str()) * (name == "tg4" ? 1 : 2);
      CHECK(std::atof(c[9].c_str()) == doctest::Approx(wall).epsilon(0.02));
      // The weights' own read rate, and the efficiency against its wall: t/s over
      // (weights GB/s / MB per step * batch), to the printed digits.
      CHECK(std::atof(c[11].c_str()) > 0);
      const double weights_wall = std::atof(c[11].c_str()) * 1e3 / std::atof(c[7].c_str()) * (name == "tg4" ? 1 : 2);
      CHECK(std::atof(c[12].c_str()) == doctest::Approx(100 * std::atof(c[6].c_str()) / weights_wall).epsilon(0.03));
    }
  }
  CHECK(rows.size() == 3);
  CHECK(r.out.find("per-phase") == std::string::npos);  // no --profile
}

TEST_CASE("cli bench: -o json has the model, the bandwidth and every test's fields") {
  const CliRun r = run_hearth("bench --synthetic tiny --type q8_0 -o json" + kQuick);
  INFO(r.all());
  REQUIRE(r.code == 0);
  const nlohmann::json j = nlohmann::json::parse(r.out);
  CHECK(j["model"]["name"] == "tiny (synthetic)");
  CHECK(j["model"]["quant"] == "Q8_0");
  CHECK(j["model"]["params"].get<int64_t>() > 0);
  CHECK(j["model"]["size_bytes"].get<int64_t>() > 0);
  CHECK(j["model"]["always_active_bytes"]["head"].get<int64_t>() > 0);
  CHECK(j["bandwidth"]["bytes_per_second"].get<double>() > 0);
  CHECK(j["bandwidth"]["threads"] == 2);
  CHECK(j["cpu_kernels"] == hearth::isa_name(hearth::cpu_isa()));
  CHECK(j["cpu_gemm"] == "kernels");
  CHECK(j["mapped_weights"]["bytes"] == 0);  // synthetic: built in memory
  CHECK(j["mapped_weights"]["populated"] == false);
  REQUIRE(j["tests"].size() == 3);
  std::vector<std::string> names;
  for (const auto& t : j["tests"]) {
    names.push_back(t["name"]);
    CHECK(t["mean"].get<double>() > 0);
    CHECK(t["tok_s"].size() == 1);
    if (t["kind"] == "tg") {
      CHECK(t["bytes_per_step"].get<double>() ==
            doctest::Approx(t["routed_bytes_per_step"].get<double>() + t["always_active_bytes_per_step"].get<double>()));
      CHECK(t["experts_per_layer"].get<double>() >= 4);
      CHECK(t["bandwidth_bytes_per_second"].get<double>() > 0);
      CHECK(t["wall_tok_s"].get<double>() ==
            doctest::Approx(t["bandwidth_bytes_per_second"].get<double>() / t["bytes_per_step"].get<double>() *
                            t["batch"].get<double>()));
      CHECK(t["efficiency"].get<double>() > 0);
      CHECK_FALSE(t.contains("profile"));
    } else {
      CHECK_FALSE(t.contains("wall_tok_s"));
    }
  }
  CHECK(names == std::vector<std::string>{"pp16", "tg4", "tg4@b2"});
}

TEST_CASE("cli bench: --profile adds the per-phase table and --depth the @d tests") {
  const CliRun r = run_hearth("bench --synthetic tiny --profile -p 0 -n 3 --depth 10 -r 1 -t 1");
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(table_rows(r.out).count("tg3@d10") == 1);
  CHECK(r.out.find("per-phase") != std::string::npos);
  for (const char* phase : {"| attention (MLA) |", "| indexer |", "| router |", "| routed experts |", "| shared experts |",
                            "| dense MLP |", "| head |", "| sampling |", "| other |", "| total |"})
    CHECK_MESSAGE(r.out.find(phase) != std::string::npos, phase);
  // The same depth written as random cache entries (tiny has the V3.2 indexer, so its
  // FP8 keys and scales are filled too): the decode test runs on top of them.
  const CliRun rnd = run_hearth("bench --synthetic tiny -p 0 -n 3 --depth 40 --depth-fill random -r 1 -t 1");
  INFO(rnd.all());
  REQUIRE(rnd.code == 0);
  CHECK(table_rows(rnd.out).count("tg3@d40") == 1);
  const CliRun j = run_hearth("bench --synthetic tiny --profile -p 0 -n 3 -r 1 -t 1 -o json");
  REQUIRE(j.code == 0);
  const nlohmann::json p = nlohmann::json::parse(j.out)["tests"][0]["profile"];
  double percent = 0;
  for (const auto& [k, v] : p["percent"].items()) percent += v.get<double>();
  CHECK(percent == doctest::Approx(100.0));
  CHECK(p["total_ms_per_token"].get<double>() > 0);
}

TEST_CASE("cli bench: --kv-cache fp8 runs the tests on an FP8 latent cache and says so") {
  // Depth written both ways (random entries go through KvCache::write_latent, a prefill
  // through the forward pass), and a decode test on top of each.
  const CliRun f = run_hearth("bench --synthetic tiny -p 0 -n 2 --depth 40 -r 1 -t 2 -o json");
  const CliRun r = run_hearth("bench --synthetic tiny --kv-cache fp8 -p 0 -n 2 --depth 40 --depth-fill random -r 1 -t 2 -o json");
  const CliRun p = run_hearth("bench --synthetic tiny --kv-cache fp8 -p 0 -n 2 --depth 40 -r 1 -t 2 -o json");
  INFO(f.all() << r.all() << p.all());
  REQUIRE(f.code == 0);
  REQUIRE(r.code == 0);
  REQUIRE(p.code == 0);
  const std::string f32 = nlohmann::json::parse(f.out)["kv_cache"], fp8 = nlohmann::json::parse(r.out)["kv_cache"];
  CHECK(f32.rfind("f32 latents, ", 0) == 0);
  CHECK(fp8.rfind("fp8 latents, ", 0) == 0);
  CHECK(nlohmann::json::parse(p.out)["kv_cache"] == fp8);
  // Bytes per position: the number after the comma, smaller for fp8.
  CHECK(std::stol(fp8.substr(13)) < std::stol(f32.substr(13)));
  for (const CliRun* run : {&r, &p}) {
    const nlohmann::json j = nlohmann::json::parse(run->out);
    REQUIRE(j["tests"].size() == 1);
    CHECK(j["tests"][0]["name"] == "tg2@d40");
    CHECK(j["tests"][0]["mean"].get<double>() > 0);
  }
}

TEST_CASE("cli bench: a model directory") {
  TempDir tmp("hearth-bench-m");
  hearth::SynthOptions so;
  so.out_dir = tmp.path / "tinymodel";
  so.log = nullptr;
  hearth::synthesize_checkpoint(so);
  const CliRun r = run_hearth("bench -m " + so.out_dir.string() + " --repack q8_0 -p 8 -n 2 -r 1 -t 1");
  INFO(r.all());
  REQUIRE(r.code == 0);
  const auto rows = table_rows(r.out);
  REQUIRE(rows.count("tg2") == 1);
  CHECK(rows.at("tg2")[0] == "tinymodel");
  CHECK(rows.at("tg2")[3] == "Q8_0");
  // The weights the repack left in the safetensors files (embeddings, router) are read in
  // place, their pages mapped at load.
  CHECK(r.out.find("GB read in place from the checkpoint, page tables filled at load\n") != std::string::npos);
}

TEST_CASE("cli bench: v32-full in f32 is refused before anything is allocated") {
  const CliRun r = run_hearth("bench --synthetic v32-full --type f32 -p 16 -n 4 -r 1");
  INFO(r.all());
  CHECK(r.code != 0);
  CHECK(r.out.empty());
  CHECK(r.err.find("synthetic v32-full model in F32") != std::string::npos);
  CHECK(r.err.find("GiB of weights, ") != std::string::npos);
  CHECK(r.err.find(", but only ") != std::string::npos);
  CHECK(r.err.find("building") == std::string::npos);  // no tensor was generated
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("cli bench: --isa runs and reports the chosen kernels and refuses what the CPU lacks") {
  const CliRun r = run_hearth("bench --synthetic tiny --type q8_0 --isa scalar -p 0 -n 2 -r 1 -t 2");
  INFO(r.all());
  REQUIRE(r.code == 0);
  const bool capped = hearth::cpu_isa() != hearth::KernelIsa::kScalar;
  CHECK(r.out.find(std::string("cpu kernels: scalar") + (capped ? " (limited; the CPU has " : "\n")) !=
        std::string::npos);
  CHECK(table_rows(r.out).count("tg2") == 1);
  if (!hearth::has_vnni(hearth::cpu_isa())) {
    const CliRun v = run_hearth("bench --synthetic tiny --isa avx512vnni -p 0 -n 2 -r 1");
    CHECK(v.code != 0);
    CHECK_MESSAGE(v.err.find("--isa avx512vnni: this CPU lacks it (its best is ") != std::string::npos, v.err);
  }
  if (!hearth::has_bf16(hearth::cpu_isa())) {
    const CliRun v = run_hearth("bench --synthetic tiny --isa avx512bf16 -p 0 -n 2 -r 1");
    CHECK(v.code != 0);
    CHECK_MESSAGE(v.err.find("--isa avx512bf16: this CPU lacks it (its best is ") != std::string::npos, v.err);
  }
  // The AVX-512 F/BW level: runs where the CPU has it, refused where it does not.
  const CliRun w = run_hearth("bench --synthetic tiny --type q8_0 --isa avx512 -p 0 -n 2 -r 1 -t 2");
  if (hearth::has_avx512(hearth::cpu_isa())) {
    CHECK_MESSAGE(w.code == 0, w.all());
    const bool below = hearth::cpu_isa() != hearth::KernelIsa::kAvx512;
    const std::string limited = std::string(" (limited; the CPU has ") + hearth::isa_name(hearth::cpu_isa()) + ")";
    CHECK_MESSAGE(w.out.find(std::string("cpu kernels: avx512") + (below ? limited : "\n")) !=
                      std::string::npos,
                  w.out);
  } else {
    CHECK(w.code != 0);
    CHECK_MESSAGE(w.err.find("--isa avx512: this CPU lacks it (its best is ") != std::string::npos, w.err);
  }
}

TEST_CASE("cli bench: --cpu-gemm onednn runs the FP8 prefill through oneDNN and says so") {
  // The synthetic model is FP8 (as a Hugging Face checkpoint) unless --type says otherwise.
  const CliRun r = run_hearth("bench --synthetic tiny --cpu-gemm onednn -p 32 -n 2 -r 1 -t 2 -o json");
  INFO(r.all());
  REQUIRE(r.code == 0);
  const nlohmann::json j = nlohmann::json::parse(r.out);
  CHECK(j["model"]["quant"] == "F8_E4M3");
  const std::string gemm = j["cpu_gemm"];
  CHECK(gemm.rfind("onednn (oneDNN ", 0) == 0);
  CHECK(gemm.find("float weights from 16 rows") != std::string::npos);
  REQUIRE(j["tests"].size() == 2);
  for (const auto& t : j["tests"]) CHECK(t["mean"].get<double>() > 0);
}

TEST_CASE("cli bench: bad flags are one-line errors naming the flag") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bench", "exactly one of --model and --synthetic"},
      {"bench --synthetic tiny -m x", "exactly one of --model and --synthetic"},
      {"bench --synthetic tiny --batch 1,x", "--batch: '1,x' is not a comma-separated list"},
      {"bench --synthetic tiny --batch 0", "--batch: 0 is below 1"},
      {"bench --synthetic tiny -r 0", "-r/--repetitions"},
      {"bench --synthetic tiny -p 0 -n 0", "no test to run"},
      {"bench --synthetic tiny -o csv", "--output: 'csv'"},
      {"bench --synthetic tiny --type q9", "--type: 'q9' is not a repack type"},
      {"bench --synthetic huge", "unknown preset 'huge'"},
      {"bench -m /nonexistent --type q8_0", "--type applies to --synthetic models only"},
      {"bench --synthetic tiny --set vocab_size", "--set 'vocab_size': expected KEY=JSON"},
      {"bench --synthetic tiny --depth 8 --depth-fill zeros", "--depth-fill: 'zeros' is not prefill or random"},
      {"bench --synthetic tiny --isa sse2", "--isa: 'sse2' is not auto, avx512bf16, avx512vnni, avx512, avx2 or scalar"},
      {"bench --synthetic tiny --cpu-gemm blas", "--cpu-gemm: unknown choice 'blas' (expected kernels, onednn or bf16)"},
      {"bench --synthetic tiny --kv-cache q8", "--kv-cache: unknown type 'q8' (expected f32 or fp8)"},
  };
  for (const auto& [args, message] : cases) {
    CAPTURE(args);
    const CliRun r = run_hearth(args);
    CHECK(r.code != 0);
    CHECK_MESSAGE(r.err.find(message) != std::string::npos, r.err);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

}  // namespace cli_bench_suite
