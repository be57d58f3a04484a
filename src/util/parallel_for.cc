#include "util/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace moepack::internal {

int ThreadCount(int threads) {
  if (threads > 0) return threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

Status ParallelFor(size_t n, int threads, const std::function<Status(size_t, int)>& fn) {
  const int nt = static_cast<int>(std::min<size_t>(static_cast<size_t>(ThreadCount(threads)), n));
  if (nt <= 1) {
    for (size_t i = 0; i < n; ++i) MOEPACK_RETURN_IF_ERROR(fn(i, 0));
    return Status::OK();
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  size_t failed_item = n;
  Status first;
  auto work = [&](int worker) {
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1);
      if (i >= n) break;
      Status s = fn(i, worker);
      if (s.ok()) continue;
      std::lock_guard<std::mutex> lock(mu);
      if (i < failed_item) {
        failed_item = i;
        first = std::move(s);
      }
      failed = true;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(nt - 1));
  for (int w = 1; w < nt; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
  return first;
}

}  // namespace moepack::internal
