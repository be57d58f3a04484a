// Conversion rules are data. A rule set names the model family it serves and
// lists, in order:
//   renames     regex rewrites applied to every tensor name (each with its
//               exact reverse),
//   fusions     per-expert sources ("{prefix}...{expert}...") stacked over
//               experts on dim 0 and concatenated along concat_dim into one
//               target ("{prefix}..."), optionally transposing the last two
//               dims of each source,
//   transposes  already-fused tensors whose last two dims are swapped between
//               the Hub layout and the v5 layout.
// Every op has an exact inverse, so the same rules convert in both
// directions. A fusion or transpose also says what its fused tensor is (its
// role) and which dim tensor parallelism cuts, so that no engine reads
// meaning into a tensor's name. See docs/rules.md for the file format; what
// each op does to shapes and bytes is defined once, in src/plan/ops/.
//
// Thread safety: a RuleSet is immutable after Parse; share it freely.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moepack/config.h"
#include "moepack/layout.h"
#include "moepack/status.h"

namespace moepack {

struct RenameRule {
  std::string name;
  std::string pattern;      // RE2 syntax, replaced everywhere it matches
  std::string replacement;  // \1..\9 refer to groups
  std::string reverse_pattern;
  std::string reverse_replacement;
};

// What a fused expert tensor holds, in v5's layout:
//   kGateUp  [E, 2I, H]: the gate projection's I rows, then the up's;
//   kUp      [E, I, H]: the up projection of non-gated experts;
//   kDown    [E, H, I].
// Scales (`scale_of`) take the role of their weights.
enum class ExpertRole { kNone, kGateUp, kUp, kDown };
std::string_view RoleName(ExpertRole r);  // "gate_up", "up", "down", "" for kNone
// The role's layout in numbers: the fused dim that holds the intermediate
// size (the default tp_dim), and how many equal parts that dim has (2 for
// gate_up: gate, then up; 1 otherwise). 0 and 1 for kNone.
int RoleIntermediateDim(ExpertRole r);
int RoleParts(ExpertRole r);

struct FusionRule {
  std::string name;
  std::string target;                // e.g. "{prefix}mlp.experts.gate_up_proj"
  std::vector<std::string> sources;  // e.g. "{prefix}mlp.experts.{expert}.gate_proj.weight"
  int concat_dim = 1;                // dim of the fused tensor along which sources join
  bool transpose = false;            // swap the two dims of each (2-D) source first
  bool interleave = false;           // join element by element (g0 u0 g1 u1 ...), not one after the other
  std::string scale_of;              // this fusion holds the block scales of that fusion
  // One expert list fused into several targets (ernie4_5_vl_moe: text and
  // vision experts): this fusion takes `expert_count` experts from
  // `expert_first` on (config paths, first found wins; default: all, from 0).
  std::vector<std::string> expert_count;
  std::vector<std::string> expert_first;
  // Optional: one expert's source in dims symbols (["I", "H"]). When
  // config.json gives every symbol, sources and fused tensors of another
  // shape are refused, so that a transposed or mislabelled tensor is not
  // stacked or cut along the wrong dim.
  std::vector<std::string> source_shape;
  ExpertRole role = ExpertRole::kNone;
  int tp_dim = 0;  // the fused dim tensor parallelism cuts; 0 without a role
};

// A tensor whose last two dims are swapped between the Hub and v5: a fused
// expert tensor [E, a, b], or a 2-D one (a router stored [H, E]).
struct TransposeRule {
  std::string name;
  std::string pattern;                 // e.g. "{prefix}mlp.experts.gate_up_proj"
  std::vector<std::string> hub_shape;  // e.g. ["E", "H", "2*I"]
  std::vector<std::string> v5_shape;   // e.g. ["E", "2*I", "H"]
  ExpertRole role = ExpertRole::kNone;  // of the v5 layout
  int tp_dim = 0;
  bool experts() const { return hub_shape.size() == 3; }
};

// One tensor on the Hub that v5 holds as K equal parts along `dim`
// (ernie4_5_vl_moe's e_score_correction_bias [2, E]: text, then vision).
// Converting back concatenates them again.
struct ChunkRule {
  std::string name;
  std::string source;                // the Hub tensor, after renames
  std::vector<std::string> targets;  // v5's parts, in order
  int dim = 0;
};

struct DimSymbol {
  std::string symbol;               // "H", "I"
  std::vector<std::string> config;  // config paths, first found wins
};

struct ExpertGroup {
  std::string prefix;                   // names starting with this
  std::vector<std::string> num_experts;  // config paths, first found wins
  std::vector<DimSymbol> dims;           // take precedence over the top-level dims
};

enum class Direction { kToFused, kToPerExpert };

class RuleSet {
 public:
  // `what` names the file in errors. Unknown keys, unknown ops and
  // inconsistent rules are refused with the JSON path of the rule.
  static Result<RuleSet> Parse(std::string_view json_text, const std::string& what);

  const std::string& family() const { return family_; }
  const std::string& description() const { return description_; }
  const std::vector<std::string>& model_types() const { return model_types_; }
  const std::vector<std::string>& architectures() const { return architectures_; }
  const std::vector<RenameRule>& renames() const { return renames_; }
  const std::vector<FusionRule>& fusions() const { return fusions_; }
  const std::vector<TransposeRule>& transposes() const { return transposes_; }
  const std::vector<ChunkRule>& chunks() const { return chunks_; }
  // What the Hub ships this family as (per-expert unless the file says).
  MoeLayout hub_layout() const { return hub_layout_; }

  // The rules with everything config.json decides resolved (where each
  // fusion's share of an expert list starts). Engines bind before matching;
  // unbound, every share starts at expert 0.
  Result<RuleSet> Bind(const ModelConfig& config) const;

  // Renames in rule order (to fused) or their reverses in reverse order.
  // Once a name has grown by more than kMaxRenameGrowth bytes no further
  // rule is applied (renames that each double a name would otherwise
  // exhaust memory); the planner refuses such a name.
  std::string Rename(std::string_view name, Direction d) const;
  static constexpr size_t kMaxRenameGrowth = 65536;

  struct SourceMatch {
    int fusion = -1;
    int source = -1;
    std::string prefix;
    int64_t expert = -1;  // within the fusion's share of the expert list
  };
  // Matches a per-expert name (after renames) against every fusion source.
  // Where fusions share one expert list, the one whose share holds the
  // expert takes it.
  std::optional<SourceMatch> MatchSource(std::string_view name) const;
  // A name inside one expert's part of a fusion source ("{prefix}mlp.
  // experts.{expert}." for "...experts.{expert}.gate_proj.weight") that no
  // source matches, e.g. "...experts.3.gate_proj.bias". Fusing the rest
  // would leave it per-expert beside fused experts. `source` is -1.
  std::optional<SourceMatch> MatchExpertLeftover(std::string_view name) const;
  struct TargetMatch {
    int fusion = -1;
    std::string prefix;
  };
  // Matches a fused name against every fusion target.
  std::optional<TargetMatch> MatchTarget(std::string_view name) const;
  // A name that is a fusion target followed by "_" and more, and is no
  // target itself: another form of the fused tensor ("gate_up_proj_blocks",
  // MXFP4) that these rules do not convert.
  std::optional<TargetMatch> MatchTargetSibling(std::string_view name) const;
  struct TransposeMatch {
    int rule = -1;
    std::string prefix;
  };
  std::optional<TransposeMatch> MatchTranspose(std::string_view name) const;
  struct ChunkMatch {
    int rule = -1;
    int part = -1;  // -1: the Hub tensor itself; else the index of the v5 part
    std::string prefix;
  };
  std::optional<ChunkMatch> MatchChunk(std::string_view name) const;
  std::string ChunkName(int rule, int part, std::string_view prefix) const;  // part -1: the source

  // `expert` within the fusion's share, as MatchSource gives it.
  std::string SourceName(int fusion, int source, std::string_view prefix, int64_t expert) const;
  // The part of fusion `fusion`'s source `source` after its expert id, for
  // messages: "up_proj.weight".
  std::string SourceLeaf(int fusion, int source) const;
  // SourceName with the renames undone: the name the Hub stores it under.
  std::string HubSourceName(int fusion, int source, std::string_view prefix, int64_t expert) const;
  std::string TargetName(int fusion, std::string_view prefix) const;

  // The weight fusion whose scales fusion `f` holds, or -1; the scale
  // fusion that holds the scales of weight fusion `f`, or -1.
  int WeightOf(int f) const { return weight_of_[f]; }
  int ScalesOf(int f) const { return scales_of_[f]; }

  // Expert count for the names under `prefix`, from the config: of fusion
  // `fusion`'s share when it declares one, else of the expert group.
  Result<int64_t> NumExperts(const ModelConfig& config, std::string_view prefix, int fusion = -1) const;
  // Whether a shape expression uses the expert count E.
  static bool NamesExperts(const std::vector<std::string>& shape);
  // Evaluates a shape (["E","H","2*I"], ["I/BR", ...] rounds up) with E given.
  // Under `prefix`, an expert group's dims take precedence.
  Result<std::vector<uint64_t>> EvalShape(const ModelConfig& config, const std::vector<std::string>& shape,
                                          int64_t num_experts, std::string_view prefix = "") const;
  // Evaluates `shape` like EvalShape; false when config.json lacks a dim.
  // `given` lists the config fields used ("hidden_size=2048, ...").
  bool ResolveShape(const ModelConfig& config, const std::vector<std::string>& shape, int64_t num_experts,
                    std::string_view prefix, std::vector<uint64_t>* out, std::string* given) const;
  // The value config.json gives dims symbol `symbol` under `prefix`.
  std::optional<uint64_t> DimValue(const ModelConfig& config, const std::string& symbol, std::string_view prefix) const;
  // The divisor of dim `source_dim` of fusion `f`'s source_shape ("I/BR":
  // BR, the quantization block), from config.json; nullopt when the dim
  // divides nothing or config.json lacks it.
  std::optional<uint64_t> BlockOf(const ModelConfig& config, int f, int source_dim, std::string_view prefix) const;

 private:
  // One dimension of a shape; nullopt (and `missing` says which symbol)
  // when config.json has no positive value for a symbol. `named` collects
  // the config fields used.
  std::optional<uint64_t> EvalDim(const ModelConfig& config, const std::string& expr, int64_t num_experts,
                                  std::string_view prefix, std::map<std::string, int64_t>* named,
                                  std::string* missing) const;
  const DimSymbol* FindDim(std::string_view symbol, std::string_view prefix) const;

  // The steps of Parse, in order.
  class Parser;

  struct Compiled;
  std::string family_;
  std::string description_;
  std::vector<std::string> model_types_;
  std::vector<std::string> architectures_;
  std::vector<std::string> num_experts_;
  std::vector<ExpertGroup> groups_;
  std::vector<DimSymbol> dims_;
  std::vector<RenameRule> renames_;
  std::vector<FusionRule> fusions_;
  std::vector<TransposeRule> transposes_;
  std::vector<ChunkRule> chunks_;
  MoeLayout hub_layout_ = MoeLayout::kPerExpert;
  std::vector<int> weight_of_, scales_of_;  // per fusion
  std::vector<int64_t> expert_first_;       // per fusion, from Bind
  std::shared_ptr<const Compiled> compiled_;
};

Result<RuleSet> LoadRuleFile(const std::string& path);
// The families compiled into the binary.
std::vector<std::string> BuiltinFamilies();
Result<RuleSet> BuiltinRules(const std::string& family);
// Picks the built-in family from config.json (model_type, architectures,
// nested configs). The error lists the known families.
Result<RuleSet> RulesForConfig(const ModelConfig& config);
// The rules a conversion uses, in this order: a user's rule file, a named
// family, or the family config.json selects (`config` may be null; `where`
// names the checkpoint when there is no config.json to tell).
Result<RuleSet> ChooseRules(const ModelConfig* config, const std::string& where, const std::string& model_type,
                            const std::string& rules_file);

}  // namespace moepack
