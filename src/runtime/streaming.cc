#include "moepack/streaming.h"

#include <cstring>
#include <map>

#include "plan/ops/chunk_op.h"
#include "plan/ops/dtype_op.h"
#include "plan/ops/fusion_op.h"
#include "plan/ops/scales.h"
#include "plan/ops/transpose_op.h"
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
  DTypeChange dtype;
  // One half of a quantized pair, by v5 name, until the other arrives.
  struct Held {
    std::string name;
    DType dtype;
    std::vector<uint64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Held> held;
  struct Pending {
    int fusion;
    ops::FusionOp op;
    std::string first;  // the source the op was made from, for messages
    std::vector<uint8_t> arrived;  // [expert * K + source]
    uint64_t count = 0;
    OwnedTensor out;
  };
  std::map<std::pair<int, std::string>, Pending> pending;
  ops::FusedTensors finished;
  // Chunk parts joined back into the Hub's one tensor (to per-expert).
  struct PendingChunk {
    ops::ChunkOp op;
    std::string first;
    std::vector<uint8_t> arrived;
    uint64_t count = 0;
    OwnedTensor out;
  };
  std::map<std::pair<int, std::string>, PendingChunk> chunks;

  std::string Label(int fusion, const std::string& prefix) const { return rules.TargetName(fusion, prefix); }
  std::string SourceLabel(int fusion, int k) const { return rules.SourceLeaf(fusion, k); }
  Result<std::vector<OwnedTensor>> Fuse(const RuleSet::SourceMatch& m, const std::string& name, const TensorView& t);
  Result<std::vector<OwnedTensor>> Split(const RuleSet::TargetMatch& m, const std::string& name, const TensorView& t);
  Result<std::vector<OwnedTensor>> TransposeWhole(const RuleSet::TransposeMatch& m, const std::string& name,
                                                  const TensorView& t);
  Result<std::vector<OwnedTensor>> ChunkSplit(const RuleSet::ChunkMatch& m, const std::string& name,
                                              const TensorView& t);
  Result<std::vector<OwnedTensor>> ChunkJoin(const RuleSet::ChunkMatch& m, const std::string& name,
                                             const TensorView& t);
  // The name in v5's vocabulary, whichever layout the tensor arrives in.
  std::string V5(std::string_view name) const { return rules.Rename(name, Direction::kToFused); }
  ops::QuantPart PartOf(std::string_view name, DType dtype) const {
    return dtype_change() ? ops::QuantPartOf(V5(name), dtype) : ops::QuantPart::kNone;
  }
  bool dtype_change() const { return dtype != DTypeChange::kKeep; }
  bool HandlesLayout(const std::string& v5) const;
  Result<std::vector<OwnedTensor>> ConvertLayout(const std::string& name, const TensorView& t);
  // A tensor no rule converts, handed back under its output name.
  std::vector<OwnedTensor> PassThrough(const std::string& name, const TensorView& t) const;
  Result<std::vector<OwnedTensor>> Dequantize(const std::string& name, const TensorView& t, ops::QuantPart part);
};

StreamingConverter::StreamingConverter(std::unique_ptr<State> s) : s_(std::move(s)) {}
StreamingConverter::StreamingConverter(StreamingConverter&&) noexcept = default;
StreamingConverter& StreamingConverter::operator=(StreamingConverter&&) noexcept = default;
StreamingConverter::~StreamingConverter() = default;

Result<StreamingConverter> StreamingConverter::Create(RuleSet rules, ModelConfig config, Direction direction,
                                                      SourceLayout source_layout, DTypeChange dtype) {
  if (dtype == DTypeChange::kToFP8) {
    return Status::InvalidArgument("the streaming converter dequantizes; it does not quantize to fp8");
  }
  MOEPACK_ASSIGN_OR_RETURN(RuleSet bound, rules.Bind(config));
  auto s = std::make_unique<State>(
      State{std::move(bound), std::move(config), direction, source_layout, dtype, {}, {}, {}, {}});
  return StreamingConverter(std::move(s));
}

bool StreamingConverter::CanHandle(std::string_view name) const {
  // Dequantizing, every tensor: an F8_E4M3 weight is known as one only by
  // its dtype, which Convert sees.
  if (s_->dtype_change()) return true;
  return s_->HandlesLayout(s_->V5(name));
}

bool StreamingConverter::State::HandlesLayout(const std::string& n) const {
  const RuleSet& r = rules;
  if (r.MatchTranspose(n)) return true;
  auto c = r.MatchChunk(n);
  if (direction == Direction::kToFused) {
    // Leftovers are "handled" so that Convert can refuse them.
    return r.MatchSource(n) || r.MatchExpertLeftover(n) || (c && c->part < 0);
  }
  // So are fused tensors in a form the rules cannot cut.
  return r.MatchTarget(n) || r.MatchTargetSibling(n) || (c && c->part >= 0);
}

std::string StreamingConverter::Rename(std::string_view name) const {
  return s_->rules.Rename(s_->V5(name), s_->direction);
}

uint64_t StreamingConverter::pending_bytes() const {
  uint64_t n = 0;
  for (const auto& [k, p] : s_->pending) n += p.out.nbytes;
  for (const auto& [k, p] : s_->chunks) n += p.out.nbytes;
  for (const auto& [k, h] : s_->held) n += h.bytes.size();
  return n;
}

Result<std::vector<OwnedTensor>> StreamingConverter::Convert(std::string_view name, const TensorView& t) {
  auto n_el = NumElements(t.shape);
  auto n_bytes = n_el ? ByteSize(t.dtype, *n_el) : std::nullopt;
  if (!n_bytes || *n_bytes != t.nbytes || (t.nbytes && !t.data)) {
    return Status::InvalidArgument("'" + std::string(name) + "': " + std::to_string(t.nbytes) + " bytes do not match " +
                                   std::string(DTypeName(t.dtype)) + " " + internal::ShapeString(t.shape));
  }
  if (const ops::QuantPart part = s_->PartOf(name, t.dtype); part != ops::QuantPart::kNone) {
    return s_->Dequantize(std::string(name), t, part);
  }
  if (s_->dtype_change() && !s_->HandlesLayout(s_->V5(name))) return s_->PassThrough(std::string(name), t);
  return s_->ConvertLayout(std::string(name), t);
}

// An FP8 weight and its scales, or MXFP4 blocks and scales: the first to
// arrive is held, the second completes the pair, and the dequantized
// tensor goes on under the weight's name.
Result<std::vector<OwnedTensor>> StreamingConverter::State::Dequantize(const std::string& name, const TensorView& t,
                                                                       ops::QuantPart part) {
  const std::string v5 = V5(name);
  auto other = held.find(ops::PartnerOf(v5, part));
  if (other == held.end()) {
    if (held.count(v5)) return Status::Corrupt("'" + name + "' arrived twice");
    Held h{name, t.dtype, t.shape, std::vector<uint8_t>(t.nbytes)};
    if (t.nbytes) std::memcpy(h.bytes.data(), t.data, t.nbytes);
    held.emplace(v5, std::move(h));
    return std::vector<OwnedTensor>{};
  }
  const bool weight_first = part == ops::QuantPart::kFP8Scales || part == ops::QuantPart::kMXFP4Scales;
  const Held& o = other->second;
  // File 0 is the weight (or blocks), file 1 its scales.
  const uint8_t* bytes[2] = {weight_first ? o.bytes.data() : static_cast<const uint8_t*>(t.data),
                             weight_first ? static_cast<const uint8_t*>(t.data) : o.bytes.data()};
  const ops::StoredTensor w{weight_first ? o.name : name, 0, 0, weight_first ? o.dtype : t.dtype,
                            weight_first ? o.shape : t.shape};
  const ops::StoredTensor sc{weight_first ? name : o.name, 1, 0, weight_first ? t.dtype : o.dtype,
                             weight_first ? t.shape : o.shape};
  const std::string wv5 = V5(w.name);
  const ops::QuantPart wpart = ops::QuantPartOf(wv5, w.dtype);
  const DType out = ops::TargetFloat(dtype);
  Result<ComputedSource> c = [&]() -> Result<ComputedSource> {
    if (wpart == ops::QuantPart::kMXFP4Blocks) return ops::DequantMXFP4(w, sc, out);
    MOEPACK_ASSIGN_OR_RETURN(uint64_t units, ops::QuantizedMatrices(rules, wv5, w.shape));
    auto m = rules.MatchTarget(wv5);
    const auto [br, bc] = ops::FP8Block(rules, &config, m ? std::string_view(m->prefix) : std::string_view());
    return ops::DequantFP8(w, sc, units, br, bc, out);
  }();
  if (!c.ok()) return c.status();
  auto data = Allocate(c->nbytes);
  MOEPACK_RETURN_IF_ERROR(ops::ReadComputed(*c, 0, c->nbytes, data.get(),
                                            [&](uint32_t f, uint64_t off, uint64_t len, void* dst) {
                                              std::memcpy(dst, bytes[f] + off, len);
                                              return Status::OK();
                                            }));
  held.erase(other);
  const size_t cut = wv5.size() - ops::DequantizedName(wv5, wpart).size();
  const std::string out_name = w.name.substr(0, w.name.size() - cut);
  const TensorView view{c->dtype, c->shape, data.get(), c->nbytes};
  if (!HandlesLayout(V5(out_name))) return PassThrough(out_name, view);
  return ConvertLayout(out_name, view);
}

std::vector<OwnedTensor> StreamingConverter::State::PassThrough(const std::string& name, const TensorView& t) const {
  OwnedTensor o{rules.Rename(V5(name), direction), t.dtype, t.shape, Allocate(t.nbytes), t.nbytes};
  if (t.nbytes) std::memcpy(o.data.get(), t.data, t.nbytes);
  std::vector<OwnedTensor> out;
  out.push_back(std::move(o));
  return out;
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::ConvertLayout(const std::string& name,
                                                                          const TensorView& t) {
  const std::string n = V5(name);
  const RuleSet& r = rules;
  if (direction == Direction::kToFused) {
    if (auto m = r.MatchSource(n)) return Fuse(*m, std::string(name), t);
    if (auto m = r.MatchExpertLeftover(n)) {
      return Status::Corrupt("'" + std::string(name) + "' belongs to expert " + std::to_string(m->expert) +
                             " but no fusion of the " + r.family() +
                             " rules takes it; it cannot stay per-expert beside fused experts");
    }
    if (auto m = r.MatchChunk(n); m && m->part < 0) return ChunkSplit(*m, std::string(name), t);
  } else {
    if (auto m = r.MatchTarget(n)) return Split(*m, std::string(name), t);
    if (auto m = r.MatchChunk(n); m && m->part >= 0) return ChunkJoin(*m, std::string(name), t);
    if (auto m = r.MatchTargetSibling(n)) {
      return Status::InvalidArgument("'" + std::string(name) + "' is another form of the fused tensor '" +
                                     r.TargetName(m->fusion, m->prefix) + "' that the " + r.family() +
                                     " rules cannot cut into experts");
    }
  }
  if (auto m = r.MatchTranspose(n)) return TransposeWhole(*m, std::string(name), t);
  return Status::InvalidArgument("'" + std::string(name) + "' is not converted by the " + rules.family() +
                                 " rules (check CanHandle first)");
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::Fuse(const RuleSet::SourceMatch& m,
                                                                 const std::string& name, const TensorView& t) {
  const uint64_t K = rules.fusions()[m.fusion].sources.size();
  auto key = std::make_pair(m.fusion, m.prefix);
  auto it = pending.find(key);
  if (it == pending.end()) {
    if (finished.count(key)) {
      return Status::Corrupt(Label(m.fusion, m.prefix) + ": expert " + std::to_string(m.expert) + " " +
                             SourceLabel(m.fusion, m.source) + " arrived after the fused tensor was complete ('" +
                             name + "')");
    }
    MOEPACK_ASSIGN_OR_RETURN(int64_t E, rules.NumExperts(config, m.prefix, m.fusion));
    MOEPACK_ASSIGN_OR_RETURN(ops::FusionOp op, ops::FuseOf(rules, config, m.fusion, m.prefix, static_cast<uint64_t>(E),
                                                           t.dtype, t.shape, "'" + name + "'"));
    Pending p{m.fusion, std::move(op), "expert " + std::to_string(m.expert) + " " + SourceLabel(m.fusion, m.source),
              std::vector<uint8_t>(static_cast<uint64_t>(E) * K, 0), 0, {}};
    p.out.name = rules.TargetName(m.fusion, m.prefix);
    p.out.dtype = t.dtype;
    p.out.shape = p.op.fused_shape();
    p.out.nbytes = p.op.fused_bytes();
    it = pending.emplace(key, std::move(p)).first;
  }
  Pending& p = it->second;
  const std::string label = Label(m.fusion, m.prefix);
  if (static_cast<uint64_t>(m.expert) >= p.op.experts()) {
    return Status::Corrupt(label + ": expert " + std::to_string(m.expert) + " is out of range: config.json says " +
                           std::to_string(p.op.experts()) + " experts ('" + name + "')");
  }
  MOEPACK_RETURN_IF_ERROR(p.op.CheckSource(
      t.dtype, t.shape, label + ": expert " + std::to_string(m.expert) + " " + SourceLabel(m.fusion, m.source), p.first));
  const uint64_t j = static_cast<uint64_t>(m.expert), k = static_cast<uint64_t>(m.source);
  uint8_t& slot = p.arrived[j * K + k];
  if (slot) {
    return Status::Corrupt(label + ": expert " + std::to_string(m.expert) + " " + SourceLabel(m.fusion, m.source) +
                           " arrived twice ('" + name + "')");
  }
  // Allocated at the first copy, not at creation, so a failed check above
  // never leaves a large allocation behind.
  if (!p.out.data) p.out.data = Allocate(p.out.nbytes);
  ops::Apply(p.op.SourceInFused(j, k), t.data, p.out.data.get());
  slot = 1;
  std::vector<OwnedTensor> done;
  if (++p.count == p.op.experts() * K) {
    finished[it->first] = p.op.dtype();
    done.push_back(std::move(p.out));
    pending.erase(it);
  }
  return done;
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::Split(const RuleSet::TargetMatch& m,
                                                                  const std::string& name, const TensorView& t) {
  MOEPACK_ASSIGN_OR_RETURN(int64_t E, rules.NumExperts(config, m.prefix, m.fusion));
  MOEPACK_ASSIGN_OR_RETURN(ops::FusionOp op, ops::CutOf(rules, config, m.fusion, m.prefix, static_cast<uint64_t>(E),
                                                        t.dtype, t.shape, "'" + name + "'"));
  finished[{m.fusion, m.prefix}] = t.dtype;
  std::vector<OwnedTensor> out;
  for (uint64_t j = 0; j < op.experts(); ++j) {
    for (uint64_t k = 0; k < op.sources(); ++k) {
      OwnedTensor o;
      o.name = rules.HubSourceName(m.fusion, static_cast<int>(k), m.prefix, static_cast<int64_t>(j));
      o.dtype = t.dtype;
      o.shape = op.source_shape();
      o.nbytes = op.source_bytes();
      o.data = Allocate(o.nbytes);
      ops::Apply(op.SourceInFused(j, k).Inverse(), t.data, o.data.get());
      out.push_back(std::move(o));
    }
  }
  return out;
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::TransposeWhole(const RuleSet::TransposeMatch& m,
                                                                           const std::string& name,
                                                                           const TensorView& t) {
  MOEPACK_ASSIGN_OR_RETURN(ops::TransposeOp op,
                           ops::TransposeOp::Make(rules, m.rule, config, m.prefix, name, t.dtype, t.shape, layout,
                                                  ops::TargetOrientation(direction)));
  OwnedTensor o;
  o.name = rules.Rename(V5(name), direction);
  o.dtype = t.dtype;
  o.shape = op.output_shape();
  o.nbytes = t.nbytes;
  o.data = Allocate(t.nbytes);
  if (!op.changes()) {
    std::memcpy(o.data.get(), t.data, t.nbytes);
  } else {
    for (uint64_t j = 0; j < op.experts(); ++j) ops::Apply(op.Expert(j), t.data, o.data.get());
  }
  std::vector<OwnedTensor> out;
  out.push_back(std::move(o));
  return out;
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::ChunkSplit(const RuleSet::ChunkMatch& m,
                                                                       const std::string& name, const TensorView& t) {
  const ChunkRule& c = rules.chunks()[m.rule];
  auto op = ops::ChunkOp::FromWhole(c, t.dtype, t.shape);
  if (!op.ok()) return op.status().WithPrefix("'" + name + "'");
  std::vector<OwnedTensor> out;
  for (uint64_t k = 0; k < op->parts(); ++k) {
    OwnedTensor o;
    o.name = rules.ChunkName(m.rule, static_cast<int>(k), m.prefix);
    o.dtype = t.dtype;
    o.shape = op->part_shape();
    o.nbytes = op->part_bytes();
    o.data = Allocate(o.nbytes);
    ops::Apply(op->PartInWhole(k).Inverse(), t.data, o.data.get());
    out.push_back(std::move(o));
  }
  return out;
}

Result<std::vector<OwnedTensor>> StreamingConverter::State::ChunkJoin(const RuleSet::ChunkMatch& m,
                                                                      const std::string& name, const TensorView& t) {
  const ChunkRule& c = rules.chunks()[m.rule];
  auto key = std::make_pair(m.rule, m.prefix);
  auto it = chunks.find(key);
  if (it == chunks.end()) {
    auto op = ops::ChunkOp::FromPart(c, t.dtype, t.shape);
    if (!op.ok()) return op.status().WithPrefix("'" + name + "'");
    PendingChunk p{std::move(op).value(), "'" + name + "'", std::vector<uint8_t>(c.targets.size(), 0), 0, {}};
    p.out.name = rules.Rename(rules.ChunkName(m.rule, -1, m.prefix), Direction::kToPerExpert);
    p.out.dtype = t.dtype;
    p.out.shape = p.op.whole_shape();
    p.out.nbytes = p.op.whole_bytes();
    it = chunks.emplace(key, std::move(p)).first;
  }
  PendingChunk& p = it->second;
  MOEPACK_RETURN_IF_ERROR(p.op.CheckPart(t.dtype, t.shape, "'" + name + "'", p.first));
  if (p.arrived[m.part]) return Status::Corrupt("'" + name + "' arrived twice (chunk \"" + c.name + "\")");
  if (!p.out.data) p.out.data = Allocate(p.out.nbytes);
  ops::Apply(p.op.PartInWhole(static_cast<uint64_t>(m.part)), t.data, p.out.data.get());
  p.arrived[m.part] = 1;
  std::vector<OwnedTensor> done;
  if (++p.count == p.op.parts()) {
    done.push_back(std::move(p.out));
    chunks.erase(it);
  }
  return done;
}

Result<std::vector<OwnedTensor>> StreamingConverter::Finalize() {
  std::string problems;
  for (const auto& [key, p] : s_->pending) {
    const uint64_t K = p.op.sources();
    std::string line = p.out.name + " incomplete (" + std::to_string(p.op.experts()) + " experts):";
    for (uint64_t k = 0; k < K; ++k) {
      line += " " + s_->SourceLabel(p.fusion, static_cast<int>(k)) + " arrived for experts " + Arrived(p.arrived, K, k) + ";";
    }
    problems += (problems.empty() ? "" : " ") + line;
  }
  for (const auto& [key, p] : s_->chunks) {
    problems += (problems.empty() ? "" : " ") + p.out.name + " incomplete: " + std::to_string(p.count) + " of " +
                std::to_string(p.op.parts()) + " parts arrived;";
  }
  for (const auto& [v5, h] : s_->held) {
    problems += (problems.empty() ? "" : " ") + std::string("'") + h.name + "' arrived without its '" +
                ops::PartnerOf(v5, ops::QuantPartOf(v5, h.dtype)) + "';";
  }
  if (problems.empty()) {
    for (const std::string& p : ops::ScaleProblems(s_->rules, s_->finished)) problems += p + ". ";
  }
  if (!problems.empty()) return Status::Corrupt("conversion incomplete: " + problems);
  return std::vector<OwnedTensor>{};
}

}  // namespace moepack
