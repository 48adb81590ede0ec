/* Splits a GGUF file into shards with ggml's own GGUF code (libggml-base from the
 * node-llama-cpp npm package), laid out as llama.cpp's gguf-split does: the first shard
 * takes every metadata key, each shard gets split.no / split.count / split.tensors.count,
 * and the tensors are dealt out in file order, N_PER_SHARD at a time. It checks that
 * hearth reads shards that llama.cpp's library wrote, and llama.cpp reads them too.
 *
 *   llamacpp_gguf_split IN.gguf OUT_PREFIX N_PER_SHARD
 *     -> OUT_PREFIX-00001-of-0000n.gguf ...
 *
 * The declarations below are ggml's gguf.h API (the library ships without headers). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct ggml_context;
struct ggml_tensor;
struct gguf_context;
struct gguf_init_params {
  bool no_alloc;
  struct ggml_context** ctx;
};
struct gguf_context* gguf_init_from_file(const char* fname, struct gguf_init_params params);
struct gguf_context* gguf_init_empty(void);
void gguf_free(struct gguf_context* ctx);
int64_t gguf_get_n_tensors(const struct gguf_context* ctx);
const char* gguf_get_tensor_name(const struct gguf_context* ctx, int64_t tensor_id);
void gguf_set_kv(struct gguf_context* ctx, const struct gguf_context* src);
void gguf_set_val_u16(struct gguf_context* ctx, const char* key, uint16_t val);
void gguf_set_val_i32(struct gguf_context* ctx, const char* key, int32_t val);
void gguf_add_tensor(struct gguf_context* ctx, const struct ggml_tensor* tensor);
bool gguf_write_to_file(const struct gguf_context* ctx, const char* fname, bool only_meta);
struct ggml_tensor* ggml_get_tensor(struct ggml_context* ctx, const char* name);
void ggml_free(struct ggml_context* ctx);

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s IN.gguf OUT_PREFIX N_PER_SHARD\n", argv[0]);
    return 2;
  }
  const int64_t per = atoll(argv[3]);
  struct ggml_context* meta = NULL;
  struct gguf_init_params ip = {false, &meta}; /* tensor data loaded: the shards write it */
  struct gguf_context* in = gguf_init_from_file(argv[1], ip);
  if (!in || per < 1) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  const int64_t n = gguf_get_n_tensors(in);
  const int shards = (int)((n + per - 1) / per);
  for (int s = 0; s < shards; ++s) {
    struct gguf_context* out = gguf_init_empty();
    if (s == 0) gguf_set_kv(out, in);
    gguf_set_val_u16(out, "split.no", (uint16_t)s);
    gguf_set_val_u16(out, "split.count", (uint16_t)shards);
    gguf_set_val_i32(out, "split.tensors.count", (int32_t)n);
    for (int64_t i = s * per; i < n && i < (s + 1) * per; ++i)
      gguf_add_tensor(out, ggml_get_tensor(meta, gguf_get_tensor_name(in, i)));
    char path[4096];
    snprintf(path, sizeof path, "%s-%05d-of-%05d.gguf", argv[2], s + 1, shards);
    if (!gguf_write_to_file(out, path, false)) {
      fprintf(stderr, "cannot write %s\n", path);
      return 1;
    }
    gguf_free(out);
    printf("%s\n", path);
  }
  gguf_free(in);
  ggml_free(meta);
  return 0;
}
