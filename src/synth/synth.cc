#include "moepack/synth.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <numeric>
#include <unordered_map>

#include "moepack/checkpoint.h"
#include "moepack/safetensors.h"
#include "synth/families.h"
#include "synth/model.h"
#include "synth/values.h"
#include "util/file.h"

namespace moepack::synth {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kWriteBuffer = 4u << 20;

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

struct Resolved {
  const Family* family = nullptr;
  Dims dims;
  WeightType dtype = WeightType::kBF16;
  Layout layout = Layout::kPerExpert;
  uint64_t max_shard_size = 0;
};

Status CheckRange(const char* what, const std::optional<int>& v, int max) {
  if (v && (*v < 1 || *v > max)) {
    return Status::InvalidArgument(std::string(what) + " must be between 1 and " + std::to_string(max) + " (got " +
                                   std::to_string(*v) + ")");
  }
  return Status::OK();
}

// The layouts and weight types a family has: only those its Hub ships or
// its rules convert, so that no synthetic checkpoint is one that moepack
// would misread.
Status CheckFamilyForm(const Family& f, const Dims& d, WeightType dtype, Layout layout) {
  const std::string family(f.model_type);
  if (layout == Layout::kFusedHubNames && f.hub_fused_gate_up.empty()) {
    return Status::InvalidArgument("layout 'fused-hub-names' is for families whose Hub ships fused experts under names "
                                   "of their own (granitemoe); " + family + " has none");
  }
  if (layout == Layout::kFusedTransposed && f.fused_form != FusedForm::kConcat) {
    return Status::InvalidArgument(family + " has no fused-transposed layout: v5 and the Hub hold its experts fused "
                                   "in a form of their own (layout fused)");
  }
  if (dtype == WeightType::kFP8 && !f.fp8) {
    return Status::InvalidArgument(family + " has no FP8 block-scaled form: its rules fuse no weight_scale_inv");
  }
  if (dtype == WeightType::kMXFP4) {
    if (!f.mxfp4) return Status::InvalidArgument("dtype mxfp4 is gpt_oss's Hub form; " + family + " has none");
    if (layout != Layout::kFused) {
      return Status::InvalidArgument("mxfp4 experts exist only fused, as the Hub ships them (layout fused)");
    }
    if (d.hidden % 32 != 0 || d.intermediate % 32 != 0) {
      return Status::InvalidArgument("mxfp4 packs blocks of 32: hidden size " + std::to_string(d.hidden) +
                                     " and intermediate size " + std::to_string(d.intermediate) +
                                     " must be multiples of 32");
    }
  }
  return Status::OK();
}

Result<Resolved> Resolve(const SynthOptions& o) {
  Resolved r;
  const Preset* preset = FindPreset(o.preset);
  if (!preset) {
    return Status::InvalidArgument("unknown preset '" + o.preset + "' (known: " + JoinNames(SynthPresets()) + ")");
  }
  std::string model_type = o.model_type;
  if (!preset->family.empty()) {
    if (!model_type.empty() && model_type != preset->family) {
      return Status::InvalidArgument("preset '" + o.preset + "' is a " + std::string(preset->family) + " model, not " +
                                     model_type);
    }
    model_type = preset->family;
  }
  if (model_type.empty()) {
    return Status::InvalidArgument("a model type is required with preset '" + o.preset +
                                   "' (known: " + JoinNames(SynthFamilies()) + ")");
  }
  r.family = FindFamily(model_type);
  if (!r.family) {
    return Status::InvalidArgument("unknown model type '" + model_type + "' (known: " + JoinNames(SynthFamilies()) +
                                   ")");
  }
  MOEPACK_RETURN_IF_ERROR(CheckRange("layers", o.layers, 10'000));
  MOEPACK_RETURN_IF_ERROR(CheckRange("experts", o.experts, 1 << 16));
  MOEPACK_RETURN_IF_ERROR(CheckRange("hidden size", o.hidden, 1 << 20));
  MOEPACK_RETURN_IF_ERROR(CheckRange("intermediate size", o.intermediate, 1 << 20));
  r.dims = preset->dims;
  if (o.layers) r.dims.layers = *o.layers;
  if (o.experts) r.dims.experts = *o.experts;
  if (o.hidden) r.dims.hidden = *o.hidden;
  if (o.intermediate) r.dims.intermediate = *o.intermediate;

  r.dtype = preset->dtype;
  if (!o.dtype.empty()) {
    bool found = false;
    for (WeightType t : {WeightType::kBF16, WeightType::kF16, WeightType::kF32, WeightType::kFP8, WeightType::kMXFP4}) {
      if (o.dtype == WeightTypeName(t)) {
        r.dtype = t;
        found = true;
      }
    }
    if (!found) return Status::InvalidArgument("unknown dtype '" + o.dtype + "' (known: bf16, f16, f32, fp8, mxfp4)");
  }
  r.layout = r.family->default_layout;
  if (!o.layout.empty()) {
    bool found = false;
    for (Layout l : {Layout::kPerExpert, Layout::kFused, Layout::kFusedTransposed, Layout::kFusedHubNames}) {
      if (o.layout == LayoutName(l)) {
        r.layout = l;
        found = true;
      }
    }
    if (!found) {
      return Status::InvalidArgument("unknown layout '" + o.layout +
                                     "' (known: per-expert, fused, fused-transposed, fused-hub-names)");
    }
  }
  MOEPACK_RETURN_IF_ERROR(CheckFamilyForm(*r.family, r.dims, r.dtype, r.layout));
  r.max_shard_size = o.max_shard_size ? o.max_shard_size : preset->max_shard_size;
  return r;
}

// Buffers small pieces into large sequential writes; large pieces (pool
// windows) go straight to the file.
class SequentialWriter {
 public:
  SequentialWriter(const internal::File& file, uint64_t offset, std::vector<uint8_t>& buf)
      : file_(file), offset_(offset), buf_(buf) {}

  Status Put(const uint8_t* p, uint64_t n) {
    if (used_ == 0 && n >= buf_.size()) {
      MOEPACK_RETURN_IF_ERROR(file_.WriteAt(offset_, p, n));
      offset_ += n;
      return Status::OK();
    }
    while (n > 0) {
      uint64_t take = std::min<uint64_t>(n, buf_.size() - used_);
      std::copy_n(p, take, buf_.data() + used_);
      used_ += take;
      p += take;
      n -= take;
      if (used_ == buf_.size()) MOEPACK_RETURN_IF_ERROR(Flush());
    }
    return Status::OK();
  }

  Status Flush() {
    if (used_ == 0) return Status::OK();
    MOEPACK_RETURN_IF_ERROR(file_.WriteAt(offset_, buf_.data(), used_));
    offset_ += used_;
    used_ = 0;
    return Status::OK();
  }

 private:
  const internal::File& file_;
  uint64_t offset_;
  std::vector<uint8_t>& buf_;
  uint64_t used_ = 0;
};

// One output row of a transposed block: for each source s of the group and
// each of its rows r, element (r, h) of source s; interleaved, for each r
// the element of each s in turn. T fixes the element size so that each copy
// is one load and one store.
template <typename T>
void GatherRow(const Pool& pool, const uint64_t* keys, uint32_t group, uint64_t rows, uint64_t cols, uint64_t h,
               bool interleaved, uint8_t* out) {
  const uint64_t step = cols % kPoolElements;
  // Source s's elements go `stride` apart, from slot `s * first`.
  const uint64_t stride = interleaved ? group : 1, first = interleaved ? 1 : rows;
  for (uint32_t s = 0; s < group; ++s) {
    uint64_t idx = (keys[s] % kPoolElements + h) % kPoolElements;
    uint8_t* o = out + s * first * sizeof(T);
    for (uint64_t r = 0; r < rows; ++r) {
      std::memcpy(o, pool.data + idx * sizeof(T), sizeof(T));
      o += stride * sizeof(T);
      idx += step;
      if (idx >= kPoolElements) idx -= kPoolElements;
    }
  }
}

Status WriteTensor(const PlannedTensor& t, SequentialWriter& w) {
  const Pool& pool = GetPool(t.fill, t.dtype);
  const uint64_t es = pool.elem_size;
  const uint64_t per_source = t.rows * t.cols;
  if (!t.transposed) {
    for (uint64_t key : t.keys) {
      const uint8_t* start = pool.data + (key % kPoolElements) * es;
      // After a full period the window is back where it started.
      for (uint64_t left = per_source; left > 0;) {
        uint64_t run = std::min(left, kPoolElements);
        MOEPACK_RETURN_IF_ERROR(w.Put(start, run * es));
        left -= run;
      }
    }
    return Status::OK();
  }
  std::vector<uint8_t> row(t.group * t.rows * es);
  for (size_t g = 0; g + t.group <= t.keys.size(); g += t.group) {
    for (uint64_t h = 0; h < t.cols; ++h) {
      switch (es) {
        case 1:
          GatherRow<uint8_t>(pool, &t.keys[g], t.group, t.rows, t.cols, h, t.interleaved, row.data());
          break;
        case 2:
          GatherRow<uint16_t>(pool, &t.keys[g], t.group, t.rows, t.cols, h, t.interleaved, row.data());
          break;
        default:
          GatherRow<uint32_t>(pool, &t.keys[g], t.group, t.rows, t.cols, h, t.interleaved, row.data());
          break;
      }
      MOEPACK_RETURN_IF_ERROR(w.Put(row.data(), row.size()));
    }
  }
  return Status::OK();
}

// Real checkpoints are saved in module order, but nothing guarantees it:
// shuffling makes a layer's experts straddle shards as they can in the wild.
std::vector<std::vector<size_t>> PackShards(const std::vector<PlannedTensor>& tensors, uint64_t seed,
                                            uint64_t max_shard_size) {
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  uint64_t state = seed ^ 0x7368756666'6c65ull;
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[SplitMix64(state) % i]);
  std::vector<std::vector<size_t>> shards(1);
  uint64_t bytes = 0;
  for (size_t idx : order) {
    if (!shards.back().empty() && bytes + tensors[idx].nbytes > max_shard_size) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(idx);
    bytes += tensors[idx].nbytes;
  }
  return shards;
}

// State shared by the shards of one run.
struct WriteContext {
  const SynthOptions& options;
  std::vector<uint8_t> buf = std::vector<uint8_t>(kWriteBuffer);
  uint64_t done = 0;
  uint64_t total = 0;
};

Status WriteShard(const std::string& path, const std::vector<PlannedTensor>& tensors,
                  const std::vector<size_t>& members, WriteContext& ctx) {
  std::vector<TensorSpec> specs;
  std::unordered_map<std::string_view, const PlannedTensor*> by_name;
  for (size_t i : members) {
    specs.push_back(TensorSpec{tensors[i].name, tensors[i].dtype, tensors[i].shape});
    by_name[tensors[i].name] = &tensors[i];
  }
  MOEPACK_ASSIGN_OR_RETURN(FileLayout layout, LayoutFile({{"format", "pt"}}, std::move(specs)));
  MOEPACK_ASSIGN_OR_RETURN(internal::File file, internal::File::Create(path));
  MOEPACK_RETURN_IF_ERROR(file.WriteAt(0, layout.prefix.data(), layout.prefix.size()));
  SequentialWriter w(file, layout.prefix.size(), ctx.buf);
  for (const TensorInfo& info : layout.tensors) {
    if (!ctx.options.sparse) MOEPACK_RETURN_IF_ERROR(WriteTensor(*by_name.at(info.name), w));
    ctx.done += info.nbytes();
    if (ctx.options.progress) ctx.options.progress(ctx.done, ctx.total);
  }
  MOEPACK_RETURN_IF_ERROR(w.Flush());
  // In sparse mode this is what makes the data section: a hole.
  MOEPACK_RETURN_IF_ERROR(file.Truncate(layout.file_size()));
  return file.Close();
}

std::string AuxJson(const nlohmann::json& j) { return j.dump(2) + "\n"; }

// Small non-weight files, so that converters are seen to copy them.
Status WriteAuxFiles(const std::string& dir, const Model& model, const Dims& dims) {
  MOEPACK_RETURN_IF_ERROR(internal::WriteSmallFile(dir + "/config.json", AuxJson(model.config)));
  nlohmann::json generation = {{"_from_model_config", true}, {"bos_token_id", 1},  {"eos_token_id", 2},
                               {"do_sample", true},          {"temperature", 0.7}, {"top_p", 0.8}};
  MOEPACK_RETURN_IF_ERROR(internal::WriteSmallFile(dir + "/generation_config.json", AuxJson(generation)));
  nlohmann::json tokenizer = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                              {"model_max_length", dims.max_position},
                              {"bos_token", "<s>"},
                              {"eos_token", "</s>"},
                              {"clean_up_tokenization_spaces", false}};
  return internal::WriteSmallFile(dir + "/tokenizer_config.json", AuxJson(tokenizer));
}

Result<uint64_t> TotalBytes(const Model& model) {
  uint64_t total = 0;
  for (const PlannedTensor& t : model.tensors) {
    if (__builtin_add_overflow(total, t.nbytes, &total)) {
      return Status::InvalidArgument("the checkpoint would be larger than 2^64 bytes");
    }
  }
  return total;
}

Result<SynthReport> WriteCheckpoint(const std::string& dst, const Resolved& r, const Model& model,
                                    const SynthOptions& options, uint64_t total) {
  auto shards = PackShards(model.tensors, options.seed, r.max_shard_size);
  const bool single = shards.size() == 1;
  WriteContext ctx{.options = options, .total = total};
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    std::string file = kSingleFile;
    if (!single) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      file = name;
    }
    MOEPACK_RETURN_IF_ERROR(WriteShard(dst + "/" + file, model.tensors, shards[s], ctx));
    for (size_t i : shards[s]) weight_map[model.tensors[i].name] = file;
  }
  if (!single) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
    MOEPACK_RETURN_IF_ERROR(internal::WriteSmallFile(dst + "/" + kIndexFile, AuxJson(index)));
  }
  MOEPACK_RETURN_IF_ERROR(WriteAuxFiles(dst, model, r.dims));
  SynthReport report;
  report.model_type = std::string(r.family->model_type);
  report.layout = std::string(LayoutName(r.layout));
  report.dtype = std::string(WeightTypeName(r.dtype));
  report.num_shards = static_cast<int>(shards.size());
  report.num_tensors = static_cast<int>(model.tensors.size());
  report.total_bytes = total;
  return report;
}

}  // namespace
}  // namespace moepack::synth

namespace moepack {

Result<SynthReport> Synthesize(const std::string& dst, const SynthOptions& options) {
  using namespace synth;
  MOEPACK_ASSIGN_OR_RETURN(Resolved r, Resolve(options));
  if (dst.empty()) return Status::InvalidArgument("no destination directory given");
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dst, ec))) return Status::InvalidArgument(dst + ": already exists");
  MOEPACK_ASSIGN_OR_RETURN(Model model, BuildModel(*r.family, r.dims, r.dtype, r.layout, options.seed));
  MOEPACK_ASSIGN_OR_RETURN(uint64_t total, TotalBytes(model));
  if (!fs::create_directories(dst, ec) || ec) {
    return Status::IOError(dst + ": cannot create directory (" + (ec ? ec.message() : "it appeared meanwhile") + ")");
  }
  // Synthetic data is cheap to make again, so no temporary directory and no
  // fsync; a failure just must not leave a checkpoint that looks whole.
  Result<SynthReport> report = WriteCheckpoint(dst, r, model, options, total);
  if (!report.ok()) fs::remove_all(dst, ec);
  return report;
}

std::vector<std::string> SynthFamilies() {
  using namespace synth;
  std::vector<std::string> out;
  for (const Family& f : Families()) out.emplace_back(f.model_type);
  return out;
}

std::vector<std::string> SynthPresets() {
  using namespace synth;
  std::vector<std::string> out;
  for (const Preset& p : Presets()) out.emplace_back(p.name);
  return out;
}

std::optional<std::string> SynthPresetFamily(const std::string& preset) {
  using namespace synth;
  const Preset* p = FindPreset(preset);
  if (!p) return std::nullopt;
  return std::string(p->family);
}

}  // namespace moepack
