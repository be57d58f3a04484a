#include "progress.h"

#include <cstdio>

namespace moepack::cli {

void ProgressBar::Update(uint64_t done, uint64_t total) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const int width = 30;
  const int fill = static_cast<int>(frac * width);
  char bar[width + 1];
  for (int i = 0; i < width; ++i) bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  std::fprintf(stderr, "\r[%s] %5.1f%%  %.2f / %.2f GB  %.2f GB/s ", bar, frac * 100, done / 1e9, total / 1e9,
               secs > 0 ? done / 1e9 / secs : 0.0);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

}  // namespace moepack::cli
