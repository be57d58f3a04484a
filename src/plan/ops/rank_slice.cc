#include "plan/ops/rank_slice.h"

#include "plan/ops/dtype_op.h"
#include "plan/ops/fusion_op.h"
#include "util/strings.h"

namespace moepack::ops {
namespace {

}  // namespace

uint64_t Total(const Intervals& v) {
  uint64_t n = 0;
  for (const auto& [a, b] : v) n += b - a;
  return n;
}

SliceRole RoleOf(const RuleSet& rules, const ModelConfig* config, std::string_view name) {
  SliceRole r;
  if (auto m = rules.MatchTarget(name); m && !rules.MatchSource(name)) {
    const FusionRule& f = rules.fusions()[m->fusion];
    r.fused = true;
    r.rule = f.name;
    r.role = f.role;
    r.tp_dim = f.tp_dim;
    if (f.interleave) r.interleave = f.sources.size();
    if (const int w = rules.WeightOf(m->fusion); w >= 0) {
      r.scale = true;
      r.weight = rules.TargetName(w, m->prefix);
      r.block = kDefaultFP8Block;
      const int src_dim = FusionForm::Of(f).SourceDim(f.tp_dim);
      if (config && src_dim >= 0) {
        if (auto b = rules.BlockOf(*config, m->fusion, src_dim, m->prefix)) r.block = *b;
      }
    }
  } else if (auto t = rules.MatchTranspose(name); t && rules.transposes()[t->rule].experts()) {
    const TransposeRule& tr = rules.transposes()[t->rule];
    r.fused = true;
    r.rule = tr.name;
    r.role = tr.role;
    r.tp_dim = tr.tp_dim;
  }
  // Interleaved halves are no halves: gate and up alternate, and a cut in
  // whole (gate, up) groups keeps every pair on one rank.
  r.parts = r.interleave > 1 ? 1 : RoleParts(r.role);
  return r;
}

std::optional<uint64_t> CutSize(const SliceRole& role, const std::vector<uint64_t>& shape) {
  if (role.role == ExpertRole::kNone || role.scale || role.tp_dim <= 0 ||
      static_cast<size_t>(role.tp_dim) >= shape.size() || shape.size() > 3) {
    return std::nullopt;
  }
  return shape[role.tp_dim] / (static_cast<uint64_t>(role.parts) * role.interleave);
}

Result<RankSlice> SliceForRank(const SliceRole& role, const std::string& name, DType dtype,
                               const std::vector<uint64_t>& shape, const ParallelSpec& par,
                               std::optional<uint64_t> weight_cut) {
  RankSlice s;
  s.shape = shape;
  if (!par.parallel() || !role.fused) return s;
  const std::string quoted = "'" + name + "'";
  if (shape.size() < 2) {
    return Status::Corrupt(quoted + ": fused expert tensor of shape " + internal::ShapeString(shape) +
                           " has no expert dim");
  }
  if (DTypeBits(dtype) % 8) {
    return Status::InvalidArgument(quoted + ": cannot slice " + std::string(DTypeName(dtype)) +
                                   " elements, which are not whole bytes");
  }
  s.whole = false;
  const uint64_t E = shape[0], ep = static_cast<uint64_t>(par.ep_size);
  if (E % ep) {
    return Status::InvalidArgument("ep_size " + std::to_string(ep) + " does not divide the " + std::to_string(E) +
                                   " experts of " + quoted);
  }
  const uint64_t El = E / ep;
  s.expert_begin = El * static_cast<uint64_t>(par.ep_rank);
  s.expert_end = s.expert_begin + El;
  if (shape.size() == 3) {
    s.A = shape[1];
    s.B = shape[2];
  } else if (shape.size() == 2) {
    s.A = shape[1];  // a fused bias [E, 2I]: the dim tensor parallelism cuts is dim 1
  } else {
    for (size_t d = 1; d < shape.size(); ++d) s.B *= shape[d];
  }
  s.dim1 = {{0, s.A}};
  s.dim2 = {{0, s.B}};
  if (par.tp_size > 1 && !(role.role != ExpertRole::kNone && role.tp_dim == 0)) {
    const uint64_t tp = static_cast<uint64_t>(par.tp_size), tr = static_cast<uint64_t>(par.tp_rank);
    if (role.role == ExpertRole::kNone) {
      return Status::InvalidArgument("tp_size " + std::to_string(tp) + ": " + quoted +
                                     " is a fused expert tensor of rule \"" + role.rule +
                                     "\", which declares no role; only gate_up, up and down tensors have a known "
                                     "intermediate dim to split");
    }
    if (shape.size() > 3 || static_cast<size_t>(role.tp_dim) >= shape.size()) {
      return Status::Corrupt(quoted + ": fused expert tensor of shape " + internal::ShapeString(shape) +
                             " has no dim " + std::to_string(role.tp_dim) + " to cut");
    }
    const uint64_t parts = static_cast<uint64_t>(role.parts), g = role.interleave;
    const uint64_t cut_dim = shape[role.tp_dim];
    uint64_t I = 0;  // one part, in (groups of) elements of this tensor
    if (!role.scale) {
      if (cut_dim % (parts * g)) {
        return Status::Corrupt(quoted + ": " + std::to_string(cut_dim) +
                               (g > 1 ? " entries do not split into interleaved gate and up"
                                      : " rows do not split into gate and up halves"));
      }
      I = cut_dim / (parts * g);
    } else if (!weight_cut) {
      return Status::Corrupt(quoted + ": no 3-D weight '" + role.weight + "' to take the intermediate size from");
    } else {
      I = *weight_cut;
    }
    const std::string of = "'" + (role.scale ? role.weight : name) + "'";
    if (I % tp) {
      return Status::InvalidArgument("tp_size " + std::to_string(tp) + " does not divide the expert intermediate size " +
                                     std::to_string(I) + " of " + of);
    }
    uint64_t Il = I / tp;
    if (role.scale) {
      // Each scale covers a block of the weight along the cut dim.
      const uint64_t bs = role.block;
      const uint64_t blocks = (I + bs - 1) / bs;
      if (cut_dim != parts * blocks) {
        return Status::Corrupt(quoted + ": shape " + internal::ShapeString(shape) + " does not hold " +
                               std::to_string(bs) + "-wide blocks of the intermediate size " + std::to_string(I) +
                               " of " + of);
      }
      if (Il % bs) {
        return Status::InvalidArgument("tp_size " + std::to_string(tp) + " cuts the intermediate size " +
                                       std::to_string(I) + " of " + of + " into slices of " + std::to_string(Il) +
                                       ", which do not fall on the " + std::to_string(bs) +
                                       "-wide quantization blocks of " + quoted);
      }
      Il /= bs;
      I = blocks;
    }
    Intervals cut;
    for (uint64_t p = 0; p < parts; ++p) cut.emplace_back((p * I + tr * Il) * g, (p * I + (tr + 1) * Il) * g);
    (role.tp_dim == 1 ? s.dim1 : s.dim2) = std::move(cut);
  }
  s.shape[0] = El;
  if (shape.size() >= 2 && shape.size() <= 3) s.shape[1] = Total(s.dim1);
  if (shape.size() == 3) s.shape[2] = Total(s.dim2);
  return s;
}

}  // namespace moepack::ops
