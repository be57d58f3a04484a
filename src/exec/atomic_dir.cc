#include "exec/atomic_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>

#include "util/file.h"

namespace moepack::internal {
namespace fs = std::filesystem;
namespace {

std::string TempPrefix(const fs::path& dst) { return "." + dst.filename().string() + ".moepack-tmp-"; }

bool ProcessAlive(long pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

}  // namespace

std::vector<std::string> CleanStaleTemporaries(const std::string& dst) {
  std::vector<std::string> removed;
  const fs::path d(dst);
  const std::string prefix = TempPrefix(d);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(d.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    // The owner's pid follows the prefix; a live owner keeps its temporary.
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (ProcessAlive(pid)) continue;
    std::error_code rec;
    fs::remove_all(e.path(), rec);
    if (!rec) removed.push_back(e.path().string());
  }
  return removed;
}

Result<std::unique_ptr<AtomicDir>> AtomicDir::Begin(const std::string& dst, bool force,
                                                    std::vector<std::string>* removed) {
  const fs::path d = fs::absolute(dst).lexically_normal();
  std::error_code ec;
  fs::create_directories(d.parent_path(), ec);
  if (ec) return Status::IOError(d.parent_path().string() + ": cannot create directory (" + ec.message() + ")");
  auto stale = CleanStaleTemporaries(d.string());
  if (removed) removed->insert(removed->end(), stale.begin(), stale.end());
  std::random_device rd;
  auto out = std::make_unique<AtomicDir>();
  out->dst_ = d.string();
  out->force_ = force;
  out->tmp_ = (d.parent_path() / (TempPrefix(d) + std::to_string(::getpid()) + "-" + std::to_string(rd()))).string();
  if (::mkdir(out->tmp_.c_str(), 0755) != 0) return ErrnoStatus("cannot create temporary directory", out->tmp_, errno);
  return out;
}

Status AtomicDir::Commit(bool sync) {
  if (sync) MOEPACK_RETURN_IF_ERROR(SyncDirectory(tmp_));
  const std::string parent = fs::path(dst_).parent_path().string();
  if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, dst_.c_str(), RENAME_NOREPLACE) == 0) {
    done_ = true;
    return sync ? SyncDirectory(parent) : Status::OK();
  }
  int err = errno;
  if ((err == EEXIST || err == ENOTEMPTY) && force_) {
    // Swap atomically, then drop the old tree now sitting at tmp_.
    if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, dst_.c_str(), RENAME_EXCHANGE) == 0) {
      done_ = true;
      std::error_code ec;
      fs::remove_all(tmp_, ec);
      return sync ? SyncDirectory(parent) : Status::OK();
    }
    err = errno;
  }
  if (err == EEXIST || err == ENOTEMPTY) {
    return Status::IOError(dst_ + ": appeared while converting (another run wrote it first); nothing was changed");
  }
  return ErrnoStatus("cannot rename the finished output into place", dst_, err);
}

void AtomicDir::Abandon() {
  if (done_ || tmp_.empty()) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  done_ = true;
}

AtomicDir::~AtomicDir() { Abandon(); }

}  // namespace moepack::internal
