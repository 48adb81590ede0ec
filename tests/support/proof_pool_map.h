// Test helper: a proof pool (DIR/pool.jsonl) as id -> record, without the wall-clock
// field, failing the test on a sample recorded twice.
#pragma once
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace hearth::testing {

inline std::map<std::string, nlohmann::json> pool_map(const std::filesystem::path& dir) {
  std::map<std::string, nlohmann::json> out;
  std::ifstream f(dir / "pool.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("seconds");
    const std::string id = j["id"];
    REQUIRE_MESSAGE(!out.count(id), "sample ", id, " twice in the pool");
    out[id] = j;
  }
  return out;
}

}  // namespace hearth::testing
