// Helpers shared by the tests: scratch directories and running the CLI.
#pragma once

#include <map>
#include <string>

namespace moepack {
class Loader;
}

namespace moepack::testing {

// A fresh directory under the build tree, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs build/moepack with `args` (a shell-quoted string).
CommandResult RunMoepack(const std::string& args);

std::string ReadFileOrDie(const std::string& path);
void WriteFileOrDie(const std::string& path, const std::string& content);
// XXH3-128 of a whole file, as hex, for "unchanged" checks.
std::string HashTree(const std::string& dir);

// Every tensor the loader plans, by name, each read whole with ReadInto
// (a failed read is a test failure).
std::map<std::string, std::string> LoadAll(const Loader& loader);

}  // namespace moepack::testing
