// Canonical pieces are named in the v5 (post-rename) vocabulary: a
// per-expert source is its own piece; a fused tensor is cut back into its
// per-expert, per-source pieces; a transposable tensor is cut per expert and
// hashed in v5 orientation. Equal piece sets mean equal content.
#include "moepack/verify.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <array>
#include <cmath>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "format/decode.h"
#include "moepack/convert.h"
#include "moepack/natural_order.h"
#include "moepack/parse.h"
#include "plan/ops/chunk_op.h"
#include "plan/ops/fusion_op.h"
#include "plan/ops/transpose_kernel.h"
#include "plan/ops/transpose_op.h"
#include "util/file.h"
#include "util/strings.h"
#include "plan/ops/dtype_op.h"
#include "verify/moe_reference.h"
#include "verify/reference_dtype.h"

namespace moepack {
namespace {

using internal::File;

struct Piece {
  std::string key;    // canonical name
  std::string where;  // tensor (and expert) in its own checkpoint, for messages
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  uint32_t file = 0;
  uint64_t begin = 0;  // absolute offset of the tensor it is cut from
  ops::Pieces geometry;  // that tensor's bytes -> the piece's canonical bytes
  XXH128_hash_t hash{};
  // A dtype change, computed by verify's own arithmetic (reference_dtype)
  // before hashing; `dtype` is then what comes out.
  enum class Compute { kNone, kDequantFP8, kDequantMXFP4, kQuantCodes, kQuantScales };
  Compute compute = Compute::kNone;
  DType stored = DType::U8;     // what the geometry reads
  int scale = -1;               // kDequantFP8: the piece holding this one's scales
  uint64_t block_rows = 0, block_cols = 0;
  // kDequantMXFP4: the whole stored tensor, blocks [E, rows, groups, 16]
  // (at `begin`) and scales [E, rows, groups]; the geometry reads the
  // decoded [E, groups*32, rows].
  uint32_t mx_scales_file = 0;
  uint64_t mx_scales = 0, mx_rows = 0, mx_groups = 0;
  uint64_t mat_rows = 0, mat_cols = 0;  // kQuant*: the float matrix quantized
  bool consumed = false;  // a scale piece folded into its weight's
};

struct Side {
  std::vector<File> files;
  std::vector<Piece> pieces;
};

class Cutter {
 public:
  Cutter(const Checkpoint& c, const RuleSet& rules, SourceLayout layout, DTypeChange change = DTypeChange::kKeep,
         const ModelConfig* quant_config = nullptr)
      : c_(c), rules_(rules), layout_(layout), change_(change), quant_config_(quant_config) {}

  Result<Side> Cut() {
    Side side;
    for (const Shard& s : c_.shards()) {
      MOEPACK_ASSIGN_OR_RETURN(File f, File::OpenRead(s.path));
      side.files.push_back(std::move(f));
    }
    for (const std::string& name : c_.names()) {
      const TensorLocation* loc = c_.Find(name);
      const uint64_t begin = c_.shards()[loc->shard].header.data_start() + loc->info->begin;
      MOEPACK_RETURN_IF_ERROR(CutTensor(name, *loc->info, loc->shard, begin, side.pieces));
    }
    if (change_ != DTypeChange::kKeep) MOEPACK_RETURN_IF_ERROR(ChangeDTypes(side.pieces));
    return side;
  }

 private:
  Status CutTensor(const std::string& name, const TensorInfo& stored, uint32_t file, uint64_t begin,
                   std::vector<Piece>& out) {
    std::string v5 = rules_.Rename(name, Direction::kToFused);
    TensorInfo t = stored;
    const size_t first = out.size();
    // Dequantizing MXFP4: X_blocks is cut as the X it decodes to; X_scales
    // is read with it.
    const ops::QuantPart part = IsDequant() ? ops::QuantPartOf(v5, t.dtype) : ops::QuantPart::kNone;
    const TensorLocation* mx_scales = nullptr;
    if (part == ops::QuantPart::kMXFP4Scales) return Status::OK();
    if (part == ops::QuantPart::kMXFP4Blocks) {
      mx_scales = c_.Find(rules_.Rename(ops::PartnerOf(v5, part), Direction::kToPerExpert));
      if (!mx_scales || t.shape.size() != 4) return Status::Corrupt("'" + name + "': MXFP4 blocks without their scales");
      v5 = ops::DequantizedName(v5, part);
      t.dtype = ops::TargetFloat(change_);
      t.shape = {stored.shape[0], stored.shape[2] * 32, stored.shape[1]};
      t.begin = 0;
      t.end = t.shape[0] * t.shape[1] * t.shape[2] * static_cast<uint64_t>(DTypeBits(t.dtype) / 8);
    }
    auto piece = [&](std::string key, std::string where, std::vector<uint64_t> shape, ops::Pieces geometry) {
      out.push_back(Piece{std::move(key), std::move(where), t.dtype, std::move(shape), file, begin,
                          std::move(geometry), {}});
      out.back().stored = stored.dtype;
    };
    MOEPACK_RETURN_IF_ERROR(CutAs(name, v5, t, piece));
    if (mx_scales) {
      for (size_t i = first; i < out.size(); ++i) {
        Piece& p = out[i];
        p.compute = Piece::Compute::kDequantMXFP4;
        p.mx_scales_file = mx_scales->shard;
        p.mx_scales = c_.shards()[mx_scales->shard].header.data_start() + mx_scales->info->begin;
        p.mx_rows = stored.shape[1];
        p.mx_groups = stored.shape[2];
      }
    }
    return Status::OK();
  }

  bool IsDequant() const {
    return change_ == DTypeChange::kToBF16 || change_ == DTypeChange::kToF16 || change_ == DTypeChange::kToF32;
  }

  // After cutting: an FP8 piece takes the piece of its scales (key +
  // "_scale_inv"), which leaves the comparison; quantizing, a float piece
  // FP8 checkpoints quantize becomes its codes plus a piece of its scales.
  Status ChangeDTypes(std::vector<Piece>& pieces) const {
    std::map<std::string, size_t> by_key;
    for (size_t i = 0; i < pieces.size(); ++i) by_key.emplace(pieces[i].key, i);
    const size_t n = pieces.size();
    for (size_t i = 0; i < n; ++i) {
      Piece& p = pieces[i];
      auto m = rules_.MatchSource(p.key);
      const std::string prefix = m ? m->prefix : "";
      if (IsDequant() && IsFloat8(p.dtype)) {
        auto it = by_key.find(p.key + "_scale_inv");
        if (it == by_key.end()) return Status::Corrupt(p.where + " has no scales to dequantize it with");
        std::tie(p.block_rows, p.block_cols) = ops::FP8Block(rules_, c_.config() ? &*c_.config() : nullptr, prefix);
        p.compute = Piece::Compute::kDequantFP8;
        p.scale = static_cast<int>(it->second);
        p.dtype = ops::TargetFloat(change_);
        pieces[it->second].consumed = true;
      } else if (change_ == DTypeChange::kToFP8 && p.shape.size() == 2 &&
                 ops::QuantizesToFP8(rules_, p.key, p.dtype, p.shape)) {
        std::tie(p.block_rows, p.block_cols) = ops::FP8Block(rules_, quant_config_, prefix);
        p.mat_rows = p.shape[0];
        p.mat_cols = p.shape[1];
        Piece scales = p;
        p.compute = Piece::Compute::kQuantCodes;
        p.dtype = DType::F8_E4M3;
        scales.compute = Piece::Compute::kQuantScales;
        scales.key += "_scale_inv";
        scales.where += " (its block scales)";
        scales.dtype = DType::F32;
        scales.shape = {(p.shape[0] + p.block_rows - 1) / p.block_rows, (p.shape[1] + p.block_cols - 1) / p.block_cols};
        pieces.push_back(std::move(scales));
      }
    }
    return Status::OK();
  }

  template <typename AddPiece>
  Status CutAs(const std::string& name, const std::string& v5, const TensorInfo& t, AddPiece piece) {
    if (auto m = rules_.MatchTarget(v5); m && !rules_.MatchSource(v5)) {
      const FusionRule& f = rules_.fusions()[m->fusion];
      auto op = ops::FusionOp::FromFused(f, t.dtype, t.shape);
      if (!op.ok()) return op.status().WithPrefix("'" + name + "'");
      for (uint64_t j = 0; j < op->experts(); ++j) {
        for (uint64_t k = 0; k < op->sources(); ++k) {
          piece(rules_.SourceName(m->fusion, static_cast<int>(k), m->prefix, static_cast<int64_t>(j)),
                "'" + name + "' expert " + std::to_string(j) + " (" + rules_.SourceLeaf(m->fusion, static_cast<int>(k)) +
                    ")",
                op->source_shape(), op->SourceInFused(j, k).Inverse());
        }
      }
      return Status::OK();
    }
    if (auto m = rules_.MatchChunk(v5); m && m->part < 0) {
      // The Hub's one tensor is cut into v5's parts, each its own piece.
      auto op = ops::ChunkOp::FromWhole(rules_.chunks()[m->rule], t.dtype, t.shape);
      if (!op.ok()) return op.status().WithPrefix("'" + name + "'");
      for (uint64_t k = 0; k < op->parts(); ++k) {
        piece(rules_.ChunkName(m->rule, static_cast<int>(k), m->prefix), "'" + name + "' part " + std::to_string(k),
              op->part_shape(), op->PartInWhole(k).Inverse());
      }
      return Status::OK();
    }
    if (auto m = rules_.MatchTranspose(v5); m && t.shape.size() == rules_.transposes()[m->rule].hub_shape.size() &&
                                            c_.config()) {
      // Hashed per expert in v5's orientation, whichever layout holds it.
      MOEPACK_ASSIGN_OR_RETURN(ops::TransposeOp op,
                               ops::TransposeOp::Make(rules_, m->rule, *c_.config(), m->prefix, name, t.dtype, t.shape,
                                                      layout_, ops::Orientation::kV5));
      if (op.experts() > ops::kMaxSplitPieces) {
        return Status::Corrupt("'" + name + "': " + std::to_string(op.experts()) + " experts are too many to cut");
      }
      const uint64_t slice = t.nbytes() / std::max<uint64_t>(1, op.experts());
      const auto& out = op.output_shape();
      const std::vector<uint64_t> shape(out.end() - 2, out.end());
      for (uint64_t j = 0; j < op.experts(); ++j) {
        piece(v5 + "#" + std::to_string(j), "'" + name + "' expert " + std::to_string(j), shape,
              op.Expert(j).ShiftDst(-static_cast<int64_t>(j * slice)));
      }
      return Status::OK();
    }
    ops::Pieces whole;
    if (t.nbytes()) whole.runs.push_back(ops::Run{0, 0, t.nbytes()});
    piece(v5, "'" + name + "'", t.shape, std::move(whole));
    return Status::OK();
  }

  const Checkpoint& c_;
  const RuleSet& rules_;
  SourceLayout layout_;
  DTypeChange change_;
  const ModelConfig* quant_config_;  // DST's, whose block a quantized export states
};

// The bytes a piece's geometry gives from `tensor`, the tensor it is cut
// from (as stored at p.begin in its file, or given, decoded, in memory, its
// bytes from `base` on).
Status ReadGeometry(const std::vector<File>& files, const Piece& p, const char* tensor, std::vector<char>& out,
                    std::vector<char>& in, uint64_t base = 0) {
  const File& f = files[p.file];
  out.resize(p.geometry.bytes());
  for (const ops::Run& r : p.geometry.runs) {
    if (tensor) {
      std::memcpy(out.data() + r.dst, tensor + (r.src - base), r.length);
    } else {
      MOEPACK_RETURN_IF_ERROR(f.ReadAt(p.begin + r.src, out.data() + r.dst, r.length));
    }
  }
  for (const ops::Block& b : p.geometry.blocks) {
    const char* from = tensor ? tensor + (b.src - base) : nullptr;
    if (!tensor) {
      in.resize(b.src_span());
      MOEPACK_RETURN_IF_ERROR(f.ReadAt(p.begin + b.src, in.data(), in.size()));
      from = in.data();
    }
    ops::Block local = b;
    local.src = 0;
    ops::Apply(local, from, out.data());
  }
  return Status::OK();
}

uint64_t Bytes(DType d) { return static_cast<uint64_t>(DTypeBits(d) / 8); }

// A piece's canonical bytes in memory, its dtype change computed; for
// expert-sized pieces only.
Status ReadPiece(const std::vector<File>& files, const std::vector<Piece>& all, const Piece& p, std::vector<char>& out,
                 std::vector<char>& in) {
  using C = Piece::Compute;
  switch (p.compute) {
    case C::kNone: return ReadGeometry(files, p, nullptr, out, in);
    case C::kDequantFP8: {
      std::vector<char> codes, scales;
      MOEPACK_RETURN_IF_ERROR(ReadGeometry(files, p, nullptr, codes, in));
      MOEPACK_RETURN_IF_ERROR(ReadGeometry(files, all[p.scale], nullptr, scales, in));
      // [units, rows, cols]: one grid of scales per unit.
      const uint64_t cols = p.shape.back(), units = p.shape.size() == 3 ? p.shape[0] : 1;
      const uint64_t rows = codes.size() / std::max<uint64_t>(1, cols) / units;
      const uint64_t grid = ((rows + p.block_rows - 1) / p.block_rows) * ((cols + p.block_cols - 1) / p.block_cols);
      if (scales.size() != units * grid * 4) return Status::Corrupt(p.where + ": its scales do not fit it");
      out.resize(codes.size() * Bytes(p.dtype));
      for (uint64_t u = 0; u < units; ++u) {
        internal::RefDequantFP8(reinterpret_cast<const uint8_t*>(codes.data()) + u * rows * cols,
                                reinterpret_cast<const float*>(scales.data()) + u * grid, rows, cols, p.block_rows,
                                p.block_cols, p.dtype, reinterpret_cast<uint8_t*>(out.data()) + u * rows * cols * Bytes(p.dtype));
      }
      return Status::OK();
    }
    case C::kDequantMXFP4: {
      // Decode the experts the piece's geometry reads, each one whole.
      const uint64_t R = p.mx_rows, G = p.mx_groups, slab = R * G * 32 * Bytes(p.dtype);
      uint64_t lo = UINT64_MAX, hi = 0;
      for (const ops::Run& r : p.geometry.runs) lo = std::min(lo, r.src), hi = std::max(hi, r.src + r.length);
      for (const ops::Block& b : p.geometry.blocks) lo = std::min(lo, b.src), hi = std::max(hi, b.src + b.src_span());
      if (hi <= lo) return ReadGeometry(files, p, "", out, in);
      const uint64_t e0 = lo / slab, e1 = (hi + slab - 1) / slab;
      std::vector<char> decoded((e1 - e0) * slab), blocks(R * G * 16), scales(R * G);
      for (uint64_t e = e0; e < e1; ++e) {
        MOEPACK_RETURN_IF_ERROR(files[p.file].ReadAt(p.begin + e * blocks.size(), blocks.data(), blocks.size()));
        MOEPACK_RETURN_IF_ERROR(
            files[p.mx_scales_file].ReadAt(p.mx_scales + e * scales.size(), scales.data(), scales.size()));
        internal::RefDequantMXFP4(reinterpret_cast<const uint8_t*>(blocks.data()),
                                  reinterpret_cast<const uint8_t*>(scales.data()), R, G, p.dtype,
                                  reinterpret_cast<uint8_t*>(decoded.data()) + (e - e0) * slab);
      }
      return ReadGeometry(files, p, decoded.data(), out, in, e0 * slab);
    }
    case C::kQuantCodes:
    case C::kQuantScales: {
      std::vector<char> x;
      MOEPACK_RETURN_IF_ERROR(ReadGeometry(files, p, nullptr, x, in));
      const uint64_t rows = p.mat_rows, cols = p.mat_cols;
      std::vector<uint8_t> codes(rows * cols);
      std::vector<float> scales(((rows + p.block_rows - 1) / p.block_rows) * ((cols + p.block_cols - 1) / p.block_cols));
      internal::RefQuantizeFP8(reinterpret_cast<const uint8_t*>(x.data()), p.stored, rows, cols, p.block_rows,
                               p.block_cols, codes.data(), scales.data());
      const char* from = p.compute == C::kQuantCodes ? reinterpret_cast<const char*>(codes.data())
                                                     : reinterpret_cast<const char*>(scales.data());
      out.assign(from, from + (p.compute == C::kQuantCodes ? codes.size() : scales.size() * 4));
      return Status::OK();
    }
  }
  return Status::OK();
}

Status HashPiece(const std::vector<File>& files, const std::vector<Piece>& all, Piece& p, std::vector<char>& buf,
                 std::vector<char>& tbuf, uint64_t& bytes) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_128bits_reset(st);
  Status status;
  if (!p.geometry.blocks.empty() || p.compute != Piece::Compute::kNone) {
    status = ReadPiece(files, all, p, tbuf, buf);
    if (status.ok()) {
      XXH3_128bits_update(st, tbuf.data(), tbuf.size());
      bytes += tbuf.size();
    }
  } else {
    // Runs in output order: the piece streams through a bounded buffer.
    buf.resize(4 << 20);
    for (const ops::Run& r : p.geometry.runs) {
      for (uint64_t done = 0; done < r.length && status.ok();) {
        const uint64_t n = std::min<uint64_t>(buf.size(), r.length - done);
        status = files[p.file].ReadAt(p.begin + r.src + done, buf.data(), n);
        XXH3_128bits_update(st, buf.data(), n);
        done += n;
        bytes += n;
      }
    }
  }
  p.hash = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  return status;
}

Status HashAll(Side& side, int threads, uint64_t& bytes) {
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> total{0};
  std::mutex mu;
  Status first;
  auto work = [&] {
    std::vector<char> buf, tbuf;
    uint64_t mine = 0;
    for (size_t i; (i = next.fetch_add(1)) < side.pieces.size();) {
      if (side.pieces[i].consumed) continue;
      Status st = HashPiece(side.files, side.pieces, side.pieces[i], buf, tbuf, mine);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = st;
        break;
      }
    }
    total += mine;
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  bytes += total;
  return first;
}

// The first name-level difference between what the plan says DST must hold
// and what it holds, or "" when they agree.
std::string CompareNames(const Plan& plan, const Checkpoint& dst) {
  std::set<std::string> expected;
  for (const auto& t : plan.tensors) {
    expected.insert(t.name);
    const TensorLocation* loc = dst.Find(t.name);
    if (!loc) return "DST lacks tensor '" + t.name + "'";
    if (loc->info->dtype != t.dtype || loc->info->shape != t.shape) {
      return "DST tensor '" + t.name + "' is " + std::string(DTypeName(loc->info->dtype)) + " " +
             internal::ShapeString(loc->info->shape) + ", expected " + std::string(DTypeName(t.dtype)) + " " + internal::ShapeString(t.shape);
    }
  }
  for (const auto& n : dst.names()) {
    if (!expected.count(n)) return "DST has unexpected tensor '" + n + "'";
  }
  return "";
}


// The values of piece `key`; an empty vector when the side lacks it.
Result<std::vector<float>> PieceFloats(const Side& side, const std::map<std::string, const Piece*>& index,
                                       const std::string& key) {
  auto it = index.find(key);
  if (it == index.end()) return std::vector<float>{};
  std::vector<char> bytes, scratch;
  MOEPACK_RETURN_IF_ERROR(ReadPiece(side.files, side.pieces, *it->second, bytes, scratch));
  auto n = NumElements(it->second->shape);
  return internal::DecodeToFloat(it->second->dtype, bytes.data(), n.value_or(0));
}

// One MoE layer's expert weights, as canonical piece keys per expert.
struct LayerKeys {
  uint64_t experts = 0;
  std::map<uint64_t, std::array<std::string, 3>> gate_up_down;  // split keys (fusions)
  std::map<uint64_t, std::array<std::string, 2>> fused;         // gate_up, down keys (transposes)
};

std::map<std::string, LayerKeys> FindLayers(const Side& side, const RuleSet& rules) {
  std::map<std::string, LayerKeys> layers;
  // The reference layer takes gate and up from one fusion of two sources
  // and down from one of a single source; scales have their weights' role.
  int gu = -1, dn = -1;
  for (size_t f = 0; f < rules.fusions().size(); ++f) {
    const FusionRule& r = rules.fusions()[f];
    if (rules.WeightOf(static_cast<int>(f)) >= 0) continue;
    if (r.role == ExpertRole::kGateUp && r.sources.size() == 2) gu = static_cast<int>(f);
    if (r.role == ExpertRole::kDown && r.sources.size() == 1) dn = static_cast<int>(f);
  }
  for (const Piece& p : side.pieces) {
    if (auto hash = p.key.rfind('#'); hash != std::string::npos) {
      // A cut of a transposable tensor is "NAME#EXPERT"; a source tensor may
      // carry a '#' in its name too, so check before reading the number.
      const std::string id = p.key.substr(hash + 1);
      if (id.empty() || id.size() > 7 || id.find_first_not_of("0123456789") != std::string::npos) continue;
      const uint64_t j = std::stoull(id);
      if (j >= ops::kMaxSplitPieces) continue;  // Cutter makes no more
      auto m = rules.MatchTranspose(p.key.substr(0, hash));
      if (!m) continue;
      const ExpertRole role = rules.transposes()[m->rule].role;
      if (role != ExpertRole::kGateUp && role != ExpertRole::kDown) continue;
      auto& l = layers[m->prefix];
      l.fused[j][role == ExpertRole::kGateUp ? 0 : 1] = p.key;
      l.experts = std::max(l.experts, j + 1);
      continue;
    }
    auto m = rules.MatchSource(p.key);
    if (!m || m->fusion != gu || m->source != 0 || dn < 0) continue;
    auto& l = layers[m->prefix];
    const uint64_t j = static_cast<uint64_t>(m->expert);
    l.gate_up_down[j] = {p.key, rules.SourceName(gu, 1, m->prefix, m->expert),
                         rules.SourceName(dn, 0, m->prefix, m->expert)};
    l.experts = std::max(l.experts, j + 1);
  }
  return layers;
}

// Runs the reference MoE layer with SRC's and DST's experts on the same
// seeded tokens and router; a pure relayout must give identical outputs.
// A difference is the report's problem; a Status error means a file could
// not be read.
Result<std::vector<ForwardCheck>> RunForward(const Side& a, const Side& b, const RuleSet& rules,
                                             std::string* problem) {
  std::map<std::string, const Piece*> ia, ib;
  for (const Piece& p : a.pieces) ia[p.key] = &p;
  for (const Piece& p : b.pieces) ib[p.key] = &p;
  std::vector<ForwardCheck> out;
  for (auto& [prefix, l] : FindLayers(a, rules)) {
    const bool fused = !l.fused.empty();
    // The reference layer needs 2-D, non-empty experts; anything else (a
    // hostile or unusual checkpoint) has no forward check.
    auto first = ia.find(fused ? l.fused.begin()->second[0] : l.gate_up_down.begin()->second[0]);
    if (first == ia.end() || first->second->shape.size() != 2) continue;
    const Piece& g = *first->second;
    // gate [I, H] per expert, or gate_up [2I, H] in v5's layout: gate rows, then up.
    const uint64_t I = g.shape[0] / (fused ? RoleParts(ExpertRole::kGateUp) : 1), H = g.shape[1];
    if (I == 0 || H == 0) continue;
    // Nor does a layer whose SRC lacks an expert or a projection (convert
    // copies such a layer as it is).
    bool complete = (fused ? l.fused.size() : l.gate_up_down.size()) == l.experts;
    for (const auto& [e, k] : l.fused) complete = complete && ia.count(k[0]) && ia.count(k[1]);
    for (const auto& [e, k] : l.gate_up_down) complete = complete && ia.count(k[0]) && ia.count(k[1]) && ia.count(k[2]);
    if (!complete) continue;
    const uint64_t T = 8, E = l.experts;
    std::mt19937_64 rng(0x6d6f65 + E * 131 + H);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(T * H), router(E * H);
    for (auto& v : x) v = nd(rng);
    for (auto& v : router) v = nd(rng);
    auto routes = internal::RouteTokens(router, x, T, E, H, 2);
    std::vector<float> ya(T * H, 0.0f), yb(T * H, 0.0f);
    std::set<uint64_t> used;
    for (const auto& r : routes) used.insert(r.expert);
    for (uint64_t e : used) {
      for (int side = 0; side < 2; ++side) {
        const Side& s = side ? b : a;
        const auto& idx = side ? ib : ia;
        const char* which = side ? "DST" : "SRC";
        std::vector<float> gate, up, down;
        if (fused) {
          MOEPACK_ASSIGN_OR_RETURN(auto gu, PieceFloats(s, idx, l.fused[e][0]));
          MOEPACK_ASSIGN_OR_RETURN(down, PieceFloats(s, idx, l.fused[e][1]));
          if (gu.size() == 2 * I * H) {
            gate.assign(gu.begin(), gu.begin() + I * H);
            up.assign(gu.begin() + I * H, gu.end());
          }
        } else {
          MOEPACK_ASSIGN_OR_RETURN(gate, PieceFloats(s, idx, l.gate_up_down[e][0]));
          MOEPACK_ASSIGN_OR_RETURN(up, PieceFloats(s, idx, l.gate_up_down[e][1]));
          MOEPACK_ASSIGN_OR_RETURN(down, PieceFloats(s, idx, l.gate_up_down[e][2]));
        }
        if (gate.size() != I * H || up.size() != I * H || down.size() != H * I) {
          *problem = std::string(which) + ": expert " + std::to_string(e) + " of " + prefix +
                     " lacks a projection or has unexpected shapes";
          return out;
        }
        internal::AddExpert(routes, e, gate, up, down, x, H, I, side ? yb : ya);
      }
    }
    double diff = 0;
    for (size_t i = 0; i < ya.size(); ++i) diff = std::max(diff, static_cast<double>(std::fabs(ya[i] - yb[i])));
    out.push_back({prefix, diff, used.size()});
  }
  return out;
}

// Which conversion DST claims to be: the direction and dtype change whose
// plan has exactly DST's names, dtypes and shapes.
struct Claim {
  Direction direction = Direction::kToFused;
  SourceLayout dst_layout = SourceLayout::kUnspecified;
  DTypeChange change = DTypeChange::kKeep;
};

// The claim, or nullopt with `problem` set to DST's difference from the
// conversion it resembles most; a Status error when SRC plans in no
// direction at all.
Result<std::optional<Claim>> IdentifyConversion(const Checkpoint& src, const Checkpoint& dst, const RuleSet& rules,
                                                const ModelConfig* dst_config, SourceLayout source_layout,
                                                std::string* problem) {
  auto holds = [](const Checkpoint& c, auto pred) {
    for (const auto& n : c.names()) {
      if (pred(*c.Find(n)->info)) return true;
    }
    return false;
  };
  std::vector<DTypeChange> changes = {DTypeChange::kKeep};
  if (holds(src, [](const TensorInfo& t) { return IsFloat8(t.dtype) || t.dtype == DType::U8; })) {
    changes.insert(changes.end(), {DTypeChange::kToBF16, DTypeChange::kToF16, DTypeChange::kToF32});
  }
  if (!holds(src, [](const TensorInfo& t) { return IsFloat8(t.dtype); }) &&
      holds(dst, [](const TensorInfo& t) { return IsFloat8(t.dtype); })) {
    changes.push_back(DTypeChange::kToFP8);
  }
  size_t problem_shared = 0;  // names DST shares with that direction's plan
  Status plan_error;
  for (DTypeChange c : changes) {
    for (Direction d : {Direction::kToFused, Direction::kToPerExpert}) {
      PlanOptions po;
      po.direction = d;
      po.source_layout = source_layout;
      po.dtype = c;
      if (c == DTypeChange::kToFP8) std::tie(po.block_rows, po.block_cols) = ops::FP8Block(rules, dst_config, "");
      // SRC may convert in one direction only (e.g. an incomplete expert group
      // still copies to per-expert): a direction that cannot be planned is
      // simply not the one DST was made in.
      auto planned = MakePlan(src, rules, po);
      if (!planned.ok()) {
        if (plan_error.ok()) plan_error = planned.status();
        continue;
      }
      const Plan& plan = *planned;
      std::string diff = CompareNames(plan, dst);
      if (diff.empty()) {
        problem->clear();
        return std::optional<Claim>(Claim{d, d == Direction::kToFused ? SourceLayout::kV5 : SourceLayout::kHub, c});
      }
      // Report the difference from the direction DST resembles most: a
      // per-expert DST lacking one expert is not "lacking gate_up_proj".
      size_t shared = 0;
      for (const auto& t : plan.tensors) shared += dst.Find(t.name) != nullptr;
      if (problem->empty() || shared > problem_shared) {
        *problem = diff;
        problem_shared = shared;
      }
    }
  }
  if (problem->empty()) return plan_error;
  return std::optional<Claim>();
}

// The first difference between SRC's pieces (less those a dtype change
// consumed) and DST's, "" when they are the same set; counts DST's pieces.
std::string ComparePieces(const Side& a, const Side& b, uint64_t* pieces) {
  std::map<std::string, const Piece*> want;
  for (const Piece& p : a.pieces) {
    if (!p.consumed) want[p.key] = &p;
  }
  std::vector<const Piece*> got;
  for (const Piece& p : b.pieces) got.push_back(&p);
  std::sort(got.begin(), got.end(), [](const Piece* x, const Piece* y) { return NaturalLess(x->key, y->key); });
  std::set<std::string> seen;
  for (const Piece* p : got) {
    auto it = want.find(p->key);
    if (it == want.end()) return p->where + " in DST has no counterpart in SRC";
    const Piece& s = *it->second;
    if (s.dtype != p->dtype || s.shape != p->shape) {
      return p->where + " is " + std::string(DTypeName(p->dtype)) + " " + internal::ShapeString(p->shape) + " but " +
             s.where + " in SRC is " + std::string(DTypeName(s.dtype)) + " " + internal::ShapeString(s.shape);
    }
    if (!XXH128_isEqual(s.hash, p->hash)) return p->where + " differs from " + s.where + " in SRC";
    seen.insert(p->key);
    ++*pieces;
  }
  for (const Piece& p : a.pieces) {
    if (!p.consumed && !seen.count(p.key)) return p.where + " in SRC is missing from DST";
  }
  return "";
}

}  // namespace

Result<VerifyReport> Verify(const std::string& src_path, const std::string& dst_path, const VerifyOptions& options) {
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint src, Checkpoint::Open(src_path));
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint dst, Checkpoint::Open(dst_path));
  MOEPACK_ASSIGN_OR_RETURN(RuleSet chosen, ChooseRules(src, options.model_type, options.rules_file));
  // Bound to SRC's config.json, which DST carries over unchanged.
  RuleSet rules = std::move(chosen);
  if (src.config()) {
    MOEPACK_ASSIGN_OR_RETURN(rules, rules.Bind(*src.config()));
  }
  VerifyReport report;
  const ModelConfig* dst_config = dst.config() ? &*dst.config() : nullptr;
  MOEPACK_ASSIGN_OR_RETURN(std::optional<Claim> claim,
                           IdentifyConversion(src, dst, rules, dst_config, options.source_layout, &report.problem));
  if (!claim) return report;
  report.to = claim->direction == Direction::kToFused ? "fused" : "per-expert";
  report.tensors = dst.names().size();
  report.dtype = std::string(DTypeChangeName(claim->change));

  Cutter cs(src, rules, options.source_layout, claim->change, dst_config), cd(dst, rules, claim->dst_layout);
  MOEPACK_ASSIGN_OR_RETURN(Side a, cs.Cut());
  MOEPACK_ASSIGN_OR_RETURN(Side b, cd.Cut());
  const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  MOEPACK_RETURN_IF_ERROR(HashAll(a, threads, report.bytes_hashed));
  MOEPACK_RETURN_IF_ERROR(HashAll(b, threads, report.bytes_hashed));
  report.problem = ComparePieces(a, b, &report.pieces);
  if (!report.problem.empty()) return report;
  if (options.forward) {
    MOEPACK_ASSIGN_OR_RETURN(report.forward, RunForward(a, b, rules, &report.problem));
    if (!report.problem.empty()) return report;
    for (const auto& f : report.forward) {
      if (f.max_abs_diff != 0.0) {
        report.problem = "forward check: layer " + f.layer + " differs by " + std::to_string(f.max_abs_diff);
        return report;
      }
    }
  }
  report.ok = true;
  return report;
}

}  // namespace moepack
