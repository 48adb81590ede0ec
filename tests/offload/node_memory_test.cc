// NodeBuffer: alignment, zero fill, placement on this machine, the first-touch fallback
// when binding is refused, and allocation failures that name the node and size.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "offload/node_memory.h"

namespace offload_node_memory_suite {

using namespace hearth;

namespace {

bool all_zero(const NodeBuffer& b) {
  for (std::size_t i = 0; i < b.size(); ++i)
    if (b.data()[i] != std::byte{0}) return false;
  return true;
}

// Writes a position-dependent pattern over the whole buffer and reads it back.
bool pattern_round_trips(NodeBuffer& b) {
  for (std::size_t i = 0; i < b.size(); ++i) b.data()[i] = std::byte(uint8_t(i * 131 + 7));
  for (std::size_t i = 0; i < b.size(); ++i)
    if (b.data()[i] != std::byte(uint8_t(i * 131 + 7))) return false;
  return true;
}

uintptr_t address(const NodeBuffer& b) { return reinterpret_cast<uintptr_t>(b.data()); }

}  // namespace

TEST_CASE("node buffer: this machine") {
  const NumaLayout layout = NumaLayout::detect();
  NodeBuffer small(layout, 0, 100);
  REQUIRE(small.data() != nullptr);
  CHECK(small.size() == 100);
  CHECK(small.node() == 0);
  CHECK(address(small) % NodeBuffer::kMinAlignment == 0);
  CHECK(address(small) % small.alignment() == 0);
  CHECK_FALSE(small.huge_pages_advised());
  CHECK((small.placement() == NodeBuffer::Placement::kBound || small.placement() == NodeBuffer::Placement::kFirstTouch));
  CHECK(small.warning().empty() == (small.placement() == NodeBuffer::Placement::kBound));
  if (!small.warning().empty()) MESSAGE(small.warning());
  CHECK(all_zero(small));
  CHECK(pattern_round_trips(small));
  if (auto where = layout.node_of_memory(small.data(), small.size())) CHECK(*where == 0);

  const std::size_t big_bytes = 3 * NodeBuffer::kHugePage + 5;
  NodeBuffer big(layout, 0, big_bytes);
  REQUIRE(big.data() != nullptr);
  CHECK(big.size() == big_bytes);
  CHECK(big.alignment() == NodeBuffer::kHugePage);
  CHECK(address(big) % NodeBuffer::kHugePage == 0);
  MESSAGE("3 MiB buffer: placement " << int(big.placement()) << ", MADV_HUGEPAGE "
                                     << std::string(big.huge_pages_advised() ? "accepted" : "refused"));
  CHECK(all_zero(big));
  CHECK(pattern_round_trips(big));
  if (auto where = layout.node_of_memory(big.data(), big.size())) CHECK(*where == 0);

  // Moves hand the mapping over; the moved-from buffer is empty.
  const std::byte* p = big.data();
  NodeBuffer moved(std::move(big));
  CHECK(moved.data() == p);
  CHECK(moved.size() == big_bytes);
  CHECK(big.data() == nullptr);
  CHECK(big.size() == 0);
  small = std::move(moved);
  CHECK(small.data() == p);
  CHECK(small.data()[big_bytes - 1] == std::byte(uint8_t((big_bytes - 1) * 131 + 7)));

  NodeBuffer none(layout, 0, 0);
  CHECK(none.data() == nullptr);
  CHECK(none.size() == 0);
  CHECK(none.placement() == NodeBuffer::Placement::kNone);
}

TEST_CASE("node buffer: bad requests throw with the node and size") {
  const NumaLayout layout = NumaLayout::detect();
  CHECK_THROWS_AS(NodeBuffer(layout, layout.node_count(), 64), std::out_of_range);
  CHECK_THROWS_AS(NodeBuffer(layout, -1, 64), std::out_of_range);
  const std::size_t absurd = std::size_t(1) << 60;  // beyond any address space
  for (const NumaLayout& l : {layout, NumaLayout::synthetic("numa:2 core:1 pu:1")}) {
    const int node = l.node_count() - 1;
    try {
      NodeBuffer b(l, node, absurd);
      FAIL("an exabyte was allocated");
    } catch (const NodeMemoryError& e) {
      const std::string what = e.what();
      CAPTURE(what);
      CHECK(what.find("NUMA node " + std::to_string(node)) == 0);
      CHECK(what.find("1152921504606846976 bytes") != std::string::npos);
    }
  }
  try {
    NodeBuffer b(layout, 0, std::size_t(-1));
    FAIL("SIZE_MAX bytes were allocated");
  } catch (const NodeMemoryError& e) {
    CHECK(std::string(e.what()).find("NUMA node 0") == 0);
  }
}

TEST_CASE("node buffer: synthetic machines get ordinary memory") {
  const NumaLayout layout = NumaLayout::synthetic("pack:2 numa:2 core:4 pu:1");
  for (int node = 0; node < 4; ++node) {
    NodeBuffer b(layout, node, 4096 + 3);
    CHECK(b.node() == node);
    CHECK(b.placement() == NodeBuffer::Placement::kUnplaced);
    CHECK(b.warning().empty());
    CHECK(all_zero(b));
    CHECK(pattern_round_trips(b));
  }
}

TEST_CASE("node buffer: refused binding falls back to first touch") {
  // Node 1 is OS node 1000 with CPUs 4000-4001: neither mbind nor the toucher's CPU
  // binding can succeed, and neither may stop the allocation.
  const NumaLayout layout =
      NumaLayout::synthetic("numa:2(indexes=0,1000) core:2 pu:1(indexes=0,1,4000,4001)", /*attempt_binding=*/true);
  REQUIRE(layout.binds());
  NodeBuffer b(layout, 1, NodeBuffer::kHugePage + 1);
  CHECK(b.placement() == NodeBuffer::Placement::kFirstTouch);
  CAPTURE(b.warning());
  CHECK(b.warning().find("NUMA node 1: cannot bind memory to OS node 1000") == 0);
  CHECK(b.warning().find("first touch from an unbound thread (cannot bind to CPUs 4000") != std::string::npos);
  CHECK(address(b) % NodeBuffer::kHugePage == 0);
  CHECK(all_zero(b));
  CHECK(pattern_round_trips(b));
}

}  // namespace offload_node_memory_suite
