// The byte geometry of an op: which bytes of one input tensor make which
// bytes of one output tensor. Every op of the op model describes its work in
// these terms and nothing else, so that each engine only has to know how to
// carry out a Run and a Block: the planner turns them into file ranges, the
// streaming converter and verify into memory moves, the loader intersects
// them with a rank's slice.
//
// Offsets are relative to the first byte of each tensor.
#pragma once

#include <cstdint>
#include <vector>

namespace moepack::ops {

// `length` bytes copied unchanged: input [src, src + length) -> output
// [dst, dst + length).
struct Run {
  uint64_t src = 0;
  uint64_t dst = 0;
  uint64_t length = 0;
};

// A [rows, cols] grid of elem_bytes elements moved one by one: element
// (r, c) is read at src + r*src_row + c*src_col and written at dst +
// r*dst_row + c*dst_col. A transpose reads a row-major matrix and writes
// its transpose, both contiguous (Transposing); other strides interleave
// sources or place a transposed source in part of each output row.
struct Block {
  uint64_t src = 0;
  uint64_t dst = 0;
  uint64_t rows = 0;
  uint64_t cols = 0;
  uint32_t elem_bytes = 0;
  uint64_t src_row = 0, src_col = 0;
  uint64_t dst_row = 0, dst_col = 0;

  // [rows, cols] at src -> its transpose [cols, rows] at dst.
  static Block Transposing(uint64_t src, uint64_t dst, uint64_t rows, uint64_t cols, uint32_t elem_bytes);
  bool IsTranspose() const;
  uint64_t bytes() const { return rows * cols * elem_bytes; }
  // The bytes between the first and the last element on each side, last
  // element included: what must be read, and what is written into.
  uint64_t src_span() const;
  uint64_t dst_span() const;
  Block Inverse() const;
};

struct Pieces {
  std::vector<Run> runs;      // in increasing src and dst order
  std::vector<Block> blocks;  // in increasing dst order

  // The same bytes the other way: output -> input. Every op is exact, so
  // the inverse of an op's geometry is the geometry of the inverse op.
  Pieces Inverse() const;
  // Bytes written to the output.
  uint64_t bytes() const;
  // The same geometry with every output offset moved by `delta` (e.g. to
  // make it relative to one expert's slice of the output).
  Pieces ShiftDst(int64_t delta) const;
};

// Carries out a block or a whole geometry in memory: reads `in`, writes `out`.
void Apply(const Block& b, const void* in, void* out);
void Apply(const Pieces& p, const void* in, void* out);

}  // namespace moepack::ops
