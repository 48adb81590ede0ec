// The output directory of a proof run and its run.json: the settings that shape the run's
// samples (problem, N, V, R, meta-verification, token budget, sampling, seed, thinking mode,
// templates). A new run needs an empty or absent directory; a resumed run must keep every
// setting except the number of rounds (which it may raise or lower), so the samples it
// finishes are the ones the first run would have made.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "engine/proof_loop.h"
#include "engine/proof_prompts.h"

namespace hearth {

// 16 hex digits identifying the text of every template.
std::string proof_templates_hash(const ProofTemplates& t);

// The settings as run.json holds them: problem, samples, verifications, rounds,
// meta_verify, max_tokens, temperature, top_p, seed, thinking, refine_best, templates
// (proof_templates_hash) and templates_file (for messages only).
nlohmann::json proof_run_settings(const std::string& problem, const ProofLoopOptions& o, const ProofTemplates& t,
                                  const std::string& templates_file);
// Back from run.json into `problem` and `o` (the keys above). Throws std::runtime_error
// naming `where` and the key on a missing or mistyped one.
void apply_proof_run_settings(const nlohmann::json& settings, const std::string& where, std::string& problem,
                              ProofLoopOptions& o);

// Throws the error open_proof_run_dir gives a new run in `dir` (it exists and is not an
// empty directory), without creating anything: a check to make before a long model load.
void check_new_proof_run_dir(const std::filesystem::path& dir);

// Prepares `dir` and returns the settings to run with.
//   new run: `dir` must be absent or empty; it is created and run.json written.
//   resume:  DIR/run.json must exist; a setting named in `given` (set on the command line)
//            must equal the stored one, except "rounds"; the others are taken from it.
//            run.json is rewritten with the rounds in effect.
// Throws std::runtime_error, one line naming the directory and the setting.
nlohmann::json open_proof_run_dir(const std::filesystem::path& dir, bool resume, const nlohmann::json& wanted,
                                  const std::set<std::string>& given);

// The command-line flag of a run.json key ("max_tokens" -> "--max-tokens").
std::string proof_setting_flag(const std::string& key);

}  // namespace hearth
