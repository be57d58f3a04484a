#include "host_buffer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <new>
#include <string>
#include <system_error>

namespace moepack::python {
namespace {

size_t Pages(size_t n) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (std::max<size_t>(n, 1) + page - 1) / page * page;
}

[[noreturn]] void Fail(const char* what, size_t n) {
  if (errno == ENOMEM) throw std::bad_alloc();
  throw std::system_error(errno, std::generic_category(), std::string(what) + " of " + std::to_string(n) + " bytes");
}

}  // namespace

HostBuffer::HostBuffer(size_t size) : size_(size), mapped_(Pages(size)) {
  void* p = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) Fail("mmap", mapped_);
  data_ = static_cast<uint8_t*>(p);
  // Advice only: a kernel without THP has nothing to refuse.
  (void)madvise(data_, mapped_, MADV_NOHUGEPAGE);
}

HostBuffer::~HostBuffer() { munmap(data_, mapped_); }

void HostBuffer::Grow(size_t size) {
  if (size <= size_) return;
  const size_t want = Pages(size);
  if (want > mapped_) {
    void* p = mremap(data_, mapped_, want, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) Fail("mremap", want);
    data_ = static_cast<uint8_t*>(p);
    mapped_ = want;
  }
  size_ = size;
}

}  // namespace moepack::python
