// Which part of a model one process holds: expert parallelism splits the
// experts of every fused expert tensor, tensor parallelism the expert
// intermediate dim. See loader.h for how a rank's part is cut.
#pragma once

namespace moepack {

struct ParallelSpec {
  int ep_rank = 0;
  int ep_size = 1;
  int tp_rank = 0;
  int tp_size = 1;
  bool parallel() const { return ep_size > 1 || tp_size > 1; }
};

}  // namespace moepack
