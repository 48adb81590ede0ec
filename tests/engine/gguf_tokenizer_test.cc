// The tokenizer inside a GGUF file: the DeepSeek-V3.2 tokenizer.json written as
// tokenizer.ggml.* metadata and read back must give the reference ids of every case in
// cases.json; the metadata itself is checked against tokenizer.json read independently
// (nlohmann, not the tokenizer), and each kind of bad metadata gives a one-line error
// naming the file and the key.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/gguf.h"
#include "engine/gguf_tokenizer.h"
#include "engine/tokenizer.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace engine_gguf_tokenizer_suite {

using namespace hearth;
namespace fs = std::filesystem;
using hearth::testing::check_error;
using hearth::testing::slurp;
using hearth::testing::TempDir;

namespace {

const fs::path kDir = fs::path(HEARTH_TEST_DATA) / "tokenizer";
constexpr int64_t kVocab = 129280;  // DeepSeek-V3's vocab_size: 128815 ids padded

const Tokenizer& json_tok() {
  static const Tokenizer t = Tokenizer::load(kDir / "tokenizer.json");
  return t;
}

const nlohmann::json& tokenizer_json() {
  static const nlohmann::json j = nlohmann::json::parse(slurp(kDir / "tokenizer.json"));
  return j;
}

const std::string kTemplate = "{% for m in messages %}{{ m['content'] }}{% endfor %}";

// tokenizer.json -> GGUF (tokenizer metadata only), written once per process.
const fs::path& gguf_path() {
  static TempDir dir("hearth-gguftok");
  static const fs::path p = [] {
    const fs::path out = dir.path / "tok.gguf";
    GgufWriter w(out);
    w.add("general.architecture", "deepseek2");
    GgufTokenizerExtras x;
    x.vocab_size = kVocab;
    x.chat_template = kTemplate;
    add_gguf_tokenizer(w, json_tok(), x);
    w.finish();
    return out;
  }();
  return p;
}

const GgufFile& gguf() {
  static const GgufFile f(gguf_path());
  return f;
}

const Tokenizer& gguf_tok() {
  static const Tokenizer t = tokenizer_from_gguf(gguf());
  return t;
}

// Added tokens llama.cpp's converter makes CONTROL besides the special ones.
bool looks_like_marker(const std::string& s) {
  auto wraps = [&](const std::string& a, const std::string& b) {
    return s.size() >= a.size() + b.size() && s.compare(0, a.size(), a) == 0 && s.compare(s.size() - b.size(), b.size(), b) == 0;
  };
  return wraps("<|", "|>") || wraps("<｜", "｜>");
}

// GPT-2's bytes_to_unicode, written out here rather than taken from the tokenizer.
std::string byte_char(int b) {
  std::vector<int> printable;
  int extra = 0, cp = -1;
  for (int x = 0; x < 256; ++x) {
    const bool p = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
    const int c = p ? x : 256 + extra++;
    if (x == b) cp = c;
  }
  std::string s;
  if (cp < 0x80) s += char(cp);
  else s += char(0xC0 | (cp >> 6)), s += char(0x80 | (cp & 0x3F));
  return s;
}

}  // namespace

TEST_CASE("gguf tokenizer: every reference case encodes to its ids and decodes back to its text") {
  const nlohmann::json cases = nlohmann::json::parse(slurp(kDir / "cases.json"));
  REQUIRE(cases.size() >= 100);
  size_t checked = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const std::vector<int32_t> expected = c.at("ids").get<std::vector<int32_t>>();
    CAPTURE(text.substr(0, 80));
    CHECK(gguf_tok().encode(text) == expected);
    CHECK(gguf_tok().decode(expected) == text);
    ++checked;
  }
  CHECK(checked == cases.size());
  // Markers typed as plain text stay text, as with tokenizer.json.
  const std::string marked = "<｜User｜>hi</think><｜begin▁of▁sentence｜>";
  CHECK(gguf_tok().encode(marked, false) == json_tok().encode(marked, false));
  CHECK(gguf_tok().encode(marked, true) == std::vector<int32_t>{128803, 6366, 128799, 0});
}

TEST_CASE("gguf tokenizer: the metadata is what llama.cpp's converter writes for DeepSeek-V3") {
  const GgufFile& f = gguf();
  const nlohmann::json& j = tokenizer_json();
  CHECK(f.get_string("tokenizer.ggml.model") == "gpt2");
  CHECK(f.get_string("tokenizer.ggml.pre") == "deepseek-v3");
  CHECK(f.get_string("tokenizer.chat_template") == kTemplate);

  // Tokens: every vocab key at its id, added tokens as their content, "[PAD{id}]" after.
  const GgufValue& tv = f.get("tokenizer.ggml.tokens");
  CHECK(tv.is_array());
  CHECK(tv.type() == GgufType::STRING);
  const std::vector<std::string>& tokens = tv.strings();
  REQUIRE(int64_t(tokens.size()) == kVocab);
  const GgufValue& ty = f.get("tokenizer.ggml.token_type");
  CHECK(ty.is_array());
  CHECK(ty.type() == GgufType::I32);
  REQUIRE(int64_t(ty.count()) == kVocab);
  std::vector<int32_t> expected_type(static_cast<size_t>(kVocab), 5);
  std::vector<std::string> expected_text(static_cast<size_t>(kVocab));
  for (int64_t id = 0; id < kVocab; ++id) expected_text[size_t(id)] = "[PAD" + std::to_string(id) + "]";
  for (const auto& [key, id] : j["model"]["vocab"].items()) {
    expected_text[id.get<size_t>()] = key;
    expected_type[id.get<size_t>()] = 1;
  }
  size_t control = 0, user = 0;
  for (const auto& a : j["added_tokens"]) {
    const std::string content = a["content"];
    const size_t id = a["id"];
    expected_text[id] = content;
    expected_type[id] = a["special"].get<bool>() || looks_like_marker(content) ? 3 : 4;
    (expected_type[id] == 3 ? control : user)++;
  }
  CHECK(user == 2);  // <think> and </think>
  CHECK(control == 816);
  size_t text_mismatch = 0, type_mismatch = 0;
  for (int64_t id = 0; id < kVocab; ++id) {
    text_mismatch += tokens[size_t(id)] != expected_text[size_t(id)];
    type_mismatch += ty.get<int32_t>(uint64_t(id)) != expected_type[size_t(id)];
  }
  CHECK(text_mismatch == 0);
  CHECK(type_mismatch == 0);
  CHECK(tokens[128815] == "[PAD128815]");
  CHECK(ty.get<int32_t>(128803) == 3);  // <｜User｜>
  CHECK(ty.get<int32_t>(128799) == 4);  // </think>

  // Merges: the file's, in order, as "a b".
  const std::vector<std::string>& merges = f.get_string_array("tokenizer.ggml.merges");
  const auto& jm = j["model"]["merges"];
  REQUIRE(merges.size() == jm.size());
  size_t merge_mismatch = 0;
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string want = jm[r].is_string() ? jm[r].get<std::string>() : jm[r][0].get<std::string>() + " " + jm[r][1].get<std::string>();
    merge_mismatch += merges[r] != want;
  }
  CHECK(merge_mismatch == 0);

  // Special ids and flags, with their GGUF types.
  CHECK(f.get("tokenizer.ggml.bos_token_id") == GgufValue(uint32_t(0)));
  CHECK(f.get("tokenizer.ggml.eos_token_id") == GgufValue(uint32_t(1)));
  CHECK(f.get("tokenizer.ggml.padding_token_id") == GgufValue(uint32_t(1)));
  CHECK(f.get("tokenizer.ggml.add_bos_token") == GgufValue(true));
  CHECK(f.get("tokenizer.ggml.add_eos_token") == GgufValue(false));
}

TEST_CASE("gguf tokenizer: special tokens keep their ids and padding ids decode to nothing") {
  const Tokenizer& g = gguf_tok();
  const Tokenizer& t = json_tok();
  CHECK(g.size() == 128815);  // the trailing "[PAD…]" ids are not tokens
  CHECK(g.bos_id() == 0);
  CHECK(g.eos_id() == 1);
  for (const char* s : {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>",
                        "</think>", "<|EOT|>", "Ġthe", "<｜tool▁sep｜>"}) {
    CAPTURE(s);
    CHECK(g.token_id(s) >= 0);
    CHECK(g.token_id(s) == t.token_id(s));
  }
  CHECK(g.token_id("[PAD128815]") == -1);
  // is_special is CONTROL: tokenizer.json's special tokens, and the "<｜…｜>" markers
  // llama.cpp's converter also makes CONTROL. "<think>" and "</think>" stay plain.
  size_t differ = 0;
  for (int32_t id = 0; id < int32_t(t.size()); ++id) {
    const std::string text = t.token_bytes(id);
    const bool added = id < 3 || id >= 128000;
    const bool want = t.is_special(id) || (added && looks_like_marker(text));
    if (g.is_special(id) != want) ++differ;
  }
  CHECK(differ == 0);
  CHECK(g.is_special(0));
  CHECK(g.is_special(128803));  // <｜User｜>: not special in tokenizer.json
  CHECK_FALSE(t.is_special(128803));
  CHECK_FALSE(g.is_special(128799));  // </think>
  CHECK_FALSE(g.is_special(19923));
  CHECK(g.token_bytes(128803) == "<｜User｜>");
  // Padding ids, inside the GGUF list or past it, decode to nothing.
  const std::vector<int32_t> ids = {19923, 128815, 129279, 200000, 3};
  CHECK(g.decode(ids) == "Hello!");
  CHECK(g.token_bytes(129000).empty());
  // The parts are tokenizer.json's (the flags GGUF does not carry aside).
  const TokenizerParts gp = g.parts(), tp = t.parts();
  REQUIRE(gp.tokens.size() == tp.tokens.size());
  size_t token_mismatch = 0;
  for (size_t id = 0; id < gp.tokens.size(); ++id)
    token_mismatch += gp.tokens[id].text != tp.tokens[id].text || gp.tokens[id].kind != tp.tokens[id].kind;
  CHECK(token_mismatch == 0);
  CHECK(gp.merges == tp.merges);
  CHECK(gp.splits == tp.splits);
}

TEST_CASE("gguf tokenizer: the deepseek-v3 regexes are the ones tokenizer.json declares") {
  std::vector<std::string> declared;
  for (const auto& step : tokenizer_json()["pre_tokenizer"]["pretokenizers"])
    if (step["type"] == "Split") declared.push_back(step["pattern"]["Regex"].get<std::string>());
  REQUIRE(declared.size() == 3);
  CHECK(deepseek_v3_split_regexes() == declared);
}

TEST_CASE("gguf tokenizer: the writer refuses what it cannot describe") {
  TempDir dir("hearth-gguftok");
  {
    GgufWriter w(dir.path / "a.gguf");
    GgufTokenizerExtras x;
    x.vocab_size = 1000;  // below the tokenizer's 128815 ids
    CHECK_THROWS_AS(add_gguf_tokenizer(w, json_tok(), x), std::invalid_argument);
  }
  {
    GgufWriter w(dir.path / "b.gguf");
    GgufTokenizerExtras x;
    x.pad_id = 129000;  // padding, not a token
    CHECK_THROWS_AS(add_gguf_tokenizer(w, json_tok(), x), std::invalid_argument);
  }
  {
    // Another pre-tokenizer: tokenizer.ggml.pre "deepseek-v3" would be a lie.
    TokenizerParts p = json_tok().parts();
    p.splits.pop_back();
    const Tokenizer other = Tokenizer::build(std::move(p));
    GgufWriter w(dir.path / "c.gguf");
    CHECK_THROWS_AS(add_gguf_tokenizer(w, other), std::invalid_argument);
  }
}

TEST_CASE("gguf tokenizer: extras from tokenizer_config.json") {
  TempDir dir("hearth-gguftok");
  const fs::path cfg = dir.path / "tokenizer_config.json";
  std::ofstream(cfg) << R"({"add_bos_token": true, "add_eos_token": false, "chat_template": "{{ bos_token }}",
    "pad_token": {"__type": "AddedToken", "content": "<｜▁pad▁｜>"}, "bos_token": "<｜begin▁of▁sentence｜>"})";
  const GgufTokenizerExtras x = tokenizer_config_extras(cfg, json_tok());
  CHECK(x.chat_template == "{{ bos_token }}");
  REQUIRE(x.pad_id.has_value());
  CHECK(*x.pad_id == 2);
  CHECK(x.add_bos);
  CHECK_FALSE(x.add_eos);
  {
    GgufWriter w(dir.path / "t.gguf");
    add_gguf_tokenizer(w, json_tok(), x);
    w.finish();
    const GgufFile f(dir.path / "t.gguf");
    CHECK(f.get_u32("tokenizer.ggml.padding_token_id") == 2);
    CHECK(f.get_string("tokenizer.chat_template") == "{{ bos_token }}");
    CHECK(f.get_string_array("tokenizer.ggml.tokens").size() == 128815);  // no vocab_size: no padding
  }
  std::ofstream(cfg, std::ios::trunc) << R"({"pad_token": "<nope>"})";
  check_error([&] { tokenizer_config_extras(cfg, json_tok()); }, {cfg.string(), "pad_token", "<nope>"});
  std::ofstream(cfg, std::ios::trunc) << R"({"add_bos_token": "yes"})";
  check_error([&] { tokenizer_config_extras(cfg, json_tok()); }, {cfg.string(), "add_bos_token"});
  std::ofstream(cfg, std::ios::trunc) << R"({"chat_template": [{"name": "tool_use", "template": "x"}]})";
  check_error([&] { tokenizer_config_extras(cfg, json_tok()); }, {cfg.string(), "chat_template"});
}

namespace {

// A tiny gpt2 vocab as GGUF metadata: the 256 byte tokens, three merges building "Ġthe",
// an UNUSED id in the middle, two added tokens, and padding.
struct TinyVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges = {"Ġ t", "h e", "Ġt he"};
  std::map<std::string, std::optional<GgufValue>> extra;  // key -> value (nullopt: leave out)
  TinyVocab() {
    for (int b = 0; b < 256; ++b) tokens.push_back(byte_char(b)), types.push_back(1);
    for (const char* t : {"Ġt", "he", "Ġthe"}) tokens.push_back(t), types.push_back(1);  // 256, 257, 258
    tokens.push_back("[PAD259]"), types.push_back(5);
    tokens.push_back("<｜begin▁of▁sentence｜>"), types.push_back(3);  // 260
    tokens.push_back("</think>"), types.push_back(4);                 // 261
    tokens.push_back("[PAD262]"), types.push_back(5);
    tokens.push_back("[PAD263]"), types.push_back(5);
    extra["tokenizer.ggml.model"] = GgufValue("gpt2");
    extra["tokenizer.ggml.pre"] = GgufValue("deepseek-v3");
    extra["tokenizer.ggml.bos_token_id"] = GgufValue(uint32_t(260));
  }
  fs::path write(const fs::path& dir) const {
    const fs::path p = dir / "tiny.gguf";
    GgufWriter w(p);
    std::map<std::string, std::optional<GgufValue>> kv = {
        {"tokenizer.ggml.tokens", GgufValue(tokens)},
        {"tokenizer.ggml.token_type", GgufValue(types)},
        {"tokenizer.ggml.merges", GgufValue(merges)},
    };
    for (const auto& [k, v] : extra) kv[k] = v;
    for (const auto& [k, v] : kv)
      if (v) w.add(k, *v);
    w.finish();
    return p;
  }
};

}  // namespace

TEST_CASE("gguf tokenizer: a tiny vocab with an unused id in the middle") {
  TempDir dir("hearth-gguftok");
  const GgufFile f(TinyVocab().write(dir.path));
  const Tokenizer t = tokenizer_from_gguf(f);
  CHECK(t.size() == 262);  // the two trailing "[PAD…]" ids are dropped
  // Byte tokens sit at their byte's id: " he" is "Ġ" (32) then the merge "he" (257).
  CHECK(t.encode(" the</think> he") == std::vector<int32_t>{258, 261, 32, 257});
  CHECK(t.encode("<｜begin▁of▁sentence｜>x") == std::vector<int32_t>{260, 'x'});
  CHECK(t.bos_id() == 260);
  CHECK(t.eos_id() == -1);
  CHECK(t.is_special(260));
  CHECK_FALSE(t.is_special(261));
  const std::vector<int32_t> ids = {258, 259, 261, 262, 263};
  CHECK(t.decode(ids) == " the</think>");
  CHECK(t.token_id("[PAD259]") == -1);
  CHECK(t.parts().tokens[259].kind == TokenizerParts::Kind::kUnused);
}

TEST_CASE("gguf tokenizer: bad metadata gives one line naming the file and the key") {
  TempDir dir("hearth-gguftok");
  struct Case {
    std::string what;
    std::function<void(TinyVocab&)> mutate;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"no model", [](TinyVocab& v) { v.extra["tokenizer.ggml.model"] = std::nullopt; }, {"missing", "tokenizer.ggml.model"}},
      {"llama model", [](TinyVocab& v) { v.extra["tokenizer.ggml.model"] = GgufValue("llama"); }, {"tokenizer.ggml.model", "'llama'"}},
      {"no pre", [](TinyVocab& v) { v.extra["tokenizer.ggml.pre"] = std::nullopt; }, {"missing", "tokenizer.ggml.pre"}},
      {"qwen2 pre", [](TinyVocab& v) { v.extra["tokenizer.ggml.pre"] = GgufValue("qwen2"); }, {"tokenizer.ggml.pre", "'qwen2'"}},
      {"no tokens", [](TinyVocab& v) { v.extra["tokenizer.ggml.tokens"] = std::nullopt; }, {"missing", "tokenizer.ggml.tokens"}},
      {"no types", [](TinyVocab& v) { v.extra["tokenizer.ggml.token_type"] = std::nullopt; }, {"missing", "tokenizer.ggml.token_type"}},
      {"no merges", [](TinyVocab& v) { v.extra["tokenizer.ggml.merges"] = std::nullopt; }, {"missing", "tokenizer.ggml.merges"}},
      {"tokens not strings", [](TinyVocab& v) { v.extra["tokenizer.ggml.tokens"] = GgufValue(v.types); }, {"tokenizer.ggml.tokens", "array of str"}},
      {"types not integers", [](TinyVocab& v) { v.extra["tokenizer.ggml.token_type"] = GgufValue(v.tokens); }, {"tokenizer.ggml.token_type", "integers"}},
      {"types too short", [](TinyVocab& v) { v.types.pop_back(); }, {"tokenizer.ggml.token_type", "263 entries", "264"}},
      {"byte type", [](TinyVocab& v) { v.types[40] = 6; }, {"tokenizer.ggml.token_type", "element 40", " 6"}},
      {"unknown token in merge", [](TinyVocab& v) { v.merges.push_back("Ġthe zz"); }, {"tokenizer.ggml.merges[3]", "'zz'"}},
      {"merged token missing", [](TinyVocab& v) { v.merges.push_back("a b"); }, {"tokenizer.ggml.merges[3]", "'ab'"}},
      {"merge without a space", [](TinyVocab& v) { v.merges[1] = "he"; }, {"tokenizer.ggml.merges[1]", "'he'"}},
      {"duplicate token", [](TinyVocab& v) { v.tokens[258] = "he"; }, {"tokenizer.ggml.tokens", "'he'", "257 and 258"}},
      {"empty token", [](TinyVocab& v) { v.tokens[256] = ""; }, {"tokenizer.ggml.tokens", "256", "empty"}},
      {"not byte-level", [](TinyVocab& v) { v.tokens[256] = "a b"; }, {"tokenizer.ggml.tokens", "256", "byte-level"}},
      {"no byte token", [](TinyVocab& v) { v.types[65] = 5; }, {"tokenizer.ggml.tokens", "byte 65"}},
      {"bos past the tokens", [](TinyVocab& v) { v.extra["tokenizer.ggml.bos_token_id"] = GgufValue(uint32_t(262)); }, {"tokenizer.ggml.bos_token_id", "262"}},
      {"bos on an unused id", [](TinyVocab& v) { v.extra["tokenizer.ggml.bos_token_id"] = GgufValue(uint32_t(259)); }, {"tokenizer.ggml.bos_token_id", "259"}},
      {"bos not an integer", [](TinyVocab& v) { v.extra["tokenizer.ggml.bos_token_id"] = GgufValue("0"); }, {"tokenizer.ggml.bos_token_id"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    TinyVocab v;
    c.mutate(v);
    const fs::path p = v.write(dir.path);
    const GgufFile f(p);
    const std::string msg = hearth::testing::error_of([&] { tokenizer_from_gguf(f); });
    CHECK_MESSAGE(msg.find(p.string()) != std::string::npos, msg);
    for (const std::string& n : c.needles) CHECK_MESSAGE(msg.find(n) != std::string::npos, "'", n, "' not in: ", msg);
    CHECK(msg.find('\n') == std::string::npos);
  }
}

}  // namespace engine_gguf_tokenizer_suite
