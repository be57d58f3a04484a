// Errors are values. A Status is either OK or carries a code and a message
// of the form "what (why)" that names the file, tensor, layer or expert at
// fault. Result<T> holds a T or a non-OK Status.
//
// Thread safety: distinct objects may be used from different threads; a
// single object needs external synchronization for mutation.
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace moepack {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,  // bad user input: flags, rule files, requests
    kCorrupt,          // malformed checkpoint, header, index or config
    kIOError,          // the operating system refused a read or write
    kMismatch,         // verification found a difference
    kNotFound,
  };

  Status() = default;  // OK; allocates nothing.
  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) { return Status(Code::kInvalidArgument, std::move(msg)); }
  static Status Corrupt(std::string msg) { return Status(Code::kCorrupt, std::move(msg)); }
  static Status IOError(std::string msg) { return Status(Code::kIOError, std::move(msg)); }
  static Status Mismatch(std::string msg) { return Status(Code::kMismatch, std::move(msg)); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // The message with a context prefix, e.g. "model.safetensors: ...".
  Status WithPrefix(const std::string& prefix) const {
    if (ok()) return *this;
    return Status(code_, prefix + ": " + message_);
  }

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) std::abort();  // an OK Status carries no value
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::OK() : std::get<Status>(v_); }
  // REQUIRES: ok()
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace moepack

#define MOEPACK_CONCAT_INNER(a, b) a##b
#define MOEPACK_CONCAT(a, b) MOEPACK_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define MOEPACK_RETURN_IF_ERROR(expr)             \
  do {                                            \
    ::moepack::Status _st = (expr);               \
    if (!_st.ok()) return _st;                    \
  } while (0)

// `lhs = value of rexpr` (a Result<T>), or returns its Status.
#define MOEPACK_ASSIGN_OR_RETURN(lhs, rexpr) \
  MOEPACK_ASSIGN_OR_RETURN_IMPL(MOEPACK_CONCAT(_res_, __LINE__), lhs, rexpr)
#define MOEPACK_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                  \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()
