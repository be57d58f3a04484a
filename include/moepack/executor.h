// The executor moves bytes: each planned source range goes straight to its
// final offset in the output shard (copy_file_range, or pread/pwrite), over
// several worker threads. No fused tensor is ever assembled in memory.
// Output is written into a temporary sibling of DST, synced, and renamed
// into place only when complete; a failure removes it, and a temporary left
// by a killed run is recognised and removed by the next run.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moepack/plan.h"
#include "moepack/status.h"

namespace moepack {

struct ExecuteOptions {
  int threads = 0;     // 0: one per core
  bool force = false;  // replace an existing DST (atomically)
  // Flush every output file and directory to disk before the rename that
  // publishes DST. Off, the rename is still atomic for other processes, but
  // after a power loss or kernel crash DST may hold files whose data never
  // reached the disk. Off suits scratch output (tmpfs, a cache to rebuild).
  bool sync = true;
  // Called from worker threads as bytes land; must be thread-safe and cheap.
  std::function<void(uint64_t done, uint64_t total)> progress;
  // When set and it becomes true (e.g. from a SIGINT handler), workers stop
  // and the temporary output is removed; Execute returns an error.
  const std::atomic<bool>* cancel = nullptr;
};

struct ExecuteReport {
  uint64_t bytes_written = 0;
  std::vector<std::string> removed_stale;  // temporaries of killed runs
};

// REQUIRES: `plan` was made from a checkpoint that has not changed since.
Result<ExecuteReport> Execute(const Plan& plan, const std::string& dst, const ExecuteOptions& options);

// Checks DST against SRC before any work: not the same, not nested, and
// absent unless `force`. Also what --dry-run checks.
Status CheckDestination(const std::string& src_dir, const std::string& dst, bool force);

}  // namespace moepack
