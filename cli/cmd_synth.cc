// hearth synth: a deterministic random checkpoint in the Hugging Face layout.
#include <cctype>
#include <cstdio>
#include <cxxopts.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "engine/synth.h"

namespace hearth::cli {

namespace {

// "1073741824", "512M", "1G", "1GiB", "64K": bytes (suffixes are binary).
uint64_t parse_bytes(const std::string& s) {
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos == 0 || s[0] == '-') throw std::invalid_argument("--shard-size '" + s + "': expected a byte count such as 1G or 500M");
  std::string suffix = s.substr(pos);
  for (char& ch : suffix) ch = char(std::toupper((unsigned char)ch));
  uint64_t mult = 1;
  if (suffix.empty() || suffix == "B") mult = 1;
  else if (suffix == "K" || suffix == "KB" || suffix == "KIB") mult = 1ull << 10;
  else if (suffix == "M" || suffix == "MB" || suffix == "MIB") mult = 1ull << 20;
  else if (suffix == "G" || suffix == "GB" || suffix == "GIB") mult = 1ull << 30;
  else throw std::invalid_argument("--shard-size '" + s + "': unknown unit '" + s.substr(pos) + "' (use K, M or G)");
  if (v == 0) throw std::invalid_argument("--shard-size must be positive");
  if (v > (~0ull) / mult) throw std::invalid_argument("--shard-size '" + s + "' is too large");
  return uint64_t(v) * mult;
}

}  // namespace

int cmd_synth(int argc, char** argv) {
  std::string presets;
  for (const std::string& p : synth_preset_names()) presets += (presets.empty() ? "" : "|") + p;
  cxxopts::Options opts(argv[0],
                        "Write a deterministic random checkpoint in the Hugging Face layout of DeepSeek-V3/V3.2\n"
                        "(config.json, sharded FP8 safetensors, model.safetensors.index.json).\n"
                        "The same preset, seed and --set options give byte-identical files.");
  opts.add_options()
      ("o,output", "output directory (must not exist or be empty)", cxxopts::value<std::string>())
      ("p,preset", "model shape: " + presets + " (bench is pinned: ~5 GB, deepseek_v3)",
       cxxopts::value<std::string>()->default_value("tiny"))
      ("seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"))
      ("set", "override a config.json key with a JSON value, e.g. --set index_topk=2048 "
              "--set model_type='\"deepseek_v32\"' (repeatable)",
       cxxopts::value<std::string>())
      ("shard-size", "bytes of tensor data per shard (K/M/G suffixes)", cxxopts::value<std::string>()->default_value("1G"))
      ("threads", "generator threads (0: all cores)", cxxopts::value<int>()->default_value("0"))
      ("tokenizer", "copy this tokenizer.json into the checkpoint (vocab_size is raised to cover its ids)",
       cxxopts::value<std::string>())
      ("q,quiet", "no progress output")
      ("h,help", "show this help");
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  if (!args.count("output")) throw std::invalid_argument("--output is required (see --help)");
  if (!args.unmatched().empty()) throw std::invalid_argument("unexpected argument '" + args.unmatched()[0] + "'");

  SynthOptions o;
  o.out_dir = args["output"].as<std::string>();
  o.preset = args["preset"].as<std::string>();
  o.seed = args["seed"].as<uint64_t>();
  // --set is repeatable; collect every occurrence in order (not split on commas, so JSON
  // objects and arrays pass through whole).
  for (const auto& kv : args.arguments())
    if (kv.key() == "set") o.sets.push_back(kv.value());
  o.shard_size = parse_bytes(args["shard-size"].as<std::string>());
  o.threads = args["threads"].as<int>();
  if (o.threads < 0) throw std::invalid_argument("--threads must not be negative");
  o.log = args.count("quiet") ? nullptr : stderr;
  if (args.count("tokenizer")) o.tokenizer = args["tokenizer"].as<std::string>();
  synthesize_checkpoint(o);
  return 0;
}

}  // namespace hearth::cli
