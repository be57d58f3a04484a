// A rank's part of a tensor is a product of element intervals over the
// tensor seen as [E, A, B]: experts x dim-1 intervals x dim-2 intervals. As
// bytes of the full tensor that is a sorted list of runs; the plan's copy
// ranges are sorted by destination too, so one merge-like sweep finds every
// overlap, and each overlap is one pread into the rank's buffer (adjacent
// ones coalesced). Transpose blocks (fused-transposed sources) are read as
// the sub-matrix the rank needs: for each needed source row, the needed
// column intervals. A window of the rank's bytes (ReadRange, the chunks of
// ReadMany) clips the runs to it; a gather (a transposed block, gate and up
// interleaved) is read whole into the window that holds its output, or
// through a scratch buffer when a window cuts it.
#include "moepack/loader.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <optional>
#include <unordered_map>

#include "moepack/checkpoint.h"
#include "moepack/convert.h"
#include "plan/ops/dtype_op.h"
#include "plan/ops/pieces.h"
#include "plan/ops/rank_slice.h"
#include "plan/ops/transpose_kernel.h"
#include "plan/plan_sources.h"
#include "util/file.h"
#include "util/parallel_for.h"
#include "util/strings.h"

namespace moepack {
namespace {

using internal::File;

using ops::Intervals;
using ops::Total;

// Coalesces reads. A read that continues the previous one in the file and
// in memory extends it; one that starts at most `max_gap` bytes after the
// previous one ends joins it in a span read through a bounce buffer and
// scattered (the gap bytes are read too and counted). With max_gap 0 only
// the rank's bytes are read, in as few preads as their layout allows. A
// computed source (a dequantized weight) is computed from the stored bytes
// its span needs, which are what is counted.
class SpanReader {
 public:
  static constexpr uint64_t kMaxSpan = 16ull << 20;  // bounce buffer bound

  SpanReader(const internal::PlanSources& sources, uint64_t max_gap, std::atomic<uint64_t>& bytes,
         std::atomic<uint64_t>& calls)
      : sources_(sources), max_gap_(max_gap), bytes_(bytes), calls_(calls) {}

  Status Add(uint32_t file, uint64_t offset, uint8_t* dst, uint64_t len) {
    if (len == 0) return Status::OK();
    if (!segs_.empty() && file == file_) {
      Seg& last = segs_.back();
      const uint64_t end = last.offset + last.len;
      if (segs_.size() == 1 && offset == end && dst == last.dst + last.len) {
        last.len += len;  // one direct read, however long
        return Status::OK();
      }
      if (offset >= end && offset - end <= max_gap_ && offset + len - segs_.front().offset <= kMaxSpan &&
          segs_.front().len <= kMaxSpan) {
        if (offset == end && dst == last.dst + last.len) {
          last.len += len;
        } else {
          segs_.push_back(Seg{offset, dst, len});
        }
        return Status::OK();
      }
    }
    MOEPACK_RETURN_IF_ERROR(Flush());
    file_ = file;
    segs_.push_back(Seg{offset, dst, len});
    return Status::OK();
  }

  Status Flush() {
    if (segs_.empty()) return Status::OK();
    const uint64_t start = segs_.front().offset;
    const uint64_t span = segs_.back().offset + segs_.back().len - start;
    uint8_t* into = segs_[0].dst;
    if (segs_.size() > 1) {
      bounce_.resize(span);
      into = bounce_.data();
    }
    MOEPACK_RETURN_IF_ERROR(sources_.Read(file_, start, span, into, [this](uint32_t f, uint64_t o, uint64_t n, void* d) {
      return ReadStored(f, o, n, d);
    }));
    if (segs_.size() > 1) {
      for (const Seg& s : segs_) std::memcpy(s.dst, bounce_.data() + (s.offset - start), s.len);
    }
    segs_.clear();
    return Status::OK();
  }

 private:
  struct Seg {
    uint64_t offset;
    uint8_t* dst;
    uint64_t len;
  };

  // One pread, counted. The last short read is kept: a row of block scales
  // serves the many row segments of a tensor-parallel slice that it scales.
  Status ReadStored(uint32_t f, uint64_t o, uint64_t n, void* d) {
    constexpr uint64_t kMemo = 4096;
    if (n <= kMemo && memo_.size() == n && memo_file_ == f && memo_offset_ == o) {
      std::memcpy(d, memo_.data(), n);
      return Status::OK();
    }
    MOEPACK_RETURN_IF_ERROR(sources_.file(f).ReadAt(o, d, n));
    bytes_.fetch_add(n, std::memory_order_relaxed);
    calls_.fetch_add(1, std::memory_order_relaxed);
    if (n <= kMemo && !sources_.stored(file_)) {
      memo_.assign(static_cast<const uint8_t*>(d), static_cast<const uint8_t*>(d) + n);
      memo_file_ = f;
      memo_offset_ = o;
    }
    return Status::OK();
  }

  const internal::PlanSources& sources_;
  const uint64_t max_gap_;
  std::atomic<uint64_t>& bytes_;
  std::atomic<uint64_t>& calls_;
  uint32_t file_ = 0;
  std::vector<Seg> segs_;
  std::vector<uint8_t> bounce_;
  std::vector<uint8_t> memo_;
  uint32_t memo_file_ = 0;
  uint64_t memo_offset_ = 0;
};

// Bytes [full, full + len) of the full tensor land at [rank, rank + len) of
// the rank's buffer.
struct Run {
  uint64_t full, len, rank;
};

}  // namespace

struct Loader::State {
  Plan plan;
  std::optional<internal::PlanSources> sources;  // over `plan`, which stays put
  std::vector<LoadTensor> tensors;
  std::vector<uint32_t> plan_index;  // tensors[i] is plan.tensors[plan_index[i]]
  struct View {
    uint64_t A = 1, B = 1;  // the tensor seen as [E, A, B]
  };
  std::vector<View> views;
  std::string family;
  uint64_t rank_bytes = 0;
  uint64_t max_gap = 0;
  mutable std::atomic<uint64_t> bytes_read{0};
  mutable std::atomic<uint64_t> read_calls{0};

  std::vector<Run> Runs(size_t i) const;
  // The rank bytes [lo, hi) that gather g of tensor i makes.
  std::pair<uint64_t, uint64_t> Extent(const Gather& g, const std::vector<Run>& runs) const;
  std::vector<std::pair<uint64_t, uint64_t>> ChunksOf(size_t i, const std::vector<Run>& runs, uint64_t max) const;
  // Rank bytes [w0, w1) of tensor i into dst (which holds rank byte w0).
  Status ReadWindow(size_t i, const std::vector<Run>& runs, uint64_t w0, uint64_t w1, uint8_t* dst,
                    SpanReader& reader) const;
  // Write the rank bytes of g (of b) to dst, which holds rank byte `base`.
  Status ReadGather(size_t i, const Gather& g, uint8_t* dst, uint64_t base, const std::vector<Run>& runs,
                    SpanReader& reader) const;
  Status ReadTransposed(size_t i, const BlockMove& b, uint8_t* dst, uint64_t base, const std::vector<Run>& runs,
                        SpanReader& reader) const;
  SpanReader MakeReader() const { return SpanReader(*sources, max_gap, bytes_read, read_calls); }
};

std::vector<Run> Loader::State::Runs(size_t i) const {
  const LoadTensor& t = tensors[i];
  std::vector<Run> runs;
  if (t.split == Split::kWhole) {
    if (t.nbytes) runs.push_back(Run{0, t.nbytes, 0});
    return runs;
  }
  const uint64_t eb = static_cast<uint64_t>(DTypeBits(t.dtype) / 8);
  const uint64_t A = views[i].A, B = views[i].B;
  const bool full_rows = t.dim2.size() == 1 && t.dim2[0].first == 0 && t.dim2[0].second == B;
  uint64_t rank = 0;
  auto push = [&](uint64_t full, uint64_t len) {
    if (!runs.empty() && runs.back().full + runs.back().len == full && runs.back().rank + runs.back().len == rank) {
      runs.back().len += len;
    } else {
      runs.push_back(Run{full, len, rank});
    }
    rank += len;
  };
  for (uint64_t e = t.expert_begin; e < t.expert_end; ++e) {
    for (const auto& [a0, a1] : t.dim1) {
      if (full_rows) {
        push((e * A + a0) * B * eb, (a1 - a0) * B * eb);
        continue;
      }
      for (uint64_t a = a0; a < a1; ++a) {
        for (const auto& [b0, b1] : t.dim2) push(((e * A + a) * B + b0) * eb, (b1 - b0) * eb);
      }
    }
  }
  return runs;
}

// A gather of other blocks (interleaved gate and up) is computed whole and
// the rank's bytes kept; a transposed matrix is read as the rank needs it.
Status Loader::State::ReadGather(size_t i, const Gather& g, uint8_t* dst, uint64_t base,
                                 const std::vector<Run>& runs, SpanReader& reader) const {
  if (g.blocks.size() == 1 && g.blocks[0].IsTranspose()) return ReadTransposed(i, g.blocks[0], dst, base, runs, reader);
  auto at = [&](uint64_t rank_offset) { return dst + (rank_offset - base); };
  const LoadTensor& t = tensors[i];
  const uint64_t lo = g.dst_offset, hi = g.dst_offset + g.length;
  bool any = t.split == Split::kWhole;
  for (const Run& r : runs) any = any || (r.full < hi && r.full + r.len > lo);
  if (!any) return Status::OK();
  std::vector<uint8_t> in, region(t.split == Split::kWhole ? 0 : g.length);
  uint8_t* out = t.split == Split::kWhole ? at(g.dst_offset) : region.data();
  for (const BlockMove& b : g.blocks) {
    in.resize(b.src_span());
    MOEPACK_RETURN_IF_ERROR(reader.Add(b.src_file, b.src_offset, in.data(), in.size()));
    MOEPACK_RETURN_IF_ERROR(reader.Flush());
    ops::Apply(ops::Block{0, b.dst_offset - g.dst_offset, b.rows, b.cols, b.elem_bytes, b.src_row_stride,
                          b.src_col_stride, b.dst_row_stride, b.dst_col_stride},
               in.data(), out);
  }
  if (t.split == Split::kWhole) return Status::OK();
  for (const Run& r : runs) {
    const uint64_t s = std::max(lo, r.full), e = std::min(hi, r.full + r.len);
    if (s < e) std::memcpy(at(r.rank + (s - r.full)), region.data() + (s - lo), e - s);
  }
  return Status::OK();
}

// A transposed block writes the transpose [cols, rows] of a source [rows,
// cols] matrix at dst_offset of the full tensor. When that region is whole
// rows of the [E*A, B] view (rows == B), the rank's part of it is a
// sub-matrix: the needed output rows (source columns) x dim-2 (source rows).
Status Loader::State::ReadTransposed(size_t i, const BlockMove& b, uint8_t* dst, uint64_t base,
                                     const std::vector<Run>& runs, SpanReader& reader) const {
  auto at = [&](uint64_t rank_offset) { return dst + (rank_offset - base); };
  const LoadTensor& t = tensors[i];
  const uint64_t eb = b.elem_bytes;
  const uint64_t block_bytes = b.rows * b.cols * eb;
  std::vector<uint8_t> in(block_bytes), out(block_bytes);
  if (t.split == Split::kWhole) {
    MOEPACK_RETURN_IF_ERROR(reader.Add(b.src_file, b.src_offset, in.data(), block_bytes));
    MOEPACK_RETURN_IF_ERROR(reader.Flush());
    internal::Transpose(in.data(), at(b.dst_offset), b.rows, b.cols, static_cast<uint32_t>(eb));
    return Status::OK();
  }
  const uint64_t A = views[i].A, B = views[i].B;
  const uint64_t A_rank = Total(t.dim1), B_rank = Total(t.dim2);
  if (b.rows == B && b.dst_offset % (B * eb) == 0) {
    const uint64_t g0 = b.dst_offset / (B * eb);
    std::vector<std::pair<uint64_t, uint64_t>> need;  // (source column c, rank row)
    for (uint64_t c = 0; c < b.cols; ++c) {
      const uint64_t row = g0 + c, e = row / A, a = row % A;
      if (e < t.expert_begin || e >= t.expert_end) continue;
      uint64_t pos = 0;
      for (const auto& [a0, a1] : t.dim1) {
        if (a >= a0 && a < a1) {
          need.emplace_back(c, (e - t.expert_begin) * A_rank + pos + (a - a0));
          break;
        }
        pos += a1 - a0;
      }
    }
    if (need.empty()) return Status::OK();
    Intervals cols;
    for (const auto& [c, r] : need) {
      if (!cols.empty() && cols.back().second == c) {
        ++cols.back().second;
      } else {
        cols.emplace_back(c, c + 1);
      }
    }
    const uint64_t nC = need.size(), nR = B_rank;
    uint64_t rp = 0;
    for (const auto& [r0, r1] : t.dim2) {
      for (uint64_t r = r0; r < r1; ++r, ++rp) {
        uint64_t cp = 0;
        for (const auto& [c0, c1] : cols) {
          MOEPACK_RETURN_IF_ERROR(
              reader.Add(b.src_file, b.src_offset + (r * b.cols + c0) * eb, in.data() + (rp * nC + cp) * eb, (c1 - c0) * eb));
          cp += c1 - c0;
        }
      }
    }
    MOEPACK_RETURN_IF_ERROR(reader.Flush());
    internal::Transpose(in.data(), out.data(), nR, nC, static_cast<uint32_t>(eb));
    for (uint64_t k = 0; k < nC; ++k) std::memcpy(at(need[k].second * nR * eb), out.data() + k * nR * eb, nR * eb);
    return Status::OK();
  }
  // Any other shape of block: read it whole and keep the rank's bytes.
  const uint64_t lo = b.dst_offset, hi = b.dst_offset + block_bytes;
  bool any = false;
  for (const Run& r : runs) any = any || (r.full < hi && r.full + r.len > lo);
  if (!any) return Status::OK();
  MOEPACK_RETURN_IF_ERROR(reader.Add(b.src_file, b.src_offset, in.data(), block_bytes));
  MOEPACK_RETURN_IF_ERROR(reader.Flush());
  internal::Transpose(in.data(), out.data(), b.rows, b.cols, static_cast<uint32_t>(eb));
  for (const Run& r : runs) {
    const uint64_t s = std::max(lo, r.full), e = std::min(hi, r.full + r.len);
    if (s < e) std::memcpy(at(r.rank + (s - r.full)), out.data() + (s - lo), e - s);
  }
  return Status::OK();
}

std::pair<uint64_t, uint64_t> Loader::State::Extent(const Gather& g, const std::vector<Run>& runs) const {
  const uint64_t lo = g.dst_offset, hi = g.dst_offset + g.length;
  auto it = std::upper_bound(runs.begin(), runs.end(), lo, [](uint64_t v, const Run& r) { return v < r.full + r.len; });
  std::pair<uint64_t, uint64_t> ext{0, 0};
  bool any = false;
  for (; it != runs.end() && it->full < hi; ++it) {
    const uint64_t s = std::max(lo, it->full), e = std::min(hi, it->full + it->len);
    if (!any) ext.first = it->rank + (s - it->full);
    ext.second = it->rank + (e - it->full);
    any = true;
  }
  return ext;
}

std::vector<std::pair<uint64_t, uint64_t>> Loader::State::ChunksOf(size_t i, const std::vector<Run>& runs,
                                                                   uint64_t max) const {
  const uint64_t n = tensors[i].nbytes;
  max = std::max<uint64_t>(1, max);
  std::vector<std::pair<uint64_t, uint64_t>> blocks;  // rank extents of the gathers, never cut
  for (const Gather& g : plan.tensors[plan_index[i]].gathers) {
    auto e = Extent(g, runs);
    if (e.first < e.second) blocks.push_back(e);
  }
  std::sort(blocks.begin(), blocks.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  size_t k = 0;
  for (uint64_t cur = 0; cur < n;) {
    uint64_t end = std::min(n, (cur / max + 1) * max);
    while (k < blocks.size() && blocks[k].second <= cur) ++k;
    if (k < blocks.size() && blocks[k].first < end && blocks[k].second > end) {
      end = blocks[k].first > cur ? blocks[k].first : blocks[k].second;
    }
    out.emplace_back(cur, end);
    cur = end;
  }
  return out;
}

Status Loader::State::ReadWindow(size_t i, const std::vector<Run>& runs, uint64_t w0, uint64_t w1, uint8_t* dst,
                                 SpanReader& reader) const {
  const PlannedTensor& pt = plan.tensors[plan_index[i]];
  std::vector<Run> win;  // the runs inside the window, rank offsets relative to it
  auto it = std::upper_bound(runs.begin(), runs.end(), w0, [](uint64_t v, const Run& r) { return v < r.rank + r.len; });
  for (; it != runs.end() && it->rank < w1; ++it) {
    const uint64_t s = std::max(w0, it->rank), e = std::min(w1, it->rank + it->len);
    win.push_back(Run{it->full + (s - it->rank), e - s, s - w0});
  }
  std::vector<const CopyRange*> copies;
  copies.reserve(pt.copies.size());
  for (const CopyRange& c : pt.copies) copies.push_back(&c);
  std::sort(copies.begin(), copies.end(), [](const CopyRange* a, const CopyRange* b) { return a->dst_offset < b->dst_offset; });
  size_t r = 0, c = 0;
  while (r < win.size() && c < copies.size()) {
    const Run& run = win[r];
    const CopyRange& cr = *copies[c];
    const uint64_t lo = std::max(run.full, cr.dst_offset);
    const uint64_t hi = std::min(run.full + run.len, cr.dst_offset + cr.length);
    if (lo < hi) {
      MOEPACK_RETURN_IF_ERROR(
          reader.Add(cr.src_file, cr.src_offset + (lo - cr.dst_offset), dst + run.rank + (lo - run.full), hi - lo));
    }
    if (run.full + run.len <= cr.dst_offset + cr.length) {
      ++r;
    } else {
      ++c;
    }
  }
  MOEPACK_RETURN_IF_ERROR(reader.Flush());
  for (const Gather& g : pt.gathers) {
    const auto [lo, hi] = Extent(g, runs);
    if (lo >= hi || hi <= w0 || lo >= w1) continue;
    // Gathers store whole elements: straight into dst only where it is
    // aligned for them (a window may start anywhere).
    const bool aligned = reinterpret_cast<uintptr_t>(dst + (std::max(lo, w0) - w0)) % alignof(std::max_align_t) == 0;
    if (lo >= w0 && hi <= w1 && aligned) {
      MOEPACK_RETURN_IF_ERROR(ReadGather(i, g, dst, w0, runs, reader));
      continue;
    }
    std::vector<uint8_t> part(hi - lo);  // the window cuts the gather, or dst is misaligned
    MOEPACK_RETURN_IF_ERROR(ReadGather(i, g, part.data(), lo, runs, reader));
    const uint64_t s = std::max(lo, w0), e = std::min(hi, w1);
    std::memcpy(dst + (s - w0), part.data() + (s - lo), e - s);
  }
  return Status::OK();
}

Loader::Loader(std::unique_ptr<State> s) : s_(std::move(s)) {}
Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;
Loader::~Loader() = default;

const std::vector<LoadTensor>& Loader::tensors() const { return s_->tensors; }
const std::string& Loader::family() const { return s_->family; }
uint64_t Loader::total_bytes() const { return s_->plan.total_bytes; }
uint64_t Loader::rank_bytes() const { return s_->rank_bytes; }
uint64_t Loader::bytes_read() const { return s_->bytes_read.load(); }
uint64_t Loader::read_calls() const { return s_->read_calls.load(); }
void Loader::ResetCounters() const {
  s_->bytes_read = 0;
  s_->read_calls = 0;
}

namespace {

Status CheckParallel(const ParallelSpec& p) {
  if (p.ep_size < 1) return Status::InvalidArgument("ep_size must be at least 1, got " + std::to_string(p.ep_size));
  if (p.tp_size < 1) return Status::InvalidArgument("tp_size must be at least 1, got " + std::to_string(p.tp_size));
  if (p.ep_rank < 0 || p.ep_rank >= p.ep_size) {
    return Status::InvalidArgument("ep_rank " + std::to_string(p.ep_rank) + " is outside [0, " +
                                   std::to_string(p.ep_size) + ")");
  }
  if (p.tp_rank < 0 || p.tp_rank >= p.tp_size) {
    return Status::InvalidArgument("tp_rank " + std::to_string(p.tp_rank) + " is outside [0, " +
                                   std::to_string(p.tp_size) + ")");
  }
  return Status::OK();
}

// Every source tensor as it is: a plan of plain copies.
Plan RawPlan(const Checkpoint& ckpt) {
  Plan plan;
  plan.src_dir = ckpt.dir();
  for (const Shard& s : ckpt.shards()) plan.src_files.push_back(s.path);
  for (const std::string& name : ckpt.names()) {
    const TensorLocation* loc = ckpt.Find(name);
    PlannedTensor t;
    t.name = name;
    t.dtype = loc->info->dtype;
    t.shape = loc->info->shape;
    t.nbytes = loc->info->nbytes();
    if (t.nbytes) {
      t.copies.push_back(
          CopyRange{loc->shard, ckpt.shards()[loc->shard].header.data_start() + loc->info->begin, t.nbytes, 0});
    }
    plan.total_bytes += t.nbytes;
    plan.tensors.push_back(std::move(t));
  }
  plan.source_tensors = plan.tensors.size();
  return plan;
}

// What a parallel load cuts, named for LoadTensor::split.
Split SplitOf(const ParallelSpec& p) {
  if (p.ep_size > 1 && p.tp_size > 1) return Split::kExpertsAndTensorParallel;
  return p.ep_size > 1 ? Split::kExperts : Split::kTensorParallel;
}

}  // namespace

std::string_view SplitName(Split s) {
  switch (s) {
    case Split::kWhole: return "whole";
    case Split::kExperts: return "experts";
    case Split::kTensorParallel: return "tp";
    case Split::kExpertsAndTensorParallel: return "experts+tp";
  }
  return "";
}

// Open in steps: the plan, the source files, the reading order, then each
// tensor's part for the rank.
class Loader::Opener {
 public:
  Opener(const Checkpoint& ckpt, const LoadOptions& options) : ckpt_(ckpt), options_(options) {}

  Result<std::unique_ptr<State>> Run() {
    s_ = std::make_unique<State>();
    s_->max_gap = options_.max_gap;
    MOEPACK_RETURN_IF_ERROR(MakePlan());
    DecodeOnlyWhatIsRead();
    std::vector<File> files;
    for (const std::string& p : s_->plan.src_files) {
      MOEPACK_ASSIGN_OR_RETURN(File f, File::OpenRead(p));
      files.push_back(std::move(f));
    }
    s_->sources.emplace(s_->plan, std::move(files));
    ReadingOrder();
    MOEPACK_RETURN_IF_ERROR(Slice());
    return std::move(s_);
  }

 private:
  Status MakePlan() {
    if (options_.raw) {
      s_->plan = RawPlan(ckpt_);
      return Status::OK();
    }
    MOEPACK_ASSIGN_OR_RETURN(RuleSet r, ChooseRules(ckpt_, options_.model_type, options_.rules_file));
    if (options_.dtype == DTypeChange::kToFP8) {
      return Status::InvalidArgument(
          "dtype fp8 quantizes a checkpoint for export (moepack convert --dtype fp8); loading dequantizes to bf16, "
          "f16 or f32");
    }
    PlanOptions po;
    po.direction = options_.direction;
    po.max_shard_size = std::numeric_limits<uint64_t>::max();
    po.source_layout = options_.source_layout;
    po.dtype = options_.dtype;
    MOEPACK_ASSIGN_OR_RETURN(s_->plan, moepack::MakePlan(ckpt_, r, po));
    s_->family = r.family();
    rules_ = std::move(r);
    return Status::OK();
  }

  // An MXFP4 weight reads as v5 holds it, each expert transposed: as
  // transposes of its decoded rows instead, so that a rank that needs a few
  // of the output's columns (tensor parallel) decodes only those rows.
  void DecodeOnlyWhatIsRead() {
    Plan& plan = s_->plan;
    const auto files = static_cast<uint32_t>(plan.src_files.size());
    std::unordered_map<uint32_t, uint32_t> decoded;  // computed source -> its rows form
    for (PlannedTensor& t : plan.tensors) {
      std::vector<CopyRange> kept;
      for (const CopyRange& c : t.copies) {
        std::optional<std::vector<BlockMove>> moves;
        if (c.src_file >= files) {
          auto [it, fresh] = decoded.try_emplace(c.src_file, files + static_cast<uint32_t>(plan.computed.size()));
          moves = ops::AsDecodedTransposes(plan.computed[c.src_file - files], it->second, c);
          if (fresh && moves) plan.computed.push_back(ops::DecodedRows(plan.computed[c.src_file - files]));
          if (fresh && !moves) decoded.erase(it);
        }
        if (!moves) {
          kept.push_back(c);
          continue;
        }
        for (const BlockMove& b : *moves) t.gathers.push_back(Gather{b.dst_offset, b.dst_span(), {b}});
      }
      t.copies = std::move(kept);
      std::sort(t.gathers.begin(), t.gathers.end(),
                [](const Gather& a, const Gather& b) { return a.dst_offset < b.dst_offset; });
    }
  }

  // By where each tensor's stored bytes start in the source.
  void ReadingOrder() {
    const auto& pts = s_->plan.tensors;
    const internal::PlanSources& src = *s_->sources;
    std::vector<std::pair<uint32_t, uint64_t>> first(pts.size());
    for (size_t k = 0; k < pts.size(); ++k) {
      auto& f = first[k];
      f = {std::numeric_limits<uint32_t>::max(), 0};
      for (const CopyRange& c : pts[k].copies) f = std::min(f, src.StoredStart(c.src_file, c.src_offset));
      for (const Gather& g : pts[k].gathers) {
        for (const BlockMove& b : g.blocks) f = std::min(f, src.StoredStart(b.src_file, b.src_offset));
      }
    }
    s_->plan_index.resize(pts.size());
    std::iota(s_->plan_index.begin(), s_->plan_index.end(), 0u);
    std::stable_sort(s_->plan_index.begin(), s_->plan_index.end(),
                     [&](uint32_t a, uint32_t b) { return first[a] < first[b]; });
  }

  Status Slice() {
    const ParallelSpec& par = options_.parallel;
    const auto& pts = s_->plan.tensors;
    // Every tensor's role first: a scale is cut by the intermediate size of
    // its weight, which may come later in reading order.
    std::vector<ops::SliceRole> roles(pts.size());
    std::unordered_map<std::string, uint64_t> weight_cut;
    if (par.parallel()) {
      const ModelConfig* config = ckpt_.config() ? &*ckpt_.config() : nullptr;
      for (size_t k = 0; k < pts.size(); ++k) {
        roles[k] = ops::RoleOf(*rules_, config, pts[k].name);
        if (auto cut = ops::CutSize(roles[k], pts[k].shape)) weight_cut[pts[k].name] = *cut;
      }
    }
    for (uint32_t k : s_->plan_index) {
      const PlannedTensor& pt = pts[k];
      std::optional<uint64_t> cut;
      if (auto it = weight_cut.find(roles[k].weight); roles[k].scale && it != weight_cut.end()) cut = it->second;
      MOEPACK_ASSIGN_OR_RETURN(ops::RankSlice slice,
                               ops::SliceForRank(roles[k], pt.name, pt.dtype, pt.shape, par, cut));
      LoadTensor t;
      t.name = pt.name;
      t.dtype = pt.dtype;
      t.full_shape = pt.shape;
      t.shape = slice.shape;
      t.nbytes = pt.nbytes;
      if (!slice.whole) {
        t.split = SplitOf(par);
        t.expert_begin = slice.expert_begin;
        t.expert_end = slice.expert_end;
        t.dim1 = std::move(slice.dim1);
        t.dim2 = std::move(slice.dim2);
        auto count = NumElements(t.shape);
        t.nbytes = count ? ByteSize(t.dtype, *count).value_or(0) : 0;
      }
      s_->rank_bytes += t.nbytes;
      s_->tensors.push_back(std::move(t));
      s_->views.push_back(State::View{slice.A, slice.B});
    }
    return Status::OK();
  }

  const Checkpoint& ckpt_;
  const LoadOptions& options_;
  std::unique_ptr<State> s_;
  std::optional<RuleSet> rules_;
};

Result<Loader> Loader::Open(const std::string& path, const LoadOptions& options) {
  const ParallelSpec& par = options.parallel;
  MOEPACK_RETURN_IF_ERROR(CheckParallel(par));
  if (par.parallel() && options.raw) {
    return Status::InvalidArgument(
        "a converter of your own sees whole tensors: ep_size/tp_size > 1 needs moepack's conversion");
  }
  if (options.raw && options.dtype != DTypeChange::kKeep) {
    return Status::InvalidArgument("a converter of your own sees the tensors as stored: it changes their dtype itself");
  }
  if (par.parallel() && options.direction != Direction::kToFused) {
    return Status::InvalidArgument("ep_size/tp_size > 1 slices fused expert tensors: load to the fused layout");
  }
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(path));
  MOEPACK_ASSIGN_OR_RETURN(std::unique_ptr<State> s, Opener(ckpt, options).Run());
  return Loader(std::move(s));
}

Status Loader::ReadInto(size_t i, void* dst, uint64_t size) const {
  if (i >= s_->tensors.size()) {
    return Status::InvalidArgument("tensor index " + std::to_string(i) + " is out of range (" +
                                   std::to_string(s_->tensors.size()) + " tensors)");
  }
  const LoadTensor& t = s_->tensors[i];
  if (size != t.nbytes) {
    return Status::InvalidArgument("'" + t.name + "': buffer of " + std::to_string(size) + " bytes for " +
                                   std::to_string(t.nbytes) + " bytes");
  }
  SpanReader reader = s_->MakeReader();
  return s_->ReadWindow(i, s_->Runs(i), 0, t.nbytes, static_cast<uint8_t*>(dst), reader);
}

Status Loader::ReadRange(size_t i, uint64_t offset, void* dst, uint64_t size) const {
  if (i >= s_->tensors.size()) {
    return Status::InvalidArgument("tensor index " + std::to_string(i) + " is out of range (" +
                                   std::to_string(s_->tensors.size()) + " tensors)");
  }
  const LoadTensor& t = s_->tensors[i];
  if (offset > t.nbytes || size > t.nbytes - offset) {
    return Status::InvalidArgument("'" + t.name + "': bytes [" + std::to_string(offset) + ", +" + std::to_string(size) +
                                   ") lie outside its " + std::to_string(t.nbytes) + " bytes");
  }
  if (size == 0) return Status::OK();
  SpanReader reader = s_->MakeReader();
  return s_->ReadWindow(i, s_->Runs(i), offset, offset + size, static_cast<uint8_t*>(dst), reader);
}

std::vector<std::pair<uint64_t, uint64_t>> Loader::Chunks(size_t i, uint64_t max_bytes) const {
  if (i >= s_->tensors.size()) return {};
  return s_->ChunksOf(i, s_->Runs(i), max_bytes);
}

Status Loader::ReadMany(const std::vector<ReadRequest>& requests, const ReadOptions& options) const {
  const auto& ts = s_->tensors;
  std::vector<size_t> by_address;
  for (size_t r = 0; r < requests.size(); ++r) {
    const ReadRequest& q = requests[r];
    if (q.index >= ts.size()) {
      return Status::InvalidArgument("tensor index " + std::to_string(q.index) + " is out of range (" +
                                     std::to_string(ts.size()) + " tensors)");
    }
    if (q.size != ts[q.index].nbytes) {
      return Status::InvalidArgument("'" + ts[q.index].name + "': buffer of " + std::to_string(q.size) +
                                     " bytes for " + std::to_string(ts[q.index].nbytes) + " bytes");
    }
    if (q.size) by_address.push_back(r);
  }
  // Threads write the buffers at once: two that share a byte would race.
  auto addr = [&](size_t r) { return reinterpret_cast<uintptr_t>(requests[r].dst); };
  std::sort(by_address.begin(), by_address.end(), [&](size_t a, size_t b) { return addr(a) < addr(b); });
  for (size_t k = 1; k < by_address.size(); ++k) {
    const size_t a = by_address[k - 1], b = by_address[k];
    if (addr(a) + requests[a].size > addr(b)) {
      return Status::InvalidArgument("the buffers for '" + ts[requests[a].index].name + "' and '" +
                                     ts[requests[b].index].name + "' overlap");
    }
  }
  // A tensor's runs are made when its first chunk is reached and dropped
  // after its last: for a tensor-parallel slice they are one per row.
  struct Lazy {
    std::once_flag once;
    std::vector<Run> runs;
    std::atomic<size_t> left{0};
  };
  std::vector<Lazy> lazy(requests.size());
  auto runs_of = [&](size_t r) -> const std::vector<Run>& {
    std::call_once(lazy[r].once, [&] { lazy[r].runs = s_->Runs(requests[r].index); });
    return lazy[r].runs;
  };
  struct Item {
    size_t request;
    uint64_t begin, end;
  };
  std::vector<Item> items;
  for (size_t r = 0; r < requests.size(); ++r) {
    const size_t i = requests[r].index;
    if (!requests[r].size) continue;
    const auto chunks = s_->plan.tensors[s_->plan_index[i]].gathers.empty()
                            ? s_->ChunksOf(i, {}, options.chunk_bytes)
                            : s_->ChunksOf(i, runs_of(r), options.chunk_bytes);
    lazy[r].left = chunks.size();
    for (const auto& [b, e] : chunks) items.push_back(Item{r, b, e});
  }
  const int nt = internal::ThreadCount(options.threads);
  std::vector<SpanReader> readers;
  readers.reserve(static_cast<size_t>(nt));
  for (int w = 0; w < nt; ++w) readers.push_back(s_->MakeReader());
  return internal::ParallelFor(items.size(), nt, [&](size_t k, int worker) {
    const Item& it = items[k];
    const ReadRequest& q = requests[it.request];
    Status st = s_->ReadWindow(q.index, runs_of(it.request), it.begin, it.end,
                               static_cast<uint8_t*>(q.dst) + it.begin, readers[static_cast<size_t>(worker)]);
    if (--lazy[it.request].left == 0) std::vector<Run>().swap(lazy[it.request].runs);
    return st;
  });
}

Result<OwnedTensor> Loader::Read(size_t i) const {
  if (i >= s_->tensors.size()) return Status::InvalidArgument("tensor index " + std::to_string(i) + " is out of range");
  const LoadTensor& t = s_->tensors[i];
  OwnedTensor o;
  o.name = t.name;
  o.dtype = t.dtype;
  o.shape = t.shape;
  o.nbytes = t.nbytes;
  o.data = std::shared_ptr<uint8_t[]>(new uint8_t[t.nbytes ? t.nbytes : 1]);
  MOEPACK_RETURN_IF_ERROR(ReadInto(i, o.data.get(), o.nbytes));
  return o;
}

}  // namespace moepack
