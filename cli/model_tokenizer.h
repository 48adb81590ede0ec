// Which tokenizer goes with a model given on the command line: a model directory's
// tokenizer.json, or the tokenizer.ggml.* metadata of a .gguf model file; --tokenizer
// FILE (a tokenizer.json) replaces either.
#pragma once
#include <filesystem>
#include <string>

#include "engine/tokenizer.h"

namespace hearth::cli {

// Whether `path` is a regular file that starts with the GGUF magic.
bool is_gguf_file(const std::filesystem::path& path);

// The tokenizer a GGUF file carries. Throws std::runtime_error, one line: a file without
// tokenizer.ggml.tokens says so and adds `hint` (how to give a tokenizer instead).
Tokenizer gguf_file_tokenizer(const std::filesystem::path& gguf, const std::string& hint);

inline constexpr const char* kTokenizerFlagHint = "pass --tokenizer FILE (a tokenizer.json)";

// `tokenizer_json` when not empty; else MODEL/tokenizer.json for a directory, the GGUF's
// own tokenizer for a file. Errors name the path and add `hint` (how to give a tokenizer
// instead: the --tokenizer flag where the command has one).
Tokenizer load_model_tokenizer(const std::string& model, const std::string& tokenizer_json = "",
                               const std::string& hint = kTokenizerFlagHint);

}  // namespace hearth::cli
