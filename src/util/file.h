// Thin RAII wrappers over POSIX file descriptors; every failure becomes a
// Status naming the path and the errno text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "moepack/status.h"

namespace moepack::internal {

class File {
 public:
  File() = default;
  ~File();
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  static Result<File> OpenRead(const std::string& path);
  // Creates (O_EXCL) a new file for writing.
  static Result<File> Create(const std::string& path);

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  Result<uint64_t> Size() const;
  // Reads exactly n bytes at offset; a short file is an error.
  Status ReadAt(uint64_t offset, void* buf, uint64_t n) const;
  Status WriteAt(uint64_t offset, const void* buf, uint64_t n) const;
  Status Truncate(uint64_t size) const;
  Status Sync() const;
  // Starts writing [offset, offset + n) to disk without waiting for it, so
  // that the final Sync() finds little left to do.
  void StartWriteback(uint64_t offset, uint64_t n) const;
  Status Close();

 private:
  File(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
};

Status ErrnoStatus(const std::string& what, const std::string& path, int err);
Result<std::string> ReadSmallFile(const std::string& path, uint64_t limit);
Status WriteSmallFile(const std::string& path, std::string_view content);
Status SyncDirectory(const std::string& path);

}  // namespace moepack::internal
