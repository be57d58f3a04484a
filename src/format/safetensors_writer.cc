// Reproduces the reference writer's bytes: compact JSON with __metadata__
// first, tensors ordered by descending dtype then name, contiguous offsets,
// header padded with spaces to a multiple of 8.
#include <algorithm>
#include <set>

#include "moepack/safetensors.h"
#include "util/file.h"
#include "util/json.h"

namespace moepack {
namespace {

void AppendJsonString(std::string& out, std::string_view s) {
  static const char* kHex = "0123456789abcdef";
  out.push_back('"');
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

// The 8-byte little-endian length of the JSON that follows it.
void SetHeaderLength(FileLayout& layout) {
  const uint64_t n = layout.prefix.size() - 8;
  for (int i = 0; i < 8; ++i) layout.prefix[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
}

}  // namespace

Result<FileLayout> LayoutFile(const std::map<std::string, std::string>& metadata, std::vector<TensorSpec> tensors) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorSpec& a, const TensorSpec& b) {
    if (a.dtype != b.dtype) return a.dtype > b.dtype;
    return a.name < b.name;
  });
  // The reader requires UTF-8: never write a header it would refuse.
  for (const auto& [k, v] : metadata) {
    if (!internal::IsValidUtf8(k) || !internal::IsValidUtf8(v)) {
      return Status::InvalidArgument("__metadata__ entry '" + k + "' is not valid UTF-8");
    }
  }
  for (const TensorSpec& t : tensors) {
    if (!internal::IsValidUtf8(t.name)) return Status::InvalidArgument("tensor '" + t.name + "': name is not valid UTF-8");
  }
  FileLayout out;
  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool mfirst = true;
    for (const auto& [k, v] : metadata) {
      if (!mfirst) json.push_back(',');
      mfirst = false;
      AppendJsonString(json, k);
      json.push_back(':');
      AppendJsonString(json, v);
    }
    json.push_back('}');
    first = false;
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    if (i > 0 && tensors[i - 1].name == t.name) {
      return Status::InvalidArgument("tensor '" + t.name + "' is written twice");
    }
    if (t.name == "__metadata__") return Status::InvalidArgument("a tensor cannot be named '__metadata__'");
    auto n = NumElements(t.shape);
    auto bytes = n ? ByteSize(t.dtype, *n) : std::nullopt;
    if (!bytes) return Status::InvalidArgument("tensor '" + t.name + "': size overflows or is not whole bytes");
    if (!first) json.push_back(',');
    first = false;
    AppendJsonString(json, t.name);
    json += ":{\"dtype\":\"";
    json += DTypeName(t.dtype);
    json += "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (d) json.push_back(',');
      json += std::to_string(t.shape[d]);
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + *bytes) + "]}";
    out.tensors.push_back(TensorInfo{t.name, t.dtype, t.shape, offset, offset + *bytes});
    offset += *bytes;
  }
  // Duplicates that the dtype ordering separated.
  std::set<std::string_view> names;
  for (const auto& t : out.tensors) {
    if (!names.insert(t.name).second) return Status::InvalidArgument("tensor '" + t.name + "' is written twice");
  }
  json.push_back('}');
  json.append((8 - json.size() % 8) % 8, ' ');
  out.prefix.resize(8);
  out.prefix += json;
  SetHeaderLength(out);
  out.data_size = offset;
  return out;
}

void AlignDataStart(FileLayout& layout, uint64_t phase, uint64_t page) {
  const uint64_t want = (phase % page) & ~uint64_t{7};
  const uint64_t now = layout.prefix.size() % page;
  layout.prefix.append((want + page - now) % page, ' ');
  SetHeaderLength(layout);
}

Status WriteFile(const std::string& path, const std::map<std::string, std::string>& metadata,
                 const std::vector<TensorSpec>& tensors, const std::vector<std::string_view>& data) {
  if (tensors.size() != data.size()) return Status::InvalidArgument("WriteFile: tensors and data differ in count");
  std::map<std::string, std::string_view> by_name;
  for (size_t i = 0; i < tensors.size(); ++i) by_name[tensors[i].name] = data[i];
  MOEPACK_ASSIGN_OR_RETURN(FileLayout layout, LayoutFile(metadata, tensors));
  MOEPACK_ASSIGN_OR_RETURN(internal::File f, internal::File::Create(path));
  MOEPACK_RETURN_IF_ERROR(f.WriteAt(0, layout.prefix.data(), layout.prefix.size()));
  const uint64_t base = layout.prefix.size();
  for (const TensorInfo& t : layout.tensors) {
    std::string_view d = by_name[t.name];
    if (d.size() != t.nbytes()) {
      return Status::InvalidArgument("tensor '" + t.name + "': " + std::to_string(d.size()) + " bytes given, " +
                                     std::to_string(t.nbytes()) + " expected");
    }
    MOEPACK_RETURN_IF_ERROR(f.WriteAt(base + t.begin, d.data(), d.size()));
  }
  MOEPACK_RETURN_IF_ERROR(f.Truncate(layout.file_size()));
  return f.Close();
}

}  // namespace moepack
