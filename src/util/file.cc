#include "util/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace moepack::internal {

Status ErrnoStatus(const std::string& what, const std::string& path, int err) {
  return Status::IOError(path + ": " + what + " (" + std::strerror(err) + ")");
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

File::File(File&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) { other.fd_ = -1; }

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

Result<File> File::OpenRead(const std::string& path) {
  // O_NONBLOCK: a FIFO named like a shard must not hang the open; it is then
  // refused as not a regular file. Regular files ignore the flag.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus("cannot open", path, errno);
  struct stat st;
  if (::fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::IOError(path + ": not a regular file");
  }
  return File(fd, path);
}

Result<File> File::Create(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", path, errno);
  return File(fd, path);
}

Result<uint64_t> File::Size() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return ErrnoStatus("cannot stat", path_, errno);
  return static_cast<uint64_t>(st.st_size);
}

Status File::ReadAt(uint64_t offset, void* buf, uint64_t n) const {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read failed", path_, errno);
    }
    if (r == 0) return Status::Corrupt(path_ + ": unexpected end of file at offset " + std::to_string(offset));
    p += r;
    n -= static_cast<uint64_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::OK();
}

Status File::WriteAt(uint64_t offset, const void* buf, uint64_t n) const {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t r = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write failed", path_, errno);
    }
    p += r;
    n -= static_cast<uint64_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::OK();
}

Status File::Truncate(uint64_t size) const {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return ErrnoStatus("cannot set size", path_, errno);
  return Status::OK();
}

Status File::Sync() const {
  if (::fsync(fd_) != 0) return ErrnoStatus("fsync failed", path_, errno);
  return Status::OK();
}

void File::StartWriteback(uint64_t offset, uint64_t n) const {
  // A hint: where the filesystem does not support it, Sync() still makes
  // the data durable, so errors here change nothing.
  (void)::sync_file_range(fd_, static_cast<off64_t>(offset), static_cast<off64_t>(n), SYNC_FILE_RANGE_WRITE);
}

Status File::Close() {
  if (fd_ < 0) return Status::OK();
  int r = ::close(fd_);
  fd_ = -1;
  if (r != 0) return ErrnoStatus("close failed", path_, errno);
  return Status::OK();
}

Result<std::string> ReadSmallFile(const std::string& path, uint64_t limit) {
  MOEPACK_ASSIGN_OR_RETURN(File f, File::OpenRead(path));
  MOEPACK_ASSIGN_OR_RETURN(uint64_t size, f.Size());
  if (size > limit) return Status::Corrupt(path + ": file too large (" + std::to_string(size) + " bytes)");
  std::string s(size, '\0');
  MOEPACK_RETURN_IF_ERROR(f.ReadAt(0, s.data(), size));
  return s;
}

Status WriteSmallFile(const std::string& path, std::string_view content) {
  MOEPACK_ASSIGN_OR_RETURN(File f, File::Create(path));
  MOEPACK_RETURN_IF_ERROR(f.WriteAt(0, content.data(), content.size()));
  return f.Close();
}

Status SyncDirectory(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open directory", path, errno);
  int r = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (r != 0) return ErrnoStatus("fsync failed", path, err);
  return Status::OK();
}

}  // namespace moepack::internal
