#include "offload/node_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <system_error>
#include <thread>
#include <utility>

#include "offload/huge_pages.h"

namespace hearth {

namespace {

std::string describe_bytes(std::size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%zu bytes (%.2f GiB)", bytes, double(bytes) / double(1ull << 30));
  return buf;
}

// Writes one byte per page from the calling thread, so each page is allocated where this
// thread runs (a volatile store: the compiler must not drop writes of zero to zeroes).
void touch_pages(void* p, std::size_t bytes, std::size_t page) {
  volatile char* c = static_cast<volatile char*>(p);
  for (std::size_t off = 0; off < bytes; off += page) c[off] = 0;
}

}  // namespace

NodeBuffer::NodeBuffer(const NumaLayout& layout, int node, std::size_t bytes) : size_(bytes), node_(node) {
  if (node < 0 || node >= layout.node_count())
    throw std::out_of_range("NodeBuffer: NUMA node " + std::to_string(node) + " does not exist (the layout has " +
                            std::to_string(layout.node_count()) + ")");
  alignment_ = kMinAlignment;
  if (bytes == 0) return;
  const NumaNode& where = layout.nodes()[size_t(node)];
  auto error = [&](const std::string& why) {
    return NodeMemoryError("NUMA node " + std::to_string(node) + " (os " + std::to_string(where.os_index) +
                           "): cannot allocate " + describe_bytes(bytes) + ": " + why);
  };
  // Bound pages that do not fit the node would end in the OOM killer, not an error.
  if (layout.binds() && where.local_memory_bytes && bytes > where.local_memory_bytes)
    throw error("the node holds only " + describe_bytes(where.local_memory_bytes));

  const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
  const bool huge = bytes >= kHugePage;
  alignment_ = huge ? kHugePage : page;
  // Whole pages (whole huge pages for big buffers), plus room to slide to a 2 MiB edge.
  if (bytes > std::numeric_limits<std::size_t>::max() - alignment_ - (huge ? kHugePage : 0)) throw error("size out of range");
  const std::size_t len = (bytes + alignment_ - 1) / alignment_ * alignment_;
  std::byte* start = nullptr;
  if (huge) {
    const HugeMapping m = map_huge_aligned(len);
    if (!m.start) throw error(std::strerror(errno));
    start = static_cast<std::byte*>(m.start);
    huge_advised_ = m.advised;
  } else {
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw error(std::strerror(errno));
    start = static_cast<std::byte*>(m);
  }
  map_ = start;
  map_bytes_ = len;
  data_ = start;

  if (!layout.binds()) {
    placement_ = Placement::kUnplaced;
    return;
  }
  std::string why;
  if (layout.bind_memory(start, len, node, &why)) {
    placement_ = Placement::kBound;
    return;
  }
  // The kernel places a page where the thread that first touches it runs.
  placement_ = Placement::kFirstTouch;
  warning_ = "NUMA node " + std::to_string(node) + ": " + why + "; pages placed by first touch";
  std::string thread_why;
  bool thread_bound = false;
  try {
    std::thread toucher([&] {
      thread_bound = layout.bind_thread(node, -1, &thread_why);
      touch_pages(start, len, page);
    });
    toucher.join();
  } catch (const std::system_error& e) {  // no thread to spare: touch from here
    thread_why = std::string("cannot start a thread: ") + e.what();
    touch_pages(start, len, page);
  }
  if (!thread_bound) warning_ += " from an unbound thread (" + thread_why + ")";
}

NodeBuffer::~NodeBuffer() { release(); }

void NodeBuffer::release() noexcept {
  if (map_) munmap(map_, map_bytes_);
  map_ = nullptr;
  data_ = nullptr;
}

NodeBuffer::NodeBuffer(NodeBuffer&& other) noexcept { *this = std::move(other); }

NodeBuffer& NodeBuffer::operator=(NodeBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    alignment_ = std::exchange(other.alignment_, 0);
    node_ = std::exchange(other.node_, -1);
    placement_ = std::exchange(other.placement_, Placement::kNone);
    huge_advised_ = std::exchange(other.huge_advised_, false);
    warning_ = std::move(other.warning_);
    other.warning_.clear();
  }
  return *this;
}

}  // namespace hearth
