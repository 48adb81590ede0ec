#include "engine/safetensors_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "engine/file_error.h"

namespace hearth {
namespace {

}  // namespace

uint64_t TensorSpec::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n))
      throw std::runtime_error("tensor '" + name + "': invalid shape for safetensors");
  return n;
}

SafetensorsWriter::SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorSpec> specs,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), tmp_(path.string() + ".tmp"), specs_(std::move(specs)) {
  // ordered_json keeps declaration order, so offsets in the header read ascending.
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorSpec& s : specs_) {
    if (s.name == "__metadata__" || !seen.insert(s.name).second)
      fail(path_, "tensor '" + s.name + "': duplicate or reserved name");
    const uint64_t n = s.nbytes();
    h[s.name] = {{"dtype", dtype_name(s.dtype)}, {"shape", s.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string header = h.dump();
  // Pad so the data section starts 8-byte aligned: mapped F32 tensors stay aligned.
  header.append((8 - header.size() % 8) % 8, ' ');

  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) fail(tmp_, std::string("cannot create: ") + std::strerror(errno));
  if (std::fwrite(len, 1, 8, f_) != 8 || std::fwrite(header.data(), 1, header.size(), f_) != header.size()) {
    std::fclose(f_);  // the destructor does not run for a throwing constructor
    f_ = nullptr;
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
    fail(tmp_, "write failed");
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (f_) std::fclose(f_);
  // After a successful finish() the temp file was renamed away, so this is a no-op.
  std::error_code ec;
  std::filesystem::remove(tmp_, ec);
}

void SafetensorsWriter::write(const std::string& name, const void* data, uint64_t nbytes) {
  if (!f_) fail(path_, "tensor '" + name + "': write after finish");
  if (next_ >= specs_.size()) fail(path_, "tensor '" + name + "': all declared tensors already written");
  const TensorSpec& s = specs_[next_];
  if (name != s.name) fail(path_, "tensor '" + name + "': expected tensor '" + s.name + "' next");
  if (nbytes != s.nbytes())
    fail(path_, "tensor '" + name + "': got " + std::to_string(nbytes) + " bytes, declared " +
                    std::to_string(s.nbytes()));
  if (nbytes > 0 && std::fwrite(data, 1, nbytes, f_) != nbytes)
    fail(tmp_, "tensor '" + name + "': write failed: " + std::strerror(errno));
  ++next_;
}

void SafetensorsWriter::finish() {
  if (!f_) fail(path_, "finish called twice");
  if (next_ != specs_.size())
    fail(path_, "finish after " + std::to_string(next_) + " of " + std::to_string(specs_.size()) +
                    " tensors; next is '" + specs_[next_].name + "'");
  // fsync before rename: otherwise a crash can leave the final name on a file whose data
  // never reached the disk.
  bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
  ok = std::fclose(f_) == 0 && ok;
  f_ = nullptr;
  if (!ok) fail(tmp_, std::string("flush failed: ") + std::strerror(errno));
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) fail(path_, "rename from " + tmp_.string() + " failed: " + ec.message());
}

void write_safetensors_index(const std::filesystem::path& dir,
                             const std::map<std::string, std::string>& weight_map, uint64_t total_size) {
  const nlohmann::json j = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  const std::filesystem::path path = dir / "model.safetensors.index.json";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << j.dump(2) << '\n';
  out.close();
  if (!out) fail(path, "write failed");
}

}  // namespace hearth
