#include "moepack/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "util/file.h"
#include "util/json.h"

namespace moepack {
namespace fs = std::filesystem;
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

Result<std::map<std::string, std::string>> ReadIndex(const std::string& path) {
  MOEPACK_ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(path, 1ull << 30));
  MOEPACK_ASSIGN_OR_RETURN(nlohmann::json j, internal::ParseJsonStrict(text, path));
  if (!j.is_object()) return Status::Corrupt(path + ": not a JSON object");
  if (!j.contains("weight_map")) return Status::Corrupt(path + ": no weight_map");
  const auto& wm = j["weight_map"];
  if (!wm.is_object()) return Status::Corrupt(path + ": weight_map is not an object");
  if (j.contains("metadata") && !j["metadata"].is_object() && !j["metadata"].is_null()) {
    return Status::Corrupt(path + ": metadata is not an object");
  }
  std::map<std::string, std::string> out;
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    if (!it->is_string()) return Status::Corrupt(path + ": weight_map entry '" + it.key() + "' is not a string");
    const std::string& file = it->get_ref<const std::string&>();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
      return Status::Corrupt(path + ": weight_map entry '" + it.key() + "' names an invalid file '" + file + "'");
    }
    out[it.key()] = file;
  }
  return out;
}

}  // namespace

bool IsTemporaryName(std::string_view filename) { return filename.find(".moepack-tmp") != std::string_view::npos; }

const TensorLocation* Checkpoint::Find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &it->second;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& s : shards_) n += s.header.data_size();
  return n;
}

Status Checkpoint::Index() {
  for (uint32_t i = 0; i < shards_.size(); ++i) {
    for (const TensorInfo& t : shards_[i].header.tensors()) {
      auto [it, inserted] = by_name_.emplace(t.name, TensorLocation{i, &t});
      if (!inserted) {
        return Status::Corrupt(dir_ + ": tensor '" + t.name + "' is in two shards: " +
                               shards_[it->second.shard].filename + " and " + shards_[i].filename);
      }
      names_.push_back(t.name);
    }
  }
  return Status::OK();
}

Result<Checkpoint> Checkpoint::Open(const std::string& path) {
  std::error_code ec;
  fs::path p(path);
  auto st = fs::status(p, ec);
  if (ec || !fs::exists(st)) return Status::NotFound(path + ": no such file or directory");
  Checkpoint c;
  std::string index_path;
  if (fs::is_directory(st)) {
    c.dir_ = p.string();
    if (fs::exists(p / kIndexFile, ec)) index_path = (p / kIndexFile).string();
    if (ec) return Status::IOError((p / kIndexFile).string() + ": cannot stat (" + ec.message() + ")");
  } else if (EndsWith(p.filename().string(), ".index.json")) {
    c.dir_ = p.parent_path().empty() ? "." : p.parent_path().string();
    index_path = p.string();
  } else if (EndsWith(p.filename().string(), ".safetensors")) {
    // A lone file: no config, no aux files.
    MOEPACK_ASSIGN_OR_RETURN(Header h, ReadHeader(p.string()));
    c.dir_ = p.parent_path().empty() ? "." : p.parent_path().string();
    c.shards_.push_back(Shard{p.filename().string(), p.string(), std::move(h)});
    MOEPACK_RETURN_IF_ERROR(c.Index());
    return c;
  } else {
    return Status::InvalidArgument(path + ": not a model directory, an index file or a .safetensors file");
  }
  MOEPACK_RETURN_IF_ERROR(c.ReadConfig());
  MOEPACK_ASSIGN_OR_RETURN(std::set<std::string> present, c.ShardFiles());
  std::map<std::string, std::string> weight_map;
  if (!index_path.empty()) {
    c.has_index_ = true;
    MOEPACK_ASSIGN_OR_RETURN(weight_map, ReadIndex(index_path));
    MOEPACK_RETURN_IF_ERROR(c.OpenIndexedShards(index_path, weight_map, present));
  } else {
    MOEPACK_RETURN_IF_ERROR(c.OpenSingleShard(present));
  }
  MOEPACK_RETURN_IF_ERROR(c.Index());
  if (c.has_index_) MOEPACK_RETURN_IF_ERROR(c.CheckIndex(index_path, weight_map));
  MOEPACK_RETURN_IF_ERROR(c.CollectAuxFiles(index_path, present));
  return c;
}

Status Checkpoint::ReadConfig() {
  const fs::path dir(dir_);
  std::error_code ec;
  // The error_code overloads throughout: a symlink loop (ELOOP) anywhere in
  // the directory must be reported or skipped, not thrown.
  const bool has_config = fs::exists(dir / "config.json", ec);
  if (ec) return Status::IOError((dir / "config.json").string() + ": cannot stat (" + ec.message() + ")");
  if (!has_config) return Status::OK();
  const std::string cfg_path = (dir / "config.json").string();
  MOEPACK_ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(cfg_path, 64u << 20));
  MOEPACK_ASSIGN_OR_RETURN(ModelConfig cfg, ModelConfig::Parse(text, cfg_path));
  config_ = std::move(cfg);
  return Status::OK();
}

Result<std::set<std::string>> Checkpoint::ShardFiles() const {
  // Every top-level .safetensors file must belong to the checkpoint.
  std::set<std::string> present;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(dir_), ec)) {
    std::string name = e.path().filename().string();
    std::error_code fec;  // a looping or dangling link is no shard
    if (e.is_regular_file(fec) && EndsWith(name, ".safetensors") && !IsTemporaryName(name)) present.insert(name);
  }
  if (ec) return Status::IOError(dir_ + ": cannot list directory (" + ec.message() + ")");
  return present;
}

Status Checkpoint::OpenIndexedShards(const std::string& index_path, const std::map<std::string, std::string>& weight_map,
                                     const std::set<std::string>& present) {
  std::set<std::string> files;
  for (const auto& [_, f] : weight_map) files.insert(f);
  for (const auto& f : files) {
    if (!present.count(f)) return Status::Corrupt(index_path + ": names missing shard '" + f + "'");
  }
  for (const auto& f : present) {
    if (!files.count(f)) return Status::Corrupt(dir_ + ": shard '" + f + "' is not listed in " + kIndexFile);
  }
  for (const auto& f : files) {
    const std::string path = (fs::path(dir_) / f).string();
    MOEPACK_ASSIGN_OR_RETURN(Header h, ReadHeader(path));
    shards_.push_back(Shard{f, path, std::move(h)});
  }
  return Status::OK();
}

Status Checkpoint::OpenSingleShard(const std::set<std::string>& present) {
  if (present.empty()) return Status::NotFound(dir_ + ": no model.safetensors and no " + kIndexFile);
  if (present.size() > 1) {
    std::string some;
    for (const auto& f : present) {
      if (some.size() > 200) {
        some += ", ...";
        break;
      }
      some += (some.empty() ? "" : ", ") + f;
    }
    return Status::Corrupt(dir_ + ": " + std::to_string(present.size()) + " .safetensors files (" + some +
                           ") but no " + kIndexFile + " to tie them together");
  }
  if (!present.count(kSingleFile)) {
    return Status::Corrupt(dir_ + ": '" + *present.begin() + "' is not named " + kSingleFile + " and there is no " +
                           kIndexFile);
  }
  const std::string path = (fs::path(dir_) / kSingleFile).string();
  MOEPACK_ASSIGN_OR_RETURN(Header h, ReadHeader(path));
  shards_.push_back(Shard{kSingleFile, path, std::move(h)});
  return Status::OK();
}

Status Checkpoint::CheckIndex(const std::string& index_path, const std::map<std::string, std::string>& weight_map) {
  for (const auto& [name, file] : weight_map) {
    const TensorLocation* loc = Find(name);
    if (!loc) return Status::Corrupt(index_path + ": tensor '" + name + "' is listed in " + file + " but absent");
    if (shards_[loc->shard].filename != file) {
      return Status::Corrupt(index_path + ": tensor '" + name + "' is listed in " + file + " but stored in " +
                             shards_[loc->shard].filename);
    }
  }
  for (const auto& name : names_) {
    if (!weight_map.count(name)) {
      return Status::Corrupt(index_path + ": tensor '" + name + "' in " + shards_[by_name_[name].shard].filename +
                             " is not listed");
    }
  }
  return Status::OK();
}

// Everything else is carried over as is.
Status Checkpoint::CollectAuxFiles(const std::string& index_path, const std::set<std::string>& weight_files) {
  const fs::path dir(dir_);
  const std::string index_name = index_path.empty() ? std::string() : fs::path(index_path).filename().string();
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    // Lexical: fs::relative would resolve symlinks (every file of a Hub cache
    // snapshot is a symlink into ../../blobs).
    std::string rel = it->path().lexically_relative(dir).string();
    // `hf download --local-dir` keeps its bookkeeping in .cache/: it describes
    // the download, not the model, so it is not carried over.
    std::error_code fec;  // a looping or dangling link is not carried over
    if (IsTemporaryName(rel) || (it.depth() == 0 && rel == ".cache")) {
      if (it->is_directory(fec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(fec)) continue;
    if (it.depth() == 0 && (weight_files.count(rel) || rel == kIndexFile || rel == index_name)) continue;
    aux_files_.push_back(rel);
  }
  if (ec) return Status::IOError(dir_ + ": cannot list directory (" + ec.message() + ")");
  std::sort(aux_files_.begin(), aux_files_.end());
  return Status::OK();
}

}  // namespace moepack
