#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "command.h"
#include "moepack/synth.h"
#include "progress.h"

namespace moepack::cli {
namespace {

struct SynthFlags {
  std::string dst;
  SynthOptions options;
  int layers = 0, experts = 0, hidden = 0, intermediate = 0;
  CLI::Option* layers_opt = nullptr;
  CLI::Option* experts_opt = nullptr;
  CLI::Option* hidden_opt = nullptr;
  CLI::Option* intermediate_opt = nullptr;
  std::string max_shard_size;
  bool json = false;
};

int Usage(const std::string& message) {
  std::cerr << "moepack: error: " << message << "\n";
  return kExitUsage;
}

int Run(SynthFlags& f) {
  SynthOptions& o = f.options;
  if (f.layers_opt->count()) o.layers = f.layers;
  if (f.experts_opt->count()) o.experts = f.experts;
  if (f.hidden_opt->count()) o.hidden = f.hidden;
  if (f.intermediate_opt->count()) o.intermediate = f.intermediate;
  if (!f.max_shard_size.empty()) {
    auto size = ParseSize(f.max_shard_size);
    if (!size.ok()) return Usage("--max-shard-size: " + size.status().message());
    o.max_shard_size = *size;
  }
  // A preset names its family; contradicting it is a mistake on the command
  // line, not bad input.
  if (auto family = SynthPresetFamily(o.preset);
      family && !family->empty() && !o.model_type.empty() && *family != o.model_type) {
    return Usage("--model-type " + o.model_type + " contradicts --preset " + o.preset + " (a " + *family + " model)");
  }
  ProgressBar bar(StdoutIsTerminal() && !f.json && !o.sparse);
  o.progress = bar.Callback();
  auto report = Synthesize(f.dst, o);
  bar.Finish();
  if (!report.ok()) return Fail(report.status());
  if (f.json) {
    nlohmann::json j = {{"path", f.dst},
                        {"model_type", report->model_type},
                        {"layout", report->layout},
                        {"dtype", report->dtype},
                        {"sparse", o.sparse},
                        {"num_shards", report->num_shards},
                        {"num_tensors", report->num_tensors},
                        {"total_size", report->total_bytes}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "wrote " << f.dst << ": " << report->model_type << ", " << report->layout << ", " << report->dtype
              << (o.sparse ? " (sparse)" : "") << ", " << report->num_tensors << " tensors in " << report->num_shards
              << (report->num_shards == 1 ? " file" : " shards") << ", " << report->total_bytes << " bytes\n";
  }
  return kExitOk;
}

}  // namespace

Action DefineSynth(CLI::App& sub) {
  auto f = std::make_shared<SynthFlags>();
  std::string families, presets;
  for (const auto& n : SynthFamilies()) families += (families.empty() ? "" : ", ") + n;
  for (const auto& n : SynthPresets()) presets += (presets.empty() ? "" : ", ") + n;
  sub.add_option("DST", f->dst, "Directory to create (must not exist)")->required();
  sub.add_option("--model-type", f->options.model_type, "Model family: " + families);
  sub.add_option("--preset", f->options.preset,
                 "Sizes: " + presets + " (default tiny; a named model implies its family)");
  f->layers_opt = sub.add_option("--layers", f->layers, "Keep the first N layers");
  f->experts_opt = sub.add_option("--experts", f->experts, "Routed experts per MoE layer");
  f->hidden_opt = sub.add_option("--hidden", f->hidden, "hidden_size");
  f->intermediate_opt = sub.add_option("--intermediate", f->intermediate, "Expert intermediate size");
  sub.add_option("--dtype", f->options.dtype, "bf16, f16, f32 or fp8 (e4m3 with 128x128 block scales)")
      ->check(CLI::IsMember({"bf16", "f16", "f32", "fp8", "mxfp4"}));
  sub.add_option("--max-shard-size", f->max_shard_size, "Largest shard, e.g. 5GB, 64KB (decimal units)");
  sub.add_option("--layout", f->options.layout,
                 "per-expert, fused or fused-transposed (default: the family's Hub layout)")
      ->check(CLI::IsMember({"per-expert", "fused", "fused-transposed", "fused-hub-names"}));
  sub.add_option("--seed", f->options.seed, "Seed for values and tensor order");
  sub.add_flag("--sparse", f->options.sparse, "Leave tensor data as file holes: full-size checkpoints, no disk used");
  sub.add_flag("--json", f->json, "Print a JSON summary");
  return [f] { return Run(*f); };
}

}  // namespace moepack::cli
