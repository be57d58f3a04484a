#include "moepack/streaming.h"

#include <cstring>
#include <set>

#include "exec/transpose.h"
#include "plan/slicing.h"
#include "util/strings.h"

namespace moepack {
namespace {

// The experts whose source k arrived.
std::string Arrived(const std::vector<uint8_t>& arrived, uint64_t K, uint64_t k) {
  std::vector<int64_t> ids;
  for (uint64_t j = 0; j < arrived.size() / K; ++j) {
    if (arrived[j * K + k]) ids.push_back(static_cast<int64_t>(j));
  }
  return internal::IdRanges(ids);
}

std::shared_ptr<uint8_t[]> Allocate(uint64_t n) {
  // Default-initialised: every byte is overwritten by exactly one expert.
  return std::shared_ptr<uint8_t[]>(new uint8_t[n ? n : 1]);
}

}  // namespace

struct StreamingConverter::State {
  RuleSet rules;
  ModelConfig config;
  Direction direction;
  SourceLayout layout;
  struct Pending {
    int fusion;
    std::string prefix;
    DType dtype;
    std::vector<uint64_t> source_shape;
    internal::ConcatGeometry geo;
    uint64_t experts;
    std::vector<uint8_t> arrived;  // [expert * K + source]
    uint64_t count = 0;
    OwnedTensor out;
  };
  std::map<std::pair<int, std::string>, Pending> pending;
  std::map<std::pair<int, std::string>, DType> finished;  // (fusion, prefix) -> dtype

  std::string Label(int fusion, const std::string& prefix) const { return rules.TargetName(fusion, prefix); }
  std::string SourceLabel(int fusion, int k) const {
    const std::string& s = rules.fusions()[fusion].sources[k];
    return s.substr(s.find("{expert}") + 9);
  }
  Result<std::vector<OwnedTensor>> Fuse(const RuleSet::SourceMatch& m, const std::string& name, const TensorView& t);
  Result<std::vector<OwnedTensor>> Split(const RuleSet::TargetMatch& m, const std::string& name, const TensorView& t);
  Result<std::vector<OwnedTensor>> TransposeWhole(const RuleSet::TransposeMatch& m, const std::string& name,
                                                  const TensorView& t);
};

StreamingConverter::StreamingConverter(std::unique_ptr<State> s) : s_(std::move(s)) {}
StreamingConverter::StreamingConverter(StreamingConverter&&) noexcept = default;
StreamingConverter& StreamingConverter::operator=(StreamingConverter&&) noexcept = default;
StreamingConverter::~StreamingConverter() = default;

Result<StreamingConverter> StreamingConverter::Create(RuleSet rules, ModelConfig config, Direction direction,
                                                      SourceLayout source_layout) {
  auto s = std::make_unique<State>(State{std::move(rules), std::move(config), direction, source_layout, {}, {}});
  return StreamingConverter(std::move(s));
}

bool StreamingConverter::CanHandle(std::string_view name) const {
  const std::string n = s_->rules.Rename(name, Direction::kToFused);
  if (s_->direction == Direction::kToFused) {
    // Leftovers are "handled" so that Convert can refuse them.
    return s_->rules.MatchSource(n) || s_->rules.MatchExpertLeftover(n) || s_->rules.MatchTranspose(n);
  }
  return s_->rules.MatchTarget(n) || s_->rules.MatchTranspose(n);
}

std::string StreamingConverter::Rename(std::string_view name) const { return s_->rules.Rename(name, s_->direction); }

uint64_t StreamingConverter::pending_bytes() const {
  uint64_t n = 0;
  for (const auto& [k, p] : s_->pending) n += p.out.nbytes;
  return n;
}

Result<std::vector<OwnedTensor>> StreamingConverter::Convert(std::string_view name, const TensorView& t) {
  auto n_el = NumElements(t.shape);
  auto n_bytes = n_el ? ByteSize(t.dtype, *n_el) : std::nullopt;
  if (!n_bytes || *n_bytes != t.nbytes || (t.nbytes && !t.data)) {
    return Status::InvalidArgument("'" + std::string(name) + "': " + std::to_string(t.nbytes) + " bytes do not match " +
                                   std::string(DTypeName(t.dtype)) + " " + internal::ShapeString(t.shape));
  }
  const std::string n = s_->rules.Rename(name, Direction::kToFused);
  if (s_->direction == Direction::kToFused) {
    if (auto m = s_->rules.MatchSource(n)) return s_->Fuse(*m, std::string(name), t);
    if (auto m = s_->rules.MatchExpertLeftover(n)) {
      return Status::Corrupt("'" + std::string(name) + "' belongs to expert " + std::to_string(m->expert) +
                             " but no fusion of the " + s_->rules.family() +
                             " rules takes it; it cannot stay per-expert beside fused experts");
    }
  } else if (auto m = s_->rules.MatchTarget(n)) {
    return s_->Split(*m, std::string(name), t);
  }
  if (auto m = s_->rules.MatchTranspose(n)) return s_->TransposeWhole(*m, std::string(name), t);
  return Status::InvalidArgument("'" + std::string(name) + "' is not converted by the " + s_->rules.family() +
                                 " rules (check CanHandle first)");
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::Fuse(const RuleSet::SourceMatch& m,
                                                                 const std::string& name, const TensorView& t) {
  const FusionRule& f = rules.fusions()[m.fusion];
  const uint64_t K = f.sources.size();
  auto key = std::make_pair(m.fusion, m.prefix);
  auto it = pending.find(key);
  if (it == pending.end()) {
    if (finished.count(key)) {
      return Status::Corrupt(Label(m.fusion, m.prefix) + ": expert " + std::to_string(m.expert) + " " +
                             SourceLabel(m.fusion, m.source) + " arrived after the fused tensor was complete ('" +
                             name + "')");
    }
    MOEPACK_ASSIGN_OR_RETURN(int64_t E, rules.NumExperts(config, m.prefix));
    MOEPACK_RETURN_IF_ERROR(rules.CheckSourceShape(config, m.fusion, m.prefix, t.shape, "'" + name + "'"));
    Pending p;
    p.fusion = m.fusion;
    p.prefix = m.prefix;
    p.dtype = t.dtype;
    p.source_shape = t.shape;
    p.experts = static_cast<uint64_t>(E);
    p.arrived.assign(p.experts * K, 0);
    p.out.name = rules.TargetName(m.fusion, m.prefix);
    p.out.dtype = t.dtype;
    if (f.transpose) {
      if (t.shape.size() != 2 || DTypeBits(t.dtype) % 8) {
        return Status::Corrupt(p.out.name + ": fusion \"" + f.name + "\" transposes 2-D byte-sized sources, got '" +
                               name + "' " + internal::ShapeString(t.shape));
      }
      p.geo = internal::ConcatGeometry{1, t.nbytes, K};
    } else {
      auto geo = internal::Geometry(t.shape, t.dtype, K, f.concat_dim - 1);
      if (!geo.ok()) return Status::Corrupt(p.out.name + ": fusion \"" + f.name + "\": " + geo.status().message());
      p.geo = *geo;
    }
    p.out.shape = FusedShape(f, p.experts, t.shape);
    p.out.nbytes = p.experts * p.geo.slice_bytes();
    it = pending.emplace(key, std::move(p)).first;
  }
  Pending& p = it->second;
  const std::string label = Label(m.fusion, m.prefix);
  if (static_cast<uint64_t>(m.expert) >= p.experts) {
    return Status::Corrupt(label + ": expert " + std::to_string(m.expert) + " is out of range: config.json says " +
                           std::to_string(p.experts) + " experts ('" + name + "')");
  }
  if (t.dtype != p.dtype || t.shape != p.source_shape) {
    return Status::Corrupt(label + ": expert " + std::to_string(m.expert) + " " + SourceLabel(m.fusion, m.source) +
                           " is " + std::string(DTypeName(t.dtype)) + " " + internal::ShapeString(t.shape) + ", expected " +
                           std::string(DTypeName(p.dtype)) + " " + internal::ShapeString(p.source_shape));
  }
  uint8_t& slot = p.arrived[static_cast<uint64_t>(m.expert) * K + m.source];
  if (slot) {
    return Status::Corrupt(label + ": expert " + std::to_string(m.expert) + " " + SourceLabel(m.fusion, m.source) +
                           " arrived twice ('" + name + "')");
  }
  // Allocated at the first copy, not at creation, so a failed check above
  // never leaves a large allocation behind.
  if (!p.out.data) p.out.data = Allocate(p.out.nbytes);
  const auto* src = static_cast<const uint8_t*>(t.data);
  const uint64_t j = static_cast<uint64_t>(m.expert), k = static_cast<uint64_t>(m.source);
  if (f.transpose) {
    internal::Transpose(src, p.out.data.get() + p.geo.Offset(j, k, 0), t.shape[0], t.shape[1],
                        static_cast<uint32_t>(DTypeBits(t.dtype) / 8));
  } else {
    for (uint64_t o = 0; o < p.geo.outer; ++o) {
      std::memcpy(p.out.data.get() + p.geo.Offset(j, k, o), src + o * p.geo.chunk_bytes, p.geo.chunk_bytes);
    }
  }
  slot = 1;
  std::vector<OwnedTensor> done;
  if (++p.count == p.experts * K) {
    finished[it->first] = p.dtype;
    done.push_back(std::move(p.out));
    pending.erase(it);
  }
  return done;
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::Split(const RuleSet::TargetMatch& m,
                                                                  const std::string& name, const TensorView& t) {
  const FusionRule& f = rules.fusions()[m.fusion];
  const uint64_t K = f.sources.size();
  MOEPACK_ASSIGN_OR_RETURN(int64_t E, rules.NumExperts(config, m.prefix));
  if (t.shape.size() < 2 || t.shape[0] != static_cast<uint64_t>(E)) {
    return Status::Corrupt("'" + name + "': fused shape " + internal::ShapeString(t.shape) + " does not start with the " +
                           std::to_string(E) + " experts that config.json declares");
  }
  MOEPACK_RETURN_IF_ERROR(rules.CheckFusedShape(config, m.fusion, m.prefix, E, t.shape, "'" + name + "'"));
  std::vector<uint64_t> per(t.shape.begin() + 1, t.shape.end());
  const size_t axis = f.transpose ? 0 : static_cast<size_t>(f.concat_dim - 1);
  if (axis >= per.size() || per[axis] % K || (f.transpose && (per.size() != 2 || DTypeBits(t.dtype) % 8))) {
    return Status::Corrupt("'" + name + "': shape " + internal::ShapeString(t.shape) + " cannot be split by fusion \"" + f.name + "\"");
  }
  per[axis] /= K;
  const std::vector<uint64_t> piece = f.transpose ? std::vector<uint64_t>{per[1], per[0]} : per;
  MOEPACK_ASSIGN_OR_RETURN(auto geo, internal::Geometry(piece, t.dtype, K, f.transpose ? 0 : static_cast<int>(axis)));
  finished[{m.fusion, m.prefix}] = t.dtype;
  const auto* src = static_cast<const uint8_t*>(t.data);
  std::vector<OwnedTensor> out;
  for (uint64_t j = 0; j < static_cast<uint64_t>(E); ++j) {
    for (uint64_t k = 0; k < K; ++k) {
      OwnedTensor o;
      o.name = rules.Rename(rules.SourceName(m.fusion, static_cast<int>(k), m.prefix, static_cast<int64_t>(j)),
                            Direction::kToPerExpert);
      o.dtype = t.dtype;
      o.shape = piece;
      o.nbytes = geo.outer * geo.chunk_bytes;
      o.data = Allocate(o.nbytes);
      if (f.transpose) {
        internal::Transpose(src + geo.Offset(j, k, 0), o.data.get(), per[0], per[1],
                            static_cast<uint32_t>(DTypeBits(t.dtype) / 8));
      } else {
        for (uint64_t r = 0; r < geo.outer; ++r) {
          std::memcpy(o.data.get() + r * geo.chunk_bytes, src + geo.Offset(j, k, r), geo.chunk_bytes);
        }
      }
      out.push_back(std::move(o));
    }
  }
  return out;
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::TransposeWhole(const RuleSet::TransposeMatch& m,
                                                                           const std::string& name,
                                                                           const TensorView& t) {
  const TransposeRule& r = rules.transposes()[m.rule];
  MOEPACK_ASSIGN_OR_RETURN(int64_t E, rules.NumExperts(config, m.prefix));
  MOEPACK_ASSIGN_OR_RETURN(auto hub, rules.EvalShape(config, r.hub_shape, E, m.prefix));
  MOEPACK_ASSIGN_OR_RETURN(auto v5, rules.EvalShape(config, r.v5_shape, E, m.prefix));
  const bool is_hub = t.shape == hub, is_v5 = t.shape == v5;
  if (!is_hub && !is_v5) {
    return Status::Corrupt("'" + name + "': shape " + internal::ShapeString(t.shape) + " is neither the Hub layout " +
                           internal::ShapeString(hub) + " nor the v5 layout " + internal::ShapeString(v5));
  }
  bool from_hub = is_hub;
  if (layout != SourceLayout::kUnspecified) {
    from_hub = layout == SourceLayout::kHub;
    if ((from_hub && !is_hub) || (!from_hub && !is_v5)) {
      return Status::InvalidArgument("'" + name + "': shape " + internal::ShapeString(t.shape) + " is not the layout that the source layout names");
    }
  } else if (is_hub && is_v5) {
    return Status::InvalidArgument("'" + name + "': shape " + internal::ShapeString(t.shape) +
                                   " fits both the Hub and the v5 layout; say which (source layout hf or v5)");
  }
  OwnedTensor o;
  o.name = rules.Rename(name, direction);
  o.dtype = t.dtype;
  o.nbytes = t.nbytes;
  o.data = Allocate(t.nbytes);
  const bool want_hub = direction == Direction::kToPerExpert;
  if (from_hub == want_hub) {
    o.shape = t.shape;
    std::memcpy(o.data.get(), t.data, t.nbytes);
  } else {
    o.shape = {t.shape[0], t.shape[2], t.shape[1]};
    const uint64_t slice = t.shape[0] ? t.nbytes / t.shape[0] : 0;
    for (uint64_t j = 0; j < t.shape[0]; ++j) {
      internal::Transpose(static_cast<const uint8_t*>(t.data) + j * slice, o.data.get() + j * slice, t.shape[1],
                          t.shape[2], static_cast<uint32_t>(DTypeBits(t.dtype) / 8));
    }
  }
  std::vector<OwnedTensor> out;
  out.push_back(std::move(o));
  return out;
}

Result<std::vector<OwnedTensor>> StreamingConverter::Finalize() {
  std::string problems;
  for (const auto& [key, p] : s_->pending) {
    const uint64_t K = s_->rules.fusions()[p.fusion].sources.size();
    std::string line = p.out.name + " incomplete (" + std::to_string(p.experts) + " experts):";
    for (uint64_t k = 0; k < K; ++k) {
      line += " " + s_->SourceLabel(p.fusion, static_cast<int>(k)) + " arrived for experts " + Arrived(p.arrived, K, k) + ";";
    }
    problems += (problems.empty() ? "" : " ") + line;
  }
  // A scale needs its weight; an 8-bit float weight needs its scale.
  const auto& fs = s_->rules.fusions();
  for (size_t f = 0; f < fs.size() && problems.empty(); ++f) {
    if (fs[f].scale_of.empty()) continue;
    int w = -1;
    for (size_t g = 0; g < fs.size(); ++g) {
      if (fs[g].name == fs[f].scale_of) w = static_cast<int>(g);
    }
    for (const auto& [key, dtype] : s_->finished) {
      if (key.first == static_cast<int>(f) && !s_->finished.count({w, key.second})) {
        problems += s_->rules.TargetName(static_cast<int>(f), key.second) + " has no " + fs[f].scale_of + " weights. ";
      }
      if (key.first == w && IsFloat8(dtype) && !s_->finished.count({static_cast<int>(f), key.second})) {
        problems += s_->rules.TargetName(w, key.second) + " is " + std::string(DTypeName(dtype)) +
                    " but has no weight_scale_inv scales. ";
      }
    }
  }
  if (!problems.empty()) return Status::Corrupt("conversion incomplete: " + problems);
  return std::vector<OwnedTensor>{};
}

Result<std::map<std::string, std::string>> FusedWeightMap(const std::map<std::string, std::string>& weight_map,
                                                          const RuleSet& rules) {
  std::map<std::string, std::string> out;
  std::map<std::string, std::pair<std::pair<int64_t, int>, std::string>> lowest;  // fused -> ((expert, source), file)
  for (const auto& [name, file] : weight_map) {
    const std::string n = rules.Rename(name, Direction::kToFused);
    if (auto m = rules.MatchSource(n)) {
      const std::string target = rules.TargetName(m->fusion, m->prefix);
      auto key = std::make_pair(m->expert, m->source);
      auto it = lowest.find(target);
      if (it == lowest.end() || key < it->second.first) lowest[target] = {key, file};
      continue;
    }
    if (!out.emplace(n, file).second) return Status::Corrupt("weight_map: two tensors become '" + n + "'");
  }
  for (const auto& [target, v] : lowest) {
    if (!out.emplace(target, v.second).second) {
      return Status::Corrupt("weight_map: '" + target + "' is both fused from experts and listed itself");
    }
  }
  return out;
}

}  // namespace moepack
