// hearth logits: token ids in, float32 logits out, for every position.
#include <cstdio>
#include <cxxopts.hpp>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "cli/generation.h"
#include "cli/kv_cache_flag.h"
#include "engine/forward.h"

namespace hearth::cli {

namespace {

std::vector<int32_t> parse_tokens(const std::string& s) {
  std::vector<int32_t> out;
  size_t i = 0;
  while (i <= s.size()) {
    const size_t j = std::min(s.find(',', i), s.size());
    const std::string item = s.substr(i, j - i);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0 || v > INT32_MAX)
      throw std::invalid_argument("--tokens: '" + item + "' is not a token id (expected e.g. 0,17,923)");
    out.push_back(int32_t(v));
    i = j + 1;
  }
  return out;
}

}  // namespace

int cmd_logits(int argc, char** argv) {
  cxxopts::Options opts(argv[0], "Run the forward pass on token ids; write float32 little-endian logits [tokens][vocab].");
  opts.add_options()
      ("m,model", "model directory (config.json + safetensors) or .gguf file", cxxopts::value<std::string>())
      ("tokens", "comma-separated token ids, e.g. 0,17,923", cxxopts::value<std::string>())
      ("o,output", "output file for the logits", cxxopts::value<std::string>())
      ("decode", "feed the tokens one at a time through the decode path")
      ("t,threads", "worker threads (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("h,help", "show this help");
  add_repack_option(opts);
  add_kv_cache_option(opts);
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  for (const char* req : {"model", "tokens", "output"})
    if (!args.count(req)) throw std::invalid_argument(std::string("--") + req + " is required (see --help)");
  const std::vector<int32_t> tokens = parse_tokens(args["tokens"].as<std::string>());
  apply_kv_cache_flag(args);
  const int threads = args["threads"].as<int>();
  if (threads < 0 || threads > 4096) throw std::invalid_argument("--threads: must be between 0 and 4096");

  const Model model = Model::load(args["model"].as<std::string>(), parse_load_options(args, threads));
  const int64_t V = model.config().vocab_size;
  for (int32_t t : tokens)
    if (t >= V) throw std::invalid_argument("--tokens: id " + std::to_string(t) + " is outside the vocabulary (size " + std::to_string(V) + ")");
  ThreadPool pool(threads);
  Forward fwd(model, pool);
  KvCache cache(model.config());
  const SeqId seq = cache.add_sequence();
  std::vector<float> logits(tokens.size() * size_t(V));
  if (args.count("decode")) {
    for (size_t i = 0; i < tokens.size(); ++i)
      fwd.step(cache, {{seq, std::span<const int32_t>(&tokens[i], 1)}}, logits.data() + i * size_t(V), AttentionPath::kDecode);
  } else {
    fwd.step(cache, {{seq, tokens}}, logits.data(), AttentionPath::kAuto);
  }

  // Written beside the target and renamed, so a failed run never leaves a partial file.
  const std::string out = args["output"].as<std::string>();
  const std::string tmp = out + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write '" + tmp + "'");
    f.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
    if (!f) throw std::runtime_error("write to '" + tmp + "' failed");
  }
  if (std::rename(tmp.c_str(), out.c_str()) != 0) throw std::runtime_error("cannot rename '" + tmp + "' to '" + out + "'");
  std::fprintf(stderr, "wrote %zu x %lld logits to %s\n", tokens.size(), (long long)V, out.c_str());
  return 0;
}

}  // namespace hearth::cli
