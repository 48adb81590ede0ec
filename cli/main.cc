// hearth: the command-line front end. Dispatches to one sub-command; every error a
// user can cause ends as one line on stderr and a non-zero exit, never a crash.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
};

const Command kCommands[] = {
    {"synth", "write a deterministic random checkpoint in the Hugging Face layout", hearth::cli::cmd_synth},
    {"info", "print a model's configuration and its parameter/byte counts", hearth::cli::cmd_info},
    {"logits", "run the forward pass on token ids and write the logits", hearth::cli::cmd_logits},
    {"tokenize", "print the token ids of the text on stdin as JSON", hearth::cli::cmd_tokenize},
    {"detokenize", "print the text of a JSON array of token ids on stdin", hearth::cli::cmd_detokenize},
    {"generate", "generate text after a prompt (streamed, with statistics)", hearth::cli::cmd_generate},
    {"chat", "chat with a model interactively (multi-turn, Ctrl-C stops an answer)", hearth::cli::cmd_chat},
    {"perplexity", "perplexity of a model on a text (chunks of --ctx tokens)", hearth::cli::cmd_perplexity},
    {"kld", "KL divergence and top-1 agreement of a candidate model against a base model", hearth::cli::cmd_kld},
    {"quantize", "write a model as a GGUF file (presets, MoE splits, per-tensor overrides)", hearth::cli::cmd_quantize},
    {"imatrix", "collect an importance matrix from a text (for quantize --imatrix)", hearth::cli::cmd_imatrix},
    {"bench", "throughput like llama-bench (pp, tg, batched tg) against the memory wall", hearth::cli::cmd_bench},
    {"prove", "prove a statement: generate, verify and refine proofs (DeepSeekMath-V2's loop, resumable)", hearth::cli::cmd_prove},
    {"serve", "an OpenAI-compatible HTTP server (chat, completions, streaming) over batched generation", hearth::cli::cmd_serve},
    {"plan", "plan what a GPU of a given size holds (--gpu-mem, --place) and its throughput roofline", hearth::cli::cmd_plan},
    {"profile-experts", "count how often each routed expert is chosen on a text (for plan --profile)", hearth::cli::cmd_profile_experts},
};

void usage(std::FILE* out) {
  std::fprintf(out, "usage: hearth COMMAND [options]   (hearth COMMAND --help for its options)\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    std::string prog = std::string("hearth ") + c.name;
    std::vector<char*> args{prog.data()};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    try {
      return c.run(int(args.size()), args.data());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "hearth %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "hearth: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
