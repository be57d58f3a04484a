// Planning runs in three passes over the source names: renames (forward) or
// splits/transposes (reverse), grouping of experts, then validation of each
// group before any output tensor is laid out.
#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <unordered_map>

#include "moepack/natural_order.h"
#include "moepack/plan.h"
#include "plan/ops/fusion_op.h"
#include "plan/ops/scales.h"
#include "plan/ops/transpose_op.h"
#include "util/strings.h"

#include <nlohmann/json.hpp>

namespace moepack {
namespace {

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

// Adds an op's geometry, read from `file` at `src_begin` (the input
// tensor's first byte), to an output tensor's ranges. Runs that continue
// the previous one in both files (experts stored back to back in one
// shard) become one range.
void AddPieces(PlannedTensor& out, uint32_t file, uint64_t src_begin, const ops::Pieces& pieces) {
  for (const ops::Run& r : pieces.runs) {
    if (!out.copies.empty()) {
      CopyRange& p = out.copies.back();
      if (p.src_file == file && p.src_offset + p.length == src_begin + r.src && p.dst_offset + p.length == r.dst) {
        p.length += r.length;
        continue;
      }
    }
    out.copies.push_back(CopyRange{file, src_begin + r.src, r.length, r.dst});
  }
  for (const ops::Block& b : pieces.blocks) {
    out.transposes.push_back(TransposeBlock{file, src_begin + b.src, b.rows, b.cols, b.elem_bytes, b.dst});
  }
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
  ops::FusedTensors fused_;                                 // fused tensors made or cut
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
    if (E.ok()) {
      MOEPACK_RETURN_IF_ERROR(ops::CheckFusedShape(rules_, *src_.config(), m->fusion, m->prefix, *E, s.info->shape,
                                                   "'" + s.name + "'"));
    }
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
                                 rules_.HubSourceName(g.fusion, static_cast<int>(k), g.prefix, j) +
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
  const std::string label = GroupLabel(g.prefix, rules_, g.fusion);
  auto expert = [&](int64_t j, size_t k) {
    return "expert " + std::to_string(j) + " " + SourceLabel(rules_, g.fusion, static_cast<int>(k));
  };
  const std::string first_label = expert(g.experts.begin()->first, 0);
  MOEPACK_ASSIGN_OR_RETURN(ops::FusionOp op,
                           ops::FuseOf(rules_, *src_.config(), g.fusion, g.prefix, g.experts.size(), first->info->dtype,
                                       first->info->shape, label + ": " + first_label + " ('" + first->name + "')"));
  for (const auto& [j, slot] : g.experts) {
    for (size_t k = 0; k < K; ++k) {
      MOEPACK_RETURN_IF_ERROR(
          op.CheckSource(slot[k]->info->dtype, slot[k]->info->shape, label + ": " + expert(j, k), first_label));
    }
  }
  PlannedTensor out;
  out.name = rules_.TargetName(g.fusion, g.prefix);
  out.dtype = op.dtype();
  out.shape = op.fused_shape();
  out.nbytes = op.fused_bytes();
  out.op = TensorOp::kFuse;
  out.rule = f.name;
  fused_[{g.fusion, g.prefix}] = op.dtype();
  for (const auto& [j, slot] : g.experts) {
    for (size_t k = 0; k < K; ++k) {
      AddPieces(out, slot[k]->file, slot[k]->abs_begin(), op.SourceInFused(static_cast<uint64_t>(j), k));
    }
  }
  return Emit(std::move(out), "fusion \"" + f.name + "\" of " + label);
}

Status Planner::AddSplit(const Source& s, const RuleSet::TargetMatch& m) {
  const FusionRule& f = rules_.fusions()[m.fusion];
  const TensorInfo& t = *s.info;
  MOEPACK_ASSIGN_OR_RETURN(int64_t E, Experts(m.prefix));
  MOEPACK_ASSIGN_OR_RETURN(ops::FusionOp op, ops::CutOf(rules_, *src_.config(), m.fusion, m.prefix,
                                                        static_cast<uint64_t>(E), t.dtype, t.shape, "'" + s.name + "'"));
  fused_[{m.fusion, m.prefix}] = t.dtype;
  for (uint64_t j = 0; j < op.experts(); ++j) {
    for (uint64_t k = 0; k < op.sources(); ++k) {
      PlannedTensor out;
      out.name = rules_.HubSourceName(m.fusion, static_cast<int>(k), m.prefix, static_cast<int64_t>(j));
      out.dtype = t.dtype;
      out.shape = op.source_shape();
      out.nbytes = op.source_bytes();
      out.op = TensorOp::kSplit;
      out.rule = f.name;
      AddPieces(out, s.file, s.abs_begin(), op.SourceInFused(j, k).Inverse());
      MOEPACK_RETURN_IF_ERROR(Emit(std::move(out), "fusion \"" + f.name + "\" of '" + s.name + "'"));
    }
  }
  return Status::OK();
}

Status Planner::AddTranspose(const Source& s, const RuleSet::TransposeMatch& m) {
  const TensorInfo& t = *s.info;
  if (!src_.config()) return Status::Corrupt(src_.dir() + ": no config.json: the layout of '" + s.name + "' depends on it");
  MOEPACK_ASSIGN_OR_RETURN(ops::TransposeOp op,
                           ops::TransposeOp::Make(rules_, m.rule, *src_.config(), m.prefix, s.name, t.dtype, t.shape,
                                                  opt_.source_layout, ops::TargetOrientation(opt_.direction)));
  // Forward the source was matched after renames; backward the renames are
  // undone on the way out, as for every other tensor.
  const std::string name = rules_.Rename(s.name, opt_.direction);
  if (!op.changes()) return AddCopy(s, name);
  const TransposeRule& r = rules_.transposes()[m.rule];
  PlannedTensor out;
  out.name = name;
  out.dtype = t.dtype;
  out.shape = op.output_shape();
  out.nbytes = t.nbytes();
  out.op = TensorOp::kTranspose;
  out.rule = r.name;
  for (uint64_t j = 0; j < op.experts(); ++j) AddPieces(out, s.file, s.abs_begin(), op.Expert(j));
  return Emit(std::move(out), "transpose \"" + r.name + "\" of '" + s.name + "'");
}

Status Planner::CheckScales() {
  const auto problems = ops::ScaleProblems(rules_, fused_);
  if (!problems.empty()) return Status::Corrupt(problems.front());
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

Result<Plan> MakePlan(const Checkpoint& src, const RuleSet& rules, const PlanOptions& options) {
  return Planner(src, rules, options).Run();
}

}  // namespace moepack
