#include "cli/text_input.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "cli/model_tokenizer.h"

namespace hearth::cli {

std::string read_text_file(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin.rdbuf()), {});
  // Any readable file but a directory: a pipe too, so `-f <(zcat text.gz)` works.
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st)) throw std::runtime_error("text file '" + path + "' does not exist");
  if (std::filesystem::is_directory(st)) throw std::runtime_error("'" + path + "' is a directory, not a text file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read text file '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw std::runtime_error("cannot read text file '" + path + "'");
  return ss.str();
}

std::vector<int32_t> text_token_ids(const Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids;
  if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  const std::vector<int32_t> body = tok.encode(text, /*parse_special=*/false);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

void add_text_pass_options(cxxopts::Options& opts, const std::string& text_help, const std::string& output_help) {
  opts.add_options()
      ("m,model", "model directory (config.json, safetensors, tokenizer.json) or .gguf file", cxxopts::value<std::string>())
      ("f,file", text_help, cxxopts::value<std::string>())
      ("o,output", output_help, cxxopts::value<std::string>())
      ("ctx", "tokens per chunk", cxxopts::value<int64_t>()->default_value("512"))
      ("chunks", "use at most N chunks (0: every whole chunk of the text)", cxxopts::value<int64_t>()->default_value("0"))
      ("t,threads", "worker threads (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("h,help", "show this help");
}

TextPassFlags parse_text_pass_flags(const cxxopts::ParseResult& args) {
  if (!args.unmatched().empty()) throw std::invalid_argument("unexpected argument '" + args.unmatched()[0] + "'");
  for (const char* req : {"model", "file", "output"})
    if (!args.count(req)) throw std::invalid_argument(std::string("--") + req + " is required (see --help)");
  TextPassFlags f;
  f.model = args["model"].as<std::string>();
  f.text = args["file"].as<std::string>();
  f.output = args["output"].as<std::string>();
  f.eval.ctx = args["ctx"].as<int64_t>();
  if (f.eval.ctx < 3) throw std::invalid_argument("--ctx: must be at least 3");
  f.eval.max_chunks = args["chunks"].as<int64_t>();
  if (f.eval.max_chunks < 0) throw std::invalid_argument("--chunks: must be >= 0 (0: all)");
  f.threads = args["threads"].as<int>();
  if (f.threads < 0 || f.threads > 4096) throw std::invalid_argument("--threads: must be between 0 and 4096");
  return f;
}

std::vector<int32_t> TextChunks::chunk(int64_t i) const {
  std::vector<int32_t> c(ids.begin() + i * ctx, ids.begin() + (i + 1) * ctx);
  if (bos >= 0) c[0] = bos;
  return c;
}

TextChunks text_pass_chunks(const TextPassFlags& f) {
  const std::string text = read_text_file(f.text);
  const Tokenizer tok = load_model_tokenizer(f.model, "", "the text is tokenized with the model's tokenizer");
  TextChunks t;
  t.ids = text_token_ids(tok, text);
  t.bos = tok.bos_id();
  t.ctx = f.eval.ctx;
  t.count = eval_chunk_count(int64_t(t.ids.size()), f.eval);
  if (t.count == 0)
    throw std::invalid_argument("the text has " + std::to_string(t.ids.size()) +
                                " tokens (BOS included), fewer than one chunk of --ctx " + std::to_string(f.eval.ctx));
  return t;
}

}  // namespace hearth::cli
