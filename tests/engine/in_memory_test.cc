// ModelLoadOptions::in_memory (--no-mmap): every weight read in place from a mapped file
// is copied into memory the model owns, and the forward pass gives the same logits to the
// bit. Checked on the golden checkpoint (FP8 with block scales, safetensors), on a GGUF
// written from it (merged expert tensors, k_b / v_b), and after a repack (whose converted
// weights are in memory already and must not be copied again).
//
// ModelLoadOptions::populate: the weights stay in the file mapping, and every page of
// them is in the page tables after the load (the mapping's resident size, from
// /proc/self/smaps, covers them).
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "engine/model.h"
#include "offload/memory.h"
#include "support/golden.h"
#include "support/golden_gguf.h"
#include "support/scratch.h"

namespace engine_in_memory_suite {

using namespace hearth;
using hearth::testing::golden_logits;
using hearth::testing::kGoldenDir;
using hearth::testing::TempDir;

namespace {

// Calls fn(w) for every weight matrix of the model.
template <class Fn>
void each_matrix(const Model& m, Fn&& count) {
  count(m.embed);
  count(m.lm_head);
  for (const Layer& L : m.layers) {
    for (const WeightMatrix* w : {&L.attn.q_a, &L.attn.q_b, &L.attn.kv_a, &L.attn.kv_b, &L.attn.k_b, &L.attn.v_b, &L.attn.o,
                                  &L.attn.indexer.wq_b, &L.attn.indexer.wk, &L.attn.indexer.weights_proj})
      count(*w);
    for (const WeightMatrix* w : {&L.dense.gate, &L.dense.up, &L.dense.down, &L.moe.router, &L.moe.shared.gate,
                                  &L.moe.shared.up, &L.moe.shared.down})
      count(*w);
    for (const Mlp& e : L.moe.experts)
      for (const WeightMatrix* w : {&e.gate, &e.up, &e.down}) count(*w);
  }
}

using FileRanges = std::vector<std::pair<uintptr_t, uintptr_t>>;

bool in_a_file(const void* p, const FileRanges& files) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  return p && std::any_of(files.begin(), files.end(), [&](const auto& r) { return a >= r.first && a < r.second; });
}

// How many of the model's weight pointers (data and FP8 scales) lie in a mapped file.
int in_files(const Model& m) {
  const FileRanges files = file_mapped_ranges();
  int n = 0;
  each_matrix(m, [&](const WeightMatrix& w) { n += in_a_file(w.data, files) + in_a_file(w.scale, files); });
  return n;
}

// The bytes of the distinct weight data in mapped files (no FP8 scales: for GGUF models).
uint64_t mapped_data_bytes(const Model& m) {
  const FileRanges files = file_mapped_ranges();
  std::vector<const void*> seen;
  uint64_t total = 0;
  each_matrix(m, [&](const WeightMatrix& w) {
    CHECK(w.scale == nullptr);
    if (!in_a_file(w.data, files) || std::find(seen.begin(), seen.end(), w.data) != seen.end()) return;
    seen.push_back(w.data);
    total += uint64_t(w.bytes());
  });
  return total;
}

void check_copy(const std::string& path, ModelLoadOptions o) {
  const Model mapped = Model::load(path, o);
  o.in_memory = true;
  const Model copied = Model::load(path, o);
  CHECK(in_files(mapped) > 0);
  CHECK(in_files(copied) == 0);
  CHECK(golden_logits(copied) == golden_logits(mapped));
}

// Bytes of this process's mappings of `file` that are in its page tables (smaps' Rss).
uint64_t resident_bytes_of(const std::filesystem::path& file) {
  const std::string name = std::filesystem::canonical(file).string();
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;
  uint64_t total = 0;
  while (std::getline(smaps, line)) {
    std::istringstream f(line);
    std::string first;
    f >> first;
    if (first.find('-') != std::string::npos && first.back() != ':') {  // a mapping's header line
      std::string perms, offset, dev, inode, path;
      f >> perms >> offset >> dev >> inode >> path;
      in = path == name;
    } else if (in && first == "Rss:") {
      uint64_t kb = 0;
      f >> kb;
      total += kb * 1024;
    }
  }
  return total;
}

}  // namespace

TEST_CASE("populate_read: a file mapping's pages are in the page tables afterwards") {
  TempDir dir("hearth-populate");
  const std::filesystem::path path = dir.path / "bytes.bin";
  const size_t bytes = size_t(3) << 20;
  {
    std::ofstream out(path, std::ios::binary);
    const std::vector<uint8_t> v = hearth::testing::pattern(bytes, 7);
    out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size()));
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  REQUIRE(p != MAP_FAILED);
  CHECK(resident_bytes_of(path) == 0);  // nothing read yet
  // An odd start and length: the pages they touch are filled, whole.
  populate_read(static_cast<const uint8_t*>(p) + 100, bytes - 200);
  CHECK(resident_bytes_of(path) == bytes);
  populate_read(nullptr, 0);  // nothing to do, no error
  ::munmap(p, bytes);
}

TEST_CASE("populated load: the weights stay mapped, every page of them resident, same logits") {
  TempDir dir("hearth-populated");
  const std::filesystem::path gguf =
      hearth::testing::golden_as_gguf(dir.path / "tiny-q8_0.gguf", uniform_type_for(DType::Q8_0));
  const Model plain = Model::load(gguf.string());
  CHECK_FALSE(plain.mapped_weights().populated);
  CHECK(plain.mapped_weights().bytes == 0);

  ModelLoadOptions o;
  o.populate = true;
  const uint64_t before_populated = resident_bytes_of(gguf);
  const Model populated = Model::load(gguf.string(), o);
  const MappedWeights& mw = populated.mapped_weights();
  CHECK(in_files(populated) > 0);
  REQUIRE(mw.populated);
  CHECK(mw.bytes == mapped_data_bytes(populated));
  CHECK(mw.bytes > std::filesystem::file_size(gguf) / 2);  // the tokenizer's metadata is the rest
  // Whatever the page cache's folio sizes (a large folio is mapped whole on first touch,
  // so a plain load may already map much), every weight page is in now.
  CHECK(resident_bytes_of(gguf) - before_populated >= mw.bytes);
  CHECK(golden_logits(populated) == golden_logits(plain));
}

TEST_CASE("in-memory load: the golden checkpoint's FP8 weights and scales, same logits") {
  REQUIRE(!file_mapped_ranges().empty());
  check_copy(kGoldenDir, {});
}

TEST_CASE("in-memory load: a GGUF file, and weights a repack already holds are not copied again") {
  TempDir dir("hearth-in-memory");
  check_copy(hearth::testing::golden_as_gguf(dir.path / "tiny-q8_0.gguf", uniform_type_for(DType::Q8_0)).string(), {});
  ModelLoadOptions r;
  r.repack = DType::Q8_0;
  check_copy(kGoldenDir, r);
}

}  // namespace engine_in_memory_suite
