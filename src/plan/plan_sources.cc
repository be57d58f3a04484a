#include "plan/plan_sources.h"

namespace moepack::internal {

std::pair<uint32_t, uint64_t> PlanSources::StoredStart(uint32_t i, uint64_t offset) const {
  if (stored(i)) return {i, offset};
  const ComputedSource& c = computed(i);
  return {c.data_file, c.data_offset};
}

Status PlanSources::Read(uint32_t i, uint64_t offset, uint64_t len, void* dst) const {
  if (stored(i)) return files_[i].ReadAt(offset, dst, len);
  return Read(i, offset, len, dst, [this](uint32_t f, uint64_t o, uint64_t n, void* d) { return files_[f].ReadAt(o, d, n); });
}

Status PlanSources::Read(uint32_t i, uint64_t offset, uint64_t len, void* dst, const ops::ReadStored& stored_read) const {
  if (stored(i)) return stored_read(i, offset, len, dst);
  return ops::ReadComputed(computed(i), offset, len, dst, stored_read);
}

}  // namespace moepack::internal
