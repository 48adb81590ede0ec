// Byte-level BPE tokenizer (DeepSeek-V3/V3.2) read from a Hugging Face tokenizer.json or
// built from the parts another file carries (a GGUF file: engine/gguf_tokenizer.h).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hearth {

// What a byte-level BPE tokenizer is made of, whichever file described it: a Hugging Face
// tokenizer.json (Tokenizer::load) or a GGUF file's tokenizer.ggml.* metadata
// (engine/gguf_tokenizer.h). Tokenizer::build makes the tokenizer; parts() gives them back.
struct TokenizerParts {
  enum class Kind : uint8_t {
    kUnused,  // no token: never produced, decodes to nothing (GGUF "[PAD…]" padding)
    kVocab,   // a BPE token, spelled in the GPT-2 byte-level alphabet ("Ġthe" for " the")
    kAdded,   // matched whole in the raw text before BPE; spelled as its content ("<｜User｜>")
  };
  struct Token {
    std::string text;
    Kind kind = Kind::kUnused;
    bool special = false;     // kAdded: Hugging Face's "special" / GGUF CONTROL
    bool normalized = false;  // kAdded: matched only in the gaps the others leave
  };
  std::vector<Token> tokens;                                // index = id
  std::vector<std::pair<std::string, std::string>> merges;  // by rank, as token texts
  std::vector<std::string> splits;  // pre-tokenizer: Split(regex, Isolated) in order, Oniguruma syntax
  int32_t bos = -1, eos = -1;       // -1: the token spelled <｜begin▁of▁sentence｜> / <｜end▁of▁sentence｜>

  // Where the parts came from: every error names the file and the key at fault.
  std::filesystem::path file;
  std::string tokens_key = "model.vocab", added_key = "added_tokens", merges_key = "model.merges",
              splits_key = "pre_tokenizer";
};

class Tokenizer {
 public:
  // Throws std::runtime_error naming the file on anything it cannot use.
  static Tokenizer load(const std::filesystem::path& tokenizer_json);
  // The one construction path of every loader. Throws std::runtime_error naming
  // parts.file and the key: a token not in the byte-level alphabet, an empty or repeated
  // token text, a byte without a token, a merge naming an unknown token, a bad regex.
  static Tokenizer build(TokenizerParts parts);
  // The parts back (ids past the last token are not included; a merge repeated in the
  // source appears once, at its first rank).
  TokenizerParts parts() const;
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Added tokens written in the text (e.g. "<｜User｜>") are matched as tokens when
  // parse_special is true (leftmost-longest, as Hugging Face does); when false no added
  // token is matched, special or not, and the text is only text. No BOS is added.
  // Throws on invalid UTF-8 (naming the byte offset). Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Byte-exact. Ids in [size(), any model vocab) are padding and decode to nothing;
  // negative ids throw.
  std::string decode(std::span<const int32_t> ids) const;
  // The bytes of one token (special tokens: their text).
  std::string token_bytes(int32_t id) const;

  // Exact token text as tokenizer.json writes it -> id, -1 if absent: an added token's
  // content ("</think>") or a vocab key in the byte-level alphabet ("Ġthe" for " the").
  int32_t token_id(std::string_view token) const;
  int64_t size() const;                            // ids the tokenizer defines (max id + 1)
  bool is_special(int32_t id) const;
  int32_t bos_id() const;  // <｜begin▁of▁sentence｜>
  int32_t eos_id() const;  // <｜end▁of▁sentence｜>

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of ids into text without ever emitting a partial UTF-8 character:
// bytes of a token that ends mid-character are held back until the character completes.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);  // the text that became complete with this id
  std::string flush();           // whatever is held back (invalid bytes as U+FFFD)

 private:
  const Tokenizer& tok_;
  std::string pending_;
};

}  // namespace hearth
