// Memory that lives on one NUMA node: where each node's share of the expert weights is
// copied, so that node's threads stream it from local DRAM.
//
// A NodeBuffer is an anonymous mapping of its own (not from malloc/mimalloc: weight
// buffers are few, huge and live for the whole run), bound to its node with hwloc's
// membind (BIND policy) before any page is touched. Where the OS refuses the binding (a
// container without the right to call mbind), a thread bound to the node's cores touches
// every page instead, so the kernel's default first-touch policy puts them there; that is
// recorded in warning(), never an error. Buffers of 2 MiB or more start on a 2 MiB
// boundary, span whole 2 MiB pages and are marked MADV_HUGEPAGE, so the kernel can back
// them with transparent huge pages and a stream over them needs 512x fewer TLB entries.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>

#include "offload/huge_pages.h"
#include "offload/numa.h"

namespace hearth {

// Allocation failure, naming the node and size ("NUMA node 1 (os 1): cannot allocate ...").
class NodeMemoryError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class NodeBuffer {
 public:
  // How the pages got to the node.
  enum class Placement {
    kNone,        // nothing allocated (size 0)
    kBound,       // membind: the kernel allocates every page on the node
    kFirstTouch,  // membind refused: pages touched by a thread on the node (see warning())
    kUnplaced,    // the layout does not bind (a synthetic machine): ordinary memory
  };
  static constexpr std::size_t kHugePage = kHugePageBytes;
  static constexpr std::size_t kMinAlignment = 64;

  NodeBuffer() = default;
  // `bytes` on node `node` of `layout` (zero-filled). std::out_of_range for a node the
  // layout lacks; NodeMemoryError when the memory cannot be had (more than the node
  // holds, or the OS refuses the mapping).
  NodeBuffer(const NumaLayout& layout, int node, std::size_t bytes);
  ~NodeBuffer();
  NodeBuffer(NodeBuffer&& other) noexcept;
  NodeBuffer& operator=(NodeBuffer&& other) noexcept;
  NodeBuffer(const NodeBuffer&) = delete;
  NodeBuffer& operator=(const NodeBuffer&) = delete;

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }  // as requested
  int node() const { return node_; }
  // What data() is aligned to: kHugePage for buffers of at least kHugePage bytes, else
  // the page size (always a multiple of kMinAlignment).
  std::size_t alignment() const { return alignment_; }
  Placement placement() const { return placement_; }
  // Whether the kernel accepted MADV_HUGEPAGE for the buffer (false for small buffers).
  bool huge_pages_advised() const { return huge_advised_; }
  // Why the placement is not kBound on a machine that binds; empty otherwise.
  const std::string& warning() const { return warning_; }

 private:
  void release() noexcept;

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  void* map_ = nullptr;  // the mapping (data_ may lie inside it)
  std::size_t map_bytes_ = 0;
  std::size_t alignment_ = 0;
  int node_ = -1;
  Placement placement_ = Placement::kNone;
  bool huge_advised_ = false;
  std::string warning_;
};

}  // namespace hearth
