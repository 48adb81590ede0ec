// The proof loop's durable state in its output directory:
//
//   pool.jsonl    one JSON object per finished sample, appended and fsync'ed as each one
//                 finishes; never rewritten. A crash can leave only the last line torn;
//                 reading drops it with a warning and cuts the file back to its last
//                 complete line, so appending goes on cleanly.
//   journal.json  the samples in flight: the token ids each has generated so far. Written
//                 every few seconds as a whole to a temporary file and renamed over the old
//                 one, so it is always either the previous or the next complete version.
//
// A resumed run finds finished samples in the pool (and never runs them again) and
// continues partial ones from their journaled tokens.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string_view>
#include <string>
#include <unordered_map>
#include <vector>

namespace hearth {

using WarnFn = std::function<void(const std::string&)>;

enum class SampleKind { kGeneration, kVerification, kMeta };
const char* sample_kind_name(SampleKind k);  // "generation", "verification", "meta"

struct PoolRecord {
  std::string id;  // unique, deterministic from (round, kind, index): see engine/proof_loop.h
  int round = 0;
  SampleKind kind = SampleKind::kGeneration;
  int index = 0;                     // generation: its index in the round; verification: which of the V; meta: 0
  std::string parent;                // verification: the proof's id; meta: the verification's id;
                                     // refinement: the best proof it was shown; round 1: empty
  std::vector<std::string> context;  // refinement: every proof it was shown, best first
  std::string prompt_hash;           // of the prompt ids (prompt_hash())
  uint64_t seed = 0;
  std::string text;                  // everything generated, EOS excluded
  std::string proof;                 // generation: the proof (its Solution section); "" when it wrote none
  std::optional<double> score;       // generation: its self-evaluation; verification: its rating;
                                     // meta: its verdict on the rating (1: sound)
  int64_t tokens = 0;                // generated tokens
  double seconds = 0;                // wall time, over every run that worked on it
  std::string stop;                  // why it ended (stop_reason_name)
};

// JSON field names: id, round, kind, index, parent, context, prompt_hash, seed, text, proof,
// self_score | rating | verdict (by kind; null: no score), tokens, seconds, stop.
nlohmann::json pool_record_json(const PoolRecord& r);
// Throws std::runtime_error naming `where` and the field on a missing or mistyped field.
PoolRecord pool_record_from_json(const nlohmann::json& j, const std::string& where);

// `s` with every byte that is not part of a valid UTF-8 character replaced by U+FFFD
// (a sample cut off by its token budget can end inside a character; a random model
// writes anything). Pool texts go through it before they are used, so a record reads
// back from pool.jsonl exactly as it was made.
std::string valid_utf8(std::string_view s);

// 16 hex digits: FNV-1a over the ids' bytes.
std::string prompt_hash(std::span<const int32_t> ids);

// Reads a pool file. A last line without its newline (or that does not parse) is a torn
// write: dropped, with a warning, and *complete_bytes tells where the good part ends. Any
// other bad line is an error naming the file and the line number. A missing file is empty.
std::vector<PoolRecord> read_pool(const std::filesystem::path& file, const WarnFn& warn,
                                  uint64_t* complete_bytes = nullptr);

class ProofPool {
 public:
  // Opens `file` for appending (creating it), after reading what it holds; a torn last
  // line is cut off the file.
  ProofPool(std::filesystem::path file, const WarnFn& warn);
  ~ProofPool();
  ProofPool(const ProofPool&) = delete;
  ProofPool& operator=(const ProofPool&) = delete;

  const PoolRecord* find(const std::string& id) const;
  const std::vector<PoolRecord>& records() const { return records_; }
  // One line, written and fsync'ed before it returns. Throws std::runtime_error on an
  // I/O error or an id already in the pool.
  void append(const PoolRecord& r);
  const std::filesystem::path& file() const { return file_; }

 private:
  std::filesystem::path file_;
  int fd_ = -1;
  std::vector<PoolRecord> records_;
  std::unordered_map<std::string, size_t> by_id_;
};

struct PartialSample {
  std::string prompt_hash;      // the prompt it continues (a resumed run checks it still matches)
  std::vector<int32_t> tokens;  // generated so far
  double seconds = 0;           // spent on it so far
};
using Journal = std::map<std::string, PartialSample>;

// Writes the journal atomically: FILE.tmp, fsync, rename over FILE.
void save_journal(const std::filesystem::path& file, const Journal& journal);
// A missing file is an empty journal; an unreadable or malformed one is too, with a
// warning (its partial samples start over; nothing finished is lost).
Journal load_journal(const std::filesystem::path& file, const WarnFn& warn);

}  // namespace hearth
