#include "plan/plan_pieces.h"

#include <algorithm>

namespace moepack {

bool BlockMove::IsTranspose() const {
  return src_col_stride == elem_bytes && src_row_stride == cols * elem_bytes && dst_row_stride == elem_bytes &&
         dst_col_stride == rows * elem_bytes;
}

uint64_t BlockMove::src_span() const {
  return rows && cols ? (rows - 1) * src_row_stride + (cols - 1) * src_col_stride + elem_bytes : 0;
}

uint64_t BlockMove::dst_span() const {
  return rows && cols ? (rows - 1) * dst_row_stride + (cols - 1) * dst_col_stride + elem_bytes : 0;
}

namespace internal {

void PiecesToPlan::Add(uint32_t file, uint64_t src_begin, const ops::Pieces& pieces) {
  for (const ops::Run& r : pieces.runs) {
    if (!copies_.empty()) {
      CopyRange& p = copies_.back();
      if (p.src_file == file && p.src_offset + p.length == src_begin + r.src && p.dst_offset + p.length == r.dst) {
        p.length += r.length;
        continue;
      }
    }
    copies_.push_back(CopyRange{file, src_begin + r.src, r.length, r.dst});
  }
  for (const ops::Block& b : pieces.blocks) {
    if (b.bytes() == 0) continue;
    blocks_.push_back(BlockMove{file, src_begin + b.src, b.rows, b.cols, b.elem_bytes, b.src_row, b.src_col, b.dst,
                                b.dst_row, b.dst_col});
  }
}

void PiecesToPlan::Finish(PlannedTensor& out) {
  out.copies = std::move(copies_);
  std::stable_sort(blocks_.begin(), blocks_.end(),
                   [](const BlockMove& a, const BlockMove& b) { return a.dst_offset < b.dst_offset; });
  for (BlockMove& b : blocks_) {
    const uint64_t end = b.dst_offset + b.dst_span();
    if (!out.gathers.empty() && b.dst_offset < out.gathers.back().dst_offset + out.gathers.back().length) {
      Gather& g = out.gathers.back();
      g.length = std::max(g.length, end - g.dst_offset);
      g.blocks.push_back(b);
      continue;
    }
    out.gathers.push_back(Gather{b.dst_offset, end - b.dst_offset, {b}});
  }
  blocks_.clear();
}

}  // namespace internal
}  // namespace moepack
