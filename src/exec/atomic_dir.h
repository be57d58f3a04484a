// An output directory that appears whole or not at all. Begin() makes a
// temporary sibling ".<name>.moepack-tmp-<pid>-<rand>"; Commit() syncs and
// renames it onto the destination (RENAME_NOREPLACE, or RENAME_EXCHANGE when
// replacing), so a concurrent run or a crash never leaves a partial DST.
// The destructor removes an uncommitted temporary.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "moepack/status.h"

namespace moepack::internal {

class AtomicDir {
 public:
  AtomicDir() = default;
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  // `removed` receives temporaries of dead runs that were cleaned up.
  static Result<std::unique_ptr<AtomicDir>> Begin(const std::string& dst, bool force,
                                                  std::vector<std::string>* removed);
  const std::string& path() const { return tmp_; }
  Status Commit(bool sync = true);
  void Abandon();

 private:
  std::string dst_;
  std::string tmp_;
  bool force_ = false;
  bool done_ = false;
};

// Removes temporaries of `dst` whose owning process is gone.
std::vector<std::string> CleanStaleTemporaries(const std::string& dst);

}  // namespace moepack::internal
