// A tiny synthetic DeepSeek-V3.2 model with the real DeepSeek tokenizer (vocab 129280,
// hidden 256, no MTP layer; ~0.14 GB), synthesized once and shared by the test cases.
//
// CTest runs every TEST_CASE in its own process, so the model is cached on disk beside
// the test binary, under a name keyed by the binary's modification time: a rebuilt
// binary (possibly with a changed synthesizer) makes a fresh one and removes the old.
#pragma once
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/synth.h"
#include "engine/tokenizer.h"

namespace hearth::testing {

inline std::filesystem::path tiny_chat_model_dir() {
  namespace fs = std::filesystem;
  static const fs::path dir = [] {
    const fs::path exe = fs::read_symlink("/proc/self/exe");
    const auto stamp = fs::last_write_time(exe).time_since_epoch().count();
    const fs::path scratch = exe.parent_path() / "scratch";
    const std::string prefix = "tiny-chat-";
    const fs::path out = scratch / (prefix + std::to_string(stamp));
    if (fs::exists(out / "tokenizer.json")) return out;
    fs::create_directories(scratch);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(scratch, ec))
      if (const std::string name = e.path().filename().string();
          name.starts_with(prefix) && !name.starts_with(out.filename().string()))  // spare our own (in progress)
        fs::remove_all(e.path(), ec);
    SynthOptions o;
    o.out_dir = out;
    o.preset = "tiny";
    o.seed = 7;
    o.sets = {"num_nextn_predict_layers=0"};
    o.tokenizer = fs::path(HEARTH_TEST_DATA) / "tokenizer/tokenizer.json";
    o.log = nullptr;
    try {
      synthesize_checkpoint(o);
    } catch (const std::exception&) {
      // Another test process may have finished the same model first.
      if (!fs::exists(out / "tokenizer.json")) throw;
    }
    return out;
  }();
  return dir;
}

// The tiny model loaded with its tokenizer, and prompts as BOS + the encoded text.
struct TinyChat {
  Model model = Model::load(tiny_chat_model_dir().string());
  Tokenizer tok = Tokenizer::load(tiny_chat_model_dir() / "tokenizer.json");

  std::vector<int32_t> prompt(const std::string& text) const {
    std::vector<int32_t> ids{tok.bos_id()};
    const auto body = tok.encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  }
};

}  // namespace hearth::testing
