// How much memory the machine can still give: what a big allocation is checked against
// before it is attempted, so a model too large fails with a message instead of the OOM
// killer.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hearth {

// MemAvailable from /proc/meminfo, in bytes; nullopt where it cannot be read.
std::optional<uint64_t> mem_available_bytes();
// The same from a /proc/meminfo-format text (for tests); nullopt when the line is missing.
std::optional<uint64_t> parse_mem_available(const std::string& meminfo);

// The address ranges [begin, end) of this process's mappings of files (from
// /proc/self/maps: those with an inode), e.g. to tell weights read in place from a
// checkpoint from weights in memory the process allocated. Empty where it cannot be read.
std::vector<std::pair<uintptr_t, uintptr_t>> file_mapped_ranges();
// The same from a /proc/PID/maps-format text (for tests).
std::vector<std::pair<uintptr_t, uintptr_t>> parse_file_mapped_ranges(const std::string& maps);

}  // namespace hearth
