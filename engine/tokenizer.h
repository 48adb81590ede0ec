// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (DeepSeek-V3/V3.2).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hearth {

class Tokenizer {
 public:
  // Throws std::runtime_error naming the file on anything it cannot use.
  static Tokenizer load(const std::filesystem::path& tokenizer_json);
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
