// The tokenizer a GGUF file carries as tokenizer.ggml.* metadata: written the way
// llama.cpp's converter writes DeepSeek-V3's (convert_hf_to_gguf.py _set_vocab_gpt2 and
// gguf-py's SpecialVocab), and read back into the same Tokenizer tokenizer.json gives.
//
//   tokenizer.ggml.model        str        "gpt2" (byte-level BPE)
//   tokenizer.ggml.pre          str        "deepseek-v3" (names the pre-tokenizer regexes)
//   tokenizer.ggml.tokens       [str]      one per id of the model's vocab: vocab tokens in
//                                          the byte-level alphabet ("Ġthe"), added tokens as
//                                          their content, "[PAD{id}]" where there is none
//   tokenizer.ggml.token_type   [i32]      NORMAL 1, CONTROL 3, USER_DEFINED 4, UNUSED 5
//   tokenizer.ggml.merges       [str]      "left right", by rank
//   tokenizer.ggml.bos_token_id u32        (also eos_token_id, padding_token_id)
//   tokenizer.ggml.add_bos_token bool      (also add_eos_token)
//   tokenizer.chat_template     str        the Jinja template, when there is one
//
// Added tokens are CONTROL when Hugging Face marks them special or when they look like
// markers ("<｜User｜>", "<|EOT|>": llama.cpp's does_token_look_special), USER_DEFINED
// otherwise ("<think>"). Read back, CONTROL tokens are special: a tokenizer from a GGUF
// file calls "<｜User｜>" special where tokenizer.json does not. Encoding is the same:
// both kinds are matched in the raw text.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf.h"
#include "engine/tokenizer.h"

namespace hearth {

// llama.cpp's token types (gguf-py TokenType, llama_token_type).
enum class GgufTokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

inline constexpr std::string_view kGgufTokenizerModel = "tokenizer.ggml.model";
inline constexpr std::string_view kGgufTokenizerPre = "tokenizer.ggml.pre";
inline constexpr std::string_view kGgufTokens = "tokenizer.ggml.tokens";
inline constexpr std::string_view kGgufTokenType = "tokenizer.ggml.token_type";
inline constexpr std::string_view kGgufMerges = "tokenizer.ggml.merges";
inline constexpr std::string_view kGgufBosId = "tokenizer.ggml.bos_token_id";
inline constexpr std::string_view kGgufEosId = "tokenizer.ggml.eos_token_id";
inline constexpr std::string_view kGgufPadId = "tokenizer.ggml.padding_token_id";
inline constexpr std::string_view kGgufAddBos = "tokenizer.ggml.add_bos_token";
inline constexpr std::string_view kGgufAddEos = "tokenizer.ggml.add_eos_token";
inline constexpr std::string_view kGgufChatTemplate = "tokenizer.chat_template";

// The pre-tokenizer llama.cpp calls "deepseek-v3": the Split regexes of DeepSeek-V3's
// tokenizer.json, in order (Oniguruma syntax, as TokenizerParts::splits holds them).
const std::vector<std::string>& deepseek_v3_split_regexes();

// What the writer takes besides the tokenizer.
struct GgufTokenizerExtras {
  int64_t vocab_size = 0;         // length of the token list (the model's vocab); 0: the tokenizer's size
  std::string chat_template;      // tokenizer.chat_template, written when not empty
  std::optional<int32_t> pad_id;  // tokenizer.ggml.padding_token_id; unset: the EOS id, which
                                  // DeepSeek-V3's tokenizer_config.json names its pad_token
  bool add_bos = true, add_eos = false;
};

// Extras from a Hugging Face tokenizer_config.json: chat_template (a string, or the
// "default" entry of a list of {name, template}), pad_token (a string or {content})
// looked up in `tok`, add_bos_token, add_eos_token; absent keys keep the defaults.
// Throws std::runtime_error naming the file and the key.
GgufTokenizerExtras tokenizer_config_extras(const std::filesystem::path& tokenizer_config_json, const Tokenizer& tok);

// Adds the tokenizer.* keys above to `w` (before its first write()). Throws
// std::invalid_argument when the tokenizer is not one llama.cpp's "deepseek-v3" describes
// (other pre-tokenizer regexes), when vocab_size is below the tokenizer's size, or when
// an id in the extras is not a token.
void add_gguf_tokenizer(GgufWriter& w, const Tokenizer& tok, const GgufTokenizerExtras& extras = {});

// The tokenizer of a GGUF file. Throws std::runtime_error, one line naming the file and
// the key: a missing key, a model other than "gpt2", a pre-tokenizer hearth does not
// know, token_type not matching tokens in length, a token type a gpt2 vocab does not use,
// a merge that is not two known tokens, a repeated token, a special-token id that is no
// token. UNUSED ids decode to nothing; trailing ones do not count in size().
Tokenizer tokenizer_from_gguf(const GgufFile& file);

}  // namespace hearth
