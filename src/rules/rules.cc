// Rule files are bound declaratively: every member is known, unknown keys
// are refused, each error carries the JSON path of the rule at fault, and
// cross-rule checks run after all rules parsed.
#include "moepack/rules.h"

#include <re2/re2.h>

#include <algorithm>
#include <map>
#include <set>

#include "rules/name_template.h"
#include "util/json.h"
#include "util/strings.h"

namespace moepack {

using nlohmann::json;
using internal::NameTemplate;

namespace internal {

// Outside the anonymous namespace because RuleSet::Parser holds one.
class RuleReader {
 public:
  RuleReader(const json& j, std::string path, std::string what) : j_(j), path_(std::move(path)), what_(std::move(what)) {}

  Status Error(const std::string& member, const std::string& msg) const {
    std::string where = path_.empty() ? "" : path_ + ": ";
    if (!member.empty()) where += "member \"" + member + "\": ";
    return Status::InvalidArgument(what_ + ": " + where + msg);
  }

  Status CheckKeys(std::initializer_list<const char*> allowed) const {
    if (!j_.is_object()) return Error("", "expected an object, got " + internal::JsonTypeName(j_));
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      bool ok = false;
      for (const char* a : allowed) ok = ok || it.key() == a;
      if (!ok) return Error(it.key(), "unknown member");
    }
    return Status::OK();
  }

  Result<std::string> String(const char* key, bool required) const {
    if (!j_.contains(key)) {
      if (required) return Error(key, "required");
      return std::string();
    }
    if (!j_[key].is_string()) return Error(key, "expected a string, got " + internal::JsonTypeName(j_[key]));
    return j_[key].get<std::string>();
  }

  Result<std::vector<std::string>> Strings(const char* key, bool required) const {
    std::vector<std::string> out;
    if (!j_.contains(key)) {
      if (required) return Error(key, "required");
      return out;
    }
    const json& a = j_[key];
    if (!a.is_array()) return Error(key, "expected an array of strings, got " + internal::JsonTypeName(a));
    for (const json& s : a) {
      if (!s.is_string()) return Error(key, "expected an array of strings, found a " + internal::JsonTypeName(s));
      out.push_back(s.get<std::string>());
    }
    return out;
  }

  const json& j() const { return j_; }

 private:
  const json& j_;
  std::string path_;
  std::string what_;
};

}  // namespace internal

namespace {

using internal::RuleReader;

// The rule's "name" when it has one, so that even an unknown member is
// reported as `fusions[1] ("gate_up_proj")`.
std::string NameOf(const json& j) {
  if (j.is_object() && j.contains("name") && j["name"].is_string()) return j["name"].get<std::string>();
  return "";
}

// One term of a shape dimension: SYMBOL or N*SYMBOL (N of at most 6 digits).
struct ShapeTerm {
  uint64_t mult = 1;
  std::string symbol;
};
std::optional<ShapeTerm> ParseShapeTerm(std::string_view t) {
  const size_t star = t.find('*');
  if (star == std::string_view::npos) return ShapeTerm{1, std::string(t)};
  if (star == 0 || star > 6 || t.find_first_not_of("0123456789") != star) return std::nullopt;
  return ShapeTerm{std::stoull(std::string(t.substr(0, star))), std::string(t.substr(star + 1))};
}

// A shape is a list of SYMBOL or N*SYMBOL, optionally divided by another
// (rounded up); each symbol is E or one of "dims".
Status CheckShapeExpr(const RuleReader& r, const char* member, const std::vector<std::string>& shape,
                      const std::set<std::string>& symbols) {
  for (const auto& e : shape) {
    const size_t slash = e.find('/');
    if (slash != std::string::npos && e.find('/', slash + 1) != std::string::npos) {
      return r.Error(member, "invalid dimension '" + e + "' (at most one '/')");
    }
    std::vector<std::string_view> terms = {std::string_view(e).substr(0, slash)};
    if (slash != std::string::npos) terms.push_back(std::string_view(e).substr(slash + 1));
    for (std::string_view t : terms) {
      auto term = ParseShapeTerm(t);
      if (!term) return r.Error(member, "invalid dimension '" + e + "' (expected SYMBOL, N*SYMBOL, or either /SYMBOL)");
      if (!symbols.count(term->symbol)) {
        return r.Error(member, "unknown symbol '" + term->symbol + "' (declare it in \"dims\")");
      }
    }
  }
  return Status::OK();
}

// "dims": {symbol: [config paths]}, at the top level or in an expert group.
// `path` is the JSON path of the object holding "dims" ("" at the top).
Result<std::vector<DimSymbol>> ParseDims(const json& d, const std::string& path, const std::string& what) {
  RuleReader holder(d, path, what);
  RuleReader r(d, path.empty() ? "dims" : path + ": dims", what);
  if (!d.is_object()) return holder.Error("dims", "expected an object of symbol -> config fields");
  std::vector<DimSymbol> out;
  for (auto it = d.begin(); it != d.end(); ++it) {
    if (it.key().empty() || it.key() == "E" || !std::isalpha(static_cast<unsigned char>(it.key()[0]))) {
      return holder.Error("dims", "invalid symbol '" + it.key() + "' (E is the expert count and is implicit)");
    }
    MOEPACK_ASSIGN_OR_RETURN(auto fields, r.Strings(it.key().c_str(), true));
    out.push_back(DimSymbol{it.key(), std::move(fields)});
  }
  return out;
}

std::string RulePath(const char* list, size_t i, const std::string& name) {
  std::string p = std::string(list) + "[" + std::to_string(i) + "]";
  if (!name.empty()) p += " (\"" + name + "\")";
  return p;
}

}  // namespace

struct RuleSet::Compiled {
  struct Rename {
    std::unique_ptr<RE2> forward;
    std::unique_ptr<RE2> reverse;
  };
  std::vector<Rename> renames;
  std::vector<std::vector<NameTemplate>> sources;  // per fusion
  std::vector<NameTemplate> targets;               // per fusion
  std::vector<NameTemplate> transposes;            // per transpose rule
  struct Chunk {
    NameTemplate source;
    std::vector<NameTemplate> targets;
  };
  std::vector<Chunk> chunks;  // per chunk rule
  // Source templates cut after "{expert}.", each with its first fusion.
  std::vector<std::pair<NameTemplate, int>> expert_roots;
};

// Parse in named steps. Each step reads one member of the file; the
// cross-rule checks run after every rule parsed.
class RuleSet::Parser {
 public:
  Parser(json root, const std::string& what) : root_(std::move(root)), what_(what), top_(root_, "", what) {}

  Result<RuleSet> Run() {
    MOEPACK_RETURN_IF_ERROR(Top());
    MOEPACK_RETURN_IF_ERROR(Groups());
    if (root_.contains("dims")) {
      MOEPACK_ASSIGN_OR_RETURN(rs_.dims_, ParseDims(root_["dims"], "dims", what_));
    }
    CollectSymbols();
    MOEPACK_RETURN_IF_ERROR(Renames());
    MOEPACK_ASSIGN_OR_RETURN(fusions_, List("fusions"));
    for (size_t i = 0; i < fusions_.size(); ++i) MOEPACK_RETURN_IF_ERROR(Fusion(i));
    MOEPACK_RETURN_IF_ERROR(ScalePairs());
    MOEPACK_RETURN_IF_ERROR(Transposes());
    MOEPACK_RETURN_IF_ERROR(Chunks());
    MOEPACK_RETURN_IF_ERROR(Whole());
    rs_.compiled_ = std::move(compiled_);
    return std::move(rs_);
  }

 private:
  Result<std::vector<json>> List(const char* key) const {
    if (!root_.contains(key)) return std::vector<json>{};
    if (!root_[key].is_array()) return top_.Error(key, "expected an array, got " + internal::JsonTypeName(root_[key]));
    return root_[key].get<std::vector<json>>();
  }

  Status Top() {
    MOEPACK_RETURN_IF_ERROR(top_.CheckKeys({"family", "description", "hub_layout", "model_types", "architectures",
                                            "num_experts", "expert_groups", "dims", "renames", "fusions",
                                            "transposes", "chunks"}));
    MOEPACK_ASSIGN_OR_RETURN(rs_.family_, top_.String("family", true));
    if (rs_.family_.empty()) return top_.Error("family", "must not be empty");
    MOEPACK_ASSIGN_OR_RETURN(rs_.description_, top_.String("description", false));
    MOEPACK_ASSIGN_OR_RETURN(std::string hub_layout, top_.String("hub_layout", false));
    if (!hub_layout.empty()) {
      auto l = ParseLayout(hub_layout);
      if (!l || *l == MoeLayout::kStacked || *l == MoeLayout::kDense || *l == MoeLayout::kMixed) {
        return top_.Error("hub_layout", "unknown layout '" + hub_layout +
                                            "' (per-expert, fused, fused-transposed or fused-interleaved)");
      }
      rs_.hub_layout_ = *l;
    }
    MOEPACK_ASSIGN_OR_RETURN(rs_.model_types_, top_.Strings("model_types", false));
    MOEPACK_ASSIGN_OR_RETURN(rs_.architectures_, top_.Strings("architectures", false));
    MOEPACK_ASSIGN_OR_RETURN(rs_.num_experts_, top_.Strings("num_experts", false));
    return Status::OK();
  }

  Status Groups() {
    MOEPACK_ASSIGN_OR_RETURN(auto groups, List("expert_groups"));
    for (size_t i = 0; i < groups.size(); ++i) {
      RuleReader r(groups[i], RulePath("expert_groups", i, ""), what_);
      MOEPACK_RETURN_IF_ERROR(r.CheckKeys({"prefix", "num_experts", "dims"}));
      ExpertGroup g;
      MOEPACK_ASSIGN_OR_RETURN(g.prefix, r.String("prefix", true));
      MOEPACK_ASSIGN_OR_RETURN(g.num_experts, r.Strings("num_experts", true));
      if (g.num_experts.empty()) return r.Error("num_experts", "must name at least one config field");
      if (groups[i].contains("dims")) {
        MOEPACK_ASSIGN_OR_RETURN(g.dims, ParseDims(groups[i]["dims"], RulePath("expert_groups", i, ""), what_));
      }
      rs_.groups_.push_back(std::move(g));
    }
    return Status::OK();
  }

  void CollectSymbols() {
    symbols_ = {"E"};
    for (const auto& d : rs_.dims_) symbols_.insert(d.symbol);
    for (const auto& g : rs_.groups_) {
      for (const auto& d : g.dims) symbols_.insert(d.symbol);
    }
  }

  // Rule i of `list`: its members checked against `keys` and its name read
  // into `name` (errors so far name the rule by its "name" member if it has
  // one), then the reader whose errors name the rule by that name.
  Result<RuleReader> Named(const char* list, const json& j, size_t i, std::initializer_list<const char*> keys,
                           bool name_required, std::string* name) const {
    RuleReader first(j, RulePath(list, i, NameOf(j)), what_);
    MOEPACK_RETURN_IF_ERROR(first.CheckKeys(keys));
    MOEPACK_ASSIGN_OR_RETURN(*name, first.String("name", name_required));
    return RuleReader(j, RulePath(list, i, *name), what_);
  }

  Status Renames() {
    MOEPACK_ASSIGN_OR_RETURN(auto renames, List("renames"));
    for (size_t i = 0; i < renames.size(); ++i) {
      RenameRule rr;
      MOEPACK_ASSIGN_OR_RETURN(RuleReader named,
                               Named("renames", renames[i], i,
                                     {"name", "pattern", "replacement", "reverse_pattern", "reverse_replacement"},
                                     false, &rr.name));
      MOEPACK_ASSIGN_OR_RETURN(rr.pattern, named.String("pattern", true));
      MOEPACK_ASSIGN_OR_RETURN(rr.replacement, named.String("replacement", true));
      MOEPACK_ASSIGN_OR_RETURN(rr.reverse_pattern, named.String("reverse_pattern", true));
      MOEPACK_ASSIGN_OR_RETURN(rr.reverse_replacement, named.String("reverse_replacement", true));
      Compiled::Rename c;
      RE2::Options opt;
      opt.set_log_errors(false);
      c.forward = std::make_unique<RE2>(rr.pattern, opt);
      c.reverse = std::make_unique<RE2>(rr.reverse_pattern, opt);
      for (auto [re, key, repl] : {std::tuple{c.forward.get(), "pattern", &rr.replacement},
                                   std::tuple{c.reverse.get(), "reverse_pattern", &rr.reverse_replacement}}) {
        if (!re->ok()) return named.Error(key, "invalid regular expression (" + re->error() + ")");
        if (re->pattern().empty()) return named.Error(key, "must not be empty");
        std::string why;
        if (!re->CheckRewriteString(*repl, &why)) {
          return named.Error(std::string(key) == "pattern" ? "replacement" : "reverse_replacement", why);
        }
      }
      compiled_->renames.push_back(std::move(c));
      rs_.renames_.push_back(std::move(rr));
    }
    return Status::OK();
  }

  // "role" and "tp_dim" of a fusion or transpose; tp_dim defaults to the
  // dim that holds the intermediate size in the role's v5 layout.
  static Status Role(const RuleReader& r, ExpertRole* role, int* tp_dim) {
    MOEPACK_ASSIGN_OR_RETURN(std::string name, r.String("role", false));
    if (!name.empty()) {
      bool known = false;
      for (ExpertRole k : {ExpertRole::kGateUp, ExpertRole::kUp, ExpertRole::kDown}) {
        if (name == RoleName(k)) {
          *role = k;
          known = true;
        }
      }
      if (!known) return r.Error("role", "unknown role '" + name + "' (gate_up, up or down)");
      *tp_dim = RoleIntermediateDim(*role);
    }
    if (r.j().contains("tp_dim")) {
      const json& d = r.j()["tp_dim"];
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > 2) {
        return r.Error("tp_dim", "expected 1 or 2 (a dim of the fused tensor), or 0 (every rank gets it whole)");
      }
      if (*role == ExpertRole::kNone) return r.Error("tp_dim", "needs a role");
      *tp_dim = static_cast<int>(d.get<int64_t>());
    }
    return Status::OK();
  }

  Status Fusion(size_t i) {
    FusionRule f;
    MOEPACK_ASSIGN_OR_RETURN(RuleReader r, Named("fusions", fusions_[i], i,
                                                 {"name", "target", "sources", "concat_dim", "transpose", "interleave",
                                                  "scale_of", "source_shape", "role", "tp_dim", "expert_count",
                                                  "expert_first"},
                                                 true, &f.name));
    if (!fusion_names_.insert(f.name).second) return r.Error("name", "two fusions are named \"" + f.name + "\"");
    MOEPACK_ASSIGN_OR_RETURN(f.target, r.String("target", true));
    MOEPACK_ASSIGN_OR_RETURN(f.sources, r.Strings("sources", true));
    MOEPACK_ASSIGN_OR_RETURN(f.scale_of, r.String("scale_of", false));
    MOEPACK_ASSIGN_OR_RETURN(f.source_shape, r.Strings("source_shape", false));
    MOEPACK_ASSIGN_OR_RETURN(f.expert_count, r.Strings("expert_count", false));
    MOEPACK_ASSIGN_OR_RETURN(f.expert_first, r.Strings("expert_first", false));
    if (!f.expert_first.empty() && f.expert_count.empty()) {
      return r.Error("expert_first", "needs expert_count: a share of an expert list has a size");
    }
    MOEPACK_RETURN_IF_ERROR(Role(r, &f.role, &f.tp_dim));
    if (f.sources.empty()) return r.Error("sources", "must list at least one source");
    MOEPACK_RETURN_IF_ERROR(Form(r, fusions_[i], f));
    auto target = NameTemplate::Parse(f.target);
    if (!target.ok()) return r.Error("target", target.status().message());
    if (target->has_expert()) return r.Error("target", "must not contain {expert}");
    if (!targets_.insert(f.target).second) return r.Error("target", "\"" + f.target + "\" is produced by two fusions");
    std::vector<NameTemplate> srcs;
    for (const std::string& s : f.sources) {
      auto t = NameTemplate::Parse(s);
      if (!t.ok()) return r.Error("sources", t.status().message());
      if (!t->has_expert()) return r.Error("sources", "\"" + s + "\" has no {expert} placeholder");
      if (t->has_prefix() != target->has_prefix()) {
        return r.Error("sources", "\"" + s + "\" and the target must both use {prefix} or neither");
      }
      if (auto [it, fresh] = sources_.emplace(s, rs_.fusions_.size()); !fresh) {
        // One expert list may feed several fusions, each taking its share.
        const bool same_fusion = it->second == rs_.fusions_.size();
        if (same_fusion || f.expert_count.empty() || rs_.fusions_[it->second].expert_count.empty() ||
            rs_.fusions_[it->second].sources != f.sources) {
          return r.Error("sources", "\"" + s + "\" is a source of two fusions (unless both take a share of one "
                                    "expert list: the same sources, each with expert_count)");
        }
      }
      srcs.push_back(std::move(t).value());
    }
    AddExpertRoots(f);
    compiled_->sources.push_back(std::move(srcs));
    compiled_->targets.push_back(std::move(target).value());
    rs_.fusions_.push_back(std::move(f));
    return Status::OK();
  }

  // concat_dim, transpose and source_shape, and how they fit together.
  Status Form(const RuleReader& r, const json& fj, FusionRule& f) const {
    if (fj.contains("concat_dim")) {
      const json& cd = fj["concat_dim"];
      if (!cd.is_number_integer()) return r.Error("concat_dim", "expected an integer");
      // Checked before narrowing to int: 4294967297 must not become 1.
      if (cd.is_number_unsigned() && cd.get<uint64_t>() > 64) return r.Error("concat_dim", "must be at most 64");
      f.concat_dim = static_cast<int>(std::max<int64_t>(cd.get<int64_t>(), 0));
    }
    if (fj.contains("transpose")) {
      if (!fj["transpose"].is_boolean()) return r.Error("transpose", "expected true or false");
      f.transpose = fj["transpose"].get<bool>();
    }
    if (fj.contains("interleave")) {
      if (!fj["interleave"].is_boolean()) return r.Error("interleave", "expected true or false");
      f.interleave = fj["interleave"].get<bool>();
      if (f.interleave && f.sources.size() < 2) return r.Error("interleave", "needs two or more sources");
    }
    if (f.concat_dim < 1) return r.Error("concat_dim", "must be >= 1 (dim 0 stacks the experts)");
    MOEPACK_RETURN_IF_ERROR(CheckShapeExpr(r, "source_shape", f.source_shape, symbols_));
    if (!f.source_shape.empty() && f.transpose && f.source_shape.size() != 2) {
      return r.Error("source_shape", "a transposing fusion has 2-D sources");
    }
    if (!f.source_shape.empty() && static_cast<size_t>(f.concat_dim) > f.source_shape.size()) {
      return r.Error("concat_dim", "is past the last dim of source_shape");
    }
    if (f.transpose && f.concat_dim > 2) {
      return r.Error("concat_dim", "a transposing fusion makes [E, a, b]: it joins along dim 1 or 2");
    }
    return Status::OK();
  }

  // Source templates cut after "{expert}.": a name under one of them that
  // no source matches belongs to an expert but to no fusion.
  void AddExpertRoots(const FusionRule& f) {
    for (const std::string& s : f.sources) {
      const size_t e = s.find("{expert}.");
      if (e == std::string::npos) continue;
      const std::string root = s.substr(0, e + 9);
      bool known = false;
      for (const auto& [t, _] : compiled_->expert_roots) known = known || t.text() == root;
      if (auto t = NameTemplate::Parse(root); t.ok() && !known) {
        compiled_->expert_roots.emplace_back(std::move(t).value(), static_cast<int>(rs_.fusions_.size()));
      }
    }
  }

  Status ScalePairs() {
    const size_t n = rs_.fusions_.size();
    rs_.weight_of_.assign(n, -1);
    rs_.scales_of_.assign(n, -1);
    for (size_t i = 0; i < n; ++i) {
      FusionRule& f = rs_.fusions_[i];
      if (f.scale_of.empty()) continue;
      RuleReader r(fusions_[i], RulePath("fusions", i, f.name), what_);
      int w = -1;
      for (size_t g = 0; g < n; ++g) {
        if (rs_.fusions_[g].name == f.scale_of) w = static_cast<int>(g);
      }
      if (w < 0 || w == static_cast<int>(i)) return r.Error("scale_of", "names no other fusion (\"" + f.scale_of + "\")");
      const FusionRule& of = rs_.fusions_[w];
      if (!of.scale_of.empty()) return r.Error("scale_of", "\"" + f.scale_of + "\" is itself a scale fusion");
      if (of.sources.size() != f.sources.size() || of.concat_dim != f.concat_dim || of.transpose != f.transpose ||
          of.interleave != f.interleave || of.expert_count != f.expert_count || of.expert_first != f.expert_first) {
        return r.Error("scale_of", "scales must be fused like their weights (same source count, concat_dim, "
                                   "transpose, interleave, expert share)");
      }
      if (rs_.scales_of_[w] >= 0) return r.Error("scale_of", "\"" + f.scale_of + "\" already has scales");
      if (f.role != ExpertRole::kNone && (f.role != of.role || f.tp_dim != of.tp_dim)) {
        return r.Error("role", "scales take the role and tp_dim of their weights; leave them out");
      }
      f.role = of.role;
      f.tp_dim = of.tp_dim;
      rs_.weight_of_[i] = w;
      rs_.scales_of_[w] = static_cast<int>(i);
    }
    return Status::OK();
  }

  Status Transposes() {
    MOEPACK_ASSIGN_OR_RETURN(auto transposes, List("transposes"));
    for (size_t i = 0; i < transposes.size(); ++i) {
      TransposeRule t;
      MOEPACK_ASSIGN_OR_RETURN(RuleReader r, Named("transposes", transposes[i], i,
                                                   {"name", "pattern", "hub_shape", "v5_shape", "role", "tp_dim"},
                                                   true, &t.name));
      MOEPACK_ASSIGN_OR_RETURN(t.pattern, r.String("pattern", true));
      MOEPACK_ASSIGN_OR_RETURN(t.hub_shape, r.Strings("hub_shape", true));
      MOEPACK_ASSIGN_OR_RETURN(t.v5_shape, r.Strings("v5_shape", true));
      MOEPACK_RETURN_IF_ERROR(Role(r, &t.role, &t.tp_dim));
      auto pat = NameTemplate::Parse(t.pattern);
      if (!pat.ok()) return r.Error("pattern", pat.status().message());
      if (pat->has_expert()) return r.Error("pattern", "must not contain {expert}: transposes apply to fused tensors");
      if (targets_.count(t.pattern) || sources_.count(t.pattern)) {
        return r.Error("pattern", "\"" + t.pattern + "\" is also a fusion name");
      }
      if (!names_.insert(t.pattern).second) return r.Error("pattern", "\"" + t.pattern + "\" is named by two rules");
      const size_t rank = t.hub_shape.size();
      if ((rank != 2 && rank != 3) || t.v5_shape.size() != rank) {
        return r.Error("hub_shape", "transposed tensors are 3-D [E, a, b] or 2-D [a, b], the same in both layouts");
      }
      if ((rank == 3 && (t.hub_shape[0] != "E" || t.v5_shape[0] != "E")) || t.hub_shape[rank - 2] != t.v5_shape[rank - 1] ||
          t.hub_shape[rank - 1] != t.v5_shape[rank - 2]) {
        return r.Error("v5_shape", "must be hub_shape with its last two dims swapped (3-D: both starting with E)");
      }
      if (rank == 2 && t.role != ExpertRole::kNone) {
        return r.Error("role", "a 2-D transpose is no fused expert tensor and has no role");
      }
      for (const auto& shape : {t.hub_shape, t.v5_shape}) {
        MOEPACK_RETURN_IF_ERROR(CheckShapeExpr(r, "hub_shape", shape, symbols_));
      }
      compiled_->transposes.push_back(std::move(pat).value());
      rs_.transposes_.push_back(std::move(t));
    }
    return Status::OK();
  }

  Status Chunks() {
    MOEPACK_ASSIGN_OR_RETURN(auto chunks, List("chunks"));
    for (size_t i = 0; i < chunks.size(); ++i) {
      ChunkRule c;
      MOEPACK_ASSIGN_OR_RETURN(RuleReader r,
                               Named("chunks", chunks[i], i, {"name", "source", "targets", "dim"}, true, &c.name));
      MOEPACK_ASSIGN_OR_RETURN(c.source, r.String("source", true));
      MOEPACK_ASSIGN_OR_RETURN(c.targets, r.Strings("targets", true));
      if (c.targets.size() < 2) return r.Error("targets", "must list at least two parts");
      if (chunks[i].contains("dim")) {
        const json& d = chunks[i]["dim"];
        if (!d.is_number_unsigned() || d.get<uint64_t>() > 64) return r.Error("dim", "expected an integer in [0, 64]");
        c.dim = static_cast<int>(d.get<uint64_t>());
      }
      Compiled::Chunk compiled;
      auto source = NameTemplate::Parse(c.source);
      if (!source.ok()) return r.Error("source", source.status().message());
      if (source->has_expert()) return r.Error("source", "must not contain {expert}");
      compiled.source = std::move(source).value();
      for (const std::string& text : c.targets) {
        auto t = NameTemplate::Parse(text);
        if (!t.ok()) return r.Error("targets", t.status().message());
        if (t->has_expert()) return r.Error("targets", "must not contain {expert}");
        if (t->has_prefix() != compiled.source.has_prefix()) {
          return r.Error("targets", "\"" + text + "\" and the source must both use {prefix} or neither");
        }
        compiled.targets.push_back(std::move(t).value());
      }
      std::vector<std::string> names = c.targets;
      names.push_back(c.source);
      for (const std::string& name : names) {
        if (targets_.count(name) || sources_.count(name) || !names_.insert(name).second) {
          return r.Error("targets", "\"" + name + "\" is named by another rule");
        }
      }
      compiled_->chunks.push_back(std::move(compiled));
      rs_.chunks_.push_back(std::move(c));
    }
    return Status::OK();
  }

  Status Whole() const {
    if (rs_.fusions_.empty() && rs_.transposes_.empty() && rs_.renames_.empty() && rs_.chunks_.empty()) {
      return top_.Error("", "no renames, fusions or transposes: nothing to convert");
    }
    bool every_fusion_counts = !rs_.fusions_.empty();
    for (const FusionRule& f : rs_.fusions_) every_fusion_counts = every_fusion_counts && !f.expert_count.empty();
    if (!rs_.fusions_.empty() && rs_.num_experts_.empty() && rs_.groups_.empty() && !every_fusion_counts) {
      return top_.Error("num_experts", "fusions need the config field that gives the expert count");
    }
    return Status::OK();
  }

  const json root_;
  const std::string what_;
  const RuleReader top_;
  RuleSet rs_;
  std::shared_ptr<Compiled> compiled_ = std::make_shared<Compiled>();
  std::set<std::string> symbols_, fusion_names_, targets_, names_;
  std::map<std::string, size_t> sources_;  // source template -> its first fusion
  std::vector<json> fusions_;
};

Result<RuleSet> RuleSet::Parse(std::string_view text, const std::string& what) {
  MOEPACK_ASSIGN_OR_RETURN(json root, internal::ParseJsonStrict(text, what));
  return Parser(std::move(root), what).Run();
}

std::string RuleSet::Rename(std::string_view name, Direction d) const {
  std::string s(name);
  const auto& rs = compiled_->renames;
  const size_t limit = name.size() + kMaxRenameGrowth;
  if (d == Direction::kToFused) {
    for (size_t i = 0; i < rs.size() && s.size() <= limit; ++i) {
      RE2::GlobalReplace(&s, *rs[i].forward, renames_[i].replacement);
    }
  } else {
    for (size_t i = rs.size(); i-- > 0 && s.size() <= limit;) {
      RE2::GlobalReplace(&s, *rs[i].reverse, renames_[i].reverse_replacement);
    }
  }
  return s;
}

std::optional<RuleSet::SourceMatch> RuleSet::MatchSource(std::string_view name) const {
  // Of the fusions sharing one expert list, the one whose share starts last
  // at or before the expert takes it.
  std::optional<SourceMatch> best;
  int64_t best_first = -1;
  for (size_t f = 0; f < compiled_->sources.size(); ++f) {
    const auto& srcs = compiled_->sources[f];
    for (size_t k = 0; k < srcs.size(); ++k) {
      auto m = srcs[k].Matches(name);
      if (!m) continue;
      const int64_t first = expert_first_.empty() ? 0 : expert_first_[f];
      if (m->expert >= first && first > best_first) {
        best = SourceMatch{static_cast<int>(f), static_cast<int>(k), std::move(m->prefix), m->expert - first};
        best_first = first;
      }
      break;
    }
    if (best && best->fusion == static_cast<int>(f) && fusions_[f].expert_count.empty()) return best;
  }
  return best;
}

std::optional<RuleSet::SourceMatch> RuleSet::MatchExpertLeftover(std::string_view name) const {
  if (MatchSource(name)) return std::nullopt;
  for (const auto& [root, fusion] : compiled_->expert_roots) {
    if (auto m = root.MatchesStart(name)) return SourceMatch{fusion, -1, std::move(m->prefix), m->expert};
  }
  return std::nullopt;
}

std::optional<RuleSet::TargetMatch> RuleSet::MatchTarget(std::string_view name) const {
  for (size_t f = 0; f < compiled_->targets.size(); ++f) {
    if (auto m = compiled_->targets[f].Matches(name)) return TargetMatch{static_cast<int>(f), std::move(m->prefix)};
  }
  return std::nullopt;
}

std::optional<RuleSet::TransposeMatch> RuleSet::MatchTranspose(std::string_view name) const {
  for (size_t t = 0; t < compiled_->transposes.size(); ++t) {
    if (auto m = compiled_->transposes[t].Matches(name)) {
      return TransposeMatch{static_cast<int>(t), std::move(m->prefix)};
    }
  }
  return std::nullopt;
}

std::string RuleSet::SourceName(int fusion, int source, std::string_view prefix, int64_t expert) const {
  return compiled_->sources[fusion][source].Render(prefix, expert + (expert_first_.empty() ? 0 : expert_first_[fusion]));
}

std::optional<RuleSet::ChunkMatch> RuleSet::MatchChunk(std::string_view name) const {
  for (size_t c = 0; c < compiled_->chunks.size(); ++c) {
    // The parts first: their names are the longer, more particular ones.
    const auto& chunk = compiled_->chunks[c];
    for (size_t k = 0; k < chunk.targets.size(); ++k) {
      if (auto m = chunk.targets[k].Matches(name)) {
        return ChunkMatch{static_cast<int>(c), static_cast<int>(k), std::move(m->prefix)};
      }
    }
    if (auto m = chunk.source.Matches(name)) return ChunkMatch{static_cast<int>(c), -1, std::move(m->prefix)};
  }
  return std::nullopt;
}

std::string RuleSet::ChunkName(int rule, int part, std::string_view prefix) const {
  const auto& chunk = compiled_->chunks[rule];
  return (part < 0 ? chunk.source : chunk.targets[part]).Render(prefix, -1);
}

Result<RuleSet> RuleSet::Bind(const ModelConfig& config) const {
  RuleSet bound = *this;
  bound.expert_first_.assign(fusions_.size(), 0);
  for (size_t f = 0; f < fusions_.size(); ++f) {
    const auto& paths = fusions_[f].expert_first;
    if (paths.empty()) continue;
    std::optional<int64_t> first;
    for (const auto& p : paths) {
      if ((first = config.Int(p))) break;
    }
    if (!first || *first < 0) {
      return Status::Corrupt("config.json: no non-negative " + paths.front() + " for where fusion \"" +
                             fusions_[f].name + "\" starts in its expert list");
    }
    bound.expert_first_[f] = *first;
  }
  return bound;
}

std::optional<RuleSet::TargetMatch> RuleSet::MatchTargetSibling(std::string_view name) const {
  if (MatchTarget(name)) return std::nullopt;
  for (size_t f = 0; f < compiled_->targets.size(); ++f) {
    auto m = compiled_->targets[f].MatchesStart(name);
    if (!m) continue;
    const std::string target = TargetName(static_cast<int>(f), m->prefix);
    if (name.size() > target.size() + 1 && name[target.size()] == '_') return TargetMatch{static_cast<int>(f), m->prefix};
  }
  return std::nullopt;
}

std::string RuleSet::SourceLeaf(int fusion, int source) const {
  const std::string& s = fusions_[fusion].sources[source];
  const size_t e = s.find("{expert}");
  return e == std::string::npos ? s : s.substr(std::min(s.size(), e + 9));
}

std::string RuleSet::HubSourceName(int fusion, int source, std::string_view prefix, int64_t expert) const {
  return Rename(SourceName(fusion, source, prefix, expert), Direction::kToPerExpert);
}

std::string RuleSet::TargetName(int fusion, std::string_view prefix) const {
  return compiled_->targets[fusion].Render(prefix, -1);
}

Result<int64_t> RuleSet::NumExperts(const ModelConfig& config, std::string_view prefix, int fusion) const {
  const std::vector<std::string>* fields = &num_experts_;
  for (const auto& g : groups_) {
    if (prefix.substr(0, g.prefix.size()) == g.prefix) {
      fields = &g.num_experts;
      break;
    }
  }
  if (fusion >= 0 && !fusions_[fusion].expert_count.empty()) fields = &fusions_[fusion].expert_count;
  for (const auto& f : *fields) {
    if (auto v = config.Int(f)) {
      if (*v <= 0) return Status::Corrupt("config.json: " + f + " must be positive");
      return *v;
    }
  }
  for (const auto& f : *fields) {
    // Hunyuan configs may give one count per layer: which layer a name is
    // in is not something these rules know, so say so instead of guessing.
    if (config.Has(f) && config.Int(f + ".0")) {
      return Status::Corrupt("config.json: " + f + " is a list (one expert count per layer); per-layer expert counts "
                             "are not supported: '" + std::string(prefix) + "' needs a single count");
    }
  }
  std::string names;
  for (const auto& f : *fields) names += (names.empty() ? "" : ", ") + f;
  return Status::Corrupt("config.json: no expert count for '" + std::string(prefix) + "' (looked for " + names + ")");
}

const DimSymbol* RuleSet::FindDim(std::string_view symbol, std::string_view prefix) const {
  for (const auto& g : groups_) {
    if (prefix.substr(0, g.prefix.size()) != g.prefix) continue;
    for (const auto& d : g.dims) {
      if (d.symbol == symbol) return &d;
    }
    break;
  }
  for (const auto& d : dims_) {
    if (d.symbol == symbol) return &d;
  }
  return nullptr;
}

std::optional<uint64_t> RuleSet::EvalDim(const ModelConfig& config, const std::string& expr, int64_t num_experts,
                                         std::string_view prefix, std::map<std::string, int64_t>* named,
                                         std::string* missing) const {
  // A term is SYMBOL or N*SYMBOL; a dimension is a term, or a term divided
  // by another, rounded up (FP8 block scales: "I/BR").
  auto term = [&](std::string_view text) -> std::optional<uint64_t> {
    auto t = ParseShapeTerm(text);
    if (!t) {  // rule sets are validated by Parse; only a hand-made one gets here
      if (missing) *missing = "'" + std::string(text) + "'";
      return std::nullopt;
    }
    const uint64_t mult = t->mult;
    const std::string& sym = t->symbol;
    if (sym == "E") return num_experts > 0 ? std::optional<uint64_t>(mult * static_cast<uint64_t>(num_experts)) : std::nullopt;
    const DimSymbol* d = FindDim(sym, prefix);
    if (!d) {
      if (missing) *missing = "'" + sym + "'";
      return std::nullopt;
    }
    for (const auto& field : d->config) {
      if (auto v = config.Int(field); v && *v > 0) {
        if (named) (*named)[field] = *v;
        return mult * static_cast<uint64_t>(*v);
      }
    }
    if (missing) *missing = sym + " (looked for " + d->config.front() + ")";
    return std::nullopt;
  };
  const size_t slash = expr.find('/');
  auto n = term(std::string_view(expr).substr(0, slash));
  if (!n || slash == std::string::npos) return n;
  auto d = term(std::string_view(expr).substr(slash + 1));
  if (!d) return std::nullopt;
  return (*n + *d - 1) / *d;
}

Result<std::vector<uint64_t>> RuleSet::EvalShape(const ModelConfig& config, const std::vector<std::string>& shape,
                                                 int64_t num_experts, std::string_view prefix) const {
  std::vector<uint64_t> out;
  for (const std::string& e : shape) {
    std::string missing;
    auto v = EvalDim(config, e, num_experts, prefix, nullptr, &missing);
    if (!v) return Status::Corrupt("config.json: no positive value for " + missing);
    out.push_back(*v);
  }
  return out;
}

bool RuleSet::ResolveShape(const ModelConfig& config, const std::vector<std::string>& shape, int64_t num_experts,
                           std::string_view prefix, std::vector<uint64_t>* out, std::string* given) const {
  out->clear();
  std::map<std::string, int64_t> named;  // config field -> its value
  for (const std::string& e : shape) {
    auto v = EvalDim(config, e, num_experts, prefix, &named, nullptr);
    if (!v) return false;
    out->push_back(*v);
  }
  for (const auto& [field, v] : named) *given += (given->empty() ? "" : ", ") + field + "=" + std::to_string(v);
  return true;
}

std::optional<uint64_t> RuleSet::DimValue(const ModelConfig& config, const std::string& symbol,
                                          std::string_view prefix) const {
  return EvalDim(config, symbol, 0, prefix, nullptr, nullptr);
}

bool RuleSet::NamesExperts(const std::vector<std::string>& shape) {
  for (const std::string& e : shape) {
    const size_t slash = e.find('/');
    for (std::string_view t : {std::string_view(e).substr(0, slash),
                               slash == std::string::npos ? std::string_view() : std::string_view(e).substr(slash + 1)}) {
      if (auto term = ParseShapeTerm(t); term && term->symbol == "E") return true;
    }
  }
  return false;
}

std::optional<uint64_t> RuleSet::BlockOf(const ModelConfig& config, int f, int source_dim,
                                         std::string_view prefix) const {
  const auto& shape = fusions_[f].source_shape;
  if (source_dim < 0 || static_cast<size_t>(source_dim) >= shape.size()) return std::nullopt;
  const std::string& e = shape[source_dim];
  const size_t slash = e.find('/');
  if (slash == std::string::npos) return std::nullopt;
  return EvalDim(config, e.substr(slash + 1), 0, prefix, nullptr, nullptr);
}

std::string_view RoleName(ExpertRole r) {
  switch (r) {
    case ExpertRole::kGateUp: return "gate_up";
    case ExpertRole::kUp: return "up";
    case ExpertRole::kDown: return "down";
    case ExpertRole::kNone: break;
  }
  return "";
}

int RoleIntermediateDim(ExpertRole r) {
  switch (r) {
    case ExpertRole::kGateUp:
    case ExpertRole::kUp: return 1;
    case ExpertRole::kDown: return 2;
    case ExpertRole::kNone: break;
  }
  return 0;
}

int RoleParts(ExpertRole r) { return r == ExpertRole::kGateUp ? 2 : 1; }

}  // namespace moepack
