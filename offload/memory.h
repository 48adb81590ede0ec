// How much memory the machine can still give: what a big allocation is checked against
// before it is attempted, so a model too large fails with a message instead of the OOM
// killer.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace hearth {

// MemAvailable from /proc/meminfo, in bytes; nullopt where it cannot be read.
std::optional<uint64_t> mem_available_bytes();
// The same from a /proc/meminfo-format text (for tests); nullopt when the line is missing.
std::optional<uint64_t> parse_mem_available(const std::string& meminfo);

}  // namespace hearth
