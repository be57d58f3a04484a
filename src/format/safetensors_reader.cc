// Header validation runs in a fixed order: length, size cap, UTF-8, JSON,
// entry schema, sort by offset, contiguity and sizes, exact file length.
#include <algorithm>
#include <cstring>

#include "moepack/safetensors.h"
#include "util/file.h"
#include "util/json.h"

namespace moepack {
namespace {

using nlohmann::json;

Status Fault(std::string_view file, const std::string& what) {
  return Status::Corrupt(std::string(file) + ": " + what);
}

Status TensorFault(std::string_view file, const std::string& tensor, const std::string& what) {
  return Status::Corrupt(std::string(file) + ": tensor '" + tensor + "': " + what);
}

// A short rendering of a scalar for messages; containers are not echoed (they
// may be huge or nested deeper than the serializer's recursion can go).
std::string Echo(const json& v) {
  if (v.is_structured()) return "";
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return " (" + s + ")";
}

Result<TensorInfo> ParseEntry(std::string_view file, const std::string& name, const json& v) {
  if (!v.is_object()) return TensorFault(file, name, "entry is " + internal::JsonTypeWithArticle(v) + ", not an object");
  // Fields beyond the three are ignored, as the reference reader ignores them:
  // refusing them would refuse files that every other loader opens.
  for (const char* k : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(k)) return TensorFault(file, name, std::string("missing field '") + k + "'");
  }
  TensorInfo t;
  t.name = name;
  const json& d = v["dtype"];
  if (!d.is_string()) return TensorFault(file, name, "dtype is " + internal::JsonTypeWithArticle(d) + ", not a string");
  auto dt = ParseDType(d.get_ref<const std::string&>());
  if (!dt) return TensorFault(file, name, "unknown dtype '" + d.get<std::string>() + "'");
  t.dtype = *dt;
  const json& s = v["shape"];
  if (!s.is_array()) return TensorFault(file, name, "shape is " + internal::JsonTypeWithArticle(s) + ", not an array");
  for (const json& dim : s) {
    if (!dim.is_number_unsigned()) {
      return TensorFault(file, name, "shape has " + internal::JsonTypeWithArticle(dim) + " dimension" + Echo(dim) +
                                         "; dimensions are non-negative integers");
    }
    t.shape.push_back(dim.get<uint64_t>());
  }
  const json& o = v["data_offsets"];
  if (!o.is_array() || o.size() != 2) return TensorFault(file, name, "data_offsets must be an array of two integers");
  for (const json& x : o) {
    if (!x.is_number_unsigned()) {
      return TensorFault(file, name, "data_offsets has " + internal::JsonTypeWithArticle(x) + Echo(x) +
                                         "; offsets are non-negative integers");
    }
  }
  t.begin = o[0].get<uint64_t>();
  t.end = o[1].get<uint64_t>();
  if (t.end < t.begin) return TensorFault(file, name, "data_offsets end before they begin");
  return t;
}

}  // namespace

std::optional<uint64_t> NumElements(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

const TensorInfo* Header::Find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

Result<Header> ParseHeader(std::string_view text, uint64_t data_size, std::string_view file) {
  if (text.empty() || text.front() != '{') return Fault(file, "header does not start with '{'");
  if (text.find('\0') != std::string_view::npos) return Fault(file, "header contains NUL bytes");
  MOEPACK_ASSIGN_OR_RETURN(json j, internal::ParseJsonStrict(text, std::string(file) + ": header"));
  if (!j.is_object()) return Fault(file, "header is not a JSON object");

  Header h;
  h.header_len_ = text.size();
  h.data_size_ = data_size;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      // The reference reader takes null as "no metadata"; so do we.
      if (it->is_null()) continue;
      if (!it->is_object()) return Fault(file, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return Fault(file, "__metadata__ value '" + m.key() + "' is not a string");
        h.metadata_[m.key()] = m->get<std::string>();
      }
      h.has_metadata_ = true;
      continue;
    }
    MOEPACK_ASSIGN_OR_RETURN(TensorInfo t, ParseEntry(file, it.key(), *it));
    h.tensors_.push_back(std::move(t));
  }
  std::sort(h.tensors_.begin(), h.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : (a.end != b.end ? a.end < b.end : a.name < b.name);
  });
  uint64_t expected = 0;
  const std::string* prev = nullptr;
  for (const TensorInfo& t : h.tensors_) {
    if (t.begin > expected) {
      return TensorFault(file, t.name, "gap before data_offsets [" + std::to_string(t.begin) + ", " +
                                           std::to_string(t.end) + "] (previous data ends at " +
                                           std::to_string(expected) + ")");
    }
    if (t.begin < expected) {
      return TensorFault(file, t.name, "data_offsets overlap tensor '" + (prev ? *prev : std::string()) + "'");
    }
    auto n = NumElements(t.shape);
    if (!n) return TensorFault(file, t.name, "shape overflows the element count");
    auto bytes = ByteSize(t.dtype, *n);
    if (!bytes) {
      return TensorFault(file, t.name, "size overflows or " + std::string(DTypeName(t.dtype)) +
                                           " elements do not fill whole bytes");
    }
    if (t.end - t.begin != *bytes) {
      return TensorFault(file, t.name, "data_offsets span " + std::to_string(t.end - t.begin) +
                                           " bytes but dtype and shape need " + std::to_string(*bytes));
    }
    expected = t.end;
    prev = &t.name;
  }
  if (expected < data_size) {
    return Fault(file, std::to_string(data_size - expected) + " trailing bytes after the last tensor");
  }
  if (expected > data_size) {
    return Fault(file, "data section is " + std::to_string(data_size) + " bytes but the header needs " +
                           std::to_string(expected));
  }
  for (size_t i = 0; i < h.tensors_.size(); ++i) h.by_name_.emplace(h.tensors_[i].name, i);
  return h;
}

Result<Header> ReadHeader(const std::string& path) {
  MOEPACK_ASSIGN_OR_RETURN(internal::File f, internal::File::OpenRead(path));
  MOEPACK_ASSIGN_OR_RETURN(uint64_t size, f.Size());
  if (size < 8) return Fault(path, "file is " + std::to_string(size) + " bytes, too short for a header length");
  unsigned char prefix[8];
  MOEPACK_RETURN_IF_ERROR(f.ReadAt(0, prefix, 8));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
  if (n > kMaxHeaderBytes) return Fault(path, "header length " + std::to_string(n) + " exceeds the 100000000-byte limit");
  if (n > size - 8) {
    return Fault(path, "header length " + std::to_string(n) + " runs past the end of the " + std::to_string(size) +
                           "-byte file");
  }
  std::string text(n, '\0');
  MOEPACK_RETURN_IF_ERROR(f.ReadAt(8, text.data(), n));
  return ParseHeader(text, size - 8 - n, path);
}

}  // namespace moepack
