// Planning runs in three passes over the source names: renames (forward) or
// splits/transposes (reverse), grouping of experts, then validation of each
// group before any output tensor is laid out.
#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <unordered_map>

#include "moepack/plan.h"
#include "plan/slicing.h"
#include "util/strings.h"

#include <nlohmann/json.hpp>

namespace moepack {
namespace {

using internal::ConcatGeometry;

struct Source {
  uint32_t file = 0;
  const TensorInfo* info = nullptr;
  uint64_t data_start = 0;  // file offset of the shard's data section
  std::string name;         // as stored in the source checkpoint
  uint64_t abs_begin() const { return data_start + info->begin; }
};


// The part of a name after the expert index, for messages: "up_proj.weight".
std::string SourceLabel(const RuleSet& rules, int fusion, int source) {
  std::string n = rules.SourceName(fusion, source, "", 0);
  auto p = n.find(".0.");
  return p == std::string::npos ? n : n.substr(p + 3);
}

std::string GroupLabel(const std::string& prefix, const RuleSet& rules, int fusion) {
  std::string t = rules.TargetName(fusion, prefix);
  auto p = t.rfind('.');
  return p == std::string::npos ? t : t.substr(0, p);
}

class Planner {
 public:
  Planner(const Checkpoint& src, const RuleSet& rules, const PlanOptions& opt) : src_(src), rules_(rules), opt_(opt) {}

  Result<Plan> Run();

 private:
  struct FuseGroup {
    int fusion;
    std::string prefix;
    std::map<int64_t, std::vector<const Source*>> experts;  // expert -> per source
  };

  Status Collect();
  Status CollectForward(const Source& s);
  Status CollectReverse(const Source& s);
  Status FinishGroups();
  Status CheckScales();
  Status AddCopy(const Source& s, std::string out_name);
  Status AddFused(const FuseGroup& g);
  Status AddSplit(const Source& s, const RuleSet::TargetMatch& m);
  Status AddTranspose(const Source& s, const RuleSet::TransposeMatch& m);
  Result<int64_t> Experts(const std::string& prefix);
  Status Emit(PlannedTensor t, const std::string& from);
  Status MakeShards();

  const Checkpoint& src_;
  const RuleSet& rules_;
  const PlanOptions& opt_;
  Plan plan_;
  std::vector<Source> sources_;
  std::map<std::pair<int, std::string>, FuseGroup> groups_;
  std::unordered_map<std::string, std::string> produced_;  // output name -> what made it
  std::map<std::pair<int, std::string>, DType> fused_dtype_;  // (fusion, prefix) -> dtype seen
};

Result<int64_t> Planner::Experts(const std::string& prefix) {
  if (!src_.config()) {
    return Status::Corrupt(src_.dir() + ": no config.json: the expert count of '" + prefix + "' comes from it");
  }
  return rules_.NumExperts(*src_.config(), prefix);
}

Status Planner::Emit(PlannedTensor t, const std::string& from) {
  auto [it, inserted] = produced_.emplace(t.name, from);
  if (!inserted) {
    return Status::Corrupt("output tensor '" + t.name + "' would be made twice: from " + it->second + " and from " +
                           from);
  }
  plan_.tensors.push_back(std::move(t));
  return Status::OK();
}

Status Planner::AddCopy(const Source& s, std::string out_name) {
  PlannedTensor t;
  t.name = std::move(out_name);
  t.dtype = s.info->dtype;
  t.shape = s.info->shape;
  t.nbytes = s.info->nbytes();
  t.op = TensorOp::kCopy;
  if (t.nbytes) t.copies.push_back(CopyRange{s.file, s.abs_begin(), t.nbytes, 0});
  return Emit(std::move(t), "'" + s.name + "'");
}

// Renames that keep growing a name are refused, not followed (see Rename).
Status CheckGrowth(const RuleSet& rules, const std::string& from, const std::string& to) {
  if (to.size() <= from.size() + RuleSet::kMaxRenameGrowth) return Status::OK();
  return Status::InvalidArgument("rules of " + rules.family() + " grow the name '" + from + "' by more than " +
                                 std::to_string(RuleSet::kMaxRenameGrowth) + " bytes");
}

Status Planner::CollectForward(const Source& s) {
  std::string renamed = rules_.Rename(s.name, Direction::kToFused);
  MOEPACK_RETURN_IF_ERROR(CheckGrowth(rules_, s.name, renamed));
  if (renamed != s.name && rules_.Rename(renamed, Direction::kToPerExpert) != s.name) {
    return Status::InvalidArgument("rules of " + rules_.family() + " are not exactly invertible on '" + s.name +
                                   "' (renamed to '" + renamed + "', which renames back to '" +
                                   rules_.Rename(renamed, Direction::kToPerExpert) + "')");
  }
  if (auto m = rules_.MatchSource(renamed)) {
    auto key = std::make_pair(m->fusion, m->prefix);
    FuseGroup& g = groups_[key];
    g.fusion = m->fusion;
    g.prefix = m->prefix;
    auto& slot = g.experts[m->expert];
    slot.resize(rules_.fusions()[m->fusion].sources.size(), nullptr);
    if (slot[m->source]) {
      return Status::Corrupt(GroupLabel(m->prefix, rules_, m->fusion) + ": expert " + std::to_string(m->expert) +
                             " " + SourceLabel(rules_, m->fusion, m->source) + " appears twice: '" +
                             slot[m->source]->name + "' and '" + s.name + "'");
    }
    slot[m->source] = &s;
    return Status::OK();
  }
  if (auto m = rules_.MatchExpertLeftover(renamed)) {
    return Status::Corrupt(GroupLabel(m->prefix, rules_, m->fusion) + ": '" + s.name + "' belongs to expert " +
                           std::to_string(m->expert) + " but no fusion of the " + rules_.family() +
                           " rules takes it; fusing its siblings would leave it per-expert beside fused experts "
                           "(an expert tensor kind these rules do not know, e.g. a bias or another quantization's "
                           "scales)");
  }
  if (auto m = rules_.MatchTranspose(renamed)) return AddTranspose(s, *m);
  if (auto m = rules_.MatchTarget(renamed); m && src_.config()) {
    // Already fused: kept as it is, but only in the layout the target has.
    auto E = rules_.NumExperts(*src_.config(), m->prefix);
    if (E.ok()) MOEPACK_RETURN_IF_ERROR(rules_.CheckFusedShape(*src_.config(), m->fusion, m->prefix, *E, s.info->shape,
                                                           "'" + s.name + "'"));
  }
  return AddCopy(s, renamed);
}

Status Planner::CollectReverse(const Source& s) {
  if (auto m = rules_.MatchTarget(s.name)) return AddSplit(s, *m);
  if (auto m = rules_.MatchTranspose(s.name)) return AddTranspose(s, *m);
  std::string out = rules_.Rename(s.name, Direction::kToPerExpert);
  MOEPACK_RETURN_IF_ERROR(CheckGrowth(rules_, s.name, out));
  if (out != s.name && rules_.Rename(out, Direction::kToFused) != s.name) {
    return Status::InvalidArgument("rules of " + rules_.family() + " are not exactly invertible on '" + s.name + "'");
  }
  return AddCopy(s, out);
}

Status Planner::Collect() {
  sources_.reserve(src_.names().size());
  for (const std::string& name : src_.names()) {
    const TensorLocation* loc = src_.Find(name);
    sources_.push_back(Source{loc->shard, loc->info, src_.shards()[loc->shard].header.data_start(), name});
  }
  for (const Source& s : sources_) {
    MOEPACK_RETURN_IF_ERROR(opt_.direction == Direction::kToFused ? CollectForward(s) : CollectReverse(s));
  }
  return Status::OK();
}

Status Planner::FinishGroups() {
  for (auto& [key, g] : groups_) {
    const FusionRule& f = rules_.fusions()[g.fusion];
    const std::string label = GroupLabel(g.prefix, rules_, g.fusion);
    MOEPACK_ASSIGN_OR_RETURN(int64_t E, Experts(g.prefix));
    const size_t K = f.sources.size();
    std::vector<int64_t> present;
    for (const auto& [j, slot] : g.experts) {
      if (j >= E) {
        const Source* any = nullptr;
        for (const Source* s : slot) any = any ? any : s;
        return Status::Corrupt(label + ": expert " + std::to_string(j) + " is out of range: config.json says " +
                               std::to_string(E) + " experts ('" + (any ? any->name : "") + "')");
      }
      for (size_t k = 0; k < K; ++k) {
        if (!slot[k]) {
          // Name the sibling that did arrive: "a gate without its up".
          size_t other = 0;
          while (other < K && !slot[other]) ++other;
          return Status::Corrupt(label + ": expert " + std::to_string(j) + " has " +
                                 SourceLabel(rules_, g.fusion, static_cast<int>(other)) + " but no " +
                                 SourceLabel(rules_, g.fusion, static_cast<int>(k)) + " ('" +
                                 rules_.Rename(rules_.SourceName(g.fusion, static_cast<int>(k), g.prefix, j),
                                               Direction::kToPerExpert) +
                                 "' is missing)");
        }
      }
      present.push_back(j);
    }
    if (static_cast<int64_t>(present.size()) != E) {
      // The gaps between the ids present, as ranges: E comes from config.json
      // and may be huge, so never walk all of 0..E-1.
      std::vector<std::pair<int64_t, int64_t>> gaps;
      int64_t next = 0;
      for (int64_t j : present) {
        if (j > next) gaps.emplace_back(next, j - 1);
        next = j + 1;
      }
      if (next < E) gaps.emplace_back(next, E - 1);
      std::string missing;
      for (size_t i = 0; i < gaps.size(); ++i) {
        if (i == 20) {
          missing += ",...";
          break;
        }
        missing += (i ? "," : "") + std::to_string(gaps[i].first);
        if (gaps[i].second > gaps[i].first) missing += "-" + std::to_string(gaps[i].second);
      }
      return Status::Corrupt(label + ": " + SourceLabel(rules_, g.fusion, 0) + " missing for experts " + missing +
                             " (config.json says " + std::to_string(E) + " experts, found " +
                             std::to_string(present.size()) + ")");
    }
    MOEPACK_RETURN_IF_ERROR(AddFused(g));
  }
  return CheckScales();
}

Status Planner::AddFused(const FuseGroup& g) {
  const FusionRule& f = rules_.fusions()[g.fusion];
  const size_t K = f.sources.size();
  const Source* first = g.experts.begin()->second[0];
  const DType dtype = first->info->dtype;
  const std::vector<uint64_t> shape = first->info->shape;
  const std::string label = GroupLabel(g.prefix, rules_, g.fusion);
  for (const auto& [j, slot] : g.experts) {
    for (size_t k = 0; k < K; ++k) {
      const TensorInfo& t = *slot[k]->info;
      if (t.dtype != dtype) {
        return Status::Corrupt(label + ": expert " + std::to_string(j) + " " +
                               SourceLabel(rules_, g.fusion, static_cast<int>(k)) + " is " +
                               std::string(DTypeName(t.dtype)) + " but expert " +
                               std::to_string(g.experts.begin()->first) + " " + SourceLabel(rules_, g.fusion, 0) +
                               " is " + std::string(DTypeName(dtype)));
      }
      if (t.shape != shape) {
        return Status::Corrupt(label + ": expert " + std::to_string(j) + " " +
                               SourceLabel(rules_, g.fusion, static_cast<int>(k)) + " has shape " +
                               internal::ShapeString(t.shape) + " but expert " + std::to_string(g.experts.begin()->first) + " " +
                               SourceLabel(rules_, g.fusion, 0) + " has " + internal::ShapeString(shape) +
                               " (fused sources must share one shape)");
      }
    }
  }
  MOEPACK_RETURN_IF_ERROR(rules_.CheckSourceShape(*src_.config(), g.fusion, g.prefix, shape,
                                                  label + ": expert " + std::to_string(g.experts.begin()->first) +
                                                      " " + SourceLabel(rules_, g.fusion, 0) + " ('" + first->name +
                                                      "')"));
  const std::string rule_label = "fusion \"" + f.name + "\"";
  PlannedTensor out;
  out.name = rules_.TargetName(g.fusion, g.prefix);
  out.dtype = dtype;
  out.op = TensorOp::kFuse;
  out.rule = f.name;
  const uint64_t E = g.experts.size();
  fused_dtype_[{g.fusion, g.prefix}] = dtype;
  if (f.transpose) {
    if (shape.size() != 2) return Status::Corrupt(label + ": " + rule_label + " transposes 2-D sources, got " + internal::ShapeString(shape));
    if (DTypeBits(dtype) % 8) return Status::Corrupt(label + ": cannot transpose " + std::string(DTypeName(dtype)));
    const uint64_t src_bytes = first->info->nbytes();
    for (const auto& [j, slot] : g.experts) {
      for (size_t k = 0; k < K; ++k) {
        out.transposes.push_back(TransposeBlock{slot[k]->file, slot[k]->abs_begin(), shape[0], shape[1],
                                                static_cast<uint32_t>(DTypeBits(dtype) / 8),
                                                (static_cast<uint64_t>(j) * K + k) * src_bytes});
      }
    }
  } else {
    auto geo = internal::Geometry(shape, dtype, K, f.concat_dim - 1);
    if (!geo.ok()) return Status::Corrupt(label + ": " + rule_label + ": " + geo.status().message());
    for (const auto& [j, slot] : g.experts) {
      for (size_t k = 0; k < K; ++k) {
        for (uint64_t o = 0; o < geo->outer; ++o) {
          if (geo->chunk_bytes == 0) continue;
          CopyRange r{slot[k]->file, slot[k]->abs_begin() + o * geo->chunk_bytes, geo->chunk_bytes,
                      geo->Offset(static_cast<uint64_t>(j), k, o)};
          // Experts stored back to back in one shard become one range.
          if (!out.copies.empty()) {
            CopyRange& p = out.copies.back();
            if (p.src_file == r.src_file && p.src_offset + p.length == r.src_offset &&
                p.dst_offset + p.length == r.dst_offset) {
              p.length += r.length;
              continue;
            }
          }
          out.copies.push_back(r);
        }
      }
    }
  }
  out.shape = FusedShape(f, E, shape);
  auto n = NumElements(out.shape);
  out.nbytes = n ? ByteSize(dtype, *n).value_or(0) : 0;
  return Emit(std::move(out), rule_label + " of " + label);
}

Status Planner::AddSplit(const Source& s, const RuleSet::TargetMatch& m) {
  const FusionRule& f = rules_.fusions()[m.fusion];
  const size_t K = f.sources.size();
  const TensorInfo& t = *s.info;
  const std::string rule_label = "fusion \"" + f.name + "\"";
  MOEPACK_ASSIGN_OR_RETURN(int64_t E, Experts(m.prefix));
  if (t.shape.size() < 2 || t.shape[0] != static_cast<uint64_t>(E)) {
    return Status::Corrupt("'" + s.name + "': fused shape " + internal::ShapeString(t.shape) + " does not start with the " +
                           std::to_string(E) + " experts that config.json declares");
  }
  MOEPACK_RETURN_IF_ERROR(rules_.CheckFusedShape(*src_.config(), m.fusion, m.prefix, E, t.shape, "'" + s.name + "'"));
  uint64_t pieces = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(E), K, &pieces) || pieces > internal::kMaxSplitPieces) {
    // A zero-byte fused tensor can claim any number of experts.
    return Status::Corrupt("'" + s.name + "': splitting " + std::to_string(E) + " experts into " + std::to_string(K) +
                           " sources would make too many tensors (the limit is " +
                           std::to_string(internal::kMaxSplitPieces) + ")");
  }
  fused_dtype_[{m.fusion, m.prefix}] = t.dtype;
  std::vector<uint64_t> per(t.shape.begin() + 1, t.shape.end());
  const size_t axis = f.transpose ? 0 : static_cast<size_t>(f.concat_dim - 1);
  if (axis >= per.size() || per[axis] % K) {
    return Status::Corrupt("'" + s.name + "': shape " + internal::ShapeString(t.shape) + " cannot split into " +
                           std::to_string(K) + " sources along dim " + std::to_string(axis + 1) + " (" +
                           rule_label + ")");
  }
  per[axis] /= K;
  std::vector<uint64_t> piece = per;
  if (f.transpose) {
    if (per.size() != 2 || DTypeBits(t.dtype) % 8) {
      return Status::Corrupt("'" + s.name + "': " + rule_label + " transposes 2-D byte-sized slices");
    }
    piece = {per[1], per[0]};
  }
  auto geo = internal::Geometry(piece, t.dtype, K, f.transpose ? 0 : static_cast<int>(axis));
  if (!geo.ok()) return Status::Corrupt("'" + s.name + "': " + geo.status().message());
  for (int64_t j = 0; j < E; ++j) {
    for (size_t k = 0; k < K; ++k) {
      PlannedTensor out;
      std::string v5 = rules_.SourceName(m.fusion, static_cast<int>(k), m.prefix, j);
      out.name = rules_.Rename(v5, Direction::kToPerExpert);
      out.dtype = t.dtype;
      out.shape = piece;
      out.op = TensorOp::kSplit;
      out.rule = f.name;
      if (f.transpose) {
        const uint64_t bytes = geo->chunk_bytes;
        out.transposes.push_back(TransposeBlock{s.file, s.abs_begin() + (static_cast<uint64_t>(j) * K + k) * bytes,
                                                per[0], per[1], static_cast<uint32_t>(DTypeBits(t.dtype) / 8), 0});
      } else {
        for (uint64_t o = 0; o < geo->outer; ++o) {
          if (geo->chunk_bytes == 0) continue;
          out.copies.push_back(CopyRange{s.file, s.abs_begin() + geo->Offset(static_cast<uint64_t>(j), k, o),
                                         geo->chunk_bytes, o * geo->chunk_bytes});
        }
      }
      out.nbytes = geo->outer * geo->chunk_bytes;
      MOEPACK_RETURN_IF_ERROR(Emit(std::move(out), rule_label + " of '" + s.name + "'"));
    }
  }
  return Status::OK();
}

Status Planner::AddTranspose(const Source& s, const RuleSet::TransposeMatch& m) {
  const TransposeRule& r = rules_.transposes()[m.rule];
  const TensorInfo& t = *s.info;
  if (!src_.config()) return Status::Corrupt(src_.dir() + ": no config.json: the layout of '" + s.name + "' depends on it");
  MOEPACK_ASSIGN_OR_RETURN(int64_t E, Experts(m.prefix));
  MOEPACK_ASSIGN_OR_RETURN(auto hub, rules_.EvalShape(*src_.config(), r.hub_shape, E, m.prefix));
  MOEPACK_ASSIGN_OR_RETURN(auto v5, rules_.EvalShape(*src_.config(), r.v5_shape, E, m.prefix));
  const bool is_hub = t.shape == hub, is_v5 = t.shape == v5;
  // Forward the source was matched after renames; backward the renames are
  // undone on the way out, as for every other tensor.
  const std::string name = rules_.Rename(s.name, opt_.direction);
  if (!is_hub && !is_v5) {
    return Status::Corrupt("'" + s.name + "': shape " + internal::ShapeString(t.shape) + " is neither the Hub layout " +
                           internal::ShapeString(hub) + " nor the v5 layout " + internal::ShapeString(v5) + " (transpose \"" + r.name + "\")");
  }
  bool from_hub;
  if (opt_.source_layout != SourceLayout::kUnspecified) {
    from_hub = opt_.source_layout == SourceLayout::kHub;
    if ((from_hub && !is_hub) || (!from_hub && !is_v5)) {
      return Status::InvalidArgument("'" + s.name + "': shape " + internal::ShapeString(t.shape) + " is not the " +
                                     (from_hub ? "Hub" : "v5") + " layout that --source-layout names");
    }
  } else if (is_hub && is_v5) {
    return Status::InvalidArgument("'" + s.name + "': shape " + internal::ShapeString(t.shape) +
                                   " fits both the Hub and the v5 layout (its last two dims are equal); "
                                   "pass --source-layout hf or --source-layout v5");
  } else {
    from_hub = is_hub;
  }
  const bool want_hub = opt_.direction == Direction::kToPerExpert;
  if (from_hub == want_hub) return AddCopy(s, name);
  if (DTypeBits(t.dtype) % 8) return Status::Corrupt("'" + s.name + "': cannot transpose " + std::string(DTypeName(t.dtype)));
  PlannedTensor out;
  out.name = name;
  out.dtype = t.dtype;
  out.shape = {t.shape[0], t.shape[2], t.shape[1]};
  out.nbytes = t.nbytes();
  out.op = TensorOp::kTranspose;
  out.rule = r.name;
  const uint64_t slice = t.shape[0] ? t.nbytes() / t.shape[0] : 0;
  for (uint64_t j = 0; j < t.shape[0] && slice; ++j) {
    out.transposes.push_back(TransposeBlock{s.file, s.abs_begin() + j * slice, t.shape[1], t.shape[2],
                                            static_cast<uint32_t>(DTypeBits(t.dtype) / 8), j * slice});
  }
  return Emit(std::move(out), "transpose \"" + r.name + "\" of '" + s.name + "'");
}

Status Planner::CheckScales() {
  // A scale needs its weight; an 8-bit float weight needs its scale.
  for (size_t f = 0; f < rules_.fusions().size(); ++f) {
    const FusionRule& scale = rules_.fusions()[f];
    if (scale.scale_of.empty()) continue;
    int w = -1;
    for (size_t g = 0; g < rules_.fusions().size(); ++g) {
      if (rules_.fusions()[g].name == scale.scale_of) w = static_cast<int>(g);
    }
    for (const auto& [key, dtype] : fused_dtype_) {
      if (key.first == static_cast<int>(f) && !fused_dtype_.count({w, key.second})) {
        return Status::Corrupt(GroupLabel(key.second, rules_, w) + ": " + rules_.TargetName(static_cast<int>(f), key.second) +
                               " scales have no " + scale.scale_of + " weights");
      }
      if (key.first == w && IsFloat8(dtype) && !fused_dtype_.count({static_cast<int>(f), key.second})) {
        return Status::Corrupt(GroupLabel(key.second, rules_, w) + ": " + std::string(DTypeName(dtype)) + " " +
                               scale.scale_of + " weights have no weight_scale_inv scales");
      }
    }
  }
  return Status::OK();
}

Status Planner::MakeShards() {
  std::vector<uint32_t> order(plan_.tensors.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return NaturalLess(plan_.tensors[a].name, plan_.tensors[b].name); });
  std::vector<std::vector<uint32_t>> groups;
  uint64_t size = 0;
  for (uint32_t i : order) {
    const uint64_t n = plan_.tensors[i].nbytes;
    if (groups.empty() || (size > 0 && size + n > opt_.max_shard_size)) {
      groups.emplace_back();
      size = 0;
    }
    groups.back().push_back(i);
    size += n;
  }
  if (groups.empty()) groups.emplace_back();  // a checkpoint of no tensors is still a file
  const size_t count = groups.size();
  auto pad5 = [](size_t v) {
    std::string s = std::to_string(v);
    return std::string(s.size() < 5 ? 5 - s.size() : 0, '0') + s;
  };
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < count; ++s) {
    PlannedShard shard;
    shard.filename = count == 1 ? std::string(kSingleFile)
                                : "model-" + pad5(s + 1) + "-of-" + pad5(count) + ".safetensors";
    std::vector<TensorSpec> specs;
    for (uint32_t i : groups[s]) {
      specs.push_back(TensorSpec{plan_.tensors[i].name, plan_.tensors[i].dtype, plan_.tensors[i].shape});
      weight_map[plan_.tensors[i].name] = shard.filename;
    }
    MOEPACK_ASSIGN_OR_RETURN(shard.layout, LayoutFile({{"format", "pt"}}, std::move(specs)));
    shard.tensors = std::move(groups[s]);
    plan_.shards.push_back(std::move(shard));
  }
  if (count > 1) {
    // The Hub's index format: sorted keys, indent 2, ASCII, trailing newline.
    nlohmann::json j;
    j["metadata"]["total_size"] = plan_.total_bytes;
    j["weight_map"] = weight_map;
    plan_.index_json = j.dump(2, ' ', true) + "\n";
  }
  return Status::OK();
}

Result<Plan> Planner::Run() {
  plan_.family = rules_.family();
  plan_.direction = opt_.direction;
  plan_.src_dir = src_.dir();
  for (const Shard& s : src_.shards()) plan_.src_files.push_back(s.path);
  plan_.aux_files = src_.aux_files();
  plan_.source_tensors = src_.names().size();
  if (opt_.max_shard_size == 0) return Status::InvalidArgument("--max-shard-size must be positive");
  MOEPACK_RETURN_IF_ERROR(Collect());
  MOEPACK_RETURN_IF_ERROR(FinishGroups());
  for (const auto& t : plan_.tensors) plan_.total_bytes += t.nbytes;
  MOEPACK_RETURN_IF_ERROR(MakeShards());
  return std::move(plan_);
}

}  // namespace

bool NaturalLess(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const bool da = std::isdigit(static_cast<unsigned char>(a[i])), db = std::isdigit(static_cast<unsigned char>(b[j]));
    if (da && db) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      std::string_view na(a.data() + i, ie - i), nb(b.data() + j, je - j);
      while (na.size() > 1 && na[0] == '0') na.remove_prefix(1);
      while (nb.size() > 1 && nb[0] == '0') nb.remove_prefix(1);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  if (a.size() - i != b.size() - j) return a.size() - i < b.size() - j;
  return a < b;
}

Result<Plan> MakePlan(const Checkpoint& src, const RuleSet& rules, const PlanOptions& options) {
  return Planner(src, rules, options).Run();
}

}  // namespace moepack
