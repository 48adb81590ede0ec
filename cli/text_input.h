// Texts that commands run a model over (perplexity, kld, imatrix, profile-experts): reading
// the file, tokenizing it as llama.cpp does for perplexity, and the flags of the commands
// that make one pass over a text in chunks.
#pragma once
#include <cstdint>
#include <cxxopts.hpp>
#include <string>
#include <vector>

#include "engine/eval.h"
#include "engine/tokenizer.h"

namespace hearth::cli {

// The whole file ("-": standard input); std::runtime_error naming the path otherwise.
std::string read_text_file(const std::string& path);

// BOS (when the tokenizer has one), then the text as plain text: special-token markers in
// it are not parsed.
std::vector<int32_t> text_token_ids(const Tokenizer& tok, const std::string& text);

// -m MODEL -f TEXT -o OUTPUT --ctx N --chunks N -t N, for commands that run the model over
// the text's chunks once (imatrix, profile-experts).
struct TextPassFlags {
  std::string model, text, output;
  EvalOptions eval;  // ctx and max_chunks
  int threads = 0;
};
void add_text_pass_options(cxxopts::Options& opts, const std::string& text_help, const std::string& output_help);
// Throws std::invalid_argument naming the flag: a missing -m/-f/-o, --ctx < 3, --chunks < 0,
// a bad thread count, or a stray argument.
TextPassFlags parse_text_pass_flags(const cxxopts::ParseResult& args);
// The text's ids cut into eval.ctx-token chunks, each starting with BOS (as perplexity).
struct TextChunks {
  std::vector<int32_t> ids;
  int32_t bos = -1;
  int64_t ctx = 0, count = 0;
  std::vector<int32_t> chunk(int64_t i) const;
};
// Reads and tokenizes f.text with the model's tokenizer; std::invalid_argument when it
// holds less than one chunk.
TextChunks text_pass_chunks(const TextPassFlags& f);

}  // namespace hearth::cli
