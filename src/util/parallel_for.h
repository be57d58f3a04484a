// Runs fn(item, worker) for item in [0, n) over up to `threads` threads (the
// calling thread is one of them), handing items out in order. The first
// failure stops the handing out; the failure of the lowest item seen is
// returned. `worker` in [0, threads) lets each thread keep scratch state.
// Threads live for one call: callers batch their work (a call per tensor
// would pay a thread start per tensor).
#pragma once

#include <cstddef>
#include <functional>

#include "moepack/status.h"

namespace moepack::internal {

// 0 threads: one per core.
int ThreadCount(int threads);

Status ParallelFor(size_t n, int threads, const std::function<Status(size_t item, int worker)>& fn);

}  // namespace moepack::internal
