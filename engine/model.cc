#include "engine/model.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "engine/gguf_model.h"
#include "engine/repack.h"
#include "engine/synth_model.h"  // check_fits_in_memory
#include "offload/memory.h"
#include "offload/thread_pool.h"
#include "quant/interleaved.h"
#include "quant/numbers.h"

namespace hearth {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Reads tensors by name and checks them against the shapes the config implies.
class Loader {
 public:
  explicit Loader(const WeightStore& store) : store_(store) {}

  const TensorView& tensor(const std::string& name, const std::vector<int64_t>& shape) {
    const TensorView& t = store_.get(name);
    if (t.shape != shape)
      throw std::runtime_error(t.file + ": tensor '" + name + "' has shape " + shape_str(t.shape) +
                               ", the config implies " + shape_str(shape));
    return t;
  }

  WeightMatrix matrix(const std::string& prefix, int64_t rows, int64_t cols) {
    const TensorView& t = tensor(prefix + ".weight", {rows, cols});
    WeightMatrix w;
    w.dtype = t.dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = t.data;
    if (t.dtype == DType::F8_E4M3) {
      const std::string sname = prefix + ".weight_scale_inv";
      if (!store_.has(sname))
        throw std::runtime_error(t.file + ": FP8 tensor '" + t.name + "' has no block scale '" + sname + "'");
      const TensorView& s = tensor(sname, {(rows + 127) / 128, (cols + 127) / 128});
      if (s.dtype != DType::F32)
        throw std::runtime_error(s.file + ": scale '" + sname + "' must be F32, not " + std::string(dtype_name(s.dtype)));
      w.scale = static_cast<const float*>(s.data);
      w.block = 128;
    }
    return w;
  }

  std::vector<float> vector(const std::string& name, int64_t n) {
    const TensorView& t = tensor(name, {n});
    std::vector<float> v(static_cast<size_t>(n), 0.0f);
    WeightMatrix as_row{t.dtype, 1, n, t.data, nullptr, 128};
    if (t.dtype == DType::F8_E4M3)
      throw std::runtime_error(t.file + ": vector '" + name + "' cannot be FP8");
    dequantize_row(as_row, 0, 0, n, v.data());
    return v;
  }

 private:
  const WeightStore& store_;
};

Mlp load_mlp(Loader& ld, const std::string& p, int64_t hidden, int64_t inter) {
  return Mlp{ld.matrix(p + ".gate_proj", inter, hidden), ld.matrix(p + ".up_proj", inter, hidden),
             ld.matrix(p + ".down_proj", hidden, inter)};
}

void count(ParamCounts& c, const TensorView& t, int64_t bytes) {
  // Block scales are storage overhead, not parameters.
  if (!t.name.ends_with("_scale_inv")) c.params += t.numel();
  c.bytes += bytes;
}

// Whether p lies in one of the file mappings `files` (offload/memory.h's file_mapped_ranges).
bool in_file_mapping(const void* p, const std::vector<std::pair<uintptr_t, uintptr_t>>& files) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  return std::any_of(files.begin(), files.end(), [&](const auto& r) { return a >= r.first && a < r.second; });
}

}  // namespace

ParamCounts ModelFootprint::total() const {
  ParamCounts t;
  for (const ParamCounts* c : {&attention, &routed_experts, &shared_experts, &dense_mlp, &embeddings, &norms_router, &mtp}) {
    t.params += c->params;
    t.bytes += c->bytes;
  }
  return t;
}

Model Model::load(const std::string& path, const ModelLoadOptions& options) {
  OpenCheckpoint ck = open_checkpoint(path);  // a Hugging Face directory or a GGUF file
  return Model(std::move(ck.config), std::move(ck.store), options);
}

Model::Model(ModelConfig config, WeightStore store, const ModelLoadOptions& options)
    : config_(std::move(config)), store_(std::move(store)) {
  const ModelConfig& c = config_;
  Loader ld(store_);
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  embed = ld.matrix("model.embed_tokens", c.vocab_size, H);
  lm_head = ld.matrix("lm_head", c.vocab_size, H);
  final_norm = ld.vector("model.norm.weight", H);
  layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer& L = layers[size_t(i)];
    const std::string p = "model.layers." + std::to_string(i);
    L.attn_norm = ld.vector(p + ".input_layernorm.weight", H);
    L.ffn_norm = ld.vector(p + ".post_attention_layernorm.weight", H);
    Attention& A = L.attn;
    const std::string a = p + ".self_attn";
    A.q_a = ld.matrix(a + ".q_a_proj", c.q_lora_rank, H);
    A.q_a_norm = ld.vector(a + ".q_a_layernorm.weight", c.q_lora_rank);
    A.q_b = ld.matrix(a + ".q_b_proj", nh * c.qk_head_dim(), c.q_lora_rank);
    A.kv_a = ld.matrix(a + ".kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, H);
    A.kv_a_norm = ld.vector(a + ".kv_a_layernorm.weight", c.kv_lora_rank);
    A.kv_b = ld.matrix(a + ".kv_b_proj", nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    if (store_.has(a + ".k_b_proj.weight") || store_.has(a + ".v_b_proj.weight")) {  // a GGUF's attn_k_b / attn_v_b
      A.k_b = ld.matrix(a + ".k_b_proj", nh * c.kv_lora_rank, c.qk_nope_head_dim);
      A.v_b = ld.matrix(a + ".v_b_proj", nh * c.v_head_dim, c.kv_lora_rank);
    }
    A.o = ld.matrix(a + ".o_proj", H, nh * c.v_head_dim);
    A.has_indexer = c.has_indexer();
    if (A.has_indexer) {
      const std::string x = a + ".indexer";
      A.indexer.wq_b = ld.matrix(x + ".wq_b", c.index_n_heads * c.index_head_dim, c.q_lora_rank);
      A.indexer.wk = ld.matrix(x + ".wk", c.index_head_dim, H);
      A.indexer.weights_proj = ld.matrix(x + ".weights_proj", c.index_n_heads, H);
      A.indexer.k_norm_weight = ld.vector(x + ".k_norm.weight", c.index_head_dim);
      A.indexer.k_norm_bias = ld.vector(x + ".k_norm.bias", c.index_head_dim);
    }
    L.is_moe = c.is_moe_layer(i);
    const std::string m = p + ".mlp";
    if (!L.is_moe) {
      L.dense = load_mlp(ld, m, H, c.intermediate_size);
      continue;
    }
    L.moe.router = ld.matrix(m + ".gate", c.n_routed_experts, H);
    if (store_.has(m + ".gate.e_score_correction_bias"))
      L.moe.router_bias = ld.vector(m + ".gate.e_score_correction_bias", c.n_routed_experts);
    else if (c.topk_method == "noaux_tc")
      throw std::runtime_error("missing tensor '" + m + ".gate.e_score_correction_bias' in " + store_.dir().string());
    L.moe.experts.reserve(static_cast<size_t>(c.n_routed_experts));
    for (int64_t e = 0; e < c.n_routed_experts; ++e)
      L.moe.experts.push_back(load_mlp(ld, m + ".experts." + std::to_string(e), H, c.moe_intermediate_size));
    L.moe.has_shared = c.n_shared_experts > 0;
    if (L.moe.has_shared)
      L.moe.shared = load_mlp(ld, m + ".shared_experts", H, c.moe_intermediate_size * c.n_shared_experts);
  }
  if (options.repack) repack(options);
  if (options.interleave) interleave(options);
  if (options.in_memory) copy_into_memory(options);
  else if (options.populate) populate_mapped(options);
}

std::vector<WeightMatrix*> Model::matrices() {
  std::vector<WeightMatrix*> all{&embed, &lm_head};
  auto mlp = [&](Mlp& m) { all.insert(all.end(), {&m.gate, &m.up, &m.down}); };
  for (Layer& L : layers) {
    Attention& A = L.attn;
    all.insert(all.end(), {&A.q_a, &A.q_b, &A.kv_a, &A.kv_b, &A.k_b, &A.v_b, &A.o});
    if (A.has_indexer) all.insert(all.end(), {&A.indexer.wq_b, &A.indexer.wk, &A.indexer.weights_proj});
    if (!L.is_moe) {
      mlp(L.dense);
      continue;
    }
    all.push_back(&L.moe.router);
    for (Mlp& e : L.moe.experts) mlp(e);
    if (L.moe.has_shared) mlp(L.moe.shared);
  }
  return all;
}

std::vector<MappedPiece> Model::mapped_pieces() {
  // Each tensor (or merged-expert slice, or FP8 scale array) once, whichever matrices
  // share it (tied embeddings share one), and only what lies in a mapped file: weights
  // already in memory (repacked, converted at load, built in memory) are left alone.
  std::vector<MappedPiece> pieces;
  std::unordered_set<const void*> seen;
  const std::vector<std::pair<uintptr_t, uintptr_t>> files = file_mapped_ranges();
  auto add = [&](const void* p, size_t bytes) {
    if (p && in_file_mapping(p, files) && seen.insert(p).second) pieces.push_back({static_cast<const uint8_t*>(p), bytes});
  };
  for (WeightMatrix* w : matrices()) {
    add(w->data, size_t(w->bytes()));
    if (w->scale) add(w->scale, size_t((w->rows + w->block - 1) / w->block * w->scale_cols()) * sizeof(float));
  }
  return pieces;
}

namespace {

// Runs fn(piece index, offset, bytes) over the pieces in steps of at most `step` bytes,
// on the pool: work over every tensor that streams at the machine's bandwidth.
template <class Fn>
void for_piece_steps(ThreadPool& pool, const std::vector<MappedPiece>& pieces, size_t step, Fn&& fn) {
  std::vector<std::pair<size_t, size_t>> work;  // (piece, offset)
  for (size_t i = 0; i < pieces.size(); ++i)
    for (size_t off = 0; off < pieces[i].bytes; off += step) work.emplace_back(i, off);
  pool.parallel_for(int64_t(work.size()), [&](int64_t a, int64_t b) {
    for (int64_t k = a; k < b; ++k) {
      const auto [i, off] = work[size_t(k)];
      fn(i, off, std::min(step, pieces[i].bytes - off));
    }
  });
}

}  // namespace

void Model::copy_into_memory(const ModelLoadOptions& options) {
  if (!arena_) arena_ = std::make_shared<WeightArena>();
  const std::vector<MappedPiece> pieces = mapped_pieces();
  uint64_t total = 0;
  for (const MappedPiece& p : pieces) total += p.bytes;
  if (const std::optional<uint64_t> available = mem_available_bytes())
    check_fits_in_memory("--no-mmap: the copy of the weights", total, *available);
  std::unordered_map<const void*, uint8_t*> moved;
  std::vector<uint8_t*> to(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) moved[pieces[i].from] = to[i] = arena_->allocate(pieces[i].bytes);
  ThreadPool pool(options.threads);
  for_piece_steps(pool, pieces, size_t(4) << 20,
                  [&](size_t i, size_t off, size_t n) { std::memcpy(to[i] + off, pieces[i].from + off, n); });
  for (WeightMatrix* w : matrices()) {
    if (auto it = moved.find(w->data); it != moved.end()) w->data = it->second;
    if (auto it = moved.find(w->scale); w->scale && it != moved.end()) w->scale = reinterpret_cast<const float*>(it->second);
  }
}

void Model::populate_mapped(const ModelLoadOptions& options) {
  const std::vector<MappedPiece> pieces = mapped_pieces();
  for (const MappedPiece& p : pieces) mapped_.bytes += p.bytes;
  mapped_.available = mem_available_bytes();
  // Beyond what memory can hold, filling the tables would read the whole file through
  // the page cache only to evict its start again: decode reads from disk either way.
  if (mapped_.bytes == 0 || (mapped_.available && mapped_.bytes > *mapped_.available)) return;
  ThreadPool pool(options.threads);
  for_piece_steps(pool, pieces, size_t(64) << 20,
                  [&](size_t i, size_t off, size_t n) { populate_read(pieces[i].from + off, n); });
  mapped_.populated = true;
}

std::vector<std::pair<std::string, WeightMatrix*>> Model::linear_weights() {
  // See ModelLoadOptions::repack for the choice.
  std::vector<std::pair<std::string, WeightMatrix*>> todo;
  auto mlp = [&](const std::string& p, Mlp& m) {
    todo.emplace_back(p + ".gate_proj", &m.gate);
    todo.emplace_back(p + ".up_proj", &m.up);
    todo.emplace_back(p + ".down_proj", &m.down);
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer& L = layers[i];
    const std::string p = "model.layers." + std::to_string(i);
    const std::string a = p + ".self_attn";
    Attention& A = L.attn;
    todo.emplace_back(a + ".q_a_proj", &A.q_a);
    todo.emplace_back(a + ".q_b_proj", &A.q_b);
    todo.emplace_back(a + ".kv_a_proj_with_mqa", &A.kv_a);
    todo.emplace_back(a + ".kv_b_proj", &A.kv_b);
    if (A.split_kv_b()) {
      todo.emplace_back(a + ".k_b_proj", &A.k_b);
      todo.emplace_back(a + ".v_b_proj", &A.v_b);
    }
    todo.emplace_back(a + ".o_proj", &A.o);
    if (A.has_indexer) {
      todo.emplace_back(a + ".indexer.wq_b", &A.indexer.wq_b);
      todo.emplace_back(a + ".indexer.wk", &A.indexer.wk);
    }
    if (!L.is_moe) {
      mlp(p + ".mlp", L.dense);
      continue;
    }
    for (size_t e = 0; e < L.moe.experts.size(); ++e) mlp(p + ".mlp.experts." + std::to_string(e), L.moe.experts[e]);
    if (L.moe.has_shared) mlp(p + ".mlp.shared_experts", L.moe.shared);
  }
  todo.emplace_back("lm_head", &lm_head);
  return todo;
}

void Model::repack(const ModelLoadOptions& options) {
  const std::vector<std::pair<std::string, WeightMatrix*>> todo = linear_weights();
  const DType target = *options.repack;
  repack_.target = target;
  ThreadPool pool(options.threads);
  for (auto& [name, w] : todo) {
    const std::optional<DType> to = repack_format_for(target, w->cols);
    if (!to || *to == w->dtype) {
      ++repack_.kept;
      continue;
    }
    if (!arena_) arena_ = std::make_shared<WeightArena>();
    *w = repack_matrix(*w, *to, pool, *arena_);
    repacked_bytes_[name + ".weight"] = w->bytes();
    ++repack_.converted[*to];
  }
}

void Model::interleave(const ModelLoadOptions& options) {
  ThreadPool pool(options.threads);
  // A weight is rearranged where it lies when only it reads that memory and the memory is
  // the process's own (a repack's output, a synthetic model, a tensor converted at load):
  // no second copy. One in a mapped file, or shared with another matrix (tied embeddings),
  // is copied into the arena instead.
  const std::vector<std::pair<uintptr_t, uintptr_t>> files = file_mapped_ranges();
  std::unordered_map<const void*, int> readers;
  for (const WeightMatrix* w : matrices()) ++readers[w->data];
  struct Job {
    WeightMatrix* w;
    bool in_place;
  };
  std::vector<Job> todo;
  uint64_t copied = 0;
  for (auto& [name, w] : linear_weights()) {
    // kv_b is read transposed (absorbed attention folds queries through it) and k_b's
    // rows are too short. v_b's rows are read as rows, one head's band at a time, so it
    // takes the layout when a head's band is whole groups of its rows (8 for Q4_K, 16 for
    // Q6_K).
    if (name.ends_with(".kv_b_proj") || name.ends_with(".k_b_proj")) continue;
    const DType laid_out = w->dtype == DType::Q6_K ? DType::Q6_K_R16 : DType::Q4_K_R8;
    if (name.ends_with(".v_b_proj") && config_.v_head_dim % interleaved_unit_rows(laid_out) != 0) continue;
    if (!can_interleave(*w)) continue;
    todo.push_back({w, readers[w->data] == 1 && !in_file_mapping(w->data, files)});
    if (!todo.back().in_place) copied += uint64_t(w->bytes());
  }
  // The layout only changes speed, so a copy the RAM cannot hold is skipped, not refused.
  bool copy_fits = true;
  if (const std::optional<uint64_t> available = mem_available_bytes(); available && copied > 0) {
    try {
      check_fits_in_memory("the rearranged copy", copied, *available);
    } catch (const std::runtime_error&) {
      copy_fits = false;
    }
  }
  for (auto [w, in_place] : todo) {
    if (in_place) {
      *w = interleave_in_place(*w, pool);
    } else if (copy_fits) {
      if (!arena_) arena_ = std::make_shared<WeightArena>();
      *w = interleave_matrix(*w, pool, *arena_);
    } else {
      ++repack_.not_interleaved;
      continue;
    }
    ++(w->dtype == DType::Q6_K_R16 ? repack_.interleaved_q6 : repack_.interleaved);
  }
}

ModelFootprint Model::footprint() const {
  ModelFootprint f;
  const std::string mtp_prefix = "model.layers." + std::to_string(config_.num_hidden_layers) + ".";
  for (const auto& [name, t] : store_.tensors()) {
    // Later MTP layers (index >= num_hidden_layers) share one bucket.
    bool is_mtp = false;
    if (name.rfind("model.layers.", 0) == 0) {
      const int64_t idx = std::stoll(name.substr(13));
      is_mtp = idx >= config_.num_hidden_layers;
    }
    // A repacked weight counts at its new size; its FP8 scales are no longer used.
    int64_t bytes = int64_t(t.nbytes);
    const std::string weight = name.ends_with("_scale_inv") ? name.substr(0, name.size() - 10) : name;
    if (auto it = repacked_bytes_.find(weight); it != repacked_bytes_.end())
      bytes = weight == name ? it->second : 0;
    if (is_mtp) count(f.mtp, t, bytes);
    else if (name.find(".mlp.experts.") != std::string::npos) count(f.routed_experts, t, bytes);
    else if (name.find(".mlp.shared_experts.") != std::string::npos) count(f.shared_experts, t, bytes);
    else if (name.find(".self_attn.") != std::string::npos) count(f.attention, t, bytes);
    else if (name.find(".mlp.gate.") != std::string::npos || name.find("norm") != std::string::npos) count(f.norms_router, t, bytes);
    else if (name.find(".mlp.") != std::string::npos) count(f.dense_mlp, t, bytes);
    else count(f.embeddings, t, bytes);
  }
  return f;
}

}  // namespace hearth
