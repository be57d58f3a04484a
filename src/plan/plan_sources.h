// A plan's sources as the executor and the loader read them: the stored
// files, then the tensors computed from them (Plan::computed, indexed past
// the files).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "moepack/plan.h"
#include "plan/ops/dtype_op.h"
#include "util/file.h"

namespace moepack::internal {

class PlanSources {
 public:
  PlanSources(const Plan& plan, std::vector<File> files) : plan_(&plan), files_(std::move(files)) {}

  bool stored(uint32_t i) const { return i < files_.size(); }
  const File& file(uint32_t i) const { return files_[i]; }
  const std::vector<File>& files() const { return files_; }
  // Source i's computation; REQUIRES: !stored(i).
  const ComputedSource& computed(uint32_t i) const { return plan_->computed[i - files_.size()]; }
  // Where the stored bytes behind source i start: itself when stored, its
  // data tensor when computed (for reading in file order).
  std::pair<uint32_t, uint64_t> StoredStart(uint32_t i, uint64_t offset) const;

  // Bytes [offset, offset + len) of source i. A computed source reads the
  // stored bytes it needs through `stored_read` (counting, caching), or
  // straight from the files.
  Status Read(uint32_t i, uint64_t offset, uint64_t len, void* dst) const;
  Status Read(uint32_t i, uint64_t offset, uint64_t len, void* dst, const ops::ReadStored& stored_read) const;

 private:
  const Plan* plan_;
  std::vector<File> files_;
};

}  // namespace moepack::internal
