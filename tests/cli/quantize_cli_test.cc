// `hearth quantize` end to end: a synthetic checkpoint to q8_0 GGUF, then logits and info
// from the GGUF; bad flags are one-line errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/gguf_shards.h"
#include "support/golden.h"
#include "support/scratch.h"

namespace cli_quantize_cli_suite {

namespace fs = std::filesystem;
using hearth::testing::CliRun;
using hearth::testing::read_f32;
using hearth::testing::run_hearth;
using hearth::testing::TempDir;

namespace {

bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; }

}  // namespace

TEST_CASE("cli quantize: a synthetic tiny model to q8_0, then logits and info from the GGUF") {
  TempDir tmp("hearth-quantize");
  const fs::path dir = tmp.path / "tiny", gguf = tmp.path / "tiny-q8_0.gguf";
  REQUIRE(run_hearth("synth -o " + dir.string() + " --preset tiny -q").code == 0);

  const CliRun q = run_hearth("quantize -m " + dir.string() + " -o " + gguf.string() + " --type q8_0 -t 2");
  INFO(q.all());
  REQUIRE(q.code == 0);
  CHECK(q.out.find("Q8_0") != std::string::npos);
  CHECK(q.out.find("F32") != std::string::npos);  // norms and router
  CHECK(q.out.find("total") != std::string::npos);
  CHECK(q.err.find("recipe: Q8_0") != std::string::npos);
  CHECK(q.err.find("quantize: ") != std::string::npos);  // the progress line and its final summary
  CHECK(q.err.find(" in 0:") != std::string::npos);
  CHECK_FALSE(fs::exists(gguf.string() + ".tmp"));
  {
    const hearth::GgufFile f(gguf);
    CHECK(f.get_u32("general.file_type") == 7);  // LLAMA_FTYPE_MOSTLY_Q8_0
    CHECK(f.get_string("general.name") == "tiny");
    CHECK(f.tensor("blk.1.ffn_up_exps.weight").type() == hearth::GgmlType::Q8_0);
  }

  const fs::path a = tmp.path / "hf.f32", b = tmp.path / "gguf.f32";
  const std::string tokens = " --tokens 0,5,9,700 -t 2 -o ";
  REQUIRE(run_hearth("logits -m " + dir.string() + tokens + a.string()).code == 0);
  const CliRun l = run_hearth("logits -m " + gguf.string() + tokens + b.string());
  INFO(l.all());
  REQUIRE(l.code == 0);
  const std::vector<float> hf = read_f32(a), q8 = read_f32(b);
  REQUIRE(q8.size() == 4 * 1024);
  for (float x : q8) REQUIRE(std::isfinite(x));

  // synth's FP8 block scales are powers of two (ue8m0), so BF16 holds every weight
  // exactly: a bf16 GGUF gives the checkpoint's logits up to float summation order.
  const fs::path bf16 = tmp.path / "tiny-bf16.gguf", c = tmp.path / "bf16.f32";
  REQUIRE(run_hearth("quantize -q -m " + dir.string() + " -o " + bf16.string() + " --type BF16").code == 0);
  REQUIRE(run_hearth("logits -m " + bf16.string() + tokens + c.string()).code == 0);
  const std::vector<float> exact = read_f32(c);
  REQUIRE(exact.size() == hf.size());
  double worst = 0.0;
  for (size_t i = 0; i < hf.size(); ++i) worst = std::max(worst, double(std::fabs(exact[i] - hf[i])));
  MESSAGE("bf16 GGUF vs the FP8 checkpoint: max|dlogit| = " << worst);
  CHECK(worst <= 1e-4);

  // A GGUF is recognized by its magic too, whatever its name.
  fs::copy_file(gguf, tmp.path / "model.bin");
  const CliRun info = run_hearth("info -m " + (tmp.path / "model.bin").string());
  INFO(info.all());
  REQUIRE(info.code == 0);
  CHECK(info.out.find("deepseek_v32") != std::string::npos);
  CHECK(info.out.find("MTP") != std::string::npos);
}

TEST_CASE("cli quantize: bad flags and inputs are one-line errors") {
  TempDir tmp("hearth-quantize-err");
  const std::string gold = hearth::testing::kGoldenDir;
  const std::string out = (tmp.path / "o.gguf").string();
  struct Case {
    std::string args, want;
  };
  const std::vector<Case> cases = {
      {"-m " + gold + " -o " + out + " --type q9_9", "unknown quantization preset 'q9_9'"},
      {"-m " + gold + " -o " + out + " --type f8_e4m3", "unknown quantization preset 'f8_e4m3'"},
      {"-m " + gold + " -o " + out + " --experts f8_e4m3", "--experts: 'f8_e4m3' is not a type GGUF holds"},
      {"-m " + gold + " -o " + out + " --experts q4_k --rest zz", "--rest: 'zz'"},
      {"-m " + gold + " -o " + out + " --type q8_0 --experts q4_k", "give one of --type"},
      {"-m " + gold + " -o " + out + " --keep-types --type q8_0", "give one of --type"},
      {"-q -m " + gold + " -o " + out + " --keep-types", "--keep-types: the input does not hold tensor 'blk.0.attn_q_a.weight'"},
      {"-m " + gold + " -o " + out + " --type q8_0 --tensor-type attn", "--tensor-type: "},
      {"-m " + gold + " -o " + out + " --type q8_0 --tensor-type '(=q4_k'", "--tensor-type: "},
      {"-m " + gold + " -o " + out + " --type q8_0 --imatrix " + (tmp.path / "none.dat").string(), "none.dat"},
      {"-m " + gold + " -o " + (tmp.path / "o.bin").string() + " --type q8_0", "must end in .gguf"},
      {"-m " + (tmp.path / "nope").string() + " -o " + out + " --type q8_0", "does not exist"},
      {"-m " + gold + " --type q8_0", "--output is required"},
      {"-m " + gold + " -o " + out, "give one of --type PRESET, --experts TYPE [--rest TYPE] or --keep-types"},
      {"-m " + gold + " -o " + out + " --type q8_0 --split-max-size 12Q", "--split-max-size: "},
      {"-m " + gold + " -o " + out + " --type q8_0 --split-max-size 1000", "--split-max-size: '1000' is under 1 MiB"},
  };
  for (const Case& c : cases) {
    const CliRun r = run_hearth("quantize " + c.args);
    INFO(c.args << "\n" << r.all());
    CHECK(r.code != 0);
    CHECK(r.err.find(c.want) != std::string::npos);
    CHECK(one_line(r.err));
  }
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("cli quantize: --split-max-size writes shards that logits, info and tokenize read from the first") {
  TempDir tmp("hearth-quantize-split");
  const fs::path dir = tmp.path / "tiny", whole = tmp.path / "whole.gguf";
  REQUIRE(run_hearth("synth -o " + dir.string() + " --preset tiny -q --tokenizer " +
                     std::string(HEARTH_TEST_DATA) + "/tokenizer/tokenizer.json").code == 0);
  REQUIRE(run_hearth("quantize -q -m " + dir.string() + " -o " + whole.string() + " --type q8_0").code == 0);
  const CliRun q = run_hearth("quantize -q -m " + dir.string() + " -o " + (tmp.path / "parts.gguf").string() +
                              " --type q8_0 --split-max-size 40M");
  INFO(q.all());
  REQUIRE(q.code == 0);
  std::vector<fs::path> shards;
  for (const auto& e : fs::directory_iterator(tmp.path))
    if (e.path().filename().string().starts_with("parts-")) shards.push_back(e.path());
  std::sort(shards.begin(), shards.end());
  REQUIRE(shards.size() >= 2);
  const std::string n = std::to_string(shards.size());
  char first[40];
  std::snprintf(first, sizeof first, "parts-00001-of-%05zu.gguf", shards.size());
  CHECK(shards[0].filename() == first);
  CHECK(q.out.find("shard " + shards.back().string()) != std::string::npos);
  CHECK(q.out.find("and " + std::to_string(shards.size() - 1) + " more shards") != std::string::npos);

  const fs::path a = tmp.path / "whole.f32", b = tmp.path / "parts.f32";
  const std::string tokens = " --tokens 0,5,9,700 -t 2 -o ";
  REQUIRE(run_hearth("logits -m " + whole.string() + tokens + a.string()).code == 0);
  const CliRun l = run_hearth("logits -m " + shards[0].string() + tokens + b.string());
  INFO(l.all());
  REQUIRE(l.code == 0);
  CHECK(read_f32(a) == read_f32(b));

  const CliRun tok = run_hearth("tokenize -m " + shards[0].string(), "Hello");
  CHECK(tok.code == 0);
  const CliRun tok_whole = run_hearth("tokenize -m " + whole.string(), "Hello");
  CHECK(tok.out == tok_whole.out);
  const CliRun wrong = run_hearth("logits -m " + shards[1].string() + tokens + b.string());
  CHECK(wrong.code != 0);
  CHECK(wrong.err.find("shard 2 of " + n) != std::string::npos);
  CHECK(wrong.err.find(shards[0].string()) != std::string::npos);
  CHECK(one_line(wrong.err));
  // --keep-types: a Q4_K_M file split again with every tensor copied as stored. -o may
  // name the input itself: only the shards are written (the docs' example).
  const fs::path mixed = tmp.path / "kept.gguf";
  REQUIRE(run_hearth("quantize -q -m " + hearth::testing::kGoldenDir + " -o " + mixed.string() + " --type Q4_K_M").code == 0);
  const CliRun k = run_hearth("quantize -q -m " + mixed.string() + " -o " + mixed.string() + " --keep-types --split-max-size 1M");
  INFO(k.all());
  REQUIRE(k.code == 0);
  CHECK(k.out.find("tensors copied as the input stores them") != std::string::npos);
  {
    const hearth::GgufShards kept = hearth::GgufShards::open(tmp.path / "kept-00001-of-00010.gguf");
    const hearth::GgufFile one(mixed);
    CHECK(kept.tensor_count() == int64_t(one.tensors().size()));
    for (const hearth::GgufTensor& t : one.tensors()) {
      const hearth::GgufTensor* c = kept.find_tensor(t.name);
      REQUIRE(c != nullptr);
      CHECK(c->type() == t.type());
      CHECK(std::memcmp(c->data, t.data, t.nbytes) == 0);
    }
    // The input's file type (Q4_K_M), not the one its bytes suggest (mostly Q8_0 here).
    CHECK(kept.first().get_u32("general.file_type") == 15);
  }
  // ...but for the tensors a --tensor-type override names.
  const fs::path down = tmp.path / "down.gguf";
  const CliRun d = run_hearth("quantize -q -m " + mixed.string() + " -o " + down.string() +
                              " --keep-types --tensor-type 'ffn_up_exps=q6_k'");
  INFO(d.all());
  REQUIRE(d.code == 0);
  {
    const hearth::GgufFile one(mixed), got(down);
    int64_t changed = 0;
    for (const hearth::GgufTensor& t : one.tensors()) {
      const hearth::GgufTensor& c = got.tensor(t.name);
      if (t.name.find("ffn_up_exps") != std::string::npos) {
        CHECK(c.type() == hearth::GgmlType::Q6_K);
        changed += t.type() != hearth::GgmlType::Q6_K;
      } else {
        CHECK(c.type() == t.type());
        CHECK(std::memcmp(c.data, t.data, t.nbytes) == 0);
      }
    }
    CHECK(changed > 0);
  }

  const CliRun info = run_hearth("info -m " + shards[0].string());
  CHECK(info.code == 0);
  CHECK(info.out.find("(deepseek_v32, " + n + " shards)") != std::string::npos);
}

TEST_CASE("cli quantize: a preset mix and a MoE split with overrides land in the file") {
  TempDir tmp("hearth-quantize-mix");
  const fs::path dir = tmp.path / "tiny";
  REQUIRE(run_hearth("synth -o " + dir.string() + " --preset tiny -q").code == 0);

  const fs::path mix = tmp.path / "q4km.gguf";
  const CliRun a = run_hearth("quantize -q -m " + dir.string() + " -o " + mix.string() + " --type q4_k_m");
  INFO(a.all());
  REQUIRE(a.code == 0);
  CHECK(a.out.find("fell back") != std::string::npos);  // tiny's rows of 96 and 128 are not whole Q4_K blocks
  {
    const hearth::GgufFile f(mix);
    CHECK(f.get_u32("general.file_type") == 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
    CHECK(f.tensor("output.weight").type() == hearth::GgmlType::Q6_K);
    CHECK(f.tensor("blk.2.ffn_gate_exps.weight").type() == hearth::GgmlType::Q4_K);
    CHECK(f.tensor("blk.2.ffn_down_exps.weight").type() == hearth::GgmlType::Q8_0);  // rows of 96: fallback
    CHECK(f.tensor("blk.2.ffn_gate_inp.weight").type() == hearth::GgmlType::F32);    // the router
  }

  const fs::path split = tmp.path / "moe.gguf";
  const CliRun b = run_hearth("quantize -q -m " + dir.string() + " -o " + split.string() +
                              " --experts q2_k --rest q8_0 --tensor-type 'blk\\.1\\.attn_output=q6_k'");
  INFO(b.all());
  REQUIRE(b.code == 0);
  {
    const hearth::GgufFile f(split);
    CHECK(f.tensor("blk.2.ffn_up_exps.weight").type() == hearth::GgmlType::Q2_K);
    CHECK(f.tensor("blk.2.ffn_up_shexp.weight").type() == hearth::GgmlType::Q8_0);
    CHECK(f.tensor("blk.1.attn_output.weight").type() == hearth::GgmlType::Q6_K);
    CHECK(f.tensor("blk.2.attn_output.weight").type() == hearth::GgmlType::Q8_0);
    CHECK(f.tensor("token_embd.weight").type() == hearth::GgmlType::Q8_0);
  }
  const fs::path l = tmp.path / "moe.f32";
  REQUIRE(run_hearth("logits -m " + split.string() + " --tokens 1,2,3 -o " + l.string()).code == 0);
  for (float x : read_f32(l)) REQUIRE(std::isfinite(x));
}

TEST_CASE("cli quantize: Ctrl-C stops it and leaves no output file") {
  TempDir tmp("hearth-quantize-int");
  const fs::path dir = tmp.path / "big", out = tmp.path / "out.gguf", tmpfile = tmp.path / "out.gguf.tmp";
  // A vocabulary large enough that Q2_K takes seconds: time to interrupt it mid-way.
  REQUIRE(run_hearth("synth -o " + dir.string() + " --preset tiny --set vocab_size=262144 -q").code == 0);
  const fs::path status = tmp.path / "status";
  // Start it, wait until the temporary file exists (the work has begun), send SIGINT.
  const std::string cmd = "( timeout 120 " + std::string(HEARTH_CLI_BIN) + " quantize -q -t 1 -m " + dir.string() +
                          " -o " + out.string() + " --type q2_k > /dev/null 2> " + (tmp.path / "err").string() +
                          " & pid=$!; for i in $(seq 400); do [ -e " + tmpfile.string() +
                          " ] && break; sleep 0.05; done; sleep 0.3; kill -INT $pid; wait $pid; echo $? > " +
                          status.string() + " )";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string err = hearth::testing::slurp(tmp.path / "err");
  INFO(err);
  CHECK(std::stoi(hearth::testing::slurp(status)) != 0);
  CHECK(err.find("cancelled") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(fs::exists(tmpfile));
}

}  // namespace cli_quantize_cli_suite
