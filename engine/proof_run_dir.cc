#include "engine/proof_run_dir.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "engine/proof_pool.h"

namespace hearth {

namespace {

namespace fs = std::filesystem;

// The keys a resumed run must keep equal, in the order errors are checked.
const char* const kKept[] = {"problem",     "samples", "verifications", "meta_verify", "max_tokens", "temperature",
                             "top_p",       "seed",    "thinking",      "refine_best", "templates"};

std::string value_text(const nlohmann::json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    return s.size() > 40 ? "'" + s.substr(0, 37) + "...'" : "'" + s + "'";
  }
  return v.dump();
}

void write_json(const fs::path& file, const nlohmann::json& j) {
  fs::path tmp = file;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write '" + tmp.string() + "'");
    f << j.dump(2) << "\n";
    if (!f.flush()) throw std::runtime_error("cannot write '" + tmp.string() + "'");
  }
  fs::rename(tmp, file);
}

}  // namespace

std::string proof_templates_hash(const ProofTemplates& t) {
  std::vector<int32_t> bytes;
  for (const std::string* s : {&t.generate, &t.verify, &t.meta_verify, &t.refine, &t.refine_attempt}) {
    for (unsigned char c : *s) bytes.push_back(c);
    bytes.push_back(-1);  // separator: no byte has this value
  }
  return prompt_hash(bytes);
}

std::string proof_setting_flag(const std::string& key) {
  if (key == "problem") return "the problem";
  if (key == "thinking") return "--no-thinking";
  if (key == "templates") return "--templates";
  std::string flag = "--" + key;
  for (char& c : flag)
    if (c == '_') c = '-';
  return flag;
}

nlohmann::json proof_run_settings(const std::string& problem, const ProofLoopOptions& o, const ProofTemplates& t,
                                  const std::string& templates_file) {
  return {{"problem", problem},
          {"samples", o.samples},
          {"verifications", o.verifications},
          {"rounds", o.rounds},
          {"meta_verify", o.meta_verify},
          {"max_tokens", o.max_tokens},
          {"temperature", o.temperature},
          {"top_p", o.top_p},
          {"seed", o.seed},
          {"thinking", o.thinking},
          {"refine_best", o.refine_best},
          {"templates", proof_templates_hash(t)},
          {"templates_file", templates_file}};
}

void apply_proof_run_settings(const nlohmann::json& s, const std::string& where, std::string& problem, ProofLoopOptions& o) {
  const auto get = [&](const char* key) -> const nlohmann::json& {
    const auto it = s.find(key);
    if (it == s.end()) throw std::runtime_error(where + ": missing setting '" + key + "'");
    return *it;
  };
  try {
    problem = get("problem").get<std::string>();
    o.samples = get("samples").get<int>();
    o.verifications = get("verifications").get<int>();
    o.rounds = get("rounds").get<int>();
    o.meta_verify = get("meta_verify").get<bool>();
    o.max_tokens = get("max_tokens").get<int64_t>();
    o.temperature = get("temperature").get<double>();
    o.top_p = get("top_p").get<double>();
    o.seed = get("seed").get<uint64_t>();
    o.thinking = get("thinking").get<bool>();
    o.refine_best = get("refine_best").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(where + ": a setting has the wrong type (" + std::string(e.what()) + ")");
  }
}

void check_new_proof_run_dir(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !(fs::is_directory(dir, ec) && fs::is_empty(dir, ec)))
    throw std::runtime_error("--out " + dir.string() +
                             " already exists and is not empty (pass --resume to continue the run in it, or choose "
                             "another directory)");
}

nlohmann::json open_proof_run_dir(const fs::path& dir, bool resume, const nlohmann::json& wanted,
                                  const std::set<std::string>& given) {
  const fs::path run_file = dir / "run.json";
  std::error_code ec;
  if (!resume) {
    check_new_proof_run_dir(dir);
    fs::create_directories(dir, ec);
    if (ec) throw std::runtime_error("--out " + dir.string() + ": cannot create the directory (" + ec.message() + ")");
    write_json(run_file, wanted);
    return wanted;
  }
  std::ifstream f(run_file, std::ios::binary);
  if (!f)
    throw std::runtime_error("--resume: " + run_file.string() + " not found (" + dir.string() +
                             " is not the output directory of a hearth prove run)");
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json stored;
  try {
    stored = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error("--resume: " + run_file.string() + " is not valid JSON");
  }
  if (!stored.is_object()) throw std::runtime_error("--resume: " + run_file.string() + " is not a JSON object");
  for (const char* key : kKept) {
    if (!stored.contains(key)) throw std::runtime_error("--resume: " + run_file.string() + " lacks the setting '" + key + "'");
    if (!given.count(key) || stored[key] == wanted.at(key)) continue;
    if (std::string(key) == "templates")
      throw std::runtime_error("--resume: the run in " + dir.string() + " used other templates (" +
                               (stored.value("templates_file", std::string()).empty()
                                    ? std::string("the built-in ones")
                                    : "from " + stored.value("templates_file", std::string())) +
                               "); a resumed run must use the same");
    throw std::runtime_error("--resume: the run in " + dir.string() + " has " + key + " = " + value_text(stored[key]) +
                             ", not " + value_text(wanted.at(key)) + " (" + proof_setting_flag(key) +
                             "); a resumed run keeps every setting but --rounds");
  }
  nlohmann::json out = stored;
  if (given.count("rounds")) out["rounds"] = wanted.at("rounds");
  if (given.count("templates")) out["templates_file"] = wanted.at("templates_file");
  if (out != stored) write_json(run_file, out);
  return out;
}

}  // namespace hearth
