// hearth chat: an interactive multi-turn session on stdin/stdout.
//
// Each line is a user turn; the history is rendered through the chat template and the
// generator reuses the cache for the part of the prompt it has already seen. Ctrl-C during
// an answer stops that answer (the turn is dropped from the history); Ctrl-C or EOF at the
// prompt leaves.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "cli/generation.h"

namespace hearth::cli {

namespace {

using nlohmann::json;

constexpr const char* kHelp =
    "commands:\n"
    "  /reset       forget the conversation (the system prompt stays)\n"
    "  /save FILE   write the conversation as JSON\n"
    "  /load FILE   replace the conversation with one saved by /save\n"
    "  /help        this list\n"
    "  /quit        leave (also Ctrl-D, or Ctrl-C at the prompt)\n"
    "Ctrl-C while an answer streams stops that answer.\n";

enum class ReadResult { kLine, kEof, kInterrupted };

// Line reader on fd 0 with its own buffer, so a SIGINT at the prompt (read returning
// EINTR) is seen instead of being retried away.
class LineReader {
 public:
  ReadResult read(std::string& line) {
    for (;;) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return ReadResult::kLine;
      }
      if (eof_) {
        if (buf_.empty()) return ReadResult::kEof;
        line.swap(buf_);
        buf_.clear();
        return ReadResult::kLine;
      }
      // Check the flag and wait with SIGINT blocked in between, unblocking it only inside
      // ppoll: a Ctrl-C just before the wait is not lost.
      sigset_t block, old;
      sigemptyset(&block);
      sigaddset(&block, SIGINT);
      pthread_sigmask(SIG_BLOCK, &block, &old);
      if (interrupted().exchange(false)) {
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        return ReadResult::kInterrupted;
      }
      pollfd pfd{STDIN_FILENO, POLLIN, 0};
      const int ready = ::ppoll(&pfd, 1, nullptr, &old);
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      if (ready < 0) {
        if (errno == EINTR) continue;  // the flag is checked above
        eof_ = true;
        continue;
      }
      char chunk[4096];
      const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
      if (n > 0) buf_.append(chunk, size_t(n));
      else if (n == 0 || errno != EINTR) eof_ = true;
    }
  }

 private:
  std::string buf_;
  bool eof_ = false;
};

json history_json(const std::string& system, bool thinking, const std::vector<ChatMessage>& history) {
  json msgs = json::array();
  for (const ChatMessage& m : history) {
    json e = {{"role", m.role}, {"content", m.content}};
    if (!m.reasoning.empty()) e["reasoning"] = m.reasoning;
    msgs.push_back(std::move(e));
  }
  return {{"format", "hearth-chat"}, {"version", 1}, {"system", system}, {"thinking", thinking}, {"messages", msgs}};
}

void save_history(const std::string& path, const json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write '" + tmp + "'");
    f << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    f.close();
    if (!f) throw std::runtime_error("write to '" + tmp + "' failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "'");
  }
}

// Reads a file written by /save; throws naming the file and the problem.
void load_history(const std::string& path, std::string& system, std::vector<ChatMessage>& history) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read '" + path + "'");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array())
    throw std::runtime_error("'" + path + "' has no \"messages\" array (not a /save file?)");
  std::vector<ChatMessage> loaded;
  for (const json& m : j["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") || !m["content"].is_string())
      throw std::runtime_error("'" + path + "': every message needs string \"role\" and \"content\"");
    ChatMessage c{m["role"].get<std::string>(), m["content"].get<std::string>(), ""};
    if (c.role != "user" && c.role != "assistant")
      throw std::runtime_error("'" + path + "': unknown role '" + c.role + "' (expected user or assistant)");
    if (m.contains("reasoning") && m["reasoning"].is_string()) c.reasoning = m["reasoning"].get<std::string>();
    loaded.push_back(std::move(c));
  }
  if (j.contains("system") && j["system"].is_string()) system = j["system"].get<std::string>();
  history = std::move(loaded);
}

std::string argument_of(const std::string& line) {
  const size_t sp = line.find(' ');
  if (sp == std::string::npos) return "";
  const size_t b = line.find_first_not_of(' ', sp);
  return b == std::string::npos ? "" : line.substr(b);
}

}  // namespace

int cmd_chat(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Chat with a model: one line per user turn, the history kept across turns.\n"
                        "Type /help in the session for its commands.");
  opts.add_options()("system", "system prompt", cxxopts::value<std::string>());
  add_generation_options(opts, 4096);
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n%s", opts.help().c_str(), kHelp);
    return 0;
  }
  const GenerationFlags flags = parse_generation_flags(args);
  std::string system = args.count("system") ? args["system"].as<std::string>() : "";
  check_utf8(system, "--system");
  // The worker threads start with SIGINT blocked (they inherit this mask), so Ctrl-C
  // always reaches this thread and interrupts its wait at the prompt.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  std::unique_ptr<Session> session;
  try {
    session = open_session(flags);
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  install_interrupt_handler();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  Generator& gen = *session->generator;

  const bool tty = ::isatty(STDIN_FILENO) == 1;
  if (tty)
    std::fprintf(stderr, "hearth chat: %s (context %lld tokens). /help for commands, Ctrl-C stops an answer, Ctrl-D leaves.\n",
                 flags.model_dir.c_str(), (long long)gen.context());
  std::vector<ChatMessage> history;
  LineReader reader;
  std::string line;
  for (;;) {
    interrupted().store(false);
    if (tty) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    const ReadResult rr = reader.read(line);
    if (rr != ReadResult::kLine) {  // Ctrl-C or end of input at the prompt
      if (tty) std::fputc('\n', stdout);
      break;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;

    if (line[0] == '/') {
      const std::string cmd = line.substr(0, line.find(' '));
      const std::string arg = argument_of(line);
      try {
        if (cmd == "/quit" || cmd == "/exit") break;
        if (cmd == "/help") {
          std::fputs(kHelp, stdout);
        } else if (cmd == "/reset") {
          history.clear();
          gen.reset();
          std::puts("(conversation cleared)");
        } else if (cmd == "/save") {
          if (arg.empty()) throw std::invalid_argument("/save needs a file name");
          save_history(arg, history_json(system, flags.thinking, history));
          std::printf("(saved %zu messages to %s)\n", history.size(), arg.c_str());
        } else if (cmd == "/load") {
          if (arg.empty()) throw std::invalid_argument("/load needs a file name");
          load_history(arg, system, history);
          std::printf("(loaded %zu messages from %s)\n", history.size(), arg.c_str());
        } else {
          throw std::invalid_argument("unknown command " + cmd + " (/help lists them)");
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
      }
      std::fflush(stdout);
      continue;
    }

    try {
      check_utf8(line, "the input");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      continue;
    }
    history.push_back({"user", line, ""});
    std::vector<ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system, ""});
    messages.insert(messages.end(), history.begin(), history.end());
    TurnPrinter printer(true, flags.thinking, flags.reasoning);
    GenerationResult res;
    try {
      const std::vector<int32_t> ids = encode_chat(session->tokenizer, messages, flags.thinking);
      res = gen.generate(ids, flags.request, [&](std::string_view t) { printer(t); }, &interrupted());
    } catch (const std::exception& e) {
      printer.finish();
      history.pop_back();
      std::fprintf(stderr, "error: %s\n", e.what());
      continue;
    }
    printer.finish();
    if (res.stats.stop == StopReason::kCancelled) {
      history.pop_back();  // a stopped answer is not part of the conversation
      std::fputs("(stopped)\n", stderr);
    } else {
      const ReasoningSplit split = split_reasoning(res.text, flags.thinking);
      history.push_back({"assistant", split.answer, split.reasoning});
    }
    print_stats(res.stats);
  }
  return 0;
}

}  // namespace hearth::cli
