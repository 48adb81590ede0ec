// Byte-level BPE as Hugging Face `tokenizers` runs it for DeepSeek-V3/V3.2:
//
//   text ──added tokens (leftmost-longest, raw text)──► gaps
//   gap ──Split(regex, Isolated) × k──► pieces ──ByteLevel──► BPE merges by rank ──► ids
//
// Tokens are kept as raw bytes internally: the GPT-2 byte→unicode alphabet only exists
// in tokenizer.json and is undone at load, so encoding never builds unicode strings and
// decoding is a concatenation of byte strings.
#include "engine/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "engine/file_error.h"

namespace hearth {
namespace {

using nlohmann::json;

// ---- UTF-8 ---------------------------------------------------------------------------

enum class Utf8 { kValid, kInvalid, kIncomplete };

// Classifies the sequence starting at s[i] (Unicode Table 3-7). kValid: `len` bytes form
// one character. kInvalid: `len` bytes (the maximal subpart, >= 1) are one error.
// kIncomplete: the remaining bytes are a valid prefix cut by the end of the buffer.
Utf8 utf8_at(const unsigned char* s, size_t n, size_t i, size_t& len) {
  const unsigned c = s[i];
  if (c < 0x80) return len = 1, Utf8::kValid;
  size_t need;
  unsigned lo = 0x80, hi = 0xBF;  // bounds of the second byte
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c == 0xE0) need = 2, lo = 0xA0;
  else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
  else if (c == 0xED) need = 2, hi = 0x9F;
  else if (c == 0xF0) need = 3, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) need = 3;
  else if (c == 0xF4) need = 3, hi = 0x8F;
  else return len = 1, Utf8::kInvalid;
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= n) return len = k, Utf8::kIncomplete;
    const unsigned b = s[i + k];
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return len = k, Utf8::kInvalid;
  }
  return len = need + 1, Utf8::kValid;
}

void check_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // ASCII runs eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t len;
    if (utf8_at(s, n, i, len) != Utf8::kValid) throw std::runtime_error("invalid UTF-8 at byte " + std::to_string(i));
    i += len;
  }
}

// Appends the valid characters of bytes[0, n) to out, each invalid maximal subpart as
// U+FFFD. Returns how many bytes were consumed: all of them when `final`, otherwise an
// incomplete character at the end is left unconsumed.
size_t append_sanitized(std::string& out, const std::string& bytes, bool final) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    size_t len;
    switch (utf8_at(s, n, i, len)) {
      case Utf8::kValid: out.append(bytes, i, len); break;
      case Utf8::kInvalid: out += "\xEF\xBF\xBD"; break;
      case Utf8::kIncomplete:
        if (!final) return i;
        out += "\xEF\xBF\xBD";
        break;
    }
    i += len;
  }
  return n;
}

// ---- GPT-2 byte alphabet ---------------------------------------------------------------

// bytes_to_unicode(): printable bytes map to themselves, the other 68 to U+0100.. in order.
struct ByteAlphabet {
  int16_t byte_of[512];  // code point -> byte, -1 if not in the alphabet
  uint16_t cp_of[256];   // byte -> code point
  ByteAlphabet() {
    std::fill(std::begin(byte_of), std::end(byte_of), int16_t(-1));
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      cp_of[b] = uint16_t(printable ? b : 256 + extra++);
      byte_of[cp_of[b]] = int16_t(b);
    }
  }
};

// Spells bytes in the byte alphabet (code points below 512: one or two UTF-8 bytes each).
std::string bytes_to_alphabet(const ByteAlphabet& a, std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    const unsigned cp = a.cp_of[b];
    if (cp < 0x80) out += char(cp);
    else out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
  }
  return out;
}

// Decodes a vocab key written in the byte alphabet; false if it is not such a string.
bool alphabet_to_bytes(const ByteAlphabet& a, std::string_view key, std::string& out) {
  out.clear();
  const auto* s = reinterpret_cast<const unsigned char*>(key.data());
  size_t i = 0;
  while (i < key.size()) {
    size_t len;
    if (utf8_at(s, key.size(), i, len) != Utf8::kValid) return false;
    uint32_t cp = len == 1 ? s[i] : len == 2 ? ((s[i] & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu) : 0xFFFFFFFFu;
    if (cp >= 512 || a.byte_of[cp] < 0) return false;
    out += char(a.byte_of[cp]);
    i += len;
  }
  return true;
}

// ---- merges table ----------------------------------------------------------------------

// Open addressing over (left id, right id) -> (rank, merged id). Read-only after load.
class PairTable {
 public:
  struct Hit {
    uint32_t rank;
    int32_t id;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    // Looked up at random for every pair: transparent huge pages spare the TLB misses.
    constexpr size_t kHuge = size_t(2) << 20;
    const size_t bytes = (cap * sizeof(Slot) + kHuge - 1) / kHuge * kHuge;
    Slot* p = static_cast<Slot*>(std::aligned_alloc(kHuge, bytes));
    if (!p) throw std::bad_alloc();
    madvise(p, bytes, MADV_HUGEPAGE);
    std::fill(p, p + cap, Slot{kEmpty, {0, 0}});
    slots_.reset(p);
    mask_ = cap - 1;
  }
  bool insert(int32_t a, int32_t b, uint32_t rank, int32_t id) {
    const uint64_t k = key(a, b);
    for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return false;
      if (slots_[i].key == kEmpty) {
        slots_[i] = Slot{k, rank, id};
        return true;
      }
    }
  }
  const Hit* find(int32_t a, int32_t b) const {
    const uint64_t k = key(a, b);
    for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == k) return &s.hit;
      if (s.key == kEmpty) return nullptr;
    }
  }
  // Every pair as (rank, left, right), in no particular order.
  std::vector<std::tuple<uint32_t, int32_t, int32_t>> entries() const {
    std::vector<std::tuple<uint32_t, int32_t, int32_t>> out;
    for (size_t i = 0; slots_ && i <= mask_; ++i)
      if (slots_[i].key != kEmpty)
        out.emplace_back(slots_[i].hit.rank, int32_t(slots_[i].key >> 32), int32_t(uint32_t(slots_[i].key)));
    return out;
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  struct Slot {
    uint64_t key;
    Hit hit;
  };
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return size_t(k);
  }
  struct Free {
    void operator()(Slot* p) const { std::free(p); }
  };
  std::unique_ptr<Slot[], Free> slots_;
  size_t mask_ = 0;
};

// ---- piece cache -------------------------------------------------------------------------

// The ids of the pieces seen so far in one encode call (a text repeats its words), as
// ranges of the output: open addressing, no allocation per piece.
class PieceCache {
 public:
  struct Entry {
    const char* text;
    uint32_t len;
    uint32_t hash;
    uint32_t at;
    uint32_t count;
  };
  static uint64_t hash(std::string_view s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h ^ (h >> 29);
  }
  const Entry* find(std::string_view s, uint64_t h) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Entry& e = slots_[i];
      if (!e.text) return nullptr;
      if (e.hash == uint32_t(h) && e.len == s.size() && std::memcmp(e.text, s.data(), s.size()) == 0) return &e;
    }
  }
  void insert(std::string_view s, uint64_t h, uint32_t at, uint32_t count) {
    if ((used_ + 1) * 2 > slots_.size()) grow();
    place(Entry{s.data(), uint32_t(s.size()), uint32_t(h), at, count}, h);
    ++used_;
  }

 private:
  void place(const Entry& e, uint64_t h) {
    size_t i = h & mask_;
    while (slots_[i].text) i = (i + 1) & mask_;
    slots_[i] = e;
  }
  void grow() {
    std::vector<Entry> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, Entry{nullptr, 0, 0, 0, 0});
    mask_ = slots_.size() - 1;
    for (const Entry& e : old)
      if (e.text) place(e, hash({e.text, e.len}));
  }
  std::vector<Entry> slots_;
  size_t mask_ = 0, used_ = 0;
};

// ---- added tokens ----------------------------------------------------------------------

// A byte trie over added-token contents: leftmost-longest matching, like the
// Aho-Corasick automaton (MatchKind::LeftmostLongest) Hugging Face builds.
class TokenTrie {
 public:
  TokenTrie() : nodes_(1) {}
  void add(std::string_view s, int32_t id) {
    uint32_t n = 0;
    for (unsigned char c : s) {
      uint32_t next = child(n, c);
      if (!next) {
        next = uint32_t(nodes_.size());
        nodes_.emplace_back();
        nodes_[n].kids.emplace_back(c, next);
      }
      n = next;
    }
    nodes_[n].id = id;
    first_[static_cast<unsigned char>(s[0])] = true;
  }
  bool empty() const { return nodes_.size() == 1; }
  // The longest token starting at text[i]: its id and length, or id -1.
  int32_t longest_at(std::string_view text, size_t i, size_t& len) const {
    int32_t best = -1;
    uint32_t n = 0;
    for (size_t j = i; j < text.size(); ++j) {
      n = child(n, static_cast<unsigned char>(text[j]));
      if (!n) break;
      if (nodes_[n].id >= 0) best = nodes_[n].id, len = j + 1 - i;
    }
    return best;
  }
  bool may_start(unsigned char c) const { return first_[c]; }

 private:
  struct Node {
    int32_t id = -1;
    std::vector<std::pair<unsigned char, uint32_t>> kids;
  };
  uint32_t child(uint32_t n, unsigned char c) const {
    for (const auto& [k, v] : nodes_[n].kids)
      if (k == c) return v;
    return 0;
  }
  std::vector<Node> nodes_;
  bool first_[256] = {};
};

// ---- regexes ---------------------------------------------------------------------------

// Oniguruma (which Hugging Face uses) reads \s as the Unicode White_Space property;
// PCRE2 with UCP also counts U+180E. Spelling \s and \S as the exact property keeps the
// two engines in step: White_Space = U+0009..U+000D, U+0085 and the Z categories.
std::string onig_to_pcre2(const std::string& p) {
  static const char* kSpace = "\\t-\\r\\x{85}\\p{Z}";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 's') out += in_class ? std::string(kSpace) : "[" + std::string(kSpace) + "]";
      else if (e == 'S' && !in_class) out += "[^" + std::string(kSpace) + "]";
      else out += p.substr(i, 2);
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' (or '^]') right after the opening bracket is a literal member.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

struct Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
};

// Per-thread match state (a JIT stack cannot be shared between threads).
struct MatchState {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* ctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    md = pcre2_match_data_create(16, nullptr);
    ctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
    if (!md || !ctx || !stack) throw std::bad_alloc();
    pcre2_jit_stack_assign(ctx, nullptr, stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(ctx);
    pcre2_match_data_free(md);
  }
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
};

MatchState& match_state() {
  thread_local MatchState st;
  return st;
}

// ---- loading helpers ------------------------------------------------------------------

const json& need(const std::filesystem::path& file, const json& obj, const char* key, const char* where) {
  if (!obj.is_object()) fail(file, std::string(where) + " is not an object");
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) fail(file, std::string("missing ") + where + "." + key);
  return *it;
}


// Builds the JSON tree of tokenizer.json except model.vocab and model.merges (nearly
// all of the file), which it streams into flat vectors: a tree of 256k small nodes
// would cost most of the load time. Objects and arrays under root keys it does not
// use are skipped.
class TokenizerJsonReader final : public json::json_sax_t {
 public:
  json root;
  bool has_vocab = false, has_merges = false;
  std::string vocab_error, merges_error, parse_message;
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;

  bool null() override { return scalar(json(nullptr)); }
  bool boolean(bool v) override { return scalar(json(v)); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == kVocab && depth_ == 1) return vocab.emplace_back(std::move(key_), v), true;
    return scalar(json(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == kVocab && depth_ == 1)
      return vocab.emplace_back(std::move(key_), v > uint64_t(INT64_MAX) ? int64_t(-1) : int64_t(v)), true;
    return scalar(json(v));
  }
  bool number_float(number_float_t v, const string_t&) override { return scalar(json(v)); }
  bool binary(binary_t&) override { return scalar(json()); }
  bool string(string_t& v) override {
    if (mode_ == kMerges) {
      if (depth_ == 1) {
        const size_t sp = v.find(' ');
        if (sp == std::string::npos || v.find(' ', sp + 1) != std::string::npos) {
          bad_merge();
        } else {
          merges.emplace_back(v.substr(0, sp), v.substr(sp + 1));
        }
        return true;
      }
      if (depth_ == 2) {
        if (pair_.size() < 2) pair_.push_back(std::move(v));
        else bad_merge();
        return true;
      }
    }
    return scalar(json(std::move(v)));
  }
  bool key(string_t& k) override {
    if (mode_ == kDom) frames_.back().key = k;
    else if (mode_ == kVocab && depth_ == 1) key_ = k;
    return true;
  }
  bool start_object(std::size_t) override { return open(true); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    parse_message = e.what();
    return false;
  }

 private:
  enum Mode { kDom, kVocab, kMerges, kSkip };
  struct Frame {
    json value;
    std::string key;
  };
  std::vector<Frame> frames_;
  Mode mode_ = kDom;
  int depth_ = 0;  // containers open inside vocab / merges, the vocab / merges one included
  std::string key_;
  std::vector<std::string> pair_;

  void bad_merge() {
    if (merges_error.empty()) merges_error = "model.merges[" + std::to_string(merges.size()) + "] is not a merge";
  }
  bool in_model_at(const char* field) const {
    return frames_.size() == 2 && frames_[0].key == "model" && frames_[1].value.is_object() && frames_[1].key == field;
  }
  static bool used_at_root(const std::string& key) {
    for (const char* k : {"model", "added_tokens", "normalizer", "pre_tokenizer", "decoder", "post_processor"})
      if (key == k) return true;
    return false;
  }
  bool scalar(json v) {
    if (mode_ == kDom) return add(std::move(v)), true;
    if (mode_ == kVocab && vocab_error.empty()) vocab_error = "model.vocab['" + key_ + "']: id is not an integer";
    if (mode_ == kMerges) bad_merge();
    return true;
  }
  void add(json v) {
    if (frames_.empty()) {
      root = std::move(v);
    } else if (frames_.back().value.is_array()) {
      frames_.back().value.push_back(std::move(v));
    } else {
      frames_.back().value[frames_.back().key] = std::move(v);
    }
  }
  bool open(bool object) {
    if (mode_ == kDom) {
      if (frames_.size() == 1 && !used_at_root(frames_[0].key)) {
        mode_ = kSkip, depth_ = 1;  // e.g. a "default" copy of the whole file some exports carry
      } else if (object && in_model_at("vocab")) {
        mode_ = kVocab, depth_ = 1, has_vocab = true;
      } else if (!object && in_model_at("merges")) {
        mode_ = kMerges, depth_ = 1, has_merges = true;
      } else {
        frames_.push_back(Frame{object ? json::object() : json::array(), {}});
      }
      return true;
    }
    ++depth_;
    if (mode_ == kVocab && vocab_error.empty()) vocab_error = "model.vocab['" + key_ + "']: id is not an integer";
    if (mode_ == kMerges) {
      if (depth_ == 2 && !object) pair_.clear();
      else bad_merge();
    }
    return true;
  }
  bool close() {
    if (mode_ == kDom) {
      json v = std::move(frames_.back().value);
      frames_.pop_back();
      add(std::move(v));
      return true;
    }
    if (mode_ == kMerges && depth_ == 2) {
      if (pair_.size() == 2) merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      else bad_merge();
    }
    if (--depth_ == 0) mode_ = kDom;
    return true;
  }
};

}  // namespace

// ---- Impl --------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::filesystem::path file;
  std::string tokens_key, added_key, merges_key, splits_key;  // for parts()
  // Every id's bytes: blob[offset[id], offset[id + 1]).
  std::string blob;
  std::vector<uint32_t> offset;
  std::vector<TokenizerParts::Kind> kind;
  std::vector<uint8_t> special, normalized;
  std::vector<std::string> split_sources;  // the regexes as the parts gave them
  std::unordered_map<std::string, int32_t> by_text;  // vocab key / added content -> id
  int32_t byte_id[256];
  PairTable merges;
  TokenTrie added_raw;         // added tokens matched on the raw text
  TokenTrie added_normalized;  // ... then on the gaps (normalized = true; the normalizer is empty)
  std::vector<Regex> splits;
  int32_t bos = -1, eos = -1;

  ~Impl() {
    for (Regex& r : splits) pcre2_code_free(r.code);
  }

  int64_t size() const { return int64_t(offset.size()) - 1; }
  std::string_view bytes(int32_t id) const { return {blob.data() + offset[id], offset[id + 1] - offset[id]}; }

  // Encoding scratch, one per call.
  struct Work {
    PieceCache cache;
    std::vector<int32_t> ids;
    std::vector<uint32_t> ranks;
    std::vector<int32_t> merged;
    std::vector<int32_t> next, prev;
    std::vector<std::tuple<uint32_t, int32_t, int32_t>> heap;
  };

  void bpe(std::string_view piece, Work& w, std::vector<int32_t>& out) const;
  void bpe_long(std::string_view piece, Work& w, std::vector<int32_t>& out) const;
  void pretokenize(size_t level, std::string_view text, Work& w, std::vector<int32_t>& out) const;
  void encode_gap(std::string_view text, bool parse_special, Work& w, std::vector<int32_t>& out) const;
};

// BPE on one piece: repeatedly merge the adjacent pair of lowest rank (leftmost on ties).
// The quadratic scan is fastest for words; long pieces go through a heap.
void Tokenizer::Impl::bpe(std::string_view piece, Work& w, std::vector<int32_t>& out) const {
  const size_t n = piece.size();
  if (n == 1) {
    out.push_back(byte_id[static_cast<unsigned char>(piece[0])]);
    return;
  }
  constexpr size_t kMaxCached = 256;
  const uint64_t hash = n <= kMaxCached ? PieceCache::hash(piece) : 0;
  if (n <= kMaxCached) {
    if (const PieceCache::Entry* e = w.cache.find(piece, hash)) {
      out.insert(out.end(), out.begin() + e->at, out.begin() + e->at + e->count);
      return;
    }
  }
  const size_t at = out.size();
  if (n > 64) {
    bpe_long(piece, w, out);
  } else {
    constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();
    auto& ids = w.ids;
    auto& ranks = w.ranks;
    auto& merged = w.merged;
    ids.resize(n);
    ranks.resize(n);
    merged.resize(n);
    for (size_t i = 0; i < n; ++i) ids[i] = byte_id[static_cast<unsigned char>(piece[i])];
    auto set_pair = [&](size_t i) {
      const PairTable::Hit* h = merges.find(ids[i], ids[i + 1]);
      ranks[i] = h ? h->rank : kNone;
      merged[i] = h ? h->id : -1;
    };
    size_t m = n;
    for (size_t i = 0; i + 1 < m; ++i) set_pair(i);
    ranks[m - 1] = kNone;
    while (m > 1) {
      size_t best = 0;
      uint32_t best_rank = kNone;
      for (size_t i = 0; i + 1 < m; ++i)
        if (ranks[i] < best_rank) best_rank = ranks[i], best = i;
      if (best_rank == kNone) break;
      ids[best] = merged[best];
      // Drop element best + 1.
      for (size_t i = best + 1; i + 1 < m; ++i) {
        ids[i] = ids[i + 1];
        ranks[i] = ranks[i + 1];
        merged[i] = merged[i + 1];
      }
      --m;
      ranks[m - 1] = kNone;
      if (best + 1 < m) set_pair(best);
      else ranks[best] = kNone;
      if (best > 0) set_pair(best - 1);
    }
    out.insert(out.end(), ids.begin(), ids.begin() + m);
  }
  if (n <= kMaxCached) w.cache.insert(piece, hash, uint32_t(at), uint32_t(out.size() - at));
}

// The same merges in O(n log n), as Hugging Face's Word::merge_all does it: a min-heap
// of (rank, position) over a linked list of symbols; stale entries are skipped.
void Tokenizer::Impl::bpe_long(std::string_view piece, Work& w, std::vector<int32_t>& out) const {
  const int32_t n = int32_t(piece.size());
  auto& ids = w.ids;
  auto& next = w.next;
  auto& prev = w.prev;
  auto& heap = w.heap;
  ids.resize(size_t(n));
  next.resize(size_t(n));
  prev.resize(size_t(n));
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    ids[size_t(i)] = byte_id[static_cast<unsigned char>(piece[size_t(i)])];
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
    prev[size_t(i)] = i - 1;
  }
  // std heap functions build a max-heap; greater<> makes it a min-heap on (rank, pos).
  auto push = [&](int32_t i) {
    const int32_t j = next[size_t(i)];
    if (j < 0) return;
    if (const PairTable::Hit* h = merges.find(ids[size_t(i)], ids[size_t(j)])) {
      heap.emplace_back(h->rank, i, h->id);
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const auto [rank, i, id] = heap.back();
    heap.pop_back();
    if (ids[size_t(i)] < 0) continue;  // merged into its left neighbour
    const int32_t j = next[size_t(i)];
    if (j < 0) continue;
    const PairTable::Hit* h = merges.find(ids[size_t(i)], ids[size_t(j)]);
    if (!h || h->id != id) continue;  // the pair changed since this entry was pushed
    ids[size_t(i)] = id;
    ids[size_t(j)] = -1;
    next[size_t(i)] = next[size_t(j)];
    if (next[size_t(i)] >= 0) prev[size_t(next[size_t(i)])] = i;
    if (prev[size_t(i)] >= 0) push(prev[size_t(i)]);
    push(i);
  }
  for (int32_t i = 0; i >= 0; i = next[size_t(i)]) out.push_back(ids[size_t(i)]);
}

// Split `level` (Isolated): matches and the gaps between them both become pieces, each
// handed to the next split; after the last split each piece is BPE'd.
void Tokenizer::Impl::pretokenize(size_t level, std::string_view text, Work& w, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  if (level == splits.size()) {
    bpe(text, w, out);
    return;
  }
  MatchState& st = match_state();
  const Regex& re = splits[level];
  const auto* s = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = re.jit ? pcre2_jit_match(re.code, s, text.size(), pos, 0, st.md, st.ctx)
                          : pcre2_match(re.code, s, text.size(), pos, PCRE2_NO_UTF_CHECK, st.md, st.ctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw std::runtime_error(std::string("pre-tokenizer regex failed: ") + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
    size_t b = ov[0], e = ov[1];
    if (e == b) {
      // An empty match splits nothing; step over one character.
      do ++e;
      while (e < text.size() && (static_cast<unsigned char>(text[e]) & 0xC0) == 0x80);
      pretokenize(level + 1, text.substr(pos, e - pos), w, out);
      pos = e;
      continue;
    }
    pretokenize(level + 1, text.substr(pos, b - pos), w, out);
    pretokenize(level + 1, text.substr(b, e - b), w, out);
    pos = e;
  }
  pretokenize(level + 1, text.substr(pos), w, out);
}

// The normalized added tokens, then the pre-tokenizer, on a gap between raw added tokens.
void Tokenizer::Impl::encode_gap(std::string_view text, bool parse_special, Work& w, std::vector<int32_t>& out) const {
  size_t start = 0;
  if (parse_special && !added_normalized.empty()) {
    for (size_t i = 0; i < text.size(); ++i) {
      if (!added_normalized.may_start(static_cast<unsigned char>(text[i]))) continue;
      size_t len = 0;
      const int32_t id = added_normalized.longest_at(text, i, len);
      if (id < 0) continue;
      pretokenize(0, text.substr(start, i - start), w, out);
      out.push_back(id);
      start = i + len;
      i = start - 1;
    }
  }
  pretokenize(0, text.substr(start), w, out);
}

// ---- Tokenizer -----------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  TokenizerJsonReader reader;
  {
    std::string raw;
    {
      std::ifstream f(path, std::ios::binary);
      if (!f) fail(path, "cannot open");
      std::ostringstream ss;
      ss << f.rdbuf();
      raw = std::move(ss).str();
    }
    if (!json::sax_parse(raw, &reader)) fail(path, "invalid JSON: " + reader.parse_message);
  }
  const json& j = reader.root;
  if (!j.is_object()) fail(path, "expected a JSON object");

  // Model: BPE without the features DeepSeek does not use.
  const json& model = need(path, j, "model", "tokenizer");
  const json& type = need(path, model, "type", "model");
  if (!type.is_string() || type.get<std::string>() != "BPE") fail(path, "model.type must be \"BPE\"");
  for (const char* k : {"dropout", "continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(k) && !model[k].is_null()) fail(path, std::string("model.") + k + " is not supported");
  if (model.contains("byte_fallback") && model["byte_fallback"] == true) fail(path, "model.byte_fallback is not supported");
  if (model.contains("ignore_merges") && model["ignore_merges"] == true) fail(path, "model.ignore_merges is not supported");
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const json& nz = j["normalizer"];
    const bool empty_seq = nz.is_object() && nz.value("type", "") == "Sequence" && nz.contains("normalizers") &&
                           nz["normalizers"].is_array() && nz["normalizers"].empty();
    if (!empty_seq) fail(path, "only an empty normalizer is supported");
  }

  TokenizerParts parts;
  parts.file = path;

  // Vocab: id -> key (in the GPT-2 byte alphabet; special tokens sit there as plain text,
  // and an added token must cover them).
  if (!reader.has_vocab) fail(path, "missing model.vocab (an object of token -> id)");
  if (!reader.vocab_error.empty()) fail(path, reader.vocab_error);
  if (reader.vocab.empty()) fail(path, "model.vocab is empty");
  const json* added_json = j.contains("added_tokens") ? &j["added_tokens"] : nullptr;
  if (added_json && !added_json->is_null() && !added_json->is_array()) fail(path, "added_tokens must be an array");
  int64_t max_id = -1;
  auto check_id = [&](const json& v, const std::string& what) {
    if (!v.is_number_integer()) fail(path, what + ": id is not an integer");
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id >= (int64_t(1) << 24)) fail(path, what + ": id " + std::to_string(id) + " is out of range");
    max_id = std::max(max_id, id);
    return int32_t(id);
  };
  for (const auto& [key, id] : reader.vocab)
    if (id < 0 || id >= (int64_t(1) << 24)) fail(path, "model.vocab['" + key + "']: id " + std::to_string(id) + " is out of range");
    else max_id = std::max(max_id, id);
  if (added_json && added_json->is_array())
    for (const json& a : *added_json) check_id(need(path, a, "id", "added_tokens[]"), "added_tokens[]");
  auto& tokens = parts.tokens;
  tokens.resize(size_t(max_id + 1));
  for (auto& [key, id64] : reader.vocab) {
    TokenizerParts::Token& t = tokens[size_t(id64)];
    if (t.kind != TokenizerParts::Kind::kUnused) fail(path, "model.vocab: id " + std::to_string(id64) + " is used twice");
    t.text = std::move(key);
    t.kind = TokenizerParts::Kind::kVocab;
  }

  // Added tokens: matched in the raw text; their bytes are their content.
  if (added_json && added_json->is_array()) {
    for (const json& a : *added_json) {
      const int32_t id = a["id"].get<int32_t>();
      const json& content = need(path, a, "content", "added_tokens[]");
      if (!content.is_string() || content.get_ref<const std::string&>().empty())
        fail(path, "added_tokens[] id " + std::to_string(id) + ": content must be a non-empty string");
      const std::string& text = content.get_ref<const std::string&>();
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        if (a.value(flag, false)) fail(path, "added token '" + text + "': " + flag + " is not supported");
      TokenizerParts::Token& t = tokens[size_t(id)];
      if (t.kind == TokenizerParts::Kind::kVocab && t.text != text)
        fail(path, "added token '" + text + "' reuses id " + std::to_string(id) + " of a different vocab token");
      t = TokenizerParts::Token{text, TokenizerParts::Kind::kAdded, a.value("special", false), a.value("normalized", false)};
    }
  }
  for (size_t id = 0; id < tokens.size(); ++id)
    if (tokens[id].kind == TokenizerParts::Kind::kUnused)
      fail(path, "id " + std::to_string(id) + " has no token (the ids must be contiguous)");

  // Merges: "a b" strings (or [a, b] pairs in newer files); rank = position.
  if (!reader.has_merges) fail(path, "missing model.merges (an array of merges)");
  if (!reader.merges_error.empty()) fail(path, reader.merges_error);
  parts.merges = std::move(reader.merges);

  // Pre-tokenizer: Split(regex, Isolated)* then ByteLevel without its own regex.
  const json& pre = need(path, j, "pre_tokenizer", "tokenizer");
  std::vector<const json*> steps;
  if (pre.value("type", "") == "Sequence") {
    const json& list = need(path, pre, "pretokenizers", "pre_tokenizer");
    if (!list.is_array()) fail(path, "pre_tokenizer.pretokenizers must be an array");
    for (const json& s : list) steps.push_back(&s);
  } else {
    steps.push_back(&pre);
  }
  if (steps.empty() || !steps.back()->is_object() || steps.back()->value("type", "") != "ByteLevel" ||
      steps.back()->value("use_regex", true) || steps.back()->value("add_prefix_space", false))
    fail(path, "pre_tokenizer must end with ByteLevel (use_regex false, add_prefix_space false)");
  for (size_t k = 0; k + 1 < steps.size(); ++k) {
    const json& s = *steps[k];
    const std::string where = "pre_tokenizer step " + std::to_string(k);
    if (!s.is_object() || s.value("type", "") != "Split" || s.value("behavior", "") != "Isolated" || s.value("invert", false))
      fail(path, where + ": only Split with behavior Isolated is supported");
    const json& pat = need(path, s, "pattern", where.c_str());
    if (!pat.is_object() || !pat.contains("Regex") || !pat["Regex"].is_string())
      fail(path, where + ": pattern must be a Regex");
    parts.splits.push_back(pat["Regex"].get<std::string>());
  }
  return build(std::move(parts));
}

Tokenizer Tokenizer::build(TokenizerParts parts) {
  using Kind = TokenizerParts::Kind;
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  const std::filesystem::path& path = parts.file;
  t.file = path;
  t.tokens_key = parts.tokens_key;
  t.added_key = parts.added_key;
  t.merges_key = parts.merges_key;
  t.splits_key = parts.splits_key;
  const std::string& tokens_key = parts.tokens_key;

  // Tokens: id -> bytes (vocab keys are in the byte alphabet, added tokens are their content).
  const size_t count = parts.tokens.size();
  if (count == 0) fail(path, tokens_key + " is empty");
  if (count > (size_t(1) << 24)) fail(path, tokens_key + " has " + std::to_string(count) + " tokens, more than hearth takes");
  t.kind.resize(count);
  t.special.assign(count, 0);
  t.normalized.assign(count, 0);
  t.offset.resize(count + 1);
  size_t total = 0;
  for (const auto& tok : parts.tokens) total += tok.text.size();
  t.blob.reserve(total);
  t.by_text.reserve(count * 2);
  const ByteAlphabet alphabet;
  std::string buf;
  for (size_t id = 0; id < count; ++id) {
    TokenizerParts::Token& tok = parts.tokens[id];
    t.offset[id] = uint32_t(t.blob.size());
    t.kind[id] = tok.kind;
    if (tok.kind == Kind::kUnused) continue;
    auto where = [&] { return tokens_key + " id " + std::to_string(id); };
    if (tok.text.empty()) fail(path, where() + " is an empty token");
    if (tok.kind == Kind::kVocab) {
      if (!alphabet_to_bytes(alphabet, tok.text, buf))
        fail(path, where() + " ('" + tok.text + "') is not in the byte-level alphabet");
      t.blob += buf;
    } else {
      try {
        check_utf8(tok.text);
      } catch (const std::exception&) {
        fail(path, parts.added_key + " id " + std::to_string(id) + ": content is not UTF-8");
      }
      t.blob += tok.text;
      t.special[id] = tok.special;
      t.normalized[id] = tok.normalized;
      (tok.normalized ? t.added_normalized : t.added_raw).add(tok.text, int32_t(id));
    }
    if (t.blob.size() > std::numeric_limits<uint32_t>::max()) fail(path, tokens_key + " holds more than 4 GiB of text");
    const auto [it, fresh] = t.by_text.emplace(std::move(tok.text), int32_t(id));
    if (!fresh) fail(path, tokens_key + ": token '" + it->first + "' is at ids " + std::to_string(it->second) + " and " + std::to_string(id));
  }
  t.offset[count] = uint32_t(t.blob.size());

  // The token of every single byte: where BPE starts.
  std::fill(std::begin(t.byte_id), std::end(t.byte_id), -1);
  for (int b = 0; b < 256; ++b) {
    auto it = t.by_text.find(bytes_to_alphabet(alphabet, std::string(1, char(b))));
    if (it == t.by_text.end() || t.kind[size_t(it->second)] != Kind::kVocab)
      fail(path, tokens_key + " has no token for byte " + std::to_string(b));
    t.byte_id[b] = it->second;
  }

  // Merges: rank = position.
  t.merges.reserve(parts.merges.size());
  std::string joined;
  for (size_t r = 0; r < parts.merges.size(); ++r) {
    const auto& [left, right] = parts.merges[r];
    joined.assign(left).append(right);
    auto a = t.by_text.find(left), b = t.by_text.find(right), c = t.by_text.find(joined);
    const std::string* missing = a == t.by_text.end() ? &left : b == t.by_text.end() ? &right : c == t.by_text.end() ? &joined : nullptr;
    if (missing)
      fail(path, parts.merges_key + "[" + std::to_string(r) + "] uses a token that is not in " + tokens_key + ": '" + *missing + "'");
    t.merges.insert(a->second, b->second, uint32_t(r), c->second);  // a repeated pair keeps its first rank
  }

  // Pre-tokenizer regexes.
  for (size_t k = 0; k < parts.splits.size(); ++k) {
    const std::string pattern = onig_to_pcre2(parts.splits[k]);
    int err = 0;
    PCRE2_SIZE err_at = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &err, &err_at, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail(path, parts.splits_key + " step " + std::to_string(k) + ": regex does not compile at offset " +
                     std::to_string(err_at) + ": " + reinterpret_cast<const char*>(msg));
    }
    const bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    t.splits.push_back(Regex{code, jit});
  }
  t.split_sources = std::move(parts.splits);

  auto marker = [&](int32_t given, std::string_view text, const char* what) {
    if (given < 0) {
      auto it = t.by_text.find(std::string(text));
      return it == t.by_text.end() ? -1 : it->second;
    }
    if (size_t(given) >= count || t.kind[size_t(given)] == Kind::kUnused)
      fail(path, std::string(what) + " id " + std::to_string(given) + " is not a token");
    return given;
  };
  t.bos = marker(parts.bos, "<｜begin▁of▁sentence｜>", "BOS");
  t.eos = marker(parts.eos, "<｜end▁of▁sentence｜>", "EOS");
  return Tokenizer(std::move(impl));
}

TokenizerParts Tokenizer::parts() const {
  const Impl& t = *impl_;
  TokenizerParts p;
  p.file = t.file;
  p.tokens_key = t.tokens_key;
  p.added_key = t.added_key;
  p.merges_key = t.merges_key;
  p.splits_key = t.splits_key;
  const ByteAlphabet alphabet;
  const int32_t n = int32_t(t.size());
  p.tokens.resize(size_t(n));
  for (int32_t id = 0; id < n; ++id) {
    TokenizerParts::Token& tok = p.tokens[size_t(id)];
    tok.kind = t.kind[size_t(id)];
    if (tok.kind == TokenizerParts::Kind::kVocab) tok.text = bytes_to_alphabet(alphabet, t.bytes(id));
    else if (tok.kind == TokenizerParts::Kind::kAdded) tok.text = std::string(t.bytes(id));
    tok.special = t.special[size_t(id)];
    tok.normalized = t.normalized[size_t(id)];
  }
  auto entries = t.merges.entries();
  std::sort(entries.begin(), entries.end());
  p.merges.reserve(entries.size());
  for (const auto& [rank, a, b] : entries) p.merges.emplace_back(p.tokens[size_t(a)].text, p.tokens[size_t(b)].text);
  p.splits = t.split_sources;
  p.bos = t.bos;
  p.eos = t.eos;
  return p;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  check_utf8(text);
  const Impl& t = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 16);
  Impl::Work w;
  // Raw added tokens, leftmost-longest; the gaps go on to the normalized ones.
  size_t start = 0;
  if (parse_special && !t.added_raw.empty()) {
    for (size_t i = 0; i < text.size(); ++i) {
      if (!t.added_raw.may_start(static_cast<unsigned char>(text[i]))) continue;
      size_t len = 0;
      const int32_t id = t.added_raw.longest_at(text, i, len);
      if (id < 0) continue;
      t.encode_gap(text.substr(start, i - start), parse_special, w, out);
      out.push_back(id);
      start = i + len;
      i = start - 1;
    }
  }
  t.encode_gap(text.substr(start), parse_special, w, out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0) throw std::runtime_error("unknown token id " + std::to_string(id));
    if (id < impl_->size()) out += impl_->bytes(id);
  }
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0) throw std::runtime_error("unknown token id " + std::to_string(id));
  if (id >= impl_->size()) return {};
  return std::string(impl_->bytes(id));
}

int32_t Tokenizer::token_id(std::string_view token) const {
  auto it = impl_->by_text.find(std::string(token));
  return it == impl_->by_text.end() ? -1 : it->second;
}

int64_t Tokenizer::size() const { return impl_->size(); }
bool Tokenizer::is_special(int32_t id) const { return id >= 0 && id < impl_->size() && impl_->special[size_t(id)]; }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }

// ---- StreamDecoder --------------------------------------------------------------------------

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_.token_bytes(id);
  std::string out;
  pending_.erase(0, append_sanitized(out, pending_, false));
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  append_sanitized(out, pending_, true);
  pending_.clear();
  return out;
}

}  // namespace hearth
