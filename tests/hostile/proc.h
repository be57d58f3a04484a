// Running the real moepack binary from reliability tests: spawn with
// stdout/stderr captured to files, wait with a deadline, kill, and report
// how the process ended (exit code or signal) without guessing.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace moepack::testing {

struct Exit {
  bool exited = false;  // false: killed by a signal (or timed out)
  int code = -1;        // exit status when exited
  int signal = 0;       // terminating signal otherwise
  bool timed_out = false;
  std::string out, err;
  std::string Describe() const {
    if (timed_out) return "timed out";
    if (!exited) return "killed by signal " + std::to_string(signal);
    return "exit " + std::to_string(code);
  }
};

inline std::string SlurpFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A started process; stdout and stderr go to files under `io_dir`.
class Child {
 public:
  // argv[0] is the program path; `shell_prefix` non-empty runs
  // `bash -c '<prefix>; exec "$@"' bash argv...` (e.g. "ulimit -f 100").
  Child(const std::vector<std::string>& argv, const std::string& io_dir, const std::string& shell_prefix = "")
      : out_(io_dir + "/stdout." + std::to_string(++Seq())), err_(io_dir + "/stderr." + std::to_string(Seq())) {
    std::vector<std::string> args;
    if (!shell_prefix.empty()) {
      args = {"/bin/bash", "-c", shell_prefix + "; exec \"$@\"", "bash"};
    }
    args.insert(args.end(), argv.begin(), argv.end());
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (posix_spawn(&pid_, cargs[0], &fa, nullptr, cargs.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  void Kill(int sig = SIGKILL) const {
    if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
  }

  // Waits up to `timeout`; a process still running then is killed and
  // reported as timed out.
  Exit Wait(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    Exit e;
    if (pid_ <= 0) {
      e.err = "spawn failed";
      return e;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int st = 0;
    for (;;) {
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        e.timed_out = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    reaped_ = true;
    e.exited = WIFEXITED(st);
    e.code = e.exited ? WEXITSTATUS(st) : -1;
    e.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    e.out = SlurpFile(out_);
    e.err = SlurpFile(err_);
    ::unlink(out_.c_str());
    ::unlink(err_.c_str());
    return e;
  }

 private:
  static int& Seq() {
    static int n = 0;
    return n;
  }
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string out_, err_;
};

inline Exit RunProcess(const std::vector<std::string>& argv, const std::string& io_dir, const std::string& shell_prefix = "",
                std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  Child c(argv, io_dir, shell_prefix);
  return c.Wait(timeout);
}

// Lines of `text`, without empty trailing line.
inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string l;
  while (std::getline(ss, l)) out.push_back(l);
  return out;
}

}  // namespace moepack::testing
