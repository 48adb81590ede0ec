// `hearth perplexity` and `hearth kld` end to end: JSON results against the engine's own
// evaluation, the tables, progress on stderr, and one-line errors.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/eval.h"
#include "engine/synth.h"
#include "engine/tokenizer.h"
#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace cli_eval_suite {

namespace fs = std::filesystem;
using hearth::testing::CliRun;
using hearth::testing::count_lines;
using hearth::testing::run_hearth;
using hearth::testing::TempDir;

namespace {

const char* kText =
    "The quick brown fox jumps over the lazy dog. A proof by induction first checks the base case, "
    "then shows that the statement for n implies the statement for n + 1. Every positive integer "
    "greater than one is a product of primes, and that factorization is unique up to order.\n";

std::string model() { return hearth::testing::tiny_chat_model_dir().string(); }

struct TextFile {
  TempDir dir{"hearth-eval-cli"};
  std::string path;
  explicit TextFile(const std::string& text = kText) {
    path = (dir.path / "text.txt").string();
    std::ofstream(path, std::ios::binary) << text;
  }
};

void check_one_line_error(const CliRun& r, const std::string& needle) {
  INFO(r.all());
  CHECK(r.code != 0);
  CHECK(r.out.empty());
  CHECK(count_lines(r.err) == 1);
  CHECK(r.err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("cli: hearth perplexity prints the engine's perplexity as JSON and as a table") {
  TextFile text;
  const CliRun r = run_hearth("perplexity -m " + model() + " -f " + text.path + " --ctx 16 --chunks 2 -t 2 --json");
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(count_lines(r.out) == 1);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["model"] == model());
  CHECK(j["ctx"] == 16);
  CHECK(j["chunks"] == 2);
  CHECK(j["scored"] == 14);
  CHECK(j["tokens"].get<int64_t>() >= 32);
  const double ppl = j["perplexity"].get<double>();
  CHECK(ppl > 1.0);
  CHECK(ppl == doctest::Approx(std::exp(j["mean_nll"].get<double>())).epsilon(1e-12));
  CHECK(r.err.find("chunk 1/2") != std::string::npos);
  CHECK(r.err.find("chunk 2/2") != std::string::npos);

  // The same number as the engine on the same tokens (BOS, then the text as text).
  const hearth::Model m = hearth::Model::load(model());
  const auto tok = hearth::Tokenizer::load(fs::path(model()) / "tokenizer.json");
  std::vector<int32_t> ids{tok.bos_id()};
  for (int32_t id : tok.encode(kText, false)) ids.push_back(id);
  CHECK(j["tokens"] == ids.size());
  CHECK(j["bytes"] == uint64_t(m.footprint().total().bytes));
  hearth::EvalOptions o;
  o.ctx = 16, o.max_chunks = 2, o.n_vocab = tok.size(), o.bos = tok.bos_id();
  hearth::ThreadPool pool(2);
  CHECK(ppl == hearth::evaluate_perplexity(m, pool, ids, o).perplexity);

  const CliRun t = run_hearth("perplexity -m " + model() + " -f " + text.path + " --ctx 16 --chunks 1 -t 2");
  INFO(t.all());
  REQUIRE(t.code == 0);
  CHECK(t.out.find("size GB") != std::string::npos);
  CHECK(t.out.find("PPL") != std::string::npos);
  CHECK(t.out.find(model()) != std::string::npos);
  CHECK(t.out.find("7 positions scored in 1 chunk of 16 tokens") != std::string::npos);
}

TEST_CASE("cli: hearth kld --repack measures a quantized copy against the original") {
  TextFile text;
  const CliRun r = run_hearth("kld -m " + model() + " -m " + model() + " --repack q8_0 -f " + text.path +
                              " --ctx 16 --chunks 2 --json");
  INFO(r.all());
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  // The candidate is the same checkpoint at 8.5 bits per weight instead of FP8 + BF16.
  CHECK(j["kld"]["mean"].get<double>() > 0.0);
  CHECK(j["kld"]["mean"].get<double>() < 1.0);
  CHECK(j["candidate"]["bytes"].get<uint64_t>() != j["base"]["bytes"].get<uint64_t>());
  hearth::ModelLoadOptions o;
  o.repack = hearth::DType::Q8_0;
  CHECK(j["candidate"]["bytes"] == uint64_t(hearth::Model::load(model(), o).footprint().total().bytes));
  // Both models held in memory instead of mapped: the same figures.
  const CliRun in_memory = run_hearth("kld -m " + model() + " -m " + model() + " --repack q8_0 --no-mmap -f " +
                                      text.path + " --ctx 16 --chunks 2 --json");
  INFO(in_memory.all());
  REQUIRE(in_memory.code == 0);
  const auto k = nlohmann::json::parse(in_memory.out);
  CHECK(k["kld"] == j["kld"]);
  CHECK(k["base"]["perplexity"] == j["base"]["perplexity"]);
  CHECK(k["candidate"]["perplexity"] == j["candidate"]["perplexity"]);
  const CliRun bad = run_hearth("kld -m " + model() + " -m " + model() + " --repack q9_9 -f " + text.path);
  CHECK(bad.code != 0);
  CHECK(bad.err.find("--repack") != std::string::npos);
}

TEST_CASE("cli: hearth kld --kv-cache fp8 measures the FP8 cache against the base's f32 one") {
  TextFile text;
  const std::string args = " -f " + text.path + " --ctx 16 --chunks 2 -t 2 --json";
  const CliRun r = run_hearth("kld -m " + model() + " -m " + model() + " --kv-cache fp8" + args);
  const CliRun f32 = run_hearth("perplexity -m " + model() + args);
  const CliRun fp8 = run_hearth("perplexity -m " + model() + " --kv-cache fp8" + args);
  INFO(r.all() << f32.all() << fp8.all());
  REQUIRE(r.code == 0);
  REQUIRE(f32.code == 0);
  REQUIRE(fp8.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["kld"]["mean"].get<double>() > 0.0);
  CHECK(j["candidate"]["kv_cache"] == "fp8");
  CHECK(j["base"]["bytes"] == j["candidate"]["bytes"]);
  // The base ran on f32 and the candidate on fp8: each perplexity is that command's.
  CHECK(j["base"]["perplexity"] == nlohmann::json::parse(f32.out)["perplexity"]);
  CHECK(j["candidate"]["perplexity"] == nlohmann::json::parse(fp8.out)["perplexity"]);
  CHECK(j["base"]["perplexity"] != j["candidate"]["perplexity"]);
}

TEST_CASE("cli: hearth kld of a model against itself is zero and against another model positive") {
  TextFile text;
  const CliRun self = run_hearth("kld -m " + model() + " -m " + model() + " -f " + text.path + " --ctx 16 --chunks 2 --json");
  INFO(self.all());
  REQUIRE(self.code == 0);
  const auto s = nlohmann::json::parse(self.out);
  CHECK(s["kld"]["mean"] == 0.0);
  CHECK(s["kld"]["max"] == 0.0);
  CHECK(s["top1_agreement"] == 1.0);
  CHECK(s["scored"] == 14);
  CHECK(s["base"]["perplexity"] == s["candidate"]["perplexity"]);
  CHECK(s["base"]["bytes"] == s["candidate"]["bytes"]);

  TempDir dir("hearth-eval-cli");
  hearth::SynthOptions so;
  so.out_dir = dir.path / "other";
  so.preset = "tiny";
  so.seed = 8;
  so.sets = {"num_nextn_predict_layers=0"};
  so.tokenizer = fs::path(HEARTH_TEST_DATA) / "tokenizer/tokenizer.json";
  so.log = nullptr;
  hearth::synthesize_checkpoint(so);
  const std::string other = so.out_dir.string();
  const CliRun r = run_hearth("kld -m " + model() + " -m " + other + " -f " + text.path + " --ctx 16 --chunks 2 -t 2 --json");
  INFO(r.all());
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["base"]["model"] == model());
  CHECK(j["candidate"]["model"] == other);
  CHECK(j["base"]["perplexity"] == s["base"]["perplexity"]);  // the base side does not depend on the candidate
  CHECK(j["candidate"]["perplexity"] != j["base"]["perplexity"]);
  const auto& k = j["kld"];
  CHECK(k["mean"].get<double>() > 0);
  CHECK(k["median"].get<double>() > 0);
  CHECK(k["median"].get<double>() <= k["p99"].get<double>());
  CHECK(k["p99"].get<double>() <= k["max"].get<double>());
  CHECK(k["mean"].get<double>() <= k["max"].get<double>());
  CHECK(j["top1_agreement"].get<double>() >= 0.0);
  CHECK(j["top1_agreement"].get<double>() <= 1.0);
  CHECK(r.err.find("KLD mean") != std::string::npos);  // progress

  const CliRun t = run_hearth("kld -m " + model() + " -m " + other + " -f " + text.path + " --ctx 16 --chunks 1");
  INFO(t.all());
  REQUIRE(t.code == 0);
  for (const char* needle : {"base", "candidate", "size GB", "PPL", "KLD mean", "KLD median", "KLD p99", "KLD max", "top-1"})
    CHECK(t.out.find(needle) != std::string::npos);
}

TEST_CASE("cli: hearth perplexity reads its text from a pipe as from a file") {
  // What `-f <(zcat text.gz)` hands over: a FIFO, which is not a regular file.
  TextFile text;
  const CliRun from_file = run_hearth("perplexity -m " + model() + " -f " + text.path + " --ctx 16 --chunks 1 -t 2 --json");
  REQUIRE(from_file.code == 0);
  const fs::path fifo = text.dir.path / "pipe";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  // The writer waits (without blocking) for hearth to open the pipe and gives up once
  // hearth has exited, so a hearth that never opens it fails the test instead of hanging it.
  std::atomic<bool> exited{false};
  std::thread writer([&] {
    while (!exited) {
      const int fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) {
        const std::string body = kText;
        for (size_t done = 0; done < body.size();) {
          const ssize_t n = write(fd, body.data() + done, body.size() - done);
          if (n <= 0) break;
          done += size_t(n);
        }
        close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  const CliRun from_pipe = run_hearth("perplexity -m " + model() + " -f " + fifo.string() + " --ctx 16 --chunks 1 -t 2 --json");
  exited = true;
  writer.join();
  INFO(from_pipe.all());
  REQUIRE(from_pipe.code == 0);
  CHECK(nlohmann::json::parse(from_pipe.out)["perplexity"] == nlohmann::json::parse(from_file.out)["perplexity"]);
}

TEST_CASE("cli: hearth perplexity and kld report bad input in one line") {
  TextFile text;
  const std::string m = model(), tiny_v32 = std::string(HEARTH_TEST_DATA) + "/tiny-v32";
  check_one_line_error(run_hearth("perplexity -m " + m + " -f /nonexistent/text.txt --ctx 16"),
                       "text file '/nonexistent/text.txt' does not exist");
  check_one_line_error(run_hearth("perplexity -m " + m + " -f " + text.dir.path.string() + " --ctx 16"),
                       "is a directory, not a text file");
  TextFile short_text("Too short.");
  check_one_line_error(run_hearth("perplexity -m " + m + " -f " + short_text.path + " --ctx 16"), "the text has 4 tokens");
  check_one_line_error(run_hearth("kld -m " + m + " -m " + m + " -f " + short_text.path + " --ctx 16"), "the text has 4 tokens");
  check_one_line_error(run_hearth("perplexity -m " + m + " -f " + text.path + " --ctx 2"), "--ctx");
  check_one_line_error(run_hearth("perplexity -m " + m + " -f " + text.path + " --ctx abc"), "abc");
  check_one_line_error(run_hearth("perplexity -m " + m + " -f " + text.path + " --chunks -1"), "--chunks");
  check_one_line_error(run_hearth("perplexity -m " + m + " -f " + text.path + " --bogus"), "bogus");
  check_one_line_error(run_hearth("perplexity -f " + text.path), "-m");
  check_one_line_error(run_hearth("perplexity -m " + m), "--file");
  check_one_line_error(run_hearth("kld -m " + m + " -f " + text.path + " --ctx 16"), "exactly two models");
  check_one_line_error(run_hearth("kld -m " + m + " -m " + m + " -m " + m + " -f " + text.path + " --ctx 16"), "exactly two models");
  check_one_line_error(run_hearth("perplexity -m " + tiny_v32 + " -f " + text.path + " --ctx 16"), "tokenizer.json");
  check_one_line_error(run_hearth("kld -m " + m + " -m " + tiny_v32 + " -f " + text.path + " --ctx 16"), "vocabularies differ");
  check_one_line_error(run_hearth("kld -m " + m + " -m /nonexistent/model -f " + text.path + " --ctx 16"), "/nonexistent/model");
}

}  // namespace cli_eval_suite
