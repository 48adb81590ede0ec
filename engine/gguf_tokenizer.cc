// tokenizer.ggml.* metadata <-> TokenizerParts. The BPE itself is Tokenizer::build's; this
// file only translates between GGUF keys and the parts, checking what a file can get wrong.
#include "engine/gguf_tokenizer.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace hearth {

namespace {

using Kind = TokenizerParts::Kind;

[[noreturn]] void fail(const std::filesystem::path& file, std::string_view key, const std::string& what) {
  throw std::runtime_error(file.string() + ": " + std::string(key) + ": " + what);
}

// llama.cpp's converter marks an added token CONTROL when Hugging Face calls it special or
// when its spelling says it is a marker (does_token_look_special).
bool looks_special(std::string_view t) {
  auto wraps = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.starts_with(open) && t.ends_with(close);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wraps("<|", "|>") ||
         wraps("<｜", "｜>") || wraps("<unused", ">");
}

std::string pad_text(int64_t id) { return "[PAD" + std::to_string(id) + "]"; }

}  // namespace

const std::vector<std::string>& deepseek_v3_split_regexes() {
  // As DeepSeek-V3's tokenizer.json spells them (and llama.cpp's llama-vocab.cpp for
  // LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM); a test checks them against the checked-in file.
  static const std::vector<std::string> kRegexes = {
      R"(\p{N}{1,3})",
      "[一-龥぀-ゟ゠-ヿ]+",
      R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^)" "\r\n" R"(\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[)"
      "\r\n" R"(]*|\s*[)" "\r\n" R"(]+|\s+(?!\S)|\s+)",
  };
  return kRegexes;
}

GgufTokenizerExtras tokenizer_config_extras(const std::filesystem::path& path, const Tokenizer& tok) {
  using nlohmann::json;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path.string() + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw std::runtime_error(path.string() + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(path.string() + ": expected a JSON object");
  GgufTokenizerExtras x;
  if (auto it = j.find("chat_template"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      x.chat_template = it->get<std::string>();
    } else if (it->is_array()) {
      for (const json& e : *it)
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
          x.chat_template = e["template"].get<std::string>();
      if (x.chat_template.empty()) fail(path, "chat_template", "a list without a \"default\" template");
    } else {
      fail(path, "chat_template", "expected a string or a list of {name, template}");
    }
  }
  if (auto it = j.find("pad_token"); it != j.end() && !it->is_null()) {
    const json& c = it->is_object() && it->contains("content") ? (*it)["content"] : *it;
    if (!c.is_string()) fail(path, "pad_token", "expected a string or an object with a \"content\" string");
    const int32_t id = tok.token_id(c.get<std::string>());
    if (id < 0) fail(path, "pad_token", "'" + c.get<std::string>() + "' is not a token of the tokenizer");
    x.pad_id = id;
  }
  for (auto [key, out] : {std::pair{"add_bos_token", &x.add_bos}, std::pair{"add_eos_token", &x.add_eos}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_boolean()) fail(path, key, "expected true or false");
    *out = it->get<bool>();
  }
  return x;
}

void add_gguf_tokenizer(GgufWriter& w, const Tokenizer& tok, const GgufTokenizerExtras& extras) {
  const TokenizerParts parts = tok.parts();
  if (parts.splits != deepseek_v3_split_regexes())
    throw std::invalid_argument("add_gguf_tokenizer: the tokenizer's pre-tokenizer is not DeepSeek-V3's, so "
                                "tokenizer.ggml.pre cannot name it");
  const int64_t size = int64_t(parts.tokens.size());
  const int64_t n = extras.vocab_size ? extras.vocab_size : size;
  if (n < size)
    throw std::invalid_argument("add_gguf_tokenizer: vocab_size " + std::to_string(n) + " is below the tokenizer's " +
                                std::to_string(size) + " ids");
  auto check_id = [&](int32_t id, const char* what) {
    if (id < 0 || id >= size || parts.tokens[size_t(id)].kind == Kind::kUnused)
      throw std::invalid_argument(std::string("add_gguf_tokenizer: ") + what + " id " + std::to_string(id) + " is not a token");
    return uint32_t(id);
  };

  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> types(static_cast<size_t>(n));
  for (int64_t id = 0; id < n; ++id) {
    const TokenizerParts::Token* t = id < size ? &parts.tokens[size_t(id)] : nullptr;
    if (!t || t->kind == Kind::kUnused) {
      tokens[size_t(id)] = pad_text(id);
      types[size_t(id)] = int32_t(GgufTokenType::kUnused);
      continue;
    }
    tokens[size_t(id)] = t->text;
    GgufTokenType type = GgufTokenType::kNormal;
    if (t->kind == Kind::kAdded)
      type = t->special || looks_special(t->text) ? GgufTokenType::kControl : GgufTokenType::kUserDefined;
    types[size_t(id)] = int32_t(type);
  }
  std::vector<std::string> merges;
  merges.reserve(parts.merges.size());
  for (const auto& [a, b] : parts.merges) merges.push_back(a + " " + b);

  // In the order llama.cpp's converter writes them.
  w.add(std::string(kGgufTokenizerModel), "gpt2");
  w.add(std::string(kGgufTokenizerPre), "deepseek-v3");
  w.add(std::string(kGgufTokens), std::move(tokens));
  w.add(std::string(kGgufTokenType), types);
  w.add(std::string(kGgufMerges), std::move(merges));
  if (tok.bos_id() >= 0) w.add(std::string(kGgufBosId), check_id(tok.bos_id(), "BOS"));
  if (tok.eos_id() >= 0) w.add(std::string(kGgufEosId), check_id(tok.eos_id(), "EOS"));
  if (extras.pad_id) w.add(std::string(kGgufPadId), check_id(*extras.pad_id, "padding"));
  else if (tok.eos_id() >= 0) w.add(std::string(kGgufPadId), uint32_t(tok.eos_id()));
  w.add(std::string(kGgufAddBos), extras.add_bos);
  w.add(std::string(kGgufAddEos), extras.add_eos);
  if (!extras.chat_template.empty()) w.add(std::string(kGgufChatTemplate), extras.chat_template);
}

Tokenizer tokenizer_from_gguf(const GgufFile& f) {
  const std::filesystem::path& path = f.path();
  const std::string& model = f.get_string(kGgufTokenizerModel);
  if (model != "gpt2")
    fail(path, kGgufTokenizerModel, "'" + model + "' is not a tokenizer hearth reads (only \"gpt2\", byte-level BPE)");
  const std::string& pre = f.get_string(kGgufTokenizerPre);
  TokenizerParts parts;
  if (pre == "deepseek-v3") parts.splits = deepseek_v3_split_regexes();
  else fail(path, kGgufTokenizerPre, "'" + pre + "' is not a pre-tokenizer hearth knows (only \"deepseek-v3\")");

  const std::vector<std::string>& tokens = f.get_string_array(kGgufTokens);
  const std::vector<int64_t> types = f.get_int_array(kGgufTokenType);
  if (types.size() != tokens.size())
    fail(path, kGgufTokenType, std::to_string(types.size()) + " entries, but " + std::string(kGgufTokens) + " has " +
                                   std::to_string(tokens.size()));
  // Padding at the end of the vocab is not part of the tokenizer (as with tokenizer.json).
  size_t count = tokens.size();
  while (count > 0 && types[count - 1] == int64_t(GgufTokenType::kUnused)) --count;
  parts.tokens.resize(count);
  for (size_t id = 0; id < count; ++id) {
    TokenizerParts::Token& t = parts.tokens[id];
    switch (types[id]) {
      case int64_t(GgufTokenType::kNormal): t.kind = Kind::kVocab; break;
      case int64_t(GgufTokenType::kControl): t.kind = Kind::kAdded, t.special = true; break;
      case int64_t(GgufTokenType::kUserDefined): t.kind = Kind::kAdded; break;
      case int64_t(GgufTokenType::kUnused): continue;
      default:
        fail(path, kGgufTokenType, "element " + std::to_string(id) + " is " + std::to_string(types[id]) +
                                       ", not a type a gpt2 vocab uses (1 normal, 3 control, 4 user-defined, 5 unused)");
    }
    t.text = tokens[id];
  }

  const std::vector<std::string>& merges = f.get_string_array(kGgufMerges);
  parts.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    // Byte-level tokens never hold a space (it is spelled "Ġ"), so the one space splits.
    const std::string& m = merges[r];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() || m.find(' ', sp + 1) != std::string::npos)
      fail(path, std::string(kGgufMerges) + "[" + std::to_string(r) + "]",
           "'" + m + "' is not two tokens separated by one space");
    parts.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }

  for (auto [key, out] : {std::pair{kGgufBosId, &parts.bos}, std::pair{kGgufEosId, &parts.eos}}) {
    if (!f.has(key)) continue;
    const uint32_t id = f.get_u32(key);
    if (id >= count)
      fail(path, key, std::to_string(id) + " is not a token id (" + std::string(kGgufTokens) + " has " +
                          std::to_string(count) + " tokens before the padding)");
    if (parts.tokens[id].kind == Kind::kUnused) fail(path, key, std::to_string(id) + " is an unused id, not a token");
    *out = int32_t(id);
  }

  parts.file = path;
  parts.tokens_key = kGgufTokens;
  parts.added_key = kGgufTokens;
  parts.merges_key = kGgufMerges;
  parts.splits_key = std::string(kGgufTokenizerPre) + " '" + pre + "'";
  return Tokenizer::build(std::move(parts));
}

}  // namespace hearth
