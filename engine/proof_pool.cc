#include "engine/proof_pool.h"


#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "engine/utf8.h"

namespace hearth {

namespace {

std::string sys_error(const std::string& what, const std::filesystem::path& p) {
  return what + " '" + p.string() + "': " + std::strerror(errno);
}

const char* score_field(SampleKind k) {
  switch (k) {
    case SampleKind::kGeneration: return "self_score";
    case SampleKind::kVerification: return "rating";
    case SampleKind::kMeta: return "verdict";
  }
  return "score";
}

void write_all(int fd, const std::string& s, const std::filesystem::path& p) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(sys_error("cannot write", p));
    done += size_t(n);
  }
}
}  // namespace

const char* sample_kind_name(SampleKind k) {
  switch (k) {
    case SampleKind::kGeneration: return "generation";
    case SampleKind::kVerification: return "verification";
    case SampleKind::kMeta: return "meta";
  }
  return "?";
}

nlohmann::json pool_record_json(const PoolRecord& r) {
  nlohmann::json j;
  j["id"] = r.id;
  j["round"] = r.round;
  j["kind"] = sample_kind_name(r.kind);
  j["index"] = r.index;
  j["parent"] = r.parent;
  j["context"] = r.context;
  j["prompt_hash"] = r.prompt_hash;
  j["seed"] = r.seed;
  j["text"] = r.text;
  j["proof"] = r.proof;
  j[score_field(r.kind)] = r.score ? nlohmann::json(*r.score) : nlohmann::json(nullptr);
  j["tokens"] = r.tokens;
  j["seconds"] = r.seconds;
  j["stop"] = r.stop;
  return j;
}

PoolRecord pool_record_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw std::runtime_error(where + ": not a JSON object");
  const auto field = [&](const char* key) -> const nlohmann::json& {
    const auto it = j.find(key);
    if (it == j.end()) throw std::runtime_error(where + ": missing field '" + key + "'");
    return *it;
  };
  PoolRecord r;
  try {
    r.id = field("id").get<std::string>();
    r.round = field("round").get<int>();
    const std::string kind = field("kind").get<std::string>();
    if (kind == "generation") r.kind = SampleKind::kGeneration;
    else if (kind == "verification") r.kind = SampleKind::kVerification;
    else if (kind == "meta") r.kind = SampleKind::kMeta;
    else throw std::runtime_error(where + ": field 'kind': unknown kind '" + kind + "'");
    r.index = field("index").get<int>();
    r.parent = field("parent").get<std::string>();
    r.context = field("context").get<std::vector<std::string>>();
    r.prompt_hash = field("prompt_hash").get<std::string>();
    r.seed = field("seed").get<uint64_t>();
    r.text = field("text").get<std::string>();
    r.proof = field("proof").get<std::string>();
    const nlohmann::json& score = field(score_field(r.kind));
    if (!score.is_null()) r.score = score.get<double>();
    r.tokens = field("tokens").get<int64_t>();
    r.seconds = field("seconds").get<double>();
    r.stop = field("stop").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(where + ": a field has the wrong type (" + e.what() + ")");
  }
  if (r.id.empty()) throw std::runtime_error(where + ": field 'id' is empty");
  return r;
}

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (const size_t len = utf8_sequence_length(s, i)) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xef\xbf\xbd";  // U+FFFD for the one bad byte; resynchronize at the next
      ++i;
    }
  }
  return out;
}

std::string prompt_hash(std::span<const int32_t> ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t id : ids)
    for (int b = 0; b < 4; ++b) {
      h ^= (uint32_t(id) >> (8 * b)) & 0xff;
      h *= 0x100000001b3ull;
    }
  static const char* hex = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) s[size_t(i)] = hex[h & 15];
  return s;
}

std::vector<PoolRecord> read_pool(const std::filesystem::path& file, const WarnFn& warn, uint64_t* complete_bytes) {
  std::vector<PoolRecord> out;
  if (complete_bytes) *complete_bytes = 0;
  std::ifstream f(file, std::ios::binary);
  if (!f) {
    if (std::filesystem::exists(file)) throw std::runtime_error("cannot read the proof pool '" + file.string() + "'");
    return out;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string data = ss.str();
  size_t at = 0, line_no = 0;
  uint64_t good = 0;
  while (at < data.size()) {
    ++line_no;
    const size_t nl = data.find('\n', at);
    const bool last = nl == std::string::npos || nl + 1 == data.size();
    const std::string line = data.substr(at, (nl == std::string::npos ? data.size() : nl) - at);
    const std::string where = file.string() + ":" + std::to_string(line_no);
    if (nl == std::string::npos) {  // no newline: the write did not finish
      if (warn) warn(where + ": dropping a torn last line (" + std::to_string(line.size()) + " bytes; the run was cut off while writing it)");
      break;
    }
    try {
      if (line.find_first_not_of(" \t\r") == std::string::npos) throw std::runtime_error(where + ": empty line");
      out.push_back(pool_record_from_json(nlohmann::json::parse(line), where));
    } catch (const std::exception& e) {
      if (!last) {
        std::string what = e.what();
        if (dynamic_cast<const nlohmann::json::exception*>(&e)) what = where + ": not valid JSON";
        throw std::runtime_error(what);
      }
      if (warn) warn(where + ": dropping a torn last line (it does not parse; the run was cut off while writing it)");
      break;
    }
    at = nl + 1;
    good = at;
  }
  if (complete_bytes) *complete_bytes = good;
  return out;
}

ProofPool::ProofPool(std::filesystem::path file, const WarnFn& warn) : file_(std::move(file)) {
  uint64_t good = 0;
  records_ = read_pool(file_, warn, &good);
  for (size_t i = 0; i < records_.size(); ++i) {
    if (by_id_.count(records_[i].id)) {
      if (warn) warn(file_.string() + ": sample '" + records_[i].id + "' appears twice; keeping the first");
      continue;
    }
    by_id_[records_[i].id] = i;
  }
  fd_ = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error(sys_error("cannot open the proof pool", file_));
  // Cut a torn tail off, so the next record starts on a line of its own.
  struct stat st {};
  bool ok = ::fstat(fd_, &st) == 0;
  if (ok && uint64_t(st.st_size) != good) ok = ::ftruncate(fd_, off_t(good)) == 0 && ::fsync(fd_) == 0;
  if (ok) ok = ::lseek(fd_, 0, SEEK_END) >= 0;
  if (!ok) {
    const std::string msg = sys_error("cannot prepare the proof pool for appending", file_);
    ::close(fd_);
    throw std::runtime_error(msg);
  }
}

ProofPool::~ProofPool() {
  if (fd_ >= 0) ::close(fd_);
}

const PoolRecord* ProofPool::find(const std::string& id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &records_[it->second];
}

void ProofPool::append(const PoolRecord& r) {
  if (by_id_.count(r.id)) throw std::runtime_error(file_.string() + ": sample '" + r.id + "' is already in the pool");
  write_all(fd_, pool_record_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", file_);
  if (::fsync(fd_) != 0) throw std::runtime_error(sys_error("cannot sync the proof pool", file_));
  by_id_[r.id] = records_.size();
  records_.push_back(r);
}

void save_journal(const std::filesystem::path& file, const Journal& journal) {
  nlohmann::json samples = nlohmann::json::object();
  for (const auto& [id, p] : journal)
    samples[id] = {{"prompt_hash", p.prompt_hash}, {"tokens", p.tokens}, {"seconds", p.seconds}};
  const std::string text = nlohmann::json{{"version", 1}, {"samples", samples}}.dump() + "\n";
  std::filesystem::path tmp = file;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(sys_error("cannot write the journal", tmp));
  try {
    write_all(fd, text, tmp);
    if (::fsync(fd) != 0) throw std::runtime_error(sys_error("cannot sync the journal", tmp));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  // No fsync of the directory: if the rename is lost in a crash, the previous journal is
  // still whole, and the pool (synced on every append) says what finished.
  if (::rename(tmp.c_str(), file.c_str()) != 0) throw std::runtime_error(sys_error("cannot replace the journal", file));
}

Journal load_journal(const std::filesystem::path& file, const WarnFn& warn) {
  Journal out;
  std::ifstream f(file, std::ios::binary);
  if (!f) return out;
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    const nlohmann::json j = nlohmann::json::parse(ss.str());
    for (const auto& [id, s] : j.at("samples").items()) {
      PartialSample p;
      p.prompt_hash = s.at("prompt_hash").get<std::string>();
      p.tokens = s.at("tokens").get<std::vector<int32_t>>();
      p.seconds = s.at("seconds").get<double>();
      out[id] = std::move(p);
    }
  } catch (const std::exception& e) {
    if (warn) warn(file.string() + ": ignoring an unreadable journal (its partial samples start over): " + e.what());
    out.clear();
  }
  return out;
}

}  // namespace hearth
