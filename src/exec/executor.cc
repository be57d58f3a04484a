// Work is split into jobs of at most kJobBytes so that workers stay busy on
// skewed plans; each job writes a disjoint region: a copy range (or part of
// one), or a gather computed in memory (a transpose, interleaved experts).
// Jobs are grouped into one lane per output file, in destination order:
// buffered writes to one file serialize on its inode lock (ext4, XFS,
// btrfs), so two workers copying into the same file only spin on each
// other. A lane takes one copying worker at a time (gathers, which spend
// their time in user space, may share one), and the worker that completes a
// lane syncs its file while others keep copying.
#include "moepack/executor.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "exec/atomic_dir.h"
#include "plan/plan_sources.h"
#include "plan/ops/pieces.h"
#include "plan/ops/transpose_kernel.h"
#include "util/file.h"

namespace moepack {
namespace fs = std::filesystem;
using internal::File;

namespace {

constexpr uint64_t kJobBytes = 64ull << 20;
constexpr uint64_t kBufferBytes = 8ull << 20;

struct Job {
  uint32_t dst_file = 0;
  uint64_t dst_offset = 0;  // absolute in the output file
  const CopyRange* copy = nullptr;
  const Gather* gather = nullptr;
  uint64_t part_offset = 0;  // within the copy range
  uint64_t part_length = 0;
};

// The jobs of one output file. Guarded by the executor's mutex.
struct Lane {
  std::vector<Job> jobs;  // by destination offset
  size_t next = 0;        // first job not yet taken
  size_t unfinished = 0;  // jobs not yet completed
  uint64_t bytes_left = 0;
  int writers = 0;
  int max_writers = 1;
};

// The lane with work to hand out and room for a writer: fewest writers, then
// most bytes left, so the largest files start first. Null when none.
Lane* ClaimLane(std::vector<Lane>& lanes) {
  Lane* best = nullptr;
  for (Lane& l : lanes) {
    if (l.next == l.jobs.size() || l.writers >= l.max_writers) continue;
    if (!best || l.writers < best->writers || (l.writers == best->writers && l.bytes_left > best->bytes_left)) {
      best = &l;
    }
  }
  if (best) ++best->writers;
  return best;
}

// Copies with copy_file_range (in-kernel, no user-space buffer) and falls back
// to pread/pwrite where the kernel or filesystem refuses.
Status CopyBytes(const File& src, uint64_t src_off, const File& dst, uint64_t dst_off, uint64_t len,
                 std::vector<char>& buf, bool& use_cfr) {
  while (len > 0 && use_cfr) {
    loff_t in = static_cast<loff_t>(src_off), out = static_cast<loff_t>(dst_off);
    ssize_t n = ::copy_file_range(src.fd(), &in, dst.fd(), &out, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
        use_cfr = false;
        break;
      }
      return internal::ErrnoStatus("copy failed", dst.path(), errno);
    }
    if (n == 0) return Status::Corrupt(src.path() + ": unexpected end of file at offset " + std::to_string(src_off));
    src_off += n;
    dst_off += n;
    len -= n;
  }
  if (buf.empty() && len) buf.resize(kBufferBytes);
  while (len > 0) {
    const uint64_t n = std::min<uint64_t>(len, buf.size());
    MOEPACK_RETURN_IF_ERROR(src.ReadAt(src_off, buf.data(), n));
    MOEPACK_RETURN_IF_ERROR(dst.WriteAt(dst_off, buf.data(), n));
    src_off += n;
    dst_off += n;
    len -= n;
  }
  return Status::OK();
}

// One large transposed matrix: bands of source rows keep memory bounded,
// each band's output written as one segment per output row.
Status TransposeBands(const File& src, const BlockMove& t, const File& dst, uint64_t dst_off, std::vector<char>& in,
                      std::vector<char>& out) {
  const uint64_t row_bytes = t.cols * t.elem_bytes;
  const uint64_t band = std::max<uint64_t>(1, kJobBytes / row_bytes);
  for (uint64_t r0 = 0; r0 < t.rows; r0 += band) {
    const uint64_t nr = std::min(band, t.rows - r0);
    in.resize(nr * row_bytes);
    out.resize(nr * row_bytes);
    MOEPACK_RETURN_IF_ERROR(src.ReadAt(t.src_offset + r0 * row_bytes, in.data(), nr * row_bytes));
    internal::Transpose(in.data(), out.data(), nr, t.cols, t.elem_bytes);
    for (uint64_t c = 0; c < t.cols; ++c) {
      MOEPACK_RETURN_IF_ERROR(dst.WriteAt(dst_off + (c * t.rows + r0) * t.elem_bytes, out.data() + c * nr * t.elem_bytes,
                                          nr * t.elem_bytes));
    }
  }
  return Status::OK();
}

using Sources = internal::PlanSources;

// A copy range of a computed source: computed in memory, then written, a
// few MiB at a time (a job is up to kJobBytes; the buffer need not be).
constexpr uint64_t kComputeBytes = 8ull << 20;
Status ComputeBytes(const Sources& srcs, uint32_t src, uint64_t src_off, const File& dst, uint64_t dst_off,
                    uint64_t len, std::vector<char>& buf) {
  const uint64_t elem = static_cast<uint64_t>(DTypeBits(srcs.computed(src).dtype) / 8);
  const uint64_t step = std::max<uint64_t>(elem, kComputeBytes / elem * elem);
  buf.resize(std::min(len, step));
  for (uint64_t done = 0; done < len; done += step) {
    const uint64_t n = std::min(step, len - done);
    MOEPACK_RETURN_IF_ERROR(srcs.Read(src, src_off + done, n, buf.data()));
    MOEPACK_RETURN_IF_ERROR(dst.WriteAt(dst_off + done, buf.data(), n));
  }
  return Status::OK();
}

// A gather: every block read whole and moved into the region, which is then
// written at once. `dst_off` is where the region starts in the output file.
Status GatherBytes(const Sources& srcs, const Gather& g, const File& dst, uint64_t dst_off, std::vector<char>& in,
                   std::vector<char>& out) {
  if (g.blocks.size() == 1 && g.blocks[0].IsTranspose() && g.length > kJobBytes && srcs.stored(g.blocks[0].src_file)) {
    return TransposeBands(srcs.file(g.blocks[0].src_file), g.blocks[0], dst, dst_off, in, out);
  }
  out.resize(g.length);
  for (const BlockMove& b : g.blocks) {
    in.resize(b.src_span());
    MOEPACK_RETURN_IF_ERROR(srcs.Read(b.src_file, b.src_offset, in.size(), in.data()));
    ops::Apply(ops::Block{0, b.dst_offset - g.dst_offset, b.rows, b.cols, b.elem_bytes, b.src_row_stride,
                          b.src_col_stride, b.dst_row_stride, b.dst_col_stride},
               in.data(), out.data());
  }
  return dst.WriteAt(dst_off, out.data(), g.length);
}

bool IsInside(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin(), o = outer.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

}  // namespace

Status CheckDestination(const std::string& src_dir, const std::string& dst, bool force) {
  std::error_code ec;
  const fs::path s = fs::weakly_canonical(fs::absolute(src_dir), ec);
  const fs::path d = fs::weakly_canonical(fs::absolute(dst), ec);
  if (dst.empty()) return Status::InvalidArgument("DST is empty");
  if (s == d) return Status::InvalidArgument(dst + ": DST is the source checkpoint; moepack never writes into SRC");
  if (IsInside(d, s)) return Status::InvalidArgument(dst + ": DST lies inside the source checkpoint " + src_dir);
  if (IsInside(s, d)) return Status::InvalidArgument(dst + ": DST contains the source checkpoint " + src_dir);
  if (fs::exists(fs::symlink_status(d, ec)) && !force) {
    return Status::InvalidArgument(dst + ": already exists (pass --force to replace it)");
  }
  return Status::OK();
}

namespace {

// One execution, in steps: open the sources, make the temporary output
// with its shard files and jobs, run the workers, write the index and the
// other files, publish.
class Execution {
 public:
  Execution(const Plan& plan, const std::string& dst, const ExecuteOptions& options)
      : plan_(plan), dst_(dst), options_(options) {}

  Result<ExecuteReport> Run() {
    MOEPACK_RETURN_IF_ERROR(CheckDestination(plan_.src_dir, dst_, options_.force));
    // Every source first: a vanished file fails before anything is made.
    std::vector<File> files;
    for (const auto& p : plan_.src_files) {
      MOEPACK_ASSIGN_OR_RETURN(File f, File::OpenRead(p));
      files.push_back(std::move(f));
    }
    srcs_ = std::make_unique<Sources>(plan_, std::move(files));
    MOEPACK_ASSIGN_OR_RETURN(out_, internal::AtomicDir::Begin(dst_, options_.force, &report_.removed_stale));
    MOEPACK_RETURN_IF_ERROR(CheckFreeSpace());
    MOEPACK_RETURN_IF_ERROR(MakeShards());
    MOEPACK_RETURN_IF_ERROR(Copy());
    MOEPACK_RETURN_IF_ERROR(CloseShards());
    MOEPACK_RETURN_IF_ERROR(WriteIndex());
    MOEPACK_RETURN_IF_ERROR(CopyAuxFiles());
    MOEPACK_RETURN_IF_ERROR(out_->Commit(options_.sync));
    report_.bytes_written = total_;
    return report_;
  }

 private:
  Status CheckFreeSpace() const {
    uint64_t need = plan_.index_json.size();
    for (const auto& s : plan_.shards) need += s.layout.file_size();
    std::error_code ec;
    for (const auto& a : plan_.aux_files) need += fs::file_size(fs::path(plan_.src_dir) / a, ec);
    struct statvfs vfs;
    if (::statvfs(out_->path().c_str(), &vfs) != 0) return Status::OK();
    const uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (avail < need) {
      return Status::IOError(dst_ + ": not enough free space (" + std::to_string(need) + " bytes needed, " +
                             std::to_string(avail) + " available)");
    }
    return Status::OK();
  }

  // Creates each shard file at its final size, header written, and its lane
  // of jobs in destination order.
  Status MakeShards() {
    lanes_.resize(plan_.shards.size());
    for (uint32_t si = 0; si < plan_.shards.size(); ++si) {
      std::vector<Job>& jobs = lanes_[si].jobs;
      const PlannedShard& shard = plan_.shards[si];
      MOEPACK_ASSIGN_OR_RETURN(File f, File::Create(out_->path() + "/" + shard.filename));
      MOEPACK_RETURN_IF_ERROR(f.WriteAt(0, shard.layout.prefix.data(), shard.layout.prefix.size()));
      MOEPACK_RETURN_IF_ERROR(f.Truncate(shard.layout.file_size()));
      dsts_.push_back(std::move(f));
      std::unordered_map<std::string_view, const TensorInfo*> placed;
      for (const auto& ti : shard.layout.tensors) placed.emplace(ti.name, &ti);
      for (size_t k = 0; k < shard.tensors.size(); ++k) {
        const PlannedTensor& t = plan_.tensors[shard.tensors[k]];
        auto it = placed.find(t.name);
        if (it == placed.end()) return Status::Corrupt("internal: tensor '" + t.name + "' missing from its shard layout");
        const uint64_t base = shard.layout.prefix.size() + it->second->begin;
        for (const CopyRange& c : t.copies) {
          for (uint64_t off = 0; off < c.length; off += kJobBytes) {
            jobs.push_back(Job{si, base + c.dst_offset + off, &c, nullptr, off, std::min(kJobBytes, c.length - off)});
          }
        }
        for (const Gather& g : t.gathers) jobs.push_back(Job{si, base + g.dst_offset, nullptr, &g, 0, g.length});
      }
    }
    for (Lane& lane : lanes_) {
      std::sort(lane.jobs.begin(), lane.jobs.end(),
                [](const Job& a, const Job& b) { return a.dst_offset < b.dst_offset; });
      lane.unfinished = lane.jobs.size();
      for (const Job& j : lane.jobs) {
        lane.bytes_left += j.part_length;
        if (j.gather || !srcs_->stored(j.copy->src_file)) lane.max_writers = 64;
      }
      total_ += lane.bytes_left;
    }
    return Status::OK();
  }

  // The next job for a worker that holds `lane` (null: none yet), or
  // nullopt when there is nothing left for it or the run failed.
  std::optional<Job> Next(Lane*& lane) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failed_ && options_.cancel && options_.cancel->load(std::memory_order_relaxed)) {
      first_error_ = Status::IOError(dst_ + ": interrupted; nothing was written");
      failed_ = true;
    }
    if (failed_) return std::nullopt;
    if (lane && lane->next == lane->jobs.size()) {
      --lane->writers;
      lane = nullptr;
    }
    if (!lane) lane = ClaimLane(lanes_);
    if (!lane) return std::nullopt;
    Job j = lane->jobs[lane->next++];
    lane->bytes_left -= j.part_length;
    return j;
  }

  void Fail(const Status& st) {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_error_.ok()) first_error_ = st;
    failed_ = true;
  }

  void Worker() {
    std::vector<char> buf, tin, tout;
    bool use_cfr = true;
    Lane* lane = nullptr;
    while (auto j = Next(lane)) {
      Status st;
      if (j->gather) {
        st = GatherBytes(*srcs_, *j->gather, dsts_[j->dst_file], j->dst_offset, tin, tout);
      } else if (srcs_->stored(j->copy->src_file)) {
        st = CopyBytes(srcs_->file(j->copy->src_file), j->copy->src_offset + j->part_offset, dsts_[j->dst_file],
                       j->dst_offset, j->part_length, buf, use_cfr);
      } else {
        st = ComputeBytes(*srcs_, j->copy->src_file, j->copy->src_offset + j->part_offset, dsts_[j->dst_file],
                          j->dst_offset, j->part_length, tout);
      }
      // Writeback starts behind the copy instead of all at the fsync: the disk
      // works while the next job copies (a 1-layer conversion took 40% less
      // time on the benchmark machine, see docs/benchmarks.md).
      if (st.ok() && options_.sync) dsts_[j->dst_file].StartWriteback(j->dst_offset, j->part_length);
      bool file_complete = false;
      if (st.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        file_complete = --lane->unfinished == 0;
      }
      // Flushing a finished file here overlaps it with the copying of others.
      if (st.ok() && file_complete && options_.sync) st = dsts_[j->dst_file].Sync();
      if (!st.ok()) return Fail(st);
      const uint64_t d = done_.fetch_add(j->part_length) + j->part_length;
      if (options_.progress) options_.progress(d, total_);
    }
  }

  Status Copy() {
    int nthreads = options_.threads > 0 ? options_.threads : static_cast<int>(std::thread::hardware_concurrency());
    nthreads = std::max(1, std::min(nthreads, 64));
    std::vector<std::thread> pool;
    for (int t = 1; t < nthreads; ++t) pool.emplace_back([this] { Worker(); });
    Worker();
    for (auto& t : pool) t.join();
    return first_error_;
  }

  Status CloseShards() {
    for (size_t i = 0; i < dsts_.size(); ++i) {
      if (lanes_[i].jobs.empty() && options_.sync) MOEPACK_RETURN_IF_ERROR(dsts_[i].Sync());  // a shard of empty tensors
      MOEPACK_RETURN_IF_ERROR(dsts_[i].Close());
    }
    return Status::OK();
  }

  Status WriteIndex() const {
    if (plan_.index_json.empty()) return Status::OK();
    // Synced like the shards: after the rename, the index must be on disk too.
    MOEPACK_ASSIGN_OR_RETURN(File index, File::Create(out_->path() + "/" + kIndexFile));
    MOEPACK_RETURN_IF_ERROR(index.WriteAt(0, plan_.index_json.data(), plan_.index_json.size()));
    if (options_.sync) MOEPACK_RETURN_IF_ERROR(index.Sync());
    return index.Close();
  }

  Status CopyAuxFiles() const {
    std::vector<char> buf;
    std::error_code ec;
    for (const std::string& rel : plan_.aux_files) {
      const fs::path to = fs::path(out_->path()) / rel;
      fs::create_directories(to.parent_path(), ec);
      if (ec) return Status::IOError(to.parent_path().string() + ": cannot create directory (" + ec.message() + ")");
      if (rel == "config.json" && !plan_.config_json.empty()) {
        MOEPACK_ASSIGN_OR_RETURN(File o, File::Create(to.string()));
        MOEPACK_RETURN_IF_ERROR(o.WriteAt(0, plan_.config_json.data(), plan_.config_json.size()));
        if (options_.sync) MOEPACK_RETURN_IF_ERROR(o.Sync());
        MOEPACK_RETURN_IF_ERROR(o.Close());
        continue;
      }
      MOEPACK_ASSIGN_OR_RETURN(File in, File::OpenRead((fs::path(plan_.src_dir) / rel).string()));
      MOEPACK_ASSIGN_OR_RETURN(uint64_t size, in.Size());
      MOEPACK_ASSIGN_OR_RETURN(File o, File::Create(to.string()));
      bool use_cfr = true;
      MOEPACK_RETURN_IF_ERROR(CopyBytes(in, 0, o, 0, size, buf, use_cfr));
      if (options_.sync) MOEPACK_RETURN_IF_ERROR(o.Sync());
      MOEPACK_RETURN_IF_ERROR(o.Close());
    }
    return Status::OK();
  }

  const Plan& plan_;
  const std::string& dst_;
  const ExecuteOptions& options_;
  ExecuteReport report_;
  std::unique_ptr<Sources> srcs_;
  std::vector<File> dsts_;
  std::unique_ptr<internal::AtomicDir> out_;
  std::vector<Lane> lanes_;
  uint64_t total_ = 0;
  std::atomic<uint64_t> done_{0};
  std::mutex mu_;  // guards lanes_ and the error
  bool failed_ = false;
  Status first_error_;
};

}  // namespace

Result<ExecuteReport> Execute(const Plan& plan, const std::string& dst, const ExecuteOptions& options) {
  return Execution(plan, dst, options).Run();
}

}  // namespace moepack
