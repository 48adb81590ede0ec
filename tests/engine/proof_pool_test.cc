// The proof pool (append-only JSONL, fsync'ed) and the journal of partial samples.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/proof_pool.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace engine_proof_pool_suite {

using namespace hearth;
using hearth::testing::slurp;
using hearth::testing::TempDir;

namespace {

PoolRecord record(const std::string& id, SampleKind kind, std::optional<double> score) {
  PoolRecord r;
  r.id = id;
  r.round = 2;
  r.kind = kind;
  r.index = 3;
  r.parent = "r1.g0";
  r.context = {"r1.g0", "r1.g2"};
  r.prompt_hash = prompt_hash(std::vector<int32_t>{1, 2, 3});
  r.seed = 0xfedcba9876543210ull;
  r.text = "line one\nline \"two\" \xe2\x88\x80";
  r.proof = "the proof";
  r.score = score;
  r.tokens = 1234;
  r.seconds = 5.25;
  r.stop = "eos";
  return r;
}

bool same(const PoolRecord& a, const PoolRecord& b) {
  return pool_record_json(a) == pool_record_json(b);
}

struct Warnings {
  std::vector<std::string> list;
  WarnFn fn() {
    return [this](const std::string& w) { list.push_back(w); };
  }
};

}  // namespace

TEST_CASE("proof_pool: records round-trip through JSON with a score field named by kind") {
  const PoolRecord g = record("r2.g3", SampleKind::kGeneration, 0.5);
  const PoolRecord v = record("r2.g3.v1", SampleKind::kVerification, std::nullopt);
  const PoolRecord m = record("r2.g3.v1.m", SampleKind::kMeta, 1.0);
  CHECK(pool_record_json(g)["self_score"] == 0.5);
  CHECK(pool_record_json(v)["rating"].is_null());
  CHECK(pool_record_json(m)["verdict"] == 1.0);
  CHECK(pool_record_json(g)["kind"] == "generation");
  for (const PoolRecord& r : {g, v, m}) {
    const PoolRecord back = pool_record_from_json(nlohmann::json::parse(pool_record_json(r).dump()), "x");
    CHECK(same(back, r));
    CHECK(back.seed == r.seed);
    CHECK(back.text == r.text);
  }
  nlohmann::json bad = pool_record_json(g);
  bad.erase("prompt_hash");
  hearth::testing::check_error([&] { pool_record_from_json(bad, "pool.jsonl:7"); }, {"pool.jsonl:7", "prompt_hash"});
  bad = pool_record_json(g);
  bad["kind"] = "dream";
  hearth::testing::check_error([&] { pool_record_from_json(bad, "pool.jsonl:8"); }, {"pool.jsonl:8", "dream"});
  bad = pool_record_json(g);
  bad["tokens"] = "many";
  hearth::testing::check_error([&] { pool_record_from_json(bad, "pool.jsonl:9"); }, {"pool.jsonl:9", "wrong type"});
}

TEST_CASE("proof_pool: texts are made valid UTF-8 byte by byte") {
  const std::string fffd = "\xef\xbf\xbd";
  CHECK(valid_utf8("plain \xe2\x88\x80 text") == "plain \xe2\x88\x80 text");
  CHECK(valid_utf8("cut \xe2\x88") == "cut " + fffd + fffd);             // a character cut off at the end
  CHECK(valid_utf8("\xff!") == fffd + "!");                              // never a lead byte
  CHECK(valid_utf8("\xc0\xaf") == fffd + fffd);                          // overlong
  CHECK(valid_utf8("\xed\xa0\x80") == fffd + fffd + fffd);              // a surrogate
  CHECK(valid_utf8("\xf0\x9f\x98\x80") == "\xf0\x9f\x98\x80");    // outside the BMP
  CHECK(valid_utf8("") == "");
  // What it returns always serializes.
  CHECK_NOTHROW((void)nlohmann::json(valid_utf8("a\x80" "b\xf4\x90\x80\x80")).dump());
}

TEST_CASE("proof_pool: prompt hashes") {
  const std::vector<int32_t> a{1, 2, 3}, b{3, 2, 1}, c{1, 2, 3, 0};
  CHECK(prompt_hash(a) == prompt_hash(std::vector<int32_t>{1, 2, 3}));
  CHECK(prompt_hash(a).size() == 16);
  CHECK(prompt_hash(a).find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(prompt_hash(a) != prompt_hash(b));
  CHECK(prompt_hash(a) != prompt_hash(c));
}

TEST_CASE("proof_pool: appended records are read back after reopening") {
  TempDir d("proof-pool");
  const auto file = d.path / "pool.jsonl";
  {
    ProofPool pool(file, {});
    CHECK(pool.records().empty());
    pool.append(record("a", SampleKind::kGeneration, 1.0));
    pool.append(record("b", SampleKind::kVerification, 0.0));
    CHECK(pool.find("b") != nullptr);
    CHECK(pool.find("c") == nullptr);
    hearth::testing::check_error([&] { pool.append(record("a", SampleKind::kMeta, 1.0)); }, {"'a'", "already in the pool"});
  }
  const std::string text = slurp(file);
  CHECK(std::count(text.begin(), text.end(), '\n') == 2);
  ProofPool again(file, {});
  REQUIRE(again.records().size() == 2);
  CHECK(same(again.records()[0], record("a", SampleKind::kGeneration, 1.0)));
  CHECK(same(*again.find("b"), record("b", SampleKind::kVerification, 0.0)));
}

TEST_CASE("proof_pool: a torn last line is dropped with a warning and cut off the file") {
  TempDir d("proof-pool-torn");
  const auto file = d.path / "pool.jsonl";
  {
    ProofPool pool(file, {});
    pool.append(record("a", SampleKind::kGeneration, 1.0));
    pool.append(record("b", SampleKind::kGeneration, 0.5));
  }
  const std::string good = slurp(file);
  const std::string third = pool_record_json(record("c", SampleKind::kGeneration, 0.0)).dump();
  SUBCASE("cut mid-line") { std::ofstream(file, std::ios::binary | std::ios::app) << third.substr(0, third.size() / 2); }
  SUBCASE("cut before its newline") { std::ofstream(file, std::ios::binary | std::ios::app) << third; }
  SUBCASE("garbage with a newline") { std::ofstream(file, std::ios::binary | std::ios::app) << "{\"id\": \"c\", \n"; }
  Warnings w;
  {
    ProofPool pool(file, w.fn());
    CHECK(pool.records().size() == 2);
    REQUIRE(w.list.size() == 1);
    CHECK(w.list[0].find("pool.jsonl:3") != std::string::npos);
    CHECK(w.list[0].find("torn") != std::string::npos);
    CHECK(slurp(file) == good);  // the tail is gone before anything is appended
    pool.append(record("d", SampleKind::kGeneration, 1.0));
  }
  ProofPool after(file, {});
  REQUIRE(after.records().size() == 3);
  CHECK(after.records()[2].id == "d");
}

TEST_CASE("proof_pool: a bad line before the last is an error naming the line") {
  TempDir d("proof-pool-bad");
  const auto file = d.path / "pool.jsonl";
  std::ofstream(file, std::ios::binary) << pool_record_json(record("a", SampleKind::kGeneration, 1.0)).dump() << "\n"
                                        << "not json\n"
                                        << pool_record_json(record("b", SampleKind::kGeneration, 1.0)).dump() << "\n";
  hearth::testing::check_error([&] { ProofPool pool(file, {}); }, {file.string() + ":2", "not valid JSON"});
}

TEST_CASE("proof_pool: the journal is replaced atomically and read back") {
  TempDir d("proof-journal");
  const auto file = d.path / "journal.json";
  Warnings w;
  CHECK(load_journal(file, w.fn()).empty());
  Journal j;
  j["r1.g0"] = {"00000000000000aa", {5, 6, 7}, 1.5};
  j["r1.g0.v2"] = {"00000000000000bb", {}, 0};
  save_journal(file, j);
  CHECK_FALSE(std::filesystem::exists(d.path / "journal.json.tmp"));
  const Journal back = load_journal(file, w.fn());
  REQUIRE(back.size() == 2);
  CHECK(back.at("r1.g0").tokens == std::vector<int32_t>{5, 6, 7});
  CHECK(back.at("r1.g0").prompt_hash == "00000000000000aa");
  CHECK(back.at("r1.g0").seconds == 1.5);
  CHECK(w.list.empty());
  j.erase("r1.g0");
  save_journal(file, j);
  CHECK(load_journal(file, w.fn()).size() == 1);

  std::ofstream(file, std::ios::binary) << "{\"samples\": {\"x\": {\"tokens\": \"oops\"}}}";
  CHECK(load_journal(file, w.fn()).empty());
  REQUIRE(w.list.size() == 1);
  CHECK(w.list[0].find("journal.json") != std::string::npos);
}

}  // namespace engine_proof_pool_suite
