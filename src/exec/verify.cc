// Canonical pieces are named in the v5 (post-rename) vocabulary: a
// per-expert source is its own piece; a fused tensor is cut back into its
// per-expert, per-source pieces; a transposable tensor is cut per expert and
// hashed in v5 orientation. Equal piece sets mean equal content.
#include "moepack/verify.h"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "exec/moe_reference.h"
#include "exec/transpose.h"
#include "format/decode.h"
#include "moepack/convert.h"
#include "plan/slicing.h"
#include "util/file.h"
#include "util/strings.h"

namespace moepack {
namespace {

using internal::File;

struct Piece {
  std::string key;    // canonical name
  std::string where;  // tensor (and expert) in its own checkpoint, for messages
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  uint32_t file = 0;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // absolute offset, length
  uint64_t rows = 0, cols = 0;                        // >0: transpose [rows, cols] before hashing
  uint32_t elem_bytes = 0;
  XXH128_hash_t hash{};
};

struct Side {
  std::vector<File> files;
  std::vector<Piece> pieces;
};

class Cutter {
 public:
  Cutter(const Checkpoint& c, const RuleSet& rules, SourceLayout layout) : c_(c), rules_(rules), layout_(layout) {}

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
    return side;
  }

 private:
  Status CutTensor(const std::string& name, const TensorInfo& t, uint32_t file, uint64_t begin,
                   std::vector<Piece>& out) {
    const std::string v5 = rules_.Rename(name, Direction::kToFused);
    if (auto m = rules_.MatchTarget(v5); m && !rules_.MatchSource(v5)) {
      const FusionRule& f = rules_.fusions()[m->fusion];
      const uint64_t K = f.sources.size();
      if (t.shape.size() < 2) return Status::Corrupt("'" + name + "' is not a fused tensor");
      std::vector<uint64_t> per(t.shape.begin() + 1, t.shape.end());
      const size_t axis = f.transpose ? 0 : static_cast<size_t>(f.concat_dim - 1);
      if (axis >= per.size() || per[axis] % K) return Status::Corrupt("'" + name + "' cannot be split by its rule");
      per[axis] /= K;
      std::vector<uint64_t> piece_shape = f.transpose ? std::vector<uint64_t>{per[1], per[0]} : per;
      MOEPACK_ASSIGN_OR_RETURN(auto geo, internal::Geometry(f.transpose ? piece_shape : per, t.dtype, K,
                                                            f.transpose ? 0 : static_cast<int>(axis)));
      if (t.shape[0] > internal::kMaxSplitPieces / K) {
        return Status::Corrupt("'" + name + "': " + std::to_string(t.shape[0]) + " experts are too many to cut");
      }
      for (uint64_t j = 0; j < t.shape[0]; ++j) {
        for (uint64_t k = 0; k < K; ++k) {
          Piece p;
          p.key = rules_.SourceName(m->fusion, static_cast<int>(k), m->prefix, static_cast<int64_t>(j));
          p.where = "'" + name + "' expert " + std::to_string(j) + " (" + f.sources[k].substr(f.sources[k].rfind('}') + 2) + ")";
          p.dtype = t.dtype;
          p.shape = piece_shape;
          p.file = file;
          for (uint64_t o = 0; o < geo.outer; ++o) p.ranges.push_back({begin + geo.Offset(j, k, o), geo.chunk_bytes});
          if (f.transpose) {
            p.rows = per[0];
            p.cols = per[1];
            p.elem_bytes = DTypeBits(t.dtype) / 8;
          }
          out.push_back(std::move(p));
        }
      }
      return Status::OK();
    }
    if (auto m = rules_.MatchTranspose(v5); m && t.shape.size() == 3 && c_.config()) {
      const TransposeRule& r = rules_.transposes()[m->rule];
      MOEPACK_ASSIGN_OR_RETURN(int64_t E, rules_.NumExperts(*c_.config(), m->prefix));
      MOEPACK_ASSIGN_OR_RETURN(auto hub, rules_.EvalShape(*c_.config(), r.hub_shape, E, m->prefix));
      MOEPACK_ASSIGN_OR_RETURN(auto v5s, rules_.EvalShape(*c_.config(), r.v5_shape, E, m->prefix));
      bool is_hub = t.shape == hub;
      if (is_hub && t.shape == v5s) {
        if (layout_ == SourceLayout::kUnspecified) {
          return Status::InvalidArgument("'" + name + "': shape fits both the Hub and the v5 layout; pass --source-layout");
        }
        is_hub = layout_ == SourceLayout::kHub;
      }
      if (t.shape[0] > internal::kMaxSplitPieces) {
        return Status::Corrupt("'" + name + "': " + std::to_string(t.shape[0]) + " experts are too many to cut");
      }
      const uint64_t slice = t.nbytes() / std::max<uint64_t>(1, t.shape[0]);
      for (uint64_t j = 0; j < t.shape[0]; ++j) {
        Piece p;
        p.key = v5 + "#" + std::to_string(j);
        p.where = "'" + name + "' expert " + std::to_string(j);
        p.dtype = t.dtype;
        p.shape = {v5s[1], v5s[2]};
        p.file = file;
        p.ranges.push_back({begin + j * slice, slice});
        if (is_hub) {
          p.rows = t.shape[1];
          p.cols = t.shape[2];
          p.elem_bytes = DTypeBits(t.dtype) / 8;
        }
        out.push_back(std::move(p));
      }
      return Status::OK();
    }
    Piece p;
    p.key = v5;
    p.where = "'" + name + "'";
    p.dtype = t.dtype;
    p.shape = t.shape;
    p.file = file;
    p.ranges.push_back({begin, t.nbytes()});
    out.push_back(std::move(p));
    return Status::OK();
  }

  const Checkpoint& c_;
  const RuleSet& rules_;
  SourceLayout layout_;
};

Status HashPiece(const std::vector<File>& files, Piece& p, std::vector<char>& buf, std::vector<char>& tbuf,
                 uint64_t& bytes) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_128bits_reset(st);
  Status status;
  if (p.rows) {
    const uint64_t n = p.rows * p.cols * p.elem_bytes;
    buf.resize(n);
    tbuf.resize(n);
    status = files[p.file].ReadAt(p.ranges[0].first, buf.data(), n);
    if (status.ok()) {
      internal::Transpose(buf.data(), tbuf.data(), p.rows, p.cols, p.elem_bytes);
      XXH3_128bits_update(st, tbuf.data(), n);
      bytes += n;
    }
  } else {
    buf.resize(4 << 20);
    for (const auto& [off, len] : p.ranges) {
      for (uint64_t done = 0; done < len && status.ok();) {
        const uint64_t n = std::min<uint64_t>(buf.size(), len - done);
        status = files[p.file].ReadAt(off + done, buf.data(), n);
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
      Status st = HashPiece(side.files, side.pieces[i], buf, tbuf, mine);
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


// A piece's canonical bytes in memory; for expert-sized pieces only.
Status ReadPiece(const std::vector<File>& files, const Piece& p, std::vector<char>& out) {
  uint64_t n = 0;
  for (const auto& r : p.ranges) n += r.second;
  std::vector<char> raw(n);
  uint64_t at = 0;
  for (const auto& [off, len] : p.ranges) {
    MOEPACK_RETURN_IF_ERROR(files[p.file].ReadAt(off, raw.data() + at, len));
    at += len;
  }
  if (!p.rows) {
    out = std::move(raw);
    return Status::OK();
  }
  out.resize(n);
  internal::Transpose(raw.data(), out.data(), p.rows, p.cols, p.elem_bytes);
  return Status::OK();
}

Result<std::vector<float>> PieceFloats(const Side& side, const std::map<std::string, const Piece*>& index,
                                       const std::string& key, const char* which) {
  auto it = index.find(key);
  if (it == index.end()) return Status::Mismatch(std::string(which) + " lacks '" + key + "'");
  std::vector<char> bytes;
  MOEPACK_RETURN_IF_ERROR(ReadPiece(side.files, *it->second, bytes));
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
  int gu = -1, dn = -1;
  for (size_t f = 0; f < rules.fusions().size(); ++f) {
    if (rules.fusions()[f].name == "gate_up_proj" && rules.fusions()[f].sources.size() == 2) gu = static_cast<int>(f);
    if (rules.fusions()[f].name == "down_proj" && rules.fusions()[f].sources.size() == 1) dn = static_cast<int>(f);
  }
  for (const Piece& p : side.pieces) {
    if (auto hash = p.key.rfind('#'); hash != std::string::npos) {
      // A cut of a transposable tensor is "NAME#EXPERT"; a source tensor may
      // carry a '#' in its name too, so check before reading the number.
      const std::string id = p.key.substr(hash + 1);
      if (id.empty() || id.size() > 7 || id.find_first_not_of("0123456789") != std::string::npos) continue;
      const uint64_t j = std::stoull(id);
      if (j >= internal::kMaxSplitPieces) continue;  // Cutter makes no more
      auto m = rules.MatchTranspose(p.key.substr(0, hash));
      if (!m) continue;
      const std::string& rule = rules.transposes()[m->rule].name;
      auto& l = layers[m->prefix];
      if (rule == "gate_up_proj") l.fused[j][0] = p.key;
      if (rule == "down_proj") l.fused[j][1] = p.key;
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
Result<std::vector<ForwardCheck>> RunForward(const Side& a, const Side& b, const RuleSet& rules) {
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
    const uint64_t I = fused ? g.shape[0] / 2 : g.shape[0], H = g.shape[1];
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
          MOEPACK_ASSIGN_OR_RETURN(auto gu, PieceFloats(s, idx, l.fused[e][0], which));
          MOEPACK_ASSIGN_OR_RETURN(down, PieceFloats(s, idx, l.fused[e][1], which));
          gate.assign(gu.begin(), gu.begin() + I * H);
          up.assign(gu.begin() + I * H, gu.end());
        } else {
          MOEPACK_ASSIGN_OR_RETURN(gate, PieceFloats(s, idx, l.gate_up_down[e][0], which));
          MOEPACK_ASSIGN_OR_RETURN(up, PieceFloats(s, idx, l.gate_up_down[e][1], which));
          MOEPACK_ASSIGN_OR_RETURN(down, PieceFloats(s, idx, l.gate_up_down[e][2], which));
        }
        if (gate.size() != I * H || up.size() != I * H || down.size() != H * I) {
          return Status::Mismatch(which + std::string(": expert ") + std::to_string(e) + " of " + prefix +
                                  " has unexpected shapes");
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

}  // namespace

Result<VerifyReport> Verify(const std::string& src_path, const std::string& dst_path, const VerifyOptions& options) {
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint src, Checkpoint::Open(src_path));
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint dst, Checkpoint::Open(dst_path));
  MOEPACK_ASSIGN_OR_RETURN(RuleSet rules, ChooseRules(src, options.model_type, options.rules_file));
  VerifyReport report;

  // Which conversion DST claims to be: the direction whose names it carries.
  std::string problem;
  size_t problem_shared = 0;  // names DST shares with that direction's plan
  SourceLayout dst_layout = SourceLayout::kUnspecified;
  Status plan_error;
  for (Direction d : {Direction::kToFused, Direction::kToPerExpert}) {
    PlanOptions po;
    po.direction = d;
    po.source_layout = options.source_layout;
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
      report.to = d == Direction::kToFused ? "fused" : "per-expert";
      dst_layout = d == Direction::kToFused ? SourceLayout::kV5 : SourceLayout::kHub;
      problem.clear();
      break;
    }
    // Report the difference from the direction DST resembles most: a
    // per-expert DST lacking one expert is not "lacking gate_up_proj".
    size_t shared = 0;
    for (const auto& t : plan.tensors) shared += dst.Find(t.name) != nullptr;
    if (problem.empty() || shared > problem_shared) {
      problem = diff;
      problem_shared = shared;
    }
  }
  if (report.to.empty()) {
    if (problem.empty()) return plan_error;  // SRC converts in neither direction
    report.problem = problem;
    return report;
  }
  report.tensors = dst.names().size();

  Cutter cs(src, rules, options.source_layout), cd(dst, rules, dst_layout);
  MOEPACK_ASSIGN_OR_RETURN(Side a, cs.Cut());
  MOEPACK_ASSIGN_OR_RETURN(Side b, cd.Cut());
  const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  MOEPACK_RETURN_IF_ERROR(HashAll(a, threads, report.bytes_hashed));
  MOEPACK_RETURN_IF_ERROR(HashAll(b, threads, report.bytes_hashed));

  std::map<std::string, const Piece*> want;
  for (const Piece& p : a.pieces) want[p.key] = &p;
  std::vector<const Piece*> got;
  for (const Piece& p : b.pieces) got.push_back(&p);
  std::sort(got.begin(), got.end(), [](const Piece* x, const Piece* y) { return NaturalLess(x->key, y->key); });
  std::set<std::string> seen;
  for (const Piece* p : got) {
    auto it = want.find(p->key);
    if (it == want.end()) {
      report.problem = p->where + " in DST has no counterpart in SRC";
      return report;
    }
    const Piece& s = *it->second;
    if (s.dtype != p->dtype || s.shape != p->shape) {
      report.problem = p->where + " is " + std::string(DTypeName(p->dtype)) + " " + internal::ShapeString(p->shape) + " but " +
                       s.where + " in SRC is " + std::string(DTypeName(s.dtype)) + " " + internal::ShapeString(s.shape);
      return report;
    }
    if (!XXH128_isEqual(s.hash, p->hash)) {
      report.problem = p->where + " differs from " + s.where + " in SRC";
      return report;
    }
    seen.insert(p->key);
    report.pieces++;
  }
  for (const Piece& p : a.pieces) {
    if (!seen.count(p.key)) {
      report.problem = p.where + " in SRC is missing from DST";
      return report;
    }
  }
  if (options.forward) {
    MOEPACK_ASSIGN_OR_RETURN(report.forward, RunForward(a, b, rules));
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
