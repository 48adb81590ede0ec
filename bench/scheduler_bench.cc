// scheduler_bench -m MODEL_DIR [-p 1,4,16] [-n 32] [--prompt TEXT] [-t THREADS]
// Parallel sampling through the batch scheduler: for each P, P samples of one prompt
// (one submit) decode -n tokens each (EOS ignored) on a fresh scheduler. Prints a markdown
// table: aggregate and per-sample generated tokens/s, and the prompt tokens computed
// versus reused by forking the first sample's prompt.
#include <chrono>
#include <cstdio>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "engine/batch_scheduler.h"

namespace {

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    const int v = std::stoi(item);
    if (v < 1) throw std::invalid_argument("-p: sample counts must be at least 1, got " + item);
    out.push_back(v);
  }
  if (out.empty()) throw std::invalid_argument("-p: no sample counts");
  return out;
}

int run(int argc, char** argv) {
  cxxopts::Options opts(argv[0], "Parallel samples of one prompt through the batch scheduler.");
  opts.add_options()
      ("m,model", "model directory (with tokenizer.json)", cxxopts::value<std::string>())
      ("p,parallel", "sample counts (comma-separated)", cxxopts::value<std::string>()->default_value("1,4,16"))
      ("n,n-gen", "tokens each sample generates", cxxopts::value<int>()->default_value("32"))
      ("prompt", "prompt text (BOS is added)", cxxopts::value<std::string>()->default_value(
          "Once upon a time, in a village at the edge of a great forest, there lived an old clockmaker who"))
      ("t,threads", "worker threads (0: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("chunk", "prefill chunk (tokens)", cxxopts::value<int64_t>()->default_value("512"))
      ("h,help", "show this help");
  const auto args = opts.parse(argc, argv);
  if (args.count("help") || !args.count("model")) {
    std::printf("%s", opts.help().c_str());
    return args.count("help") ? 0 : 2;
  }
  const std::string dir = args["model"].as<std::string>();
  const std::vector<int> counts = parse_list(args["parallel"].as<std::string>());
  const int n_gen = args["n-gen"].as<int>();
  if (n_gen < 1) throw std::invalid_argument("-n: must be at least 1");

  const hearth::Model model = hearth::Model::load(dir);
  const hearth::Tokenizer tok = hearth::Tokenizer::load(dir + "/tokenizer.json");
  std::vector<int32_t> prompt{tok.bos_id()};
  for (int32_t id : tok.encode(args["prompt"].as<std::string>())) prompt.push_back(id);

  hearth::GenerateRequest req;
  req.max_tokens = n_gen;
  req.stop_at_eos = false;  // every sample generates exactly n tokens
  req.sampling.seed = 1;

  std::printf("model %s, prompt %zu tokens, %d tokens per sample\n\n", dir.c_str(), prompt.size(), n_gen);
  std::printf("| samples | generated | seconds | aggregate tok/s | per-sample tok/s | prefill computed | prefill reused | steps |\n");
  std::printf("|--------:|----------:|--------:|----------------:|-----------------:|-----------------:|---------------:|------:|\n");
  for (int p : counts) {
    hearth::BatchOptions o;
    o.threads = args["threads"].as<int>();
    o.prefill_chunk = args["chunk"].as<int64_t>();
    o.max_running = p;
    hearth::BatchScheduler sched(model, tok, o);
    int64_t generated = 0;
    std::string failure;
    hearth::RequestCallbacks cb;
    cb.on_done = [&](hearth::RequestId, const hearth::GenerationResult& r, const std::string& error) {
      if (!error.empty()) failure = error;
      generated += r.stats.generated_tokens;
    };
    const auto t0 = std::chrono::steady_clock::now();
    sched.submit(prompt, req, p, cb);
    sched.run_until_idle();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!failure.empty()) throw std::runtime_error(failure);
    const hearth::SchedulerStats st = sched.stats();
    std::printf("| %7d | %9lld | %7.2f | %15.1f | %16.2f | %16lld | %14lld | %5lld |\n", p, (long long)generated, s,
                double(generated) / s, double(generated) / s / p, (long long)st.prefilled_tokens,
                (long long)st.shared_prefix_tokens, (long long)st.steps);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scheduler_bench: %s\n", e.what());
    return 1;
  }
}
