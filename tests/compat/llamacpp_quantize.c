/* Quantizes a GGUF file with llama.cpp's own quantizer (llama_model_quantize from the
 * libllama that the node-llama-cpp npm package ships), to check that hearth reads the
 * files llama-quantize writes.
 *
 *   llamacpp_quantize IN.gguf OUT.gguf FTYPE     (FTYPE: LLAMA_FTYPE_* number, e.g. 15 = Q4_K_M)
 *
 * Only the first two fields of llama_model_quantize_params are set (nthread, ftype: the
 * same offsets in every llama.cpp version); the rest keep llama.cpp's defaults, so the
 * struct is declared with room to spare and never read past them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct quantize_params {
  int32_t nthread;
  int32_t ftype;
  unsigned char rest[1024]; /* llama.cpp's remaining fields, whatever their layout */
};
void llama_backend_init(void);
struct quantize_params llama_model_quantize_default_params(void);
uint32_t llama_model_quantize(const char* in, const char* out, const struct quantize_params* params);

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s IN.gguf OUT.gguf FTYPE\n", argv[0]);
    return 2;
  }
  llama_backend_init();
  struct quantize_params p = llama_model_quantize_default_params();
  p.nthread = 2;
  p.ftype = atoi(argv[3]);
  const uint32_t rc = llama_model_quantize(argv[1], argv[2], &p);
  if (rc != 0) fprintf(stderr, "llama_model_quantize failed (%u)\n", rc);
  return rc ? 1 : 0;
}
