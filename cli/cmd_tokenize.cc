// hearth tokenize / detokenize: text on stdin -> token ids as JSON, and back.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "cli/model_tokenizer.h"
#include "engine/chat_template.h"
#include "engine/tokenizer.h"

namespace hearth::cli {

namespace {

namespace fs = std::filesystem;

// -m names a model directory (its tokenizer.json), a tokenizer.json itself, or a .gguf
// file (the tokenizer in its metadata).
Tokenizer load_tokenizer(const std::string& arg) {
  fs::path p = arg;
  if (fs::is_directory(p)) {
    p /= "tokenizer.json";
    if (!fs::exists(p)) throw std::runtime_error("model directory '" + arg + "' has no tokenizer.json");
  } else if (!fs::exists(p)) {
    throw std::runtime_error("'" + arg + "' does not exist (expected a model directory, a tokenizer.json or a .gguf file)");
  } else if (is_gguf_file(p)) {
    return gguf_file_tokenizer(p, "give -m a tokenizer.json instead");
  }
  return Tokenizer::load(p);
}

std::string read_stdin() {
  std::string s{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  if (std::cin.bad()) throw std::runtime_error("cannot read standard input");
  return s;
}

cxxopts::Options options(const char* prog, const char* what) {
  cxxopts::Options opts(prog, what);
  opts.add_options()
      ("m,model", "model directory (with tokenizer.json), a tokenizer.json, or a .gguf file (its tokenizer)",
       cxxopts::value<std::string>())
      ("h,help", "show this help");
  return opts;
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  cxxopts::Options opts = options(argv[0], "Read UTF-8 text from stdin; print its token ids as a JSON array on one line.");
  opts.add_options()
      ("chat", "wrap the text as one user message in the chat template (adds BOS)")
      ("no-thinking", "with --chat: open the answer with </think> instead of <think>");
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  if (!args.count("model")) throw std::invalid_argument("--model is required (see --help)");
  if (args.count("no-thinking") && !args.count("chat")) throw std::invalid_argument("--no-thinking needs --chat");
  const Tokenizer tok = load_tokenizer(args["model"].as<std::string>());
  const std::string text = read_stdin();
  // Plain: special-token text in the input is matched as those tokens. Chat: the input is
  // the user's text and is never read as markers.
  const std::vector<int32_t> ids = args.count("chat")
                                       ? encode_chat(tok, {{"user", text, ""}}, !args.count("no-thinking"))
                                       : tok.encode(text, /*parse_special=*/true);
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(ids[i]);
  }
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int cmd_detokenize(int argc, char** argv) {
  cxxopts::Options opts = options(argv[0], "Read a JSON array of token ids from stdin; print the text they decode to (byte-exact).");
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  if (!args.count("model")) throw std::invalid_argument("--model is required (see --help)");
  const Tokenizer tok = load_tokenizer(args["model"].as<std::string>());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_stdin());
  } catch (const nlohmann::json::parse_error&) {
    throw std::invalid_argument("stdin is not JSON (expected an array of token ids, e.g. [0,17,923])");
  }
  if (!j.is_array()) throw std::invalid_argument("stdin is not a JSON array (expected token ids, e.g. [0,17,923])");
  std::vector<int32_t> ids;
  ids.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& v = j[i];
    if (!v.is_number_integer()) throw std::invalid_argument("element " + std::to_string(i) + " is not an integer token id: " + v.dump());
    if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(INT32_MAX) : v.get<int64_t>() > INT32_MAX)
      throw std::invalid_argument("element " + std::to_string(i) + ": token id " + v.dump() + " is too large");
    const int64_t id = v.get<int64_t>();
    if (id < 0) throw std::invalid_argument("element " + std::to_string(i) + ": token id " + std::to_string(id) + " is negative");
    ids.push_back(int32_t(id));
  }
  const std::string text = tok.decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace hearth::cli
