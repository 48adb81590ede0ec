// The byte-level BPE tokenizer against the real DeepSeek-V3.2 tokenizer.json and the ids
// the reference Hugging Face tokenizer produces (tests/data/tokenizer/cases.json).
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tokenizer.h"

namespace engine_tokenizer_suite {

namespace fs = std::filesystem;
using hearth::StreamDecoder;
using hearth::Tokenizer;

namespace {

const fs::path kDir = fs::path(HEARTH_TEST_DATA) / "tokenizer";

// Loaded once per process (8.6 MB of JSON).
const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::load(kDir / "tokenizer.json");
  return t;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const unsigned c = b[i];
    size_t n = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0xFF >> (n + 1));
    for (size_t k = 1; k < n; ++k) {
      if ((b[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b[i + k] & 0x3F);
    }
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// The id of the token whose bytes are exactly one byte.
int32_t byte_token(unsigned char b) {
  static const std::vector<int32_t> table = [] {
    std::vector<int32_t> t(256, -1);
    for (int32_t id = 0; id < int32_t(tok().size()); ++id) {
      const std::string s = tok().token_bytes(id);
      if (s.size() == 1 && t[static_cast<unsigned char>(s[0])] < 0) t[static_cast<unsigned char>(s[0])] = id;
    }
    return t;
  }();
  return table[b];
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& content) {
    static int counter = 0;
    path = fs::temp_directory_path() / ("hearth-tok-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".json");
    std::ofstream(path, std::ios::binary) << content;
  }
  ~TempFile() { fs::remove(path); }
};

}  // namespace

TEST_CASE("tokenizer: every reference case encodes to its ids and decodes back to its text") {
  const nlohmann::json cases = nlohmann::json::parse(read_file(kDir / "cases.json"));
  REQUIRE(cases.size() >= 100);
  size_t checked = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const std::vector<int32_t> expected = c.at("ids").get<std::vector<int32_t>>();
    CAPTURE(text.substr(0, 80));
    CHECK(tok().encode(text) == expected);
    CHECK(tok().decode(expected) == text);
    ++checked;
  }
  CHECK(checked == cases.size());
}

TEST_CASE("tokenizer: the chat template string encodes to the reference ids") {
  const std::string chat =
      "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek.<｜end▁of▁sentence｜>"
      "<｜User｜>1+1=?<｜Assistant｜><think>";
  const std::vector<int32_t> expected = {0,  128803, 33310, 128804, 128799, 19923, 3,      342,    1030,  22651, 4374,
                                         1465, 16,   1,     128803, 19,     13,    19,     127252, 128804, 128798};
  CHECK(tok().encode(chat) == expected);
  CHECK(tok().decode(expected) == chat);
}

TEST_CASE("tokenizer: special tokens and parse_special") {
  CHECK(tok().size() == 128815);
  CHECK(tok().bos_id() == 0);
  CHECK(tok().eos_id() == 1);
  CHECK(tok().token_id("<｜User｜>") == 128803);
  CHECK(tok().token_id("</think>") == 128799);
  CHECK(tok().token_id("Ġthe") >= 0);  // vocab keys are written in the byte-level alphabet
  CHECK(tok().token_id("no such token") == -1);
  CHECK(tok().is_special(0));
  CHECK(tok().is_special(128000));          // a place holder
  CHECK_FALSE(tok().is_special(128803));  // "<｜User｜>" is an added token but not special
  CHECK_FALSE(tok().is_special(128799));  // "</think>" is an added token but not special
  CHECK_FALSE(tok().is_special(19923));
  CHECK_FALSE(tok().is_special(-1));
  CHECK(tok().token_bytes(tok().token_id("Ġthe")) == " the");
  CHECK(tok().token_bytes(128803) == "<｜User｜>");

  // Without parse_special no added token is matched: the text is plain text.
  const std::string text = "<｜User｜>hi</think>";
  CHECK(tok().encode(text, true) == std::vector<int32_t>{128803, 6366, 128799});
  const std::vector<int32_t> plain = tok().encode(text, false);
  CHECK(plain.size() > 3);
  for (int32_t id : plain) CHECK(id < 128000);
  CHECK(tok().decode(plain) == text);
  // Longest match wins, and an unfinished marker is plain text.
  CHECK(tok().encode("<｜User").front() != 128803);
}

TEST_CASE("tokenizer: long pieces merge like short ones") {
  // Pieces over 64 bytes take the heap path; the ids were checked against a plain BPE.
  std::vector<int32_t> as(37, 89086);
  as.push_back(39535);
  CHECK(tok().encode(std::string(300, 'a')) == as);
  CHECK(tok().encode(std::string(200, '-')) == std::vector<int32_t>{24991, 24991, 79773});
  std::string cjk;
  for (int i = 0; i < 3; ++i) cjk += "证明对任意正整数能被整除";
  const std::vector<int32_t> unit = {9328, 693, 24970, 125299, 90912, 124637};
  std::vector<int32_t> three;
  for (int i = 0; i < 3; ++i) three.insert(three.end(), unit.begin(), unit.end());
  CHECK(tok().encode(cjk) == three);
  // Very long runs stay exact and fast.
  for (const std::string& s : {std::string(100000, ' '), std::string(100000, 'x'), std::string(50000, '\n')})
    CHECK(tok().decode(tok().encode(s)) == s);
}

TEST_CASE("tokenizer: invalid UTF-8 is an error naming the byte offset") {
  CHECK(error_of([] { tok().encode("abc\xFFxyz"); }) == "invalid UTF-8 at byte 3");
  CHECK(error_of([] { tok().encode("\xC3"); }) == "invalid UTF-8 at byte 0");                  // truncated
  CHECK(error_of([] { tok().encode("ok \xC0\xAF"); }) == "invalid UTF-8 at byte 3");           // overlong
  CHECK(error_of([] { tok().encode("12345678\xED\xA0\x80"); }) == "invalid UTF-8 at byte 8");  // surrogate
  CHECK(error_of([] { tok().encode("\xF4\x90\x80\x80"); }) == "invalid UTF-8 at byte 0");      // > U+10FFFF
  CHECK(error_of([] { tok().encode("é😀\x80"); }) == "invalid UTF-8 at byte 6");
  CHECK(error_of([] { tok().encode("ok é 😀"); }).empty());
}

TEST_CASE("tokenizer: padding ids decode to nothing and negative ids are errors") {
  const std::vector<int32_t> ids = {19923, int32_t(tok().size()), 129279, 3};
  CHECK(tok().decode(ids) == "Hello!");
  CHECK(tok().token_bytes(129000).empty());
  const std::vector<int32_t> bad = {19923, -7};
  CHECK(error_of([&] { tok().decode(bad); }).find("-7") != std::string::npos);
  CHECK(error_of([] { tok().token_bytes(-1); }).find("-1") != std::string::npos);
  StreamDecoder sd(tok());
  CHECK(sd.push(129279).empty());
  CHECK_THROWS(sd.push(-3));
}

TEST_CASE("tokenizer: streaming decode emits whole characters only") {
  const std::vector<std::string> texts = {
      "Hello, world!",
      "naïve café — “quotes” … 1 ≤ x ≤ 2",
      "证明：对任意正整数n，n^3-n能被6整除。",
      "日本語のテキストとカタカナ 한국어",
      "emoji 😀🎉👍🏽 🇯🇵 ❤️ family 👨‍👩‍👧",
      "math ∀ε>0 ∃δ>0 ⇒ |f(x)−f(a)|<ε and 𝔽 𝕜",
  };
  for (const std::string& text : texts) {
    CAPTURE(text);
    // The real encoding, one id at a time.
    {
      StreamDecoder sd(tok());
      std::string all;
      for (int32_t id : tok().encode(text)) {
        const std::string chunk = sd.push(id);
        CHECK(valid_utf8(chunk));
        all += chunk;
      }
      CHECK(sd.flush().empty());
      CHECK(all == text);
    }
    // One byte per token: the stream is cut at every byte position.
    {
      StreamDecoder sd(tok());
      std::string all;
      for (unsigned char b : text) {
        const int32_t id = byte_token(b);
        REQUIRE(id >= 0);
        const std::string chunk = sd.push(id);
        CHECK(valid_utf8(chunk));
        all += chunk;
      }
      CHECK(sd.flush().empty());
      CHECK(all == text);
    }
    // Cut once at every byte: the bytes before as byte tokens, then the rest at once.
    for (size_t k = 0; k <= text.size(); ++k) {
      StreamDecoder sd(tok());
      std::string all;
      for (size_t i = 0; i < k; ++i) all += sd.push(byte_token(static_cast<unsigned char>(text[i])));
      CHECK(valid_utf8(all));
      for (size_t i = k; i < text.size(); ++i) {
        const std::string chunk = sd.push(byte_token(static_cast<unsigned char>(text[i])));
        CHECK(valid_utf8(chunk));
        all += chunk;
      }
      CHECK(all == text);
    }
  }
  // Leftovers and invalid bytes come out as U+FFFD, never as broken UTF-8.
  StreamDecoder sd(tok());
  CHECK(sd.push(byte_token(0xE8)).empty());  // first byte of a CJK character
  CHECK(sd.push(byte_token(0xAF)).empty());
  CHECK(sd.flush() == "\xEF\xBF\xBD");
  CHECK(sd.push(byte_token(0xFF)) == "\xEF\xBF\xBD");
  CHECK(sd.push(byte_token('a')) == "a");
  CHECK(sd.push(byte_token(0xE8)).empty());
  CHECK(sd.push(byte_token('b')) == "\xEF\xBF\xBD" "b");
  CHECK(sd.flush().empty());
}

TEST_CASE("tokenizer: a corrupt tokenizer.json gives an error naming the file") {
  const std::string good = read_file(kDir / "tokenizer.json");
  {
    TempFile f(good.substr(0, good.size() / 2));
    const std::string e = error_of([&] { Tokenizer::load(f.path); });
    CHECK(e.find(f.path.string()) != std::string::npos);
    CHECK(e.find("invalid JSON") != std::string::npos);
  }
  {
    nlohmann::json j = nlohmann::json::parse(good);
    j.erase("default");
    j["model"].erase("vocab");
    TempFile f(j.dump());
    const std::string e = error_of([&] { Tokenizer::load(f.path); });
    CHECK(e.find(f.path.string()) != std::string::npos);
    CHECK(e.find("model.vocab") != std::string::npos);
  }
  {
    TempFile f(R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})");
    const std::string e = error_of([&] { Tokenizer::load(f.path); });
    CHECK(e.find(f.path.string()) != std::string::npos);
    CHECK(e.find("not an integer") != std::string::npos);
  }
  {
    const std::string e = error_of([] { Tokenizer::load("/nonexistent/tokenizer.json"); });
    CHECK(e.find("/nonexistent/tokenizer.json") != std::string::npos);
  }
}

}  // namespace engine_tokenizer_suite
