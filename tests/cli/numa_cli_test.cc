// --numa on the commands that run the model: a synthetic multi-node topology shards the
// routed experts and gives the same greedy text as the unsharded pass; a bad value is a
// one-line error naming the flag.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace cli_numa_cli_suite {

using hearth::testing::CliRun;
using hearth::testing::count_lines;
using hearth::testing::run_hearth;

namespace {

std::string model() { return hearth::testing::tiny_chat_model_dir().string(); }

}  // namespace

TEST_CASE("numa cli: generate sharded over a synthetic 4-node machine gives the unsharded text") {
  // Q8_0 experts (intermediate 96 = 3 blocks of 32) really split over the nodes.
  const std::string base = "generate -m " + model() + " -p 'Hello, world' -n 8 --temp 0 --repack q8_0 -t 2";
  const CliRun off = run_hearth(base + " --numa off");
  REQUIRE(off.code == 0);
  CHECK(off.err.find("NUMA") == std::string::npos);
  const CliRun on = run_hearth(base + " --numa 'pack:2 numa:2 core:1 pu:1'");
  INFO(on.err);
  REQUIRE(on.code == 0);
  CHECK(on.err.find("synthetic 4 NUMA nodes") != std::string::npos);
  CHECK(on.err.find("routed experts split over 4 NUMA nodes (intermediate 96): node 0 [0, 32) 1 thread") !=
        std::string::npos);
  CHECK(on.err.find("node 2 no slice") != std::string::npos);
  // The repacked experts (memory of the process's own) leave the model once sharded.
  CHECK(on.err.find(" of the model's routed experts (the nodes hold them now)") != std::string::npos);
  CHECK(on.err.find("released 0 B") == std::string::npos);
  CHECK(!off.out.empty());
  CHECK(on.out == off.out);
}

TEST_CASE("numa cli: perplexity and prove run on the shards once the model's experts are released") {
  const std::string text = "The quick brown fox jumps over the lazy dog. Proofs are fun to write when the lemma holds.";
  const std::string ppl = "perplexity -m " + model() + " -f - --ctx 8 --repack q8_0 -t 2";
  const CliRun off = run_hearth(ppl + " --numa off", text);
  REQUIRE(off.code == 0);
  const CliRun on = run_hearth(ppl + " --numa 'pack:2 numa:1 core:1 pu:1'", text);
  INFO(on.err);
  REQUIRE(on.code == 0);
  CHECK(on.err.find(" of the model's routed experts (the nodes hold them now)") != std::string::npos);
  // The mean NLL, to the printed 6 decimals: float rounding of the node split stays below.
  const auto nll = [](const std::string& s) {
    const size_t at = s.find("mean NLL ");
    return at == std::string::npos ? std::string() : s.substr(at, 20);
  };
  CHECK(!nll(off.out + off.err).empty());
  CHECK(nll(on.out + on.err) == nll(off.out + off.err));

  const hearth::testing::TempDir dir("numa-prove");
  const CliRun prove = run_hearth("prove -m " + model() + " --problem 'Show that 1 + 1 = 2.' --samples 2 --verifications 1 "
                                  "--rounds 1 --max-tokens 8 --no-thinking -t 2 --repack q8_0 --numa 'pack:2 numa:1 core:1 pu:1' "
                                  "--out " + (dir.path / "run").string());
  INFO(prove.err);
  CHECK(prove.code == 0);
  CHECK(prove.err.find(" of the model's routed experts (the nodes hold them now)") != std::string::npos);
  CHECK(prove.out.find("4 samples finished") != std::string::npos);
}

TEST_CASE("numa cli: a bad --numa value is a one-line error naming the flag") {
  const std::vector<std::string> commands = {"generate -m " + model() + " -p hi -n 2",
                                             "bench --synthetic tiny -p 0 -n 1 -r 1", "perplexity -m " + model() + " -f -"};
  for (const std::string& cmd : commands) {
    INFO(cmd);
    const CliRun r = run_hearth(cmd + " --numa 'pack:2 nonsense:3'", "some text");
    CHECK(r.code != 0);
    CHECK(r.out.empty());
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.find("--numa: 'pack:2 nonsense:3' is not auto, off or an hwloc synthetic topology") != std::string::npos);
  }
  const CliRun r = run_hearth("generate -m " + model() + " -p hi -n 2 --offload sim --numa 'pack:2 numa:1 core:1 pu:1'");
  CHECK(r.code != 0);
  CHECK(count_lines(r.err) == 1);
  CHECK(r.err.find("--numa: a topology cannot be combined with --offload") != std::string::npos);
}

TEST_CASE("numa cli: bench names the node count and the split in its header") {
  const CliRun on = run_hearth("bench --synthetic tiny --type q8_0 -p 0 -n 2 -r 1 -t 2 --numa 'pack:2 numa:1 core:1 pu:1'");
  INFO(on.err);
  REQUIRE(on.code == 0);
  CHECK(on.out.find("numa: 2 NUMA nodes: node 0 (os 0) 1 core") != std::string::npos);
  CHECK(on.out.find("routed experts split over 2 NUMA nodes (intermediate 96): node 0 [0, 64) 1 thread") !=
        std::string::npos);
  const CliRun off = run_hearth("bench --synthetic tiny -p 0 -n 2 -r 1 -t 1 --numa off -o json");
  REQUIRE(off.code == 0);
  CHECK(off.out.find("\"nodes\": 1") != std::string::npos);
  CHECK(off.out.find("routed experts not sharded over NUMA nodes") != std::string::npos);
}

}  // namespace cli_numa_cli_suite
