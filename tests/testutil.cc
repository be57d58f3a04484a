#include "testutil.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "moepack/loader.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

namespace moepack::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::random_device rd;
  fs::path base = fs::temp_directory_path() / "moepack-tests";
  fs::create_directories(base);
  std::string leaf = "t";
  leaf += std::to_string(::getpid());
  leaf += '-';
  leaf += std::to_string(rd());
  path_ = (base / leaf).string();
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

static std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CommandResult RunMoepack(const std::string& args) {
  TempDir io;
  std::string cmd = std::string(MOEPACK_BINARY) + " " + args + " >" + io / "out" + " 2>" + io / "err" + " </dev/null";
  int rc = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  r.out = Slurp(io / "out");
  r.err = Slurp(io / "err");
  return r;
}

std::string ReadFileOrDie(const std::string& path) {
  if (!fs::exists(path)) ADD_FAILURE() << "missing file " << path;
  return Slurp(path);
}

void WriteFileOrDie(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out) ADD_FAILURE() << "cannot write " << path;
}

std::string HashTree(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(fs::relative(e.path(), dir).string());
  }
  std::sort(files.begin(), files.end());
  XXH3_state_t* st = XXH3_createState();
  XXH3_128bits_reset(st);
  for (const auto& f : files) {
    XXH3_128bits_update(st, f.data(), f.size() + 1);
    std::string c = Slurp(dir + "/" + f);
    XXH3_128bits_update(st, c.data(), c.size());
  }
  XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

std::map<std::string, std::string> LoadAll(const Loader& l) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < l.tensors().size(); ++i) {
    std::string bytes(l.tensors()[i].nbytes, '\0');
    Status s = l.ReadInto(i, bytes.data(), bytes.size());
    EXPECT_TRUE(s.ok()) << s.message();
    out[l.tensors()[i].name] = bytes;
  }
  return out;
}

}  // namespace moepack::testing
