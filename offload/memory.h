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

// Fills the page tables for [p, p + bytes) of a read-only file mapping now, reading from
// disk whatever the page cache lacks: afterwards reading the range takes no page fault.
// MADV_POPULATE_READ (Linux 5.14); where the kernel lacks it, one read per 4 KiB page.
// A weight first read in the middle of a decode step costs a fault per 4 KiB (64 KiB
// with the kernel's fault-around), and on a fresh load every routed expert a token picks
// is such a first read. Filling the tables lets the kernel map large page-cache folios
// with 2 MiB entries too (ext4 and XFS read files into large folios).
void populate_read(const void* p, size_t bytes);

}  // namespace hearth
