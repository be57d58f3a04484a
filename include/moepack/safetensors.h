// The safetensors file format: an 8-byte little-endian header length N, N
// bytes of JSON, then the data section. Reading is strict (at least as strict
// as the reference implementation); writing reproduces the reference writer's
// bytes. Tensor data is never loaded by this module: callers read ranges.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/status.h"

namespace moepack {

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // offsets relative to the start of the data section
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
};

// A validated header. Only ParseHeader/ReadHeader build one from file bytes.
class Header {
 public:
  Header() = default;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // by offset
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has_metadata() const { return has_metadata_; }
  uint64_t header_len() const { return header_len_; }        // N
  uint64_t data_start() const { return 8 + header_len_; }    // file offset of data
  uint64_t data_size() const { return data_size_; }
  const TensorInfo* Find(std::string_view name) const;

 private:
  friend Result<Header> ParseHeader(std::string_view, uint64_t, std::string_view);
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
  bool has_metadata_ = false;
  uint64_t header_len_ = 0;
  uint64_t data_size_ = 0;
};

// Validates the JSON header text (without the 8-byte prefix) against a data
// section of `data_size` bytes. `file` names the file in error messages.
Result<Header> ParseHeader(std::string_view json, uint64_t data_size, std::string_view file);

// Reads and validates the header of the file at `path`, checking that the
// file length is exactly 8 + N + data.
Result<Header> ReadHeader(const std::string& path);

// Element count of a shape, or nullopt on overflow.
std::optional<uint64_t> NumElements(const std::vector<uint64_t>& shape);

struct TensorSpec {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
};

// Where the reference writer puts each tensor of a file.
struct FileLayout {
  std::string prefix;               // 8-byte length + padded JSON header
  std::vector<TensorInfo> tensors;  // in data order, offsets filled in
  uint64_t data_size = 0;
  uint64_t file_size() const { return prefix.size() + data_size; }
};

// Orders tensors as the reference writer does (descending dtype, then name),
// assigns contiguous offsets and renders the header. Fails on duplicate names
// or sizes that do not make whole bytes.
Result<FileLayout> LayoutFile(const std::map<std::string, std::string>& metadata,
                              std::vector<TensorSpec> tensors);

// Pads the header with spaces (which the format allows) so that the data
// section starts at `phase` modulo `page` (rounded down to the 8 bytes the
// header keeps): a copy whose source bytes sit at that phase then moves whole
// pages. The tensors and their offsets are unchanged.
void AlignDataStart(FileLayout& layout, uint64_t phase, uint64_t page);

// Convenience writer for small files (tests, synth): data[i] belongs to
// tensors[i] and must have its exact byte size.
Status WriteFile(const std::string& path, const std::map<std::string, std::string>& metadata,
                 const std::vector<TensorSpec>& tensors, const std::vector<std::string_view>& data);

}  // namespace moepack
