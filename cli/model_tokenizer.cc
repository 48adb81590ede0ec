#include "cli/model_tokenizer.h"

#include <fstream>
#include <stdexcept>

#include "engine/gguf.h"
#include "engine/gguf_shards.h"
#include "engine/gguf_tokenizer.h"

namespace hearth::cli {

namespace fs = std::filesystem;

bool is_gguf_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

Tokenizer gguf_file_tokenizer(const fs::path& gguf, const std::string& hint) {
  // A split model's tokenizer is in its first shard; naming another shard is an error
  // that says which to give.
  const GgufShards shards = GgufShards::open(gguf);
  const GgufFile& file = shards.first();
  if (!file.has(kGgufTokens))
    throw std::runtime_error(gguf.string() + " has no " + std::string(kGgufTokens) + " (no tokenizer inside); " + hint);
  return tokenizer_from_gguf(file);
}

Tokenizer load_model_tokenizer(const std::string& model, const std::string& tokenizer_json, const std::string& hint) {
  if (!tokenizer_json.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(tokenizer_json, ec))
      throw std::runtime_error("--tokenizer: '" + tokenizer_json + "' is not a file (expected a tokenizer.json)");
    return Tokenizer::load(tokenizer_json);
  }
  std::error_code ec;
  if (fs::is_regular_file(model, ec)) return gguf_file_tokenizer(model, hint);
  const fs::path tok_path = fs::path(model) / "tokenizer.json";
  if (!fs::is_regular_file(tok_path, ec))
    throw std::runtime_error(tok_path.string() + " not found: the model's tokenizer is needed (" + hint +
                             "; hearth synth --tokenizer FILE adds one to a synthetic model)");
  return Tokenizer::load(tok_path);
}

}  // namespace hearth::cli
