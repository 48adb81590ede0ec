#include "engine/quantize.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <vector>

#include "engine/gguf.h"
#include "engine/gguf_shards.h"
#include "engine/gguf_tokenizer.h"
#include "engine/tokenizer.h"
#include "offload/thread_pool.h"
#include "quant/block_formats.h"

namespace hearth {

namespace {

namespace fs = std::filesystem;

bool is_k_quant(DType t) { return dtype_block_elems(t) == kQK_K; }

std::string type_text(DType t) { return std::string(dtype_name(t)); }

// The name a file gets without --name: the model directory's or the file's stem.
std::string default_name(const fs::path& input) {
  fs::path p = input;
  if (!p.has_filename()) p = p.parent_path();  // "dir/"
  return p.stem().string();
}

}  // namespace

DType default_tensor_type(const GgufExportTensor& t, DType type) {
  if (t.dims.size() == 1 || t.kind == GgufTensorKind::kRouter || t.name.ends_with(".indexer.proj.weight"))
    return DType::F32;
  const int64_t n = t.row_elems();
  if (n % dtype_block_elems(type) == 0) return type;
  if (is_k_quant(type) && n % dtype_block_elems(DType::Q8_0) == 0) return DType::Q8_0;
  return DType::F16;
}

std::function<DType(const GgufExportTensor&)> uniform_type_for(DType type) {
  return [type](const GgufExportTensor& t) { return default_tensor_type(t, type); };
}

uint32_t llama_file_type(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q8_0: return 7;
    case DType::Q2_K: return 10;
    case DType::Q3_K: return 11;
    case DType::Q4_K: return 14;
    case DType::Q5_K: return 16;
    case DType::Q6_K: return 18;
    case DType::Q4_1: return 3;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::IQ4_NL: return 25;
    case DType::IQ4_XS: return 30;
    case DType::BF16: return 32;
    case DType::F8_E4M3:
    case DType::Q4_K_R8:
    case DType::Q6_K_R16: break;
  }
  throw std::invalid_argument("GGUF has no file type for " + type_text(t));
}

// The tokenizer travels with the model, so llama.cpp (and hearth without a tokenizer.json)
// can run the file: a GGUF input's tokenizer.* keys are copied as they are; a Hugging Face
// directory's tokenizer.json (+ tokenizer_config.json: chat template, pad token) is
// written as llama.cpp's converter writes it. Returns where it came from ("" if none).
static std::string add_tokenizer_metadata(GgufWriter& w, const fs::path& input, const OpenCheckpoint& ck) {
  if (ck.gguf) {
    bool any = false;
    for (const GgufKeyValue& kv : ck.gguf->first().metadata())
      if (kv.key.starts_with("tokenizer.")) w.add(kv.key, kv.value), any = true;
    return any ? input.string() : std::string();
  }
  const fs::path json = input / "tokenizer.json";
  std::error_code ec;
  if (!fs::is_regular_file(json, ec)) return {};
  const Tokenizer tok = Tokenizer::load(json);
  GgufTokenizerExtras extras;
  const fs::path config = input / "tokenizer_config.json";
  if (fs::is_regular_file(config, ec)) extras = tokenizer_config_extras(config, tok);
  extras.vocab_size = ck.config.vocab_size;
  add_gguf_tokenizer(w, tok, extras);
  return json.string();
}

// `output`, or the names of its `shards` shards when split_max_bytes asks for them.
static std::vector<fs::path> quantize_output_files(const QuantizeOptions& o, size_t shards) {
  if (o.split_max_bytes == 0) return {o.output};
  std::string prefix = o.output.string();
  if (prefix.ends_with(".gguf")) prefix.resize(prefix.size() - 5);
  std::vector<fs::path> files;
  for (size_t k = 0; k < shards; ++k) files.push_back(gguf_shard_path(prefix, int(k), int(shards)));
  return files;
}

QuantizeResult quantize_model(const QuantizeOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.output.empty()) throw std::runtime_error("quantize: no output file given");
  std::error_code ec;
  if (fs::is_directory(o.output, ec))
    throw std::runtime_error("quantize: output '" + o.output.string() + "' is a directory");

  const OpenCheckpoint ck = open_checkpoint(o.input);
  const std::vector<GgufExportTensor> plan =
      plan_gguf_export(ck.config, ck.store, GgufExportOptions{.split_kv_b = o.split_kv_b});
  const auto type_for = o.type_for ? o.type_for : uniform_type_for(DType::Q8_0);

  // Every type is chosen and checked before the file is created.
  std::vector<const BlockFormat*> formats;
  QuantizeResult res;
  res.config = ck.config;
  std::map<DType, uint64_t> bytes_by_type;
  uint64_t in_total = 0, out_total = 0;
  for (const GgufExportTensor& t : plan) {
    const DType d = type_for(t);
    const BlockFormat* f = block_format_of(d);
    if (!f) throw std::runtime_error("tensor '" + t.name + "': GGUF cannot hold " + type_text(d));
    if (t.row_elems() % f->block_elems != 0)
      throw std::runtime_error("tensor '" + t.name + "': rows of " + std::to_string(t.row_elems()) +
                                  " values are not a whole number of " + type_text(d) + " blocks (" +
                                  std::to_string(f->block_elems) + ")");
    formats.push_back(f);
    const uint64_t bytes = uint64_t(f->row_bytes(t.row_elems()) * t.rows());
    in_total += t.source_bytes;
    out_total += bytes;
    QuantizeTypeCount& n = res.by_type[d];
    ++n.tensors;
    n.bytes += bytes;
    if (t.dims.size() > 1) bytes_by_type[d] += bytes;
  }
  res.tensors = int64_t(plan.size());
  res.tensor_bytes = out_total;
  if (o.file_type) {
    res.file_type = *o.file_type;
  } else {  // the type holding most of the matrices' bytes
    DType main = DType::F32;
    uint64_t best = 0;
    for (const auto& [d, b] : bytes_by_type)
      if (b > best) best = b, main = d;
    res.file_type = llama_file_type(main);
  }

  // One file, or shards of at most split_max_bytes of tensor data each (as gguf-split
  // --split-max-size counts: padded tensor bytes, metadata aside; a tensor larger than
  // the limit gets a shard of its own).
  std::vector<size_t> shard_of(plan.size(), 0);
  size_t shards = 1;
  if (o.split_max_bytes > 0) {
    uint64_t in_shard = 0;
    for (size_t i = 0; i < plan.size(); ++i) {
      const uint64_t a = kGgufDefaultAlignment;
      const uint64_t padded = (uint64_t(formats[i]->row_bytes(plan[i].row_elems()) * plan[i].rows()) + a - 1) / a * a;
      if (in_shard > 0 && in_shard + padded > o.split_max_bytes) ++shards, in_shard = 0;
      shard_of[i] = shards - 1;
      in_shard += padded;
    }
    if (shards > 99999) throw std::runtime_error("quantize: --split-max-size gives more than 99999 shards");
  }
  res.files = quantize_output_files(o, shards);
  {  // no output file may replace the input or one of its shards
    std::vector<fs::path> inputs{o.input};
    if (ck.gguf) {
      inputs.clear();
      for (const auto& f : ck.gguf->files()) inputs.push_back(f->path());
    }
    for (const fs::path& out : res.files)
      for (const fs::path& in : inputs)
        if (fs::exists(out, ec) && fs::equivalent(in, out, ec))
          throw std::runtime_error(std::string("quantize: output ") + (o.split_max_bytes > 0 ? "shard '" : "'") +
                                   out.string() + "' is the input");
  }
  std::vector<std::unique_ptr<GgufWriter>> writers;
  for (const fs::path& f : res.files) writers.push_back(std::make_unique<GgufWriter>(f));
  GgufWriter& w = *writers.front();
  add_gguf_model_metadata(w, ck.config, o.name.empty() ? default_name(o.input) : o.name);
  res.tokenizer = add_tokenizer_metadata(w, o.input, ck);
  w.add("general.file_type", GgufValue(res.file_type));
  w.add("general.quantization_version", GgufValue(uint32_t(2)));
  if (o.split_max_bytes > 0)
    for (size_t k = 0; k < shards; ++k) {
      writers[k]->add(std::string(kGgufSplitNo), GgufValue(uint16_t(k)));
      writers[k]->add(std::string(kGgufSplitCount), GgufValue(uint16_t(shards)));
      writers[k]->add(std::string(kGgufSplitTensors), GgufValue(int32_t(plan.size())));
    }
  for (size_t i = 0; i < plan.size(); ++i) writers[shard_of[i]]->add_tensor(plan[i].name, formats[i]->type, plan[i].dims);

  ThreadPool pool(o.threads);
  QuantizeProgress p;
  p.tensor_count = int64_t(plan.size());
  p.bytes_in_total = in_total;
  p.bytes_out_total = out_total;
  std::vector<float> rows;
  std::vector<uint8_t> packed;
  for (size_t i = 0; i < plan.size(); ++i) {
    const GgufExportTensor& t = plan[i];
    const BlockFormat& f = *formats[i];
    const int64_t n = t.row_elems(), total = t.rows(), rb = f.row_bytes(n);
    const int64_t per_expert = t.layout == GgufLayout::kExperts ? t.dims[1] : total;
    const int64_t chunk = std::max<int64_t>(1, o.chunk_bytes / int64_t(n * sizeof(float)));
    p.tensor = &t;
    p.type = *dtype_of(f.type);
    p.tensor_index = int64_t(i);
    const uint64_t in_before = p.bytes_in_done;
    // A tensor the input already holds in the output's type is copied as stored.
    const bool copy = t.stored_type && *t.stored_type == p.type;
    if (copy) ++res.copied;
    for (int64_t r0 = 0; r0 < total || (total == 0 && r0 == 0); r0 += chunk) {
      if (o.cancel && o.cancel->load()) throw std::runtime_error("quantize: cancelled");
      const int64_t cn = std::min(chunk, total - r0);
      if (!copy) rows.resize(size_t(cn * n));
      packed.resize(size_t(cn * rb));
      if (copy) {
        t.stored_rows(r0, cn, packed.data());
      } else {
        // Importance vectors of the experts this chunk touches, fetched on this thread.
        std::vector<const float*> imp;
        const int64_t e0 = r0 / per_expert, e1 = cn > 0 ? (r0 + cn - 1) / per_expert : e0;
        if (o.importance)
          for (int64_t e = e0; e <= e1; ++e)
            imp.push_back(o.importance(t.name, t.layout == GgufLayout::kExperts ? e : -1, n));
        pool.parallel_for(
            cn,
            [&](int64_t a, int64_t b) {
              t.rows(r0 + a, b - a, rows.data() + a * n);
              for (int64_t r = a; r < b; ++r) {
                const float* im = imp.empty() ? nullptr : imp[size_t((r0 + r) / per_expert - e0)];
                f.quantize_row(rows.data() + r * n, packed.data() + r * rb, n, im);
              }
            },
            8);
      }
      writers[shard_of[i]]->write(t.name, packed.data(), uint64_t(cn * rb));
      p.bytes_out_done += uint64_t(cn * rb);
      p.bytes_in_done = in_before + (total ? t.source_bytes * uint64_t(r0 + cn) / uint64_t(total) : t.source_bytes);
      if (o.progress) o.progress(p);
      if (total == 0) break;
    }
  }
  if (o.cancel && o.cancel->load()) throw std::runtime_error("quantize: cancelled");
  // Every shard complete before any is renamed into place: an interrupted run leaves
  // none of them (a failed rename takes back the ones already renamed).
  for (auto& wr : writers) wr->complete();
  for (size_t k = 0; k < writers.size(); ++k) {
    try {
      writers[k]->commit();
    } catch (...) {
      std::error_code ec;
      for (size_t j = 0; j < k; ++j) fs::remove(res.files[j], ec);
      throw;
    }
  }
  res.file_bytes = 0;
  for (const fs::path& f : res.files) res.file_bytes += fs::file_size(f);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace hearth
