// Each `hearth` sub-command lives in cli/cmd_NAME.cc and is listed in cli/main.cc.
// A command gets argv with argv[0] = "hearth NAME" and returns the process exit code.
#pragma once

namespace hearth::cli {

int cmd_synth(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_logits(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_detokenize(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_perplexity(int argc, char** argv);
int cmd_kld(int argc, char** argv);
int cmd_quantize(int argc, char** argv);
int cmd_imatrix(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_prove(int argc, char** argv);
int cmd_serve(int argc, char** argv);
int cmd_plan(int argc, char** argv);
int cmd_profile_experts(int argc, char** argv);

}  // namespace hearth::cli
