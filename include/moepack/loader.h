// The rank-aware runtime loader: hands a training or inference process the
// converted state dict one tensor at a time, reading from disk only the bytes
// that process needs.
//
//   auto loader = Loader::Open(dir, {.parallel = {.ep_rank = r, .ep_size = 4}});
//   for (size_t i = 0; i < loader->tensors().size(); ++i) {
//     auto& t = loader->tensors()[i];           // name, dtype, the rank's shape
//     loader->ReadInto(i, buffer_of(t.nbytes), t.nbytes);
//   }
//   // or all at once, over every core, each tensor cut into chunks:
//   loader->ReadMany({{i, buffer_of(t.nbytes), t.nbytes}, ...}, {.threads = 8});
//
// It runs on the planner: the plan of the conversion (per-expert or fused
// source, to either layout) says for every output tensor which source bytes
// make which output bytes (CopyRange, Gather). The loader works out
// the output bytes the rank needs, intersects them with those ranges and
// preads only the intersection, straight to its place in the caller's buffer.
// No conversion is written to disk and no full fused tensor is held.
//
// Parallel slicing (only with Direction::kToFused) applies to fused expert
// tensors, [E, A, B] (a fusion target or a transpose pattern of the rules);
// every other tensor is given whole to every rank:
//   expert parallel  rank r of ep_size gets experts [r*E/ep, (r+1)*E/ep);
//                    E % ep_size != 0 is an error.
//   tensor parallel  over the dim the rule's role says holds the expert
//                    intermediate size I (its tp_dim), rank t of tp_size,
//                    with Il = I / tp_size (I % tp_size != 0 is an error):
//                    gate_up [E, 2I, H] -> [E_local, 2*Il, H]: gate rows
//                    [t*Il, (t+1)*Il) then the up rows of the same range;
//                    down [E, H, I] -> [E_local, H, Il]: the same columns;
//                    up [E, I, H] -> [E_local, Il, H]. A fused expert tensor
//                    whose rule declares no role is an error.
//   block scales     (rules with scale_of) are cut the same way in units of
//                    the quantization block (the divisor in the scale
//                    rule's source_shape, e.g. BR = config.json
//                    quantization_config.weight_block_size, else 128); a
//                    tensor-parallel slice that does not start and end on
//                    block boundaries is an error.
//
// Thread safety: after Open, a Loader is immutable except for its read
// counters (atomic); ReadInto, ReadRange and ReadMany may be called from
// several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/parallel.h"
#include "moepack/plan.h"
#include "moepack/rules.h"
#include "moepack/status.h"
#include "moepack/streaming.h"

namespace moepack {

struct LoadOptions {
  Direction direction = Direction::kToFused;
  std::string model_type;  // overrides config.json
  std::string rules_file;  // a user's rule file instead of a built-in family
  SourceLayout source_layout = SourceLayout::kUnspecified;
  ParallelSpec parallel;
  // Every source tensor under its own name, unconverted (no rules, no
  // config.json needed): what a user's own streaming converter consumes.
  // REQUIRES: !parallel.parallel()
  bool raw = false;
  // kToBF16/kToF16/kToF32 dequantize FP8 block-scaled and MXFP4 weights as
  // they are read (as `moepack convert --dtype` does); a rank computes only
  // its own slice, from its own bytes and scales. kToFP8 is refused.
  DTypeChange dtype = DTypeChange::kKeep;
  // Reads of the rank's bytes that lie at most this many bytes apart in a
  // file are merged into one read, gap included: more bytes, fewer preads
  // (a tensor-parallel down_proj slice is one short run per row). 0 reads
  // exactly the rank's bytes.
  uint64_t max_gap = 0;
};

// What a rank's part of a tensor cuts.
enum class Split { kWhole, kExperts, kTensorParallel, kExpertsAndTensorParallel };
std::string_view SplitName(Split s);  // "whole", "experts", "tp", "experts+tp"

// One tensor as the rank receives it.
struct LoadTensor {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;       // the rank's part
  std::vector<uint64_t> full_shape;  // the whole converted tensor
  uint64_t nbytes = 0;               // bytes of the rank's part
  Split split = Split::kWhole;
  // Element intervals of the full tensor that make the rank's part:
  // experts [expert_begin, expert_end) x dim1 x dim2, each dim's intervals
  // concatenated in order. Meaningful only when split != kWhole.
  uint64_t expert_begin = 0, expert_end = 0;
  std::vector<std::pair<uint64_t, uint64_t>> dim1, dim2;
};

// One destination of Loader::ReadMany.
struct ReadRequest {
  size_t index = 0;     // into Loader::tensors()
  void* dst = nullptr;  // `size` bytes, row-major
  uint64_t size = 0;    // == tensors()[index].nbytes
};

struct ReadOptions {
  int threads = 0;  // 0: one per core
  // What a tensor is cut into: large enough that a pread costs far more
  // than handing it to a thread, small enough that a 100 MB tensor keeps
  // every core busy.
  uint64_t chunk_bytes = 8ull << 20;
};

class Loader {
 public:
  // `path` is a model directory, an index file or one .safetensors file.
  // Reads headers only; every error the planner or the slicing can find is
  // reported here, before a tensor byte is read.
  static Result<Loader> Open(const std::string& path, const LoadOptions& options);

  Loader(Loader&&) noexcept;
  Loader& operator=(Loader&&) noexcept;
  ~Loader();

  // In reading order: by the source shard and offset of each tensor's first
  // byte, so that reading them in turn walks the checkpoint shard by shard.
  const std::vector<LoadTensor>& tensors() const;
  const std::string& family() const;  // empty for a raw load
  // Tensor bytes of the whole converted checkpoint, and the rank's share.
  uint64_t total_bytes() const;
  uint64_t rank_bytes() const;

  // Reads tensor i's part into `dst`, which holds exactly `size` ==
  // tensors()[i].nbytes bytes, row-major.
  // On the calling thread.
  Status ReadInto(size_t i, void* dst, uint64_t size) const;
  Result<OwnedTensor> Read(size_t i) const;
  // Bytes [offset, offset + size) of tensor i's part into `dst` (`size`
  // bytes): a window of what ReadInto would write. Windows from Chunks read
  // each source byte once; other windows may read a gather twice.
  Status ReadRange(size_t i, uint64_t offset, void* dst, uint64_t size) const;
  // Every request over options.threads threads, each tensor cut by
  // Chunks(i, options.chunk_bytes) so that one large tensor keeps every
  // thread busy. All requests are checked first (index, size, destinations
  // that overlap): a refused call writes no byte. On a read error the
  // buffers hold partial data.
  Status ReadMany(const std::vector<ReadRequest>& requests, const ReadOptions& options = {}) const;
  // Tensor i's part cut into consecutive byte ranges [begin, end) of at most
  // `max_bytes` (cut at multiples of it), which ReadRange reads without
  // reading any source byte twice: a gather (a block transposed from a
  // fused-transposed source, gate and up interleaved) is never cut, so a
  // range holding one may be longer (at most one gather, i.e. one expert's
  // matrix).
  std::vector<std::pair<uint64_t, uint64_t>> Chunks(size_t i, uint64_t max_bytes) const;

  // Bytes read from disk (gaps merged by max_gap included) and reads made
  // so far, over all ReadInto calls.
  uint64_t bytes_read() const;
  uint64_t read_calls() const;
  void ResetCounters() const;

 private:
  struct State;
  class Opener;
  explicit Loader(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace moepack
