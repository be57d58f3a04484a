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
namespace {

using nlohmann::json;
using internal::NameTemplate;

class Reader {
 public:
  Reader(const json& j, std::string path, std::string what) : j_(j), path_(std::move(path)), what_(std::move(what)) {}

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
Status CheckShapeExpr(const Reader& r, const char* member, const std::vector<std::string>& shape,
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
  Reader holder(d, path, what);
  Reader r(d, path.empty() ? "dims" : path + ": dims", what);
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
  // Source templates cut after "{expert}.", each with its first fusion.
  std::vector<std::pair<NameTemplate, int>> expert_roots;
};

Result<RuleSet> RuleSet::Parse(std::string_view text, const std::string& what) {
  MOEPACK_ASSIGN_OR_RETURN(json root, internal::ParseJsonStrict(text, what));
  Reader top(root, "", what);
  MOEPACK_RETURN_IF_ERROR(top.CheckKeys({"family", "description", "model_types", "architectures", "num_experts",
                                         "expert_groups", "dims", "renames", "fusions", "transposes"}));
  RuleSet rs;
  auto compiled = std::make_shared<Compiled>();
  MOEPACK_ASSIGN_OR_RETURN(rs.family_, top.String("family", true));
  if (rs.family_.empty()) return top.Error("family", "must not be empty");
  MOEPACK_RETURN_IF_ERROR(top.String("description", false).status());
  MOEPACK_ASSIGN_OR_RETURN(rs.model_types_, top.Strings("model_types", false));
  MOEPACK_ASSIGN_OR_RETURN(rs.architectures_, top.Strings("architectures", false));
  MOEPACK_ASSIGN_OR_RETURN(rs.num_experts_, top.Strings("num_experts", false));

  auto list = [&](const char* key) -> Result<std::vector<json>> {
    if (!root.contains(key)) return std::vector<json>{};
    if (!root[key].is_array()) return top.Error(key, "expected an array, got " + internal::JsonTypeName(root[key]));
    return root[key].get<std::vector<json>>();
  };

  MOEPACK_ASSIGN_OR_RETURN(auto groups, list("expert_groups"));
  for (size_t i = 0; i < groups.size(); ++i) {
    Reader r(groups[i], RulePath("expert_groups", i, ""), what);
    MOEPACK_RETURN_IF_ERROR(r.CheckKeys({"prefix", "num_experts", "dims"}));
    ExpertGroup g;
    MOEPACK_ASSIGN_OR_RETURN(g.prefix, r.String("prefix", true));
    MOEPACK_ASSIGN_OR_RETURN(g.num_experts, r.Strings("num_experts", true));
    if (g.num_experts.empty()) return r.Error("num_experts", "must name at least one config field");
    if (groups[i].contains("dims")) {
      MOEPACK_ASSIGN_OR_RETURN(g.dims, ParseDims(groups[i]["dims"], RulePath("expert_groups", i, ""), what));
    }
    rs.groups_.push_back(std::move(g));
  }

  if (root.contains("dims")) {
    MOEPACK_ASSIGN_OR_RETURN(rs.dims_, ParseDims(root["dims"], "dims", what));
  }

  MOEPACK_ASSIGN_OR_RETURN(auto renames, list("renames"));
  for (size_t i = 0; i < renames.size(); ++i) {
    Reader r(renames[i], RulePath("renames", i, NameOf(renames[i])), what);
    MOEPACK_RETURN_IF_ERROR(r.CheckKeys({"name", "pattern", "replacement", "reverse_pattern", "reverse_replacement"}));
    RenameRule rr;
    MOEPACK_ASSIGN_OR_RETURN(rr.name, r.String("name", false));
    Reader named(renames[i], RulePath("renames", i, rr.name), what);
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
    compiled->renames.push_back(std::move(c));
    rs.renames_.push_back(std::move(rr));
  }

  std::set<std::string> symbols = {"E"};
  for (const auto& d : rs.dims_) symbols.insert(d.symbol);
  for (const auto& g : rs.groups_) {
    for (const auto& d : g.dims) symbols.insert(d.symbol);
  }
  std::set<std::string> fusion_names, targets, sources;
  MOEPACK_ASSIGN_OR_RETURN(auto fusions, list("fusions"));
  for (size_t i = 0; i < fusions.size(); ++i) {
    Reader r0(fusions[i], RulePath("fusions", i, NameOf(fusions[i])), what);
    MOEPACK_RETURN_IF_ERROR(
        r0.CheckKeys({"name", "target", "sources", "concat_dim", "transpose", "scale_of", "source_shape"}));
    FusionRule f;
    MOEPACK_ASSIGN_OR_RETURN(f.name, r0.String("name", true));
    Reader r(fusions[i], RulePath("fusions", i, f.name), what);
    if (!fusion_names.insert(f.name).second) return r.Error("name", "two fusions are named \"" + f.name + "\"");
    MOEPACK_ASSIGN_OR_RETURN(f.target, r.String("target", true));
    MOEPACK_ASSIGN_OR_RETURN(f.sources, r.Strings("sources", true));
    MOEPACK_ASSIGN_OR_RETURN(f.scale_of, r.String("scale_of", false));
    MOEPACK_ASSIGN_OR_RETURN(f.source_shape, r.Strings("source_shape", false));
    if (f.sources.empty()) return r.Error("sources", "must list at least one source");
    const json& fj = fusions[i];
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
    if (f.concat_dim < 1) return r.Error("concat_dim", "must be >= 1 (dim 0 stacks the experts)");
    MOEPACK_RETURN_IF_ERROR(CheckShapeExpr(r, "source_shape", f.source_shape, symbols));
    if (!f.source_shape.empty() && f.transpose && f.source_shape.size() != 2) {
      return r.Error("source_shape", "a transposing fusion has 2-D sources");
    }
    if (!f.source_shape.empty() && static_cast<size_t>(f.concat_dim) > f.source_shape.size()) {
      return r.Error("concat_dim", "is past the last dim of source_shape");
    }
    if (f.transpose && f.sources.size() > 1 && f.concat_dim != 1) {
      return r.Error("concat_dim", "a transposing fusion of several sources must concatenate along dim 1");
    }
    auto target = NameTemplate::Parse(f.target);
    if (!target.ok()) return r.Error("target", target.status().message());
    if (target->has_expert()) return r.Error("target", "must not contain {expert}");
    if (!targets.insert(f.target).second) return r.Error("target", "\"" + f.target + "\" is produced by two fusions");
    std::vector<NameTemplate> srcs;
    for (const std::string& s : f.sources) {
      auto t = NameTemplate::Parse(s);
      if (!t.ok()) return r.Error("sources", t.status().message());
      if (!t->has_expert()) return r.Error("sources", "\"" + s + "\" has no {expert} placeholder");
      if (t->has_prefix() != target->has_prefix()) {
        return r.Error("sources", "\"" + s + "\" and the target must both use {prefix} or neither");
      }
      if (!sources.insert(s).second) return r.Error("sources", "\"" + s + "\" is a source of two fusions");
      srcs.push_back(std::move(t).value());
    }
    for (const std::string& s : f.sources) {
      const size_t e = s.find("{expert}.");
      if (e == std::string::npos) continue;
      const std::string root = s.substr(0, e + 9);
      bool known = false;
      for (const auto& [t, _] : compiled->expert_roots) known = known || t.text() == root;
      if (auto t = NameTemplate::Parse(root); t.ok() && !known) {
        compiled->expert_roots.emplace_back(std::move(t).value(), static_cast<int>(rs.fusions_.size()));
      }
    }
    compiled->sources.push_back(std::move(srcs));
    compiled->targets.push_back(std::move(target).value());
    rs.fusions_.push_back(std::move(f));
  }
  for (size_t i = 0; i < rs.fusions_.size(); ++i) {
    const FusionRule& f = rs.fusions_[i];
    if (f.scale_of.empty()) continue;
    Reader r(fusions[i], RulePath("fusions", i, f.name), what);
    const FusionRule* of = nullptr;
    for (const auto& g : rs.fusions_) {
      if (g.name == f.scale_of) of = &g;
    }
    if (!of || of == &f) return r.Error("scale_of", "names no other fusion (\"" + f.scale_of + "\")");
    if (!of->scale_of.empty()) return r.Error("scale_of", "\"" + f.scale_of + "\" is itself a scale fusion");
    if (of->sources.size() != f.sources.size() || of->concat_dim != f.concat_dim || of->transpose != f.transpose) {
      return r.Error("scale_of", "scales must be fused like their weights (same source count, concat_dim, transpose)");
    }
  }

  MOEPACK_ASSIGN_OR_RETURN(auto transposes, list("transposes"));
  for (size_t i = 0; i < transposes.size(); ++i) {
    Reader r0(transposes[i], RulePath("transposes", i, NameOf(transposes[i])), what);
    MOEPACK_RETURN_IF_ERROR(r0.CheckKeys({"name", "pattern", "hub_shape", "v5_shape"}));
    TransposeRule t;
    MOEPACK_ASSIGN_OR_RETURN(t.name, r0.String("name", true));
    Reader r(transposes[i], RulePath("transposes", i, t.name), what);
    MOEPACK_ASSIGN_OR_RETURN(t.pattern, r.String("pattern", true));
    MOEPACK_ASSIGN_OR_RETURN(t.hub_shape, r.Strings("hub_shape", true));
    MOEPACK_ASSIGN_OR_RETURN(t.v5_shape, r.Strings("v5_shape", true));
    auto pat = NameTemplate::Parse(t.pattern);
    if (!pat.ok()) return r.Error("pattern", pat.status().message());
    if (pat->has_expert()) return r.Error("pattern", "must not contain {expert}: transposes apply to fused tensors");
    if (targets.count(t.pattern) || sources.count(t.pattern)) {
      return r.Error("pattern", "\"" + t.pattern + "\" is also a fusion name");
    }
    if (t.hub_shape.size() != 3 || t.v5_shape.size() != 3) {
      return r.Error("hub_shape", "transposed tensors are 3-D [E, a, b]");
    }
    if (t.hub_shape[0] != "E" || t.v5_shape[0] != "E" || t.hub_shape[1] != t.v5_shape[2] ||
        t.hub_shape[2] != t.v5_shape[1]) {
      return r.Error("v5_shape", "must be hub_shape with its last two dims swapped, both starting with E");
    }
    for (const auto& shape : {t.hub_shape, t.v5_shape}) MOEPACK_RETURN_IF_ERROR(CheckShapeExpr(r, "hub_shape", shape, symbols));
    compiled->transposes.push_back(std::move(pat).value());
    rs.transposes_.push_back(std::move(t));
  }
  if (rs.fusions_.empty() && rs.transposes_.empty() && rs.renames_.empty()) {
    return top.Error("", "no renames, fusions or transposes: nothing to convert");
  }
  if (!rs.fusions_.empty() && rs.num_experts_.empty() && rs.groups_.empty()) {
    return top.Error("num_experts", "fusions need the config field that gives the expert count");
  }
  rs.compiled_ = std::move(compiled);
  return rs;
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
  for (size_t f = 0; f < compiled_->sources.size(); ++f) {
    const auto& srcs = compiled_->sources[f];
    for (size_t k = 0; k < srcs.size(); ++k) {
      if (auto m = srcs[k].Matches(name)) {
        return SourceMatch{static_cast<int>(f), static_cast<int>(k), std::move(m->prefix), m->expert};
      }
    }
  }
  return std::nullopt;
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
  return compiled_->sources[fusion][source].Render(prefix, expert);
}

std::string RuleSet::TargetName(int fusion, std::string_view prefix) const {
  return compiled_->targets[fusion].Render(prefix, -1);
}

Result<int64_t> RuleSet::NumExperts(const ModelConfig& config, std::string_view prefix) const {
  const std::vector<std::string>* fields = &num_experts_;
  for (const auto& g : groups_) {
    if (prefix.substr(0, g.prefix.size()) == g.prefix) {
      fields = &g.num_experts;
      break;
    }
  }
  for (const auto& f : *fields) {
    if (auto v = config.Int(f)) {
      if (*v <= 0) return Status::Corrupt("config.json: " + f + " must be positive");
      return *v;
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

std::vector<uint64_t> FusedShape(const FusionRule& f, uint64_t num_experts, const std::vector<uint64_t>& piece) {
  const uint64_t K = f.sources.size();
  if (f.transpose) return {num_experts, piece[1] * K, piece[0]};
  std::vector<uint64_t> out = {num_experts};
  out.insert(out.end(), piece.begin(), piece.end());
  out[f.concat_dim] *= K;
  return out;
}

namespace {
std::string ExprString(const std::vector<std::string>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + shape[i];
  return s + "]";
}
}  // namespace

Status RuleSet::CheckSourceShape(const ModelConfig& config, int fusion, std::string_view prefix,
                                 const std::vector<uint64_t>& piece, const std::string& what) const {
  const FusionRule& f = fusions_[fusion];
  std::vector<uint64_t> want;
  std::string given;
  if (f.source_shape.empty() || !ResolveShape(config, f.source_shape, 0, prefix, &want, &given) || piece == want) {
    return Status::OK();
  }
  return Status::Corrupt(what + " has shape " + internal::ShapeString(piece) + " but config.json (" + given +
                         ") gives " + ExprString(f.source_shape) + " = " + internal::ShapeString(want) +
                         " per expert (fusion \"" + f.name + "\")");
}

Status RuleSet::CheckFusedShape(const ModelConfig& config, int fusion, std::string_view prefix, int64_t num_experts,
                                const std::vector<uint64_t>& fused, const std::string& what) const {
  const FusionRule& f = fusions_[fusion];
  std::vector<uint64_t> piece;
  std::string given;
  if (f.source_shape.empty() || !ResolveShape(config, f.source_shape, num_experts, prefix, &piece, &given)) {
    return Status::OK();
  }
  const std::vector<uint64_t> want = FusedShape(f, static_cast<uint64_t>(num_experts), piece);
  // The same layout in symbols, for the message: [E, 2*I, H].
  const std::string k = std::to_string(f.sources.size());
  std::vector<std::string> expr = {"E"};
  if (f.transpose) {
    expr.push_back(f.sources.size() > 1 ? k + "*" + f.source_shape[1] : f.source_shape[1]);
    expr.push_back(f.source_shape[0]);
  } else {
    expr.insert(expr.end(), f.source_shape.begin(), f.source_shape.end());
    if (f.sources.size() > 1) {
      std::string& d = expr[f.concat_dim];
      d = d.find_first_of("*/") == std::string::npos ? k + "*" + d : k + "*(" + d + ")";
    }
  }
  given = "E=" + std::to_string(num_experts) + ", " + given;
  if (fused == want) return Status::OK();
  return Status::Corrupt(what + " has shape " + internal::ShapeString(fused) + " but config.json (" + given +
                         ") gives the fused layout " + ExprString(expr) + " = " + internal::ShapeString(want) +
                         " (fusion \"" + f.name + "\"); a transposed or foreign layout is not converted");
}

}  // namespace moepack
