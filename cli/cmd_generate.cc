// hearth generate: one prompt in, streamed text out, statistics on stderr.
#include <cstdio>
#include <cxxopts.hpp>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "cli/generation.h"

namespace hearth::cli {

namespace {

std::string read_prompt_file(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin.rdbuf()), {});
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read prompt file '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Generate text after a prompt, streamed to stdout; statistics on stderr.\n"
                        "Without --chat the prompt is encoded as is after BOS (special-token text such as\n"
                        "<｜User｜> becomes the token). With --chat it is one user turn of the chat template.");
  opts.add_options()
      ("p,prompt", "the prompt text", cxxopts::value<std::string>())
      ("f,file", "read the prompt from a file (- for stdin)", cxxopts::value<std::string>())
      ("chat", "wrap the prompt in the chat template (reasoning, then the answer)");
  add_generation_options(opts, 256);
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  const GenerationFlags flags = parse_generation_flags(args);
  if (args.count("prompt") == args.count("file"))
    throw std::invalid_argument("give the prompt with exactly one of -p TEXT or -f FILE");
  const bool chat = args.count("chat") > 0;
  const std::string text = args.count("prompt") ? args["prompt"].as<std::string>() : read_prompt_file(args["file"].as<std::string>());
  check_utf8(text, "the prompt");
  if (text.empty()) throw std::invalid_argument("the prompt is empty");

  const auto session = open_session(flags);
  std::vector<int32_t> ids;
  if (chat) {
    ids = encode_chat(session->tokenizer, {{"user", text, ""}}, flags.thinking);
  } else {
    ids.push_back(session->tokenizer.bos_id());
    const std::vector<int32_t> body = session->tokenizer.encode(text, /*parse_special=*/true);
    ids.insert(ids.end(), body.begin(), body.end());
  }

  install_interrupt_handler();
  TurnPrinter printer(chat, flags.thinking, flags.reasoning);
  const GenerationResult res =
      session->generator->generate(ids, flags.request, [&](std::string_view t) { printer(t); }, &interrupted());
  printer.finish();
  print_stats(res.stats);
  return res.stats.stop == StopReason::kCancelled ? 130 : 0;
}

}  // namespace hearth::cli
