// --kv-cache f32|fp8, shared by the commands that keep a KV cache (generate, chat, bench,
// prove, serve, perplexity, kld, logits): the type of the cached latents
// (engine/kv_cache.h, KvCacheType).
#pragma once
#include <cxxopts.hpp>

namespace hearth::cli {

void add_kv_cache_option(cxxopts::Options& opts);
// Sets the process-wide default from --kv-cache (f32 when absent). Throws
// std::invalid_argument naming the flag for an unknown type, and for fp8 with
// --offload cuda, whose device keeps its own float cache.
void apply_kv_cache_flag(const cxxopts::ParseResult& args);

}  // namespace hearth::cli
