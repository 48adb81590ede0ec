#include "offload/memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

namespace hearth {

std::optional<uint64_t> parse_mem_available(const std::string& meminfo) {
  std::istringstream in(meminfo);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    uint64_t value = 0;
    std::string unit;
    if (!(fields >> value)) return std::nullopt;
    fields >> unit;
    if (unit.empty()) return value;  // bytes (the kernel always says kB; be lenient)
    if (unit == "kB") return value * 1024;
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<uint64_t> mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  if (!f) return std::nullopt;
  return parse_mem_available(std::string(std::istreambuf_iterator<char>(f), {}));
}

std::vector<std::pair<uintptr_t, uintptr_t>> parse_file_mapped_ranges(const std::string& maps) {
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  std::istringstream in(maps);
  std::string line;
  while (std::getline(in, line)) {
    // "begin-end perms offset dev inode [path]"; anonymous mappings have inode 0.
    std::istringstream f(line);
    std::string range, perms, offset, dev;
    uint64_t inode = 0;
    if (!(f >> range >> perms >> offset >> dev >> inode) || inode == 0) continue;
    const size_t dash = range.find('-');
    if (dash == std::string::npos) continue;
    try {
      out.emplace_back(uintptr_t(std::stoull(range.substr(0, dash), nullptr, 16)),
                       uintptr_t(std::stoull(range.substr(dash + 1), nullptr, 16)));
    } catch (const std::exception&) {
    }
  }
  return out;
}

std::vector<std::pair<uintptr_t, uintptr_t>> file_mapped_ranges() {
  std::ifstream f("/proc/self/maps");
  if (!f) return {};
  return parse_file_mapped_ranges(std::string(std::istreambuf_iterator<char>(f), {}));
}

void populate_read(const void* p, size_t bytes) {
  if (!p || bytes == 0) return;
  constexpr uintptr_t kPage = 4096;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(kPage - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;  // Linux 5.14; older headers lack the name
#endif
  if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ) == 0) return;
  // EINVAL: a kernel without it. Anything else (EFAULT, ENOMEM) is left for the first
  // real read to report the way it always would.
  if (errno != EINVAL) return;
  volatile const uint8_t* bytes_in = reinterpret_cast<const uint8_t*>(begin);
  uint8_t sink = 0;
  for (uintptr_t a = begin; a < end; a += kPage) sink = uint8_t(sink ^ bytes_in[a - begin]);
  (void)sink;
}

}  // namespace hearth
