// The op model's geometry (ops::Pieces, offsets within tensors) as the
// plan's file ranges: Runs become CopyRanges, Blocks are grouped into the
// Gathers that write one region of the output together.
#pragma once

#include <cstdint>
#include <vector>

#include "moepack/plan.h"
#include "plan/ops/pieces.h"

namespace moepack::internal {

class PiecesToPlan {
 public:
  // Adds geometry read from `file` at `src_begin` (the input tensor's first
  // byte). Runs that continue the previous one in both files (experts
  // stored back to back in one shard) become one range.
  void Add(uint32_t file, uint64_t src_begin, const ops::Pieces& pieces);
  // Moves the ranges into `out`: blocks whose output spans overlap (gate
  // and up interleaved into one expert's slice) form one Gather.
  void Finish(PlannedTensor& out);

 private:
  std::vector<CopyRange> copies_;
  std::vector<BlockMove> blocks_;
};

}  // namespace moepack::internal
