// Planning runs in three passes over the source names: renames and the
// match against the rules (every name is seen in v5's vocabulary, whichever
// layout the checkpoint is in), grouping of experts (and of chunk parts),
// then validation of each group before any output tensor is laid out. What
// an op does to shapes and bytes comes from the op model (plan/ops).
#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>

#include "moepack/natural_order.h"
#include "moepack/plan.h"
#include "plan/ops/chunk_op.h"
#include "plan/ops/dtype_op.h"
#include "plan/ops/fusion_op.h"
#include "plan/ops/scales.h"
#include "plan/ops/transpose_op.h"
#include "plan/plan_pieces.h"
#include "util/strings.h"

#include <nlohmann/json.hpp>

namespace moepack {
namespace {

// A planned tensor before its bytes are placed (copies and gathers).
PlannedTensor Planned(std::string name, DType dtype, std::vector<uint64_t> shape, uint64_t nbytes, TensorOp op,
                      std::string rule = {}) {
  return {std::move(name), dtype, std::move(shape), nbytes, op, std::move(rule), {}, {}};
}

struct Source {
  uint32_t file = 0;
  const TensorInfo* info = nullptr;
  uint64_t data_start = 0;  // file offset of the shard's data section
  std::string name;         // as stored in the source checkpoint
  uint64_t abs_begin() const { return data_start + info->begin; }
};

std::string GroupLabel(const std::string& prefix, const RuleSet& rules, int fusion) {
  std::string t = rules.TargetName(fusion, prefix);
  auto p = t.rfind('.');
  return p == std::string::npos ? t : t.substr(0, p);
}

// The ids missing from `present` (sorted) out of 0..E-1, as ranges: E
// comes from config.json and may be huge, so never walk all of it.
std::string MissingIds(const std::vector<int64_t>& present, int64_t E) {
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
  return missing;
}

// Renames that keep growing a name are refused, not followed (see Rename).
Status CheckGrowth(const RuleSet& rules, const std::string& from, const std::string& to) {
  if (to.size() <= from.size() + RuleSet::kMaxRenameGrowth) return Status::OK();
  return Status::InvalidArgument("rules of " + rules.family() + " grow the name '" + from + "' by more than " +
                                 std::to_string(RuleSet::kMaxRenameGrowth) + " bytes");
}

class Planner {
 public:
  Planner(const Checkpoint& src, RuleSet rules, const PlanOptions& opt)
      : src_(src), rules_(std::move(rules)), opt_(opt) {}

  Result<Plan> Run();

 private:
  struct FuseGroup {
    int fusion;
    std::string prefix;
    std::map<int64_t, std::vector<const Source*>> experts;  // expert -> per source
  };
  struct ChunkGroup {
    int rule;
    std::string prefix;
    std::vector<const Source*> parts;
  };

  Status Collect();
  Status ChangeDTypes();
  Status Quantize();
  Status CheckQuantMethod() const;
  void UseComputed(Source& s, ComputedSource c, std::string name);
  Status CollectForward(const Source& s);
  Status CollectReverse(const Source& s);
  Result<std::string> V5Name(const Source& s) const;
  Status FinishGroups();
  Status CheckScales();
  Status AddCopy(const Source& s, std::string out_name);
  Status AddFused(const FuseGroup& g);
  Status AddSplit(const Source& s, const RuleSet::TargetMatch& m);
  Status AddTranspose(const Source& s, const RuleSet::TransposeMatch& m, std::string out_name);
  Status AddChunkSplit(const Source& s, const RuleSet::ChunkMatch& m);
  Status AddChunkJoin(const ChunkGroup& g);
  Result<int64_t> Experts(const std::string& prefix, int fusion);
  Status Emit(PlannedTensor t, const std::string& from);
  Status MakeShards();
  Status RewriteConfig();

  const Checkpoint& src_;
  const RuleSet rules_;  // bound to the source's config.json
  const PlanOptions& opt_;
  Plan plan_;
  std::vector<Source> sources_;
  std::map<std::pair<int, std::string>, FuseGroup> groups_;
  std::map<std::pair<int, std::string>, ChunkGroup> chunk_groups_;
  std::unordered_map<std::string, std::string> produced_;  // output name -> what made it
  ops::FusedTensors fused_;                                 // fused tensors made or cut
  bool changed_ = false;                                    // some tensor is converted or renamed
  std::deque<TensorInfo> computed_infos_;                   // what computed sources read as
  std::vector<bool> consumed_;                              // per source: folded into a computed one
  std::vector<std::string> kept_float_;                     // linear modules quantizing leaves in float (v5 names)
  std::pair<uint64_t, uint64_t> quant_block_{ops::kDefaultFP8Block, ops::kDefaultFP8Block};
};

Result<int64_t> Planner::Experts(const std::string& prefix, int fusion) {
  if (!src_.config()) {
    return Status::Corrupt(src_.dir() + ": no config.json: the expert count of '" + prefix + "' comes from it");
  }
  return rules_.NumExperts(*src_.config(), prefix, fusion);
}

Status Planner::Emit(PlannedTensor t, const std::string& from) {
  auto [it, inserted] = produced_.emplace(t.name, from);
  if (!inserted) {
    return Status::Corrupt("output tensor '" + t.name + "' would be made twice: from " + it->second + " and from " +
                           from);
  }
  changed_ = changed_ || t.op != TensorOp::kCopy;
  plan_.tensors.push_back(std::move(t));
  return Status::OK();
}

Status Planner::AddCopy(const Source& s, std::string out_name) {
  PlannedTensor t = Planned(std::move(out_name), s.info->dtype, s.info->shape, s.info->nbytes(), TensorOp::kCopy);
  changed_ = changed_ || t.name != s.name;
  if (t.nbytes) t.copies.push_back(CopyRange{s.file, s.abs_begin(), t.nbytes, 0});
  return Emit(std::move(t), "'" + s.name + "'");
}

// The name in v5's vocabulary, checked to rename back exactly.
Result<std::string> Planner::V5Name(const Source& s) const {
  std::string v5 = rules_.Rename(s.name, Direction::kToFused);
  MOEPACK_RETURN_IF_ERROR(CheckGrowth(rules_, s.name, v5));
  if (v5 != s.name && rules_.Rename(v5, Direction::kToPerExpert) != s.name) {
    return Status::InvalidArgument("rules of " + rules_.family() + " are not exactly invertible on '" + s.name +
                                   "' (renamed to '" + v5 + "', which renames back to '" +
                                   rules_.Rename(v5, Direction::kToPerExpert) + "')");
  }
  return v5;
}

Status Planner::CollectForward(const Source& s) {
  MOEPACK_ASSIGN_OR_RETURN(std::string renamed, V5Name(s));
  if (auto m = rules_.MatchSource(renamed)) {
    auto key = std::make_pair(m->fusion, m->prefix);
    FuseGroup& g = groups_[key];
    g.fusion = m->fusion;
    g.prefix = m->prefix;
    auto& slot = g.experts[m->expert];
    slot.resize(rules_.fusions()[m->fusion].sources.size(), nullptr);
    if (slot[m->source]) {
      return Status::Corrupt(GroupLabel(m->prefix, rules_, m->fusion) + ": expert " + std::to_string(m->expert) +
                             " " + rules_.SourceLeaf(m->fusion, m->source) + " appears twice: '" +
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
  if (auto m = rules_.MatchTranspose(renamed)) return AddTranspose(s, *m, renamed);
  if (auto m = rules_.MatchChunk(renamed); m && m->part < 0) return AddChunkSplit(s, *m);
  if (auto m = rules_.MatchTarget(renamed); m && src_.config()) {
    // Already fused: kept as it is, but only in the layout the target has.
    auto E = rules_.NumExperts(*src_.config(), m->prefix, m->fusion);
    if (E.ok()) {
      MOEPACK_RETURN_IF_ERROR(ops::CheckFusedShape(rules_, *src_.config(), m->fusion, m->prefix, *E, s.info->shape,
                                                   "'" + s.name + "'"));
    }
  }
  return AddCopy(s, renamed);
}

Status Planner::CollectReverse(const Source& s) {
  // The Hub may ship a family fused under names of its own (granitemoe's
  // input_linear): what it is, is decided on its v5 name.
  MOEPACK_ASSIGN_OR_RETURN(std::string v5, V5Name(s));
  if (auto m = rules_.MatchTarget(v5)) return AddSplit(s, *m);
  const std::string out = rules_.Rename(v5, Direction::kToPerExpert);
  if (auto m = rules_.MatchTranspose(v5)) return AddTranspose(s, *m, out);
  if (auto m = rules_.MatchChunk(v5); m && m->part >= 0) {
    ChunkGroup& g = chunk_groups_[{m->rule, m->prefix}];
    g.rule = m->rule;
    g.prefix = m->prefix;
    g.parts.resize(rules_.chunks()[m->rule].targets.size(), nullptr);
    g.parts[m->part] = &s;
    return Status::OK();
  }
  if (auto m = rules_.MatchTargetSibling(v5)) {
    return Status::InvalidArgument("'" + s.name + "' is another form of the fused tensor '" +
                                   rules_.TargetName(m->fusion, m->prefix) + "' (fusion \"" +
                                   rules_.fusions()[m->fusion].name + "\") that the " + rules_.family() +
                                   " rules cannot cut into experts; it would stay fused in a per-expert checkpoint" +
                                   (s.info->dtype == DType::U8 || IsFloat8(s.info->dtype)
                                        ? std::string(" (it is quantized: --dtype bf16 dequantizes it first)")
                                        : std::string()));
  }
  return AddCopy(s, out);
}

Status Planner::Collect() {
  // Room for a computed source per tensor (quantizing adds the scales).
  sources_.reserve(2 * src_.names().size());
  for (const std::string& name : src_.names()) {
    const TensorLocation* loc = src_.Find(name);
    sources_.push_back(Source{loc->shard, loc->info, src_.shards()[loc->shard].header.data_start(), name});
  }
  consumed_.assign(sources_.size(), false);
  if (opt_.dtype != DTypeChange::kKeep) MOEPACK_RETURN_IF_ERROR(ChangeDTypes());
  for (size_t i = 0; i < sources_.size(); ++i) {
    if (consumed_[i]) continue;
    const Source& s = sources_[i];
    MOEPACK_RETURN_IF_ERROR(opt_.direction == Direction::kToFused ? CollectForward(s) : CollectReverse(s));
  }
  return Status::OK();
}

// Only methods whose numerics moepack reproduces are converted.
Status Planner::CheckQuantMethod() const {
  if (!src_.config()) return Status::OK();
  for (const char* path : {"quantization_config.quant_method", "text_config.quantization_config.quant_method"}) {
    auto m = src_.config()->String(path);
    if (m && *m != "fp8" && *m != "mxfp4") {
      return Status::InvalidArgument("config.json: " + std::string(path) + " is '" + *m +
                                     "'; moepack converts the dtype of fp8 block-scaled and mxfp4 checkpoints only");
    }
  }
  return Status::OK();
}

void Planner::UseComputed(Source& s, ComputedSource c, std::string name) {
  computed_infos_.push_back(TensorInfo{name, c.dtype, c.shape, 0, c.nbytes});
  s.file = static_cast<uint32_t>(plan_.src_files.size() + plan_.computed.size());
  s.info = &computed_infos_.back();
  s.data_start = 0;
  s.name = std::move(name);
  plan_.computed.push_back(std::move(c));
  changed_ = true;
}

// Dequantization: each F8_E4M3 weight with its weight_scale_inv, each MXFP4
// weight with its scales, becomes one computed source in the target float
// type under the weight's name; the scales are consumed. Pairs are found on
// v5 names, so that renamed scales (DeepSeek-V4's ".scale") pair too.
Status Planner::ChangeDTypes() {
  if (opt_.dtype == DTypeChange::kToFP8) return Quantize();
  MOEPACK_RETURN_IF_ERROR(CheckQuantMethod());
  std::unordered_map<std::string, size_t> by_v5;
  std::vector<std::string> v5(sources_.size());
  for (size_t i = 0; i < sources_.size(); ++i) {
    MOEPACK_ASSIGN_OR_RETURN(v5[i], V5Name(sources_[i]));
    by_v5.emplace(v5[i], i);
  }
  auto stored = [&](size_t i) {
    const Source& s = sources_[i];
    return ops::StoredTensor{s.name, s.file, s.abs_begin(), s.info->dtype, s.info->shape};
  };
  const ModelConfig* config = src_.config() ? &*src_.config() : nullptr;
  const DType out = ops::TargetFloat(opt_.dtype);
  for (size_t i = 0; i < sources_.size(); ++i) {
    const TensorInfo& t = *sources_[i].info;
    const ops::QuantPart part = ops::QuantPartOf(v5[i], t.dtype);
    if (part != ops::QuantPart::kFP8Weight && part != ops::QuantPart::kMXFP4Blocks) continue;
    auto it = by_v5.find(ops::PartnerOf(v5[i], part));
    if (it == by_v5.end()) {
      return Status::Corrupt("'" + sources_[i].name + "' is " +
                             (part == ops::QuantPart::kFP8Weight ? std::string(DTypeName(t.dtype)) : "MXFP4 blocks") +
                             " but there is no '" + ops::PartnerOf(v5[i], part) + "' to dequantize it with");
    }
    auto computed = [&]() -> Result<ComputedSource> {
      if (part == ops::QuantPart::kMXFP4Blocks) return ops::DequantMXFP4(stored(i), stored(it->second), out);
      MOEPACK_ASSIGN_OR_RETURN(uint64_t units, ops::QuantizedMatrices(rules_, v5[i], t.shape));
      auto m = rules_.MatchTarget(v5[i]);
      const auto [br, bc] = ops::FP8Block(rules_, config, m ? std::string_view(m->prefix) : std::string_view());
      return ops::DequantFP8(stored(i), stored(it->second), units, br, bc, out);
    };
    MOEPACK_ASSIGN_OR_RETURN(ComputedSource c, computed());
    consumed_[it->second] = true;
    // The stored name with the pair's suffix gone: MXFP4 X_blocks reads as X.
    const std::string& name = sources_[i].name;
    const size_t cut = v5[i].size() - ops::DequantizedName(v5[i], part).size();
    UseComputed(sources_[i], std::move(c), name.substr(0, name.size() - cut));
  }
  // Scales left over scale nothing: they would stay beside float weights.
  for (size_t i = 0; i < sources_.size(); ++i) {
    if (consumed_[i] || sources_[i].file >= plan_.src_files.size()) continue;  // paired, or computed
    const ops::QuantPart part = ops::QuantPartOf(v5[i], sources_[i].info->dtype);
    if (part == ops::QuantPart::kFP8Scales || part == ops::QuantPart::kMXFP4Scales) {
      return Status::Corrupt("'" + sources_[i].name + "' scales no quantized weight of this checkpoint ('" +
                             ops::PartnerOf(v5[i], part) + "' is not there)");
    }
  }
  return Status::OK();
}

Status Planner::FinishGroups() {
  for (auto& [key, g] : groups_) {
    const FusionRule& f = rules_.fusions()[g.fusion];
    const std::string label = GroupLabel(g.prefix, rules_, g.fusion);
    MOEPACK_ASSIGN_OR_RETURN(int64_t E, Experts(g.prefix, g.fusion));
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
                                 rules_.SourceLeaf(g.fusion, static_cast<int>(other)) + " but no " +
                                 rules_.SourceLeaf(g.fusion, static_cast<int>(k)) + " ('" +
                                 rules_.HubSourceName(g.fusion, static_cast<int>(k), g.prefix, j) + "' is missing)");
        }
      }
      present.push_back(j);
    }
    if (static_cast<int64_t>(present.size()) != E) {
      return Status::Corrupt(label + ": " + rules_.SourceLeaf(g.fusion, 0) + " missing for experts " +
                             MissingIds(present, E) + " (config.json says " + std::to_string(E) + " experts, found " +
                             std::to_string(present.size()) + ")");
    }
    MOEPACK_RETURN_IF_ERROR(AddFused(g));
  }
  for (auto& [key, g] : chunk_groups_) MOEPACK_RETURN_IF_ERROR(AddChunkJoin(g));
  return CheckScales();
}

Status Planner::AddFused(const FuseGroup& g) {
  const FusionRule& f = rules_.fusions()[g.fusion];
  const size_t K = f.sources.size();
  const Source* first = g.experts.begin()->second[0];
  const std::string label = GroupLabel(g.prefix, rules_, g.fusion);
  auto expert = [&](int64_t j, size_t k) {
    return "expert " + std::to_string(j) + " " + rules_.SourceLeaf(g.fusion, static_cast<int>(k));
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
  PlannedTensor out = Planned(rules_.TargetName(g.fusion, g.prefix), op.dtype(), op.fused_shape(), op.fused_bytes(),
                              TensorOp::kFuse, f.name);
  fused_[{g.fusion, g.prefix}] = op.dtype();
  internal::PiecesToPlan pieces;
  for (const auto& [j, slot] : g.experts) {
    for (size_t k = 0; k < K; ++k) {
      pieces.Add(slot[k]->file, slot[k]->abs_begin(), op.SourceInFused(static_cast<uint64_t>(j), k));
    }
  }
  pieces.Finish(out);
  return Emit(std::move(out), "fusion \"" + f.name + "\" of " + label);
}

Status Planner::AddSplit(const Source& s, const RuleSet::TargetMatch& m) {
  const FusionRule& f = rules_.fusions()[m.fusion];
  const TensorInfo& t = *s.info;
  MOEPACK_ASSIGN_OR_RETURN(int64_t E, Experts(m.prefix, m.fusion));
  MOEPACK_ASSIGN_OR_RETURN(ops::FusionOp op, ops::CutOf(rules_, *src_.config(), m.fusion, m.prefix,
                                                        static_cast<uint64_t>(E), t.dtype, t.shape, "'" + s.name + "'"));
  fused_[{m.fusion, m.prefix}] = t.dtype;
  for (uint64_t j = 0; j < op.experts(); ++j) {
    for (uint64_t k = 0; k < op.sources(); ++k) {
      PlannedTensor out =
          Planned(rules_.HubSourceName(m.fusion, static_cast<int>(k), m.prefix, static_cast<int64_t>(j)), t.dtype,
                  op.source_shape(), op.source_bytes(), TensorOp::kSplit, f.name);
      internal::PiecesToPlan pieces;
      pieces.Add(s.file, s.abs_begin(), op.SourceInFused(j, k).Inverse());
      pieces.Finish(out);
      MOEPACK_RETURN_IF_ERROR(Emit(std::move(out), "fusion \"" + f.name + "\" of '" + s.name + "'"));
    }
  }
  return Status::OK();
}

Status Planner::AddTranspose(const Source& s, const RuleSet::TransposeMatch& m, std::string out_name) {
  const TensorInfo& t = *s.info;
  if (!src_.config()) return Status::Corrupt(src_.dir() + ": no config.json: the layout of '" + s.name + "' depends on it");
  MOEPACK_ASSIGN_OR_RETURN(ops::TransposeOp op,
                           ops::TransposeOp::Make(rules_, m.rule, *src_.config(), m.prefix, s.name, t.dtype, t.shape,
                                                  opt_.source_layout, ops::TargetOrientation(opt_.direction)));
  if (!op.changes()) return AddCopy(s, std::move(out_name));
  const TransposeRule& r = rules_.transposes()[m.rule];
  PlannedTensor out =
      Planned(std::move(out_name), t.dtype, op.output_shape(), t.nbytes(), TensorOp::kTranspose, r.name);
  internal::PiecesToPlan pieces;
  for (uint64_t j = 0; j < op.experts(); ++j) pieces.Add(s.file, s.abs_begin(), op.Expert(j));
  pieces.Finish(out);
  return Emit(std::move(out), "transpose \"" + r.name + "\" of '" + s.name + "'");
}

Status Planner::AddChunkSplit(const Source& s, const RuleSet::ChunkMatch& m) {
  const ChunkRule& c = rules_.chunks()[m.rule];
  auto op = ops::ChunkOp::FromWhole(c, s.info->dtype, s.info->shape);
  if (!op.ok()) return op.status().WithPrefix("'" + s.name + "'");
  for (uint64_t k = 0; k < op->parts(); ++k) {
    PlannedTensor out = Planned(rules_.ChunkName(m.rule, static_cast<int>(k), m.prefix), s.info->dtype,
                                op->part_shape(), op->part_bytes(), TensorOp::kSplit, c.name);
    internal::PiecesToPlan pieces;
    pieces.Add(s.file, s.abs_begin(), op->PartInWhole(k).Inverse());
    pieces.Finish(out);
    MOEPACK_RETURN_IF_ERROR(Emit(std::move(out), "chunk \"" + c.name + "\" of '" + s.name + "'"));
  }
  return Status::OK();
}

Status Planner::AddChunkJoin(const ChunkGroup& g) {
  const ChunkRule& c = rules_.chunks()[g.rule];
  for (size_t k = 0; k < g.parts.size(); ++k) {
    if (!g.parts[k]) {
      return Status::Corrupt("'" + rules_.ChunkName(g.rule, static_cast<int>(k), g.prefix) + "' is missing: chunk \"" +
                             c.name + "\" joins " + std::to_string(g.parts.size()) + " parts into '" +
                             rules_.Rename(rules_.ChunkName(g.rule, -1, g.prefix), Direction::kToPerExpert) + "'");
    }
  }
  const Source& first = *g.parts[0];
  auto op = ops::ChunkOp::FromPart(c, first.info->dtype, first.info->shape);
  if (!op.ok()) return op.status().WithPrefix("'" + first.name + "'");
  for (const Source* part : g.parts) {
    MOEPACK_RETURN_IF_ERROR(op->CheckPart(part->info->dtype, part->info->shape, "'" + part->name + "'",
                                          "'" + first.name + "'"));
  }
  PlannedTensor out = Planned(rules_.Rename(rules_.ChunkName(g.rule, -1, g.prefix), Direction::kToPerExpert),
                              first.info->dtype, op->whole_shape(), op->whole_bytes(), TensorOp::kFuse, c.name);
  internal::PiecesToPlan pieces;
  for (uint64_t k = 0; k < op->parts(); ++k) pieces.Add(g.parts[k]->file, g.parts[k]->abs_begin(), op->PartInWhole(k));
  pieces.Finish(out);
  return Emit(std::move(out), "chunk \"" + c.name + "\" of '" + first.name + "'");
}

Status Planner::CheckScales() {
  const auto problems = ops::ScaleProblems(rules_, fused_);
  if (!problems.empty()) return Status::Corrupt(problems.front());
  return Status::OK();
}

// Quantization: each float weight an FP8 checkpoint quantizes becomes two
// computed sources, its FP8 codes under its name and its block scales
// under name + "_scale_inv"; the rules then fuse or cut the scales like the
// weights, as FP8 checkpoints hold them.
Status Planner::Quantize() {
  const size_t n = sources_.size();
  for (size_t i = 0; i < n; ++i) {
    MOEPACK_ASSIGN_OR_RETURN(std::string v5, V5Name(sources_[i]));
    const TensorInfo& t = *sources_[i].info;
    if (IsFloat8(t.dtype)) {
      return Status::InvalidArgument("'" + sources_[i].name + "' is " + std::string(DTypeName(t.dtype)) +
                                     " already: --dtype fp8 quantizes float checkpoints");
    }
    if (!ops::QuantizesToFP8(rules_, v5, t.dtype, t.shape)) {
      if (t.shape.size() == 2 && v5.size() > 7 && v5.compare(v5.size() - 7, 7, ".weight") == 0) {
        kept_float_.push_back(v5.substr(0, v5.size() - 7));
      }
      continue;
    }
    MOEPACK_ASSIGN_OR_RETURN(uint64_t units, ops::QuantizedMatrices(rules_, v5, t.shape));
    const uint64_t br = opt_.block_rows ? opt_.block_rows : ops::kDefaultFP8Block;
    const uint64_t bc = opt_.block_cols ? opt_.block_cols : ops::kDefaultFP8Block;
    const Source& s = sources_[i];
    const ops::StoredTensor w{s.name, s.file, s.abs_begin(), t.dtype, t.shape};
    MOEPACK_ASSIGN_OR_RETURN(ComputedSource codes, ops::QuantFP8(w, units, br, bc, false));
    MOEPACK_ASSIGN_OR_RETURN(ComputedSource scales, ops::QuantFP8(w, units, br, bc, true));
    sources_.push_back(s);  // the scales, a source of their own
    consumed_.push_back(false);
    UseComputed(sources_.back(), std::move(scales), s.name + "_scale_inv");
    UseComputed(sources_[i], std::move(codes), sources_[i].name);
    quant_block_ = {br, bc};
  }
  return Status::OK();
}

// A dequantized checkpoint is a float one: config.json loses its
// quantization_config and names the dtype its weights are now in.
// A quantized one gains the quantization_config FP8 checkpoints carry.
Status Planner::RewriteConfig() {
  if (!src_.config()) return Status::OK();
  auto j = nlohmann::ordered_json::parse(src_.config()->text(), nullptr, false);
  if (!j.is_object()) return Status::OK();
  if (opt_.dtype == DTypeChange::kToFP8) {
    nlohmann::ordered_json q;
    q["activation_scheme"] = "dynamic";
    q["fmt"] = "e4m3";
    q["quant_method"] = "fp8";
    q["weight_block_size"] = {quant_block_.first, quant_block_.second};
    // The linear layers left in float, under their output names, so that a
    // loader does not expect scales for them.
    std::vector<std::string> kept;
    for (const std::string& m : kept_float_) kept.push_back(rules_.Rename(m, opt_.direction));
    std::sort(kept.begin(), kept.end(), NaturalLess);
    q["modules_to_not_convert"] = kept;
    j["quantization_config"] = q;
    plan_.config_json = j.dump(2) + "\n";
    return Status::OK();
  }
  const std::string dtype = ops::TorchDTypeName(ops::TargetFloat(opt_.dtype));
  for (nlohmann::ordered_json* c : {&j, j.contains("text_config") && j["text_config"].is_object() ? &j["text_config"] : nullptr}) {
    if (!c) continue;
    c->erase("quantization_config");
    if (c->contains("torch_dtype") || c == &j) (*c)["torch_dtype"] = dtype;
    if (c->contains("dtype")) (*c)["dtype"] = dtype;
  }
  plan_.config_json = j.dump(2) + "\n";
  return Status::OK();
}

// The page offset that most of a shard's copied bytes have in their source
// files, as the offset of the shard's data section that would keep them
// there (0 when nothing is copied from a stored file).
constexpr uint64_t kPage = 4096;
uint64_t SourcePhase(const Plan& plan, const FileLayout& layout, const std::vector<uint32_t>& tensors) {
  std::unordered_map<std::string_view, uint64_t> begin;
  for (const TensorInfo& t : layout.tensors) begin[t.name] = t.begin;
  std::map<uint64_t, uint64_t> bytes_at;  // data-start phase -> bytes it aligns
  for (uint32_t i : tensors) {
    const PlannedTensor& t = plan.tensors[i];
    for (const CopyRange& c : t.copies) {
      if (c.src_file >= plan.src_files.size()) continue;  // a computed source: no page to match
      bytes_at[(c.src_offset + kPage - (begin.at(t.name) + c.dst_offset) % kPage) % kPage] += c.length;
    }
  }
  uint64_t best = 0, most = 0;
  for (const auto& [phase, n] : bytes_at) {
    if (n > most) {
      best = phase;
      most = n;
    }
  }
  return best;
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
    if (opt_.align_pages) AlignDataStart(shard.layout, SourcePhase(plan_, shard.layout, groups[s]), kPage);
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
  plan_.unchanged = !changed_;
  if (opt_.dtype != DTypeChange::kKeep && !plan_.computed.empty()) MOEPACK_RETURN_IF_ERROR(RewriteConfig());
  MOEPACK_RETURN_IF_ERROR(MakeShards());
  return std::move(plan_);
}

}  // namespace

Result<Plan> MakePlan(const Checkpoint& src, const RuleSet& rules, const PlanOptions& options) {
  if (!src.config()) return Planner(src, rules, options).Run();
  MOEPACK_ASSIGN_OR_RETURN(RuleSet bound, rules.Bind(*src.config()));
  return Planner(src, std::move(bound), options).Run();
}

}  // namespace moepack
