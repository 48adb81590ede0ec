#include "cli/kv_cache_flag.h"

#include <optional>
#include <stdexcept>
#include <string>

#include "engine/kv_cache.h"

namespace hearth::cli {

void add_kv_cache_option(cxxopts::Options& opts) {
  opts.add_options()("kv-cache",
                     "how the KV cache keeps each position's latent: f32 (as computed; the reference logits) or fp8 "
                     "(e4m3 with a power-of-two scale per 128 values, as DeepSeek deploys V3.2: a third of the bytes, "
                     "logits move by the rounding; kld: the candidate's cache, the base keeps f32)",
                     cxxopts::value<std::string>()->default_value("f32"), "TYPE");
}

void apply_kv_cache_flag(const cxxopts::ParseResult& args) {
  const std::string v = args["kv-cache"].as<std::string>();
  const std::optional<KvCacheType> t = parse_kv_cache_type(v);
  if (!t) throw std::invalid_argument("--kv-cache: unknown type '" + v + "' (expected f32 or fp8)");
  if (*t != KvCacheType::kF32 && args.count("offload") && args["offload"].as<std::string>() == "cuda")
    throw std::invalid_argument("--kv-cache " + v + ": the CUDA device keeps a float cache (use f32 with --offload cuda)");
  set_default_kv_cache_type(*t);
}

}  // namespace hearth::cli
