// Canonical pieces are named in the v5 (post-rename) vocabulary: a
// per-expert source is its own piece; a fused tensor is cut back into its
// per-expert, per-source pieces; a transposable tensor is cut per expert and
// hashed in v5 orientation. Equal piece sets mean equal content.
#include "moepack/verify.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "exec/transpose.h"
#include "moepack/convert.h"
#include "plan/slicing.h"
#include "util/file.h"

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
      MOEPACK_ASSIGN_OR_RETURN(auto hub, rules_.EvalShape(*c_.config(), r.hub_shape, E));
      MOEPACK_ASSIGN_OR_RETURN(auto v5s, rules_.EvalShape(*c_.config(), r.v5_shape, E));
      bool is_hub = t.shape == hub;
      if (is_hub && t.shape == v5s) {
        if (layout_ == SourceLayout::kUnspecified) {
          return Status::InvalidArgument("'" + name + "': shape fits both the Hub and the v5 layout; pass --source-layout");
        }
        is_hub = layout_ == SourceLayout::kHub;
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

std::string ShapeStr(const std::vector<uint64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
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
             ShapeStr(loc->info->shape) + ", expected " + std::string(DTypeName(t.dtype)) + " " + ShapeStr(t.shape);
    }
  }
  for (const auto& n : dst.names()) {
    if (!expected.count(n)) return "DST has unexpected tensor '" + n + "'";
  }
  return "";
}

}  // namespace

Result<VerifyReport> Verify(const std::string& src_path, const std::string& dst_path, const VerifyOptions& options) {
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint src, Checkpoint::Open(src_path));
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint dst, Checkpoint::Open(dst_path));
  MOEPACK_ASSIGN_OR_RETURN(RuleSet rules, ChooseRules(src, options.model_type, options.rules_file));
  VerifyReport report;

  // Which conversion DST claims to be: the direction whose names it carries.
  std::string problem;
  SourceLayout dst_layout = SourceLayout::kUnspecified;
  for (Direction d : {Direction::kToFused, Direction::kToPerExpert}) {
    PlanOptions po;
    po.direction = d;
    po.source_layout = options.source_layout;
    MOEPACK_ASSIGN_OR_RETURN(Plan plan, MakePlan(src, rules, po));
    std::string diff = CompareNames(plan, dst);
    if (diff.empty()) {
      report.to = d == Direction::kToFused ? "fused" : "per-expert";
      dst_layout = d == Direction::kToFused ? SourceLayout::kV5 : SourceLayout::kHub;
      problem.clear();
      break;
    }
    if (problem.empty()) problem = diff;
  }
  if (report.to.empty()) {
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
      report.problem = p->where + " is " + std::string(DTypeName(p->dtype)) + " " + ShapeStr(p->shape) + " but " +
                       s.where + " in SRC is " + std::string(DTypeName(s.dtype)) + " " + ShapeStr(s.shape);
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
  report.ok = true;
  return report;
}

}  // namespace moepack
