// The streaming converter: the protocol that training frameworks call while
// they iterate shards and tensors arrive one at a time, in any order.
//
//   if (conv.CanHandle(name)) for (auto& t : conv.Convert(name, view)) use(t);
//   else use(conv.Rename(name), view);
//   conv.Finalize();  // fails on anything left incomplete
//
// To fused: the fused tensor is allocated when its first expert arrives and
// each expert is copied once, straight into its slot. To per-expert: each
// fused tensor is cut into its experts as it arrives. Names are matched
// after the rule set's renames, so a checkpoint saved under another prefix
// (e.g. "model.language_model.") converts with the same rules. With a dtype
// change (dequantizing), an FP8 weight and its weight_scale_inv (or MXFP4
// blocks and scales) are held until both arrived and then go on as one
// dequantized tensor.
//
// Thread safety: not thread-safe; use one converter per loading thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "moepack/config.h"
#include "moepack/dtype.h"
#include "moepack/plan.h"
#include "moepack/rules.h"
#include "moepack/status.h"

namespace moepack {

// A tensor the caller owns: row-major bytes.
struct TensorView {
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
};

// A finished tensor the converter hands over.
struct OwnedTensor {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  std::shared_ptr<uint8_t[]> data;
  uint64_t nbytes = 0;
};

class StreamingConverter {
 public:
  static Result<StreamingConverter> Create(RuleSet rules, ModelConfig config,
                                           Direction direction = Direction::kToFused,
                                           SourceLayout source_layout = SourceLayout::kUnspecified,
                                           DTypeChange dtype = DTypeChange::kKeep);
  StreamingConverter(StreamingConverter&&) noexcept;
  StreamingConverter& operator=(StreamingConverter&&) noexcept;
  ~StreamingConverter();

  // True when `name` takes part in a conversion (after renames). With a
  // dtype change, every tensor: only its dtype tells an F8 weight, and
  // Convert hands back the ones no rule converts under their output names.
  bool CanHandle(std::string_view name) const;
  // The output name of a tensor that passes through unchanged.
  std::string Rename(std::string_view name) const;
  // Returns the tensors this one completes: none yet, one fused tensor, or
  // the per-expert pieces of a fused one. Errors name layer and expert.
  Result<std::vector<OwnedTensor>> Convert(std::string_view name, const TensorView& tensor);
  // Fails, listing layer, projection and the experts that arrived, when a
  // conversion is incomplete. Returns nothing otherwise (every finished
  // tensor was already returned by Convert).
  Result<std::vector<OwnedTensor>> Finalize();

  // Bytes currently held for incomplete fused tensors (and quantized
  // weights waiting for their scales).
  uint64_t pending_bytes() const;

 private:
  struct State;
  explicit StreamingConverter(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace moepack
