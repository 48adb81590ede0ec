// A model split into shards the way llama.cpp's gguf-split lays them out (first shard: all
// metadata; every shard: split.no, split.count, split.tensors.count; names
// PREFIX-0000i-of-0000n.gguf) loads as the single file does, and every way a set of shards
// can be wrong is a one-line error naming the file.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "engine/gguf_model.h"
#include "engine/gguf_shards.h"
#include "engine/quantize.h"
#include "support/errors.h"
#include "support/golden.h"
#include "support/golden_gguf.h"
#include "support/scratch.h"

namespace engine_gguf_shards_suite {

using namespace hearth;
namespace fs = std::filesystem;
using hearth::testing::golden_cases;
using hearth::testing::TempDir;

namespace {

// tiny-v32 to `output` as Q8_0 (k_b/v_b split, as llama.cpp writes them); split_max_bytes
// > 0 asks for shards of that size.
QuantizeOptions tiny_q8_0(const fs::path& output, uint64_t split_max_bytes = 0) {
  QuantizeOptions o = hearth::testing::golden_gguf_options(output, uniform_type_for(DType::Q8_0));
  o.split_max_bytes = split_max_bytes;
  return o;
}

// tiny-v32 as one Q8_0 GGUF file.
fs::path export_tiny(const TempDir& dir) {
  const QuantizeOptions o = tiny_q8_0(dir.path / "tiny.gguf");
  quantize_model(o);
  return o.output;
}

// What may go wrong in a set of shards, for the error tests.
struct Tamper {
  int wrong_no_shard = -1;          // this shard says split.no + 1
  int64_t tensors_count_delta = 0;  // added to split.tensors.count
  bool duplicate_first_tensor = false;  // the last shard also holds the first tensor
};

// How the tensors are dealt out. metadata_only_first: the first shard holds no tensors
// (gguf-split --no-tensor-first-split, for faster downloads of the metadata).
struct Layout {
  bool metadata_only_first = false;
};

// Writes `src` as `n` shards next to `prefix`, tensors dealt out in file order in n nearly
// equal runs. Written here with hearth's GgufWriter from the layout gguf-split documents,
// independently of any hearth code that reads shards.
std::vector<fs::path> write_shards(const GgufFile& src, const fs::path& prefix, int n, const Tamper& t = {},
                                   const Layout& layout = {}) {
  const std::vector<GgufTensor>& all = src.tensors();
  const int64_t total = int64_t(all.size());
  std::vector<fs::path> paths;
  for (int i = 0; i < n; ++i) {
    char suffix[40];
    std::snprintf(suffix, sizeof suffix, "-%05d-of-%05d.gguf", i + 1, n);
    const fs::path p = prefix.string() + suffix;
    GgufWriter w(p);
    if (i == 0)
      for (const GgufKeyValue& kv : src.metadata()) w.add(kv.key, kv.value);
    w.add("split.no", uint16_t(i == t.wrong_no_shard ? i + 1 : i));
    w.add("split.count", uint16_t(n));
    w.add("split.tensors.count", int32_t(total + t.tensors_count_delta));
    std::vector<const GgufTensor*> mine;
    const int first = layout.metadata_only_first ? 1 : 0, parts = n - first;  // shards that hold tensors
    if (i >= first)
      for (int64_t k = total * (i - first) / parts; k < total * (i - first + 1) / parts; ++k) mine.push_back(&all[size_t(k)]);
    if (t.duplicate_first_tensor && i == n - 1) mine.push_back(&all[0]);
    for (const GgufTensor* x : mine) w.add_tensor(x->name, x->type(), x->dims);
    for (const GgufTensor* x : mine) w.write(x->name, x->data, x->nbytes);
    w.finish();
    paths.push_back(p);
  }
  return paths;
}

std::vector<float> prefill_logits(const Model& m) {
  ThreadPool pool(2);
  const auto& g = golden_cases()[2];
  Forward fwd(m, pool);
  KvCache cache(m.config(), 16);
  const SeqId s = cache.add_sequence();
  std::vector<float> logits(g.tokens.size() * size_t(m.config().vocab_size));
  fwd.step(cache, {{s, g.tokens}}, logits.data(), AttentionPath::kAuto);
  return logits;
}

}  // namespace

TEST_CASE("gguf shards: a model split in three runs exactly as the single file") {
  TempDir tmp("hearth-shards");
  const fs::path whole = export_tiny(tmp);
  const GgufFile src(whole);
  const std::vector<fs::path> shards = write_shards(src, tmp.path / "tiny", 3);

  const GgufShards set = GgufShards::open(shards[0]);
  REQUIRE(set.files().size() == 3);
  CHECK(set.tensor_count() == int64_t(src.tensors().size()));
  CHECK(set.first().get_string("general.name") == "tiny");
  CHECK_FALSE(set.files()[1]->has("general.architecture"));  // metadata only in the first
  for (size_t i = 0; i < src.tensors().size(); i += 7) {
    const GgufTensor& want = src.tensors()[i];
    const GgufTensor* got = set.find_tensor(want.name);
    REQUIRE(got != nullptr);
    CHECK(got->dims == want.dims);
    CHECK(got->type() == want.type());
    CHECK(std::memcmp(got->data, want.data, want.nbytes) == 0);
  }
  const GgufTensor& last = src.tensors().back();
  CHECK(set.path_of(*set.find_tensor(last.name)) == shards[2]);
  CHECK(set.path_of(*set.find_tensor(src.tensors().front().name)) == shards[0]);
  CHECK(set.find_tensor("no.such.tensor") == nullptr);

  // A single file is a set of one.
  CHECK(GgufShards::open(whole).files().size() == 1);
  // A first shard of metadata only, as gguf-split --no-tensor-first-split writes.
  const std::vector<fs::path> meta_first = write_shards(src, tmp.path / "meta", 3, {}, {.metadata_only_first = true});
  CHECK(GgufFile(meta_first[0]).tensors().empty());
  const GgufShards mset = GgufShards::open(meta_first[0]);
  CHECK(mset.tensor_count() == int64_t(src.tensors().size()));
  CHECK(mset.path_of(*mset.find_tensor(src.tensors().front().name)) == meta_first[1]);

  const Model one = Model::load(whole.string());
  const Model split = Model::load(shards[0].string());
  CHECK(split.config().num_hidden_layers == one.config().num_hidden_layers);
  // The head is in the last shard: the config must see it there, or it would take the
  // model for one with tied embeddings.
  CHECK(set.path_of(*set.find_tensor("output.weight")) == shards[2]);
  CHECK_FALSE(split.config().tie_word_embeddings);
  const std::vector<float> a = prefill_logits(one), b = prefill_logits(split);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  // And both are the golden model's logits, to Q8_0's rounding (an independent anchor:
  // the shards did not just reproduce the same wrong file).
  const std::vector<float>& ref = golden_cases()[2].logits;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::fabs(b[i] - ref[i])));
  CHECK(worst < 10.0);
  CHECK(worst > 0.0);
}

TEST_CASE("gguf shards: wrong or missing shards are one-line errors naming the file") {
  TempDir tmp("hearth-shards-bad");
  const fs::path whole = export_tiny(tmp);
  const GgufFile src(whole);
  using hearth::testing::check_error;

  SUBCASE("a shard other than the first is given") {
    const auto p = write_shards(src, tmp.path / "m", 3);
    check_error([&] { GgufShards::open(p[1]); }, {p[1].string(), "shard 2 of 3", p[0].string()});
    check_error([&] { Model::load(p[2].string()); }, {p[2].string(), "shard 3 of 3"});
  }
  SUBCASE("a shard is missing") {
    const auto p = write_shards(src, tmp.path / "m", 3);
    fs::remove(p[2]);
    check_error([&] { GgufShards::open(p[0]); }, {p[0].string(), "shard 3 of 3", p[2].string(), "missing"});
  }
  SUBCASE("the first shard was renamed") {
    const auto p = write_shards(src, tmp.path / "m", 2);
    const fs::path renamed = tmp.path / "model.gguf";
    fs::rename(p[0], renamed);
    check_error([&] { GgufShards::open(renamed); }, {renamed.string(), "2 shards", "-00001-of-00002.gguf"});
  }
  SUBCASE("a shard says another number") {
    const auto p = write_shards(src, tmp.path / "m", 3, {.wrong_no_shard = 1});
    check_error([&] { GgufShards::open(p[0]); }, {p[1].string(), "split.no 2", "should say 1 / 3"});
  }
  SUBCASE("a tensor is in two shards") {
    const auto p = write_shards(src, tmp.path / "m", 3, {.duplicate_first_tensor = true});
    check_error([&] { GgufShards::open(p[0]); }, {p[2].string(), src.tensors()[0].name, "also in", p[0].string()});
  }
  SUBCASE("split.tensors.count disagrees with the shards") {
    const auto p = write_shards(src, tmp.path / "m", 2, {.tensors_count_delta = 5});
    check_error([&] { GgufShards::open(p[0]); },
                {p[0].string(), "split.tensors.count says " + std::to_string(src.tensors().size() + 5)});
  }
  SUBCASE("a folder of shards is named instead of its first shard") {
    const fs::path dir = tmp.path / "download";
    fs::create_directory(dir);
    const auto p = write_shards(src, dir / "m", 3);
    check_error([&] { Model::load(dir.string()); }, {dir.string(), "without config.json", p[0].string(), "first shard"});
  }
  SUBCASE("a broken shard is reported as that shard") {
    const auto p = write_shards(src, tmp.path / "m", 3);
    fs::resize_file(p[1], fs::file_size(p[1]) / 2);
    check_error([&] { Model::load(p[0].string()); }, {p[1].string()});
  }
}

TEST_CASE("quantize: --split-max-size writes llama.cpp's shards, which run as the single file") {
  TempDir tmp("hearth-shards-write");
  const fs::path whole = export_tiny(tmp);
  const QuantizeOptions o = tiny_q8_0(tmp.path / "parts.gguf", 256 << 10);
  const QuantizeResult r = quantize_model(o);
  REQUIRE(r.files.size() >= 3);
  const size_t n = r.files.size();
  CHECK_FALSE(fs::exists(o.output));
  for (size_t k = 0; k < n; ++k) {
    char suffix[40];
    std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu.gguf", k + 1, n);
    CHECK(r.files[k] == fs::path((tmp.path / "parts").string() + suffix));
    CHECK_FALSE(fs::exists(r.files[k].string() + ".tmp"));
  }

  // The layout, read with the plain single-file reader: split keys everywhere, the model's
  // metadata in the first shard only, every tensor once, in the single file's order, with
  // its bytes, and no shard over the limit unless one tensor alone is.
  const GgufFile one(whole);
  std::vector<std::string> names;
  uint64_t bytes = 0;
  for (size_t k = 0; k < n; ++k) {
    const GgufFile f(r.files[k]);
    CHECK(f.get_u32("split.no") == k);
    CHECK(f.get_u32("split.count") == n);
    CHECK(f.get_i32("split.tensors.count") == int32_t(one.tensors().size()));
    CHECK(f.find("split.count")->type() == GgufType::U16);
    CHECK(f.find("split.tensors.count")->type() == GgufType::I32);
    CHECK(f.has("general.architecture") == (k == 0));
    CHECK(f.has("tokenizer.ggml.tokens") == one.has("tokenizer.ggml.tokens"));
    uint64_t in_file = 0;
    for (const GgufTensor& t : f.tensors()) {
      names.push_back(t.name);
      const GgufTensor& w = one.tensor(t.name);
      CHECK(t.dims == w.dims);
      CHECK(t.type() == w.type());
      CHECK(std::memcmp(t.data, w.data, w.nbytes) == 0);
      in_file += (t.nbytes + 31) / 32 * 32;
    }
    CHECK((in_file <= o.split_max_bytes || f.tensors().size() == 1));
    bytes += fs::file_size(r.files[k]);
  }
  CHECK(r.file_bytes == bytes);
  std::vector<std::string> want;
  for (const GgufTensor& t : one.tensors()) want.push_back(t.name);
  CHECK(names == want);

  const Model a = Model::load(whole.string()), b = Model::load(r.files[0].string());
  const std::vector<float> la = prefill_logits(a), lb = prefill_logits(b);
  CHECK(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)) == 0);

  // Shards as the input of another quantize: the same file as from the single file.
  QuantizeOptions from_shards = tiny_q8_0(tmp.path / "from-shards.gguf"), from_whole = tiny_q8_0(tmp.path / "from-whole.gguf");
  from_shards.input = r.files[0];
  from_whole.input = whole;
  quantize_model(from_shards);
  quantize_model(from_whole);
  {
    const GgufFile x(from_shards.output), y(from_whole.output);
    REQUIRE(x.tensors().size() == y.tensors().size());
    CHECK(x.metadata().size() == y.metadata().size());
    CHECK_FALSE(x.has("split.count"));
    for (size_t i = 0; i < x.tensors().size(); ++i) {
      CHECK(x.tensors()[i].name == y.tensors()[i].name);
      CHECK(std::memcmp(x.tensors()[i].data, y.tensors()[i].data, y.tensors()[i].nbytes) == 0);
    }
  }

  // Shards may not replace the model they are made from.
  QuantizeOptions again = o;
  again.input = r.files[0];
  hearth::testing::check_error([&] { quantize_model(again); }, {"output shard", "is the input"});
  // Nor may one file (a shard of the input, or the input itself).
  QuantizeOptions onto = tiny_q8_0(r.files[1]);
  onto.input = r.files[0];
  hearth::testing::check_error([&] { quantize_model(onto); }, {"output '" + r.files[1].string() + "' is the input"});
  onto = tiny_q8_0(whole);
  onto.input = whole;
  hearth::testing::check_error([&] { quantize_model(onto); }, {"output '" + whole.string() + "' is the input"});
}

TEST_CASE("quantize: a cancel while writing shards leaves none of them") {
  TempDir tmp("hearth-shards-cancel");
  std::atomic<bool> cancel{false};
  QuantizeOptions o = tiny_q8_0(tmp.path / "parts.gguf", 256 << 10);
  o.cancel = &cancel;
  // Cancelled at the last tensor: every earlier shard is complete by then.
  o.progress = [&](const QuantizeProgress& p) {
    if (p.tensor_index + 1 == p.tensor_count) cancel = true;
  };
  hearth::testing::check_error([&] { quantize_model(o); }, {"cancelled"});
  CHECK(fs::is_empty(tmp.path));
}

}  // namespace engine_gguf_shards_suite
