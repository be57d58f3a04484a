// Host memory for the tensors moepack.load hands out: anonymous mappings
// that a buffer pool can grow in place.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moepack::python {

// One anonymous private mapping of at least `size` bytes, untouched until
// written (its pages cost nothing before). Transparent huge pages are
// refused for it: in a VM that returns freed memory to its host, the first
// touch of a 2 MiB page the host took back costs several times that of the
// same memory in 4 KiB pages (0.6 against 2.4 GB/s measured on the benchmark
// machine), and loads touch fresh memory.
class HostBuffer {
 public:
  explicit HostBuffer(size_t size);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // Makes it at least `size` bytes: the pages already touched keep their
  // contents (mremap moves them, no copy) and data() may change, so nothing
  // may hold a view of the buffer while it grows.
  void Grow(size_t size);

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;     // what was asked for
  size_t mapped_ = 0;   // whole pages
};

}  // namespace moepack::python
