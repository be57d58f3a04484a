#include "rules/name_template.h"

#include <cctype>

namespace moepack::internal {

Result<NameTemplate> NameTemplate::Parse(std::string_view text) {
  NameTemplate t;
  t.text_ = std::string(text);
  size_t i = 0;
  std::string lit;
  while (i < text.size()) {
    if (text[i] == '{') {
      size_t close = text.find('}', i);
      if (close == std::string_view::npos) return Status::InvalidArgument("unclosed '{' in \"" + t.text_ + "\"");
      std::string_view ph = text.substr(i + 1, close - i - 1);
      Kind kind;
      if (ph == "prefix") {
        if (t.has_prefix_) return Status::InvalidArgument("{prefix} appears twice in \"" + t.text_ + "\"");
        if (!t.pieces_.empty() || !lit.empty()) {
          return Status::InvalidArgument("{prefix} must start the pattern \"" + t.text_ + "\"");
        }
        t.has_prefix_ = true;
        kind = Kind::kPrefix;
      } else if (ph == "expert") {
        if (t.has_expert_) return Status::InvalidArgument("{expert} appears twice in \"" + t.text_ + "\"");
        t.has_expert_ = true;
        kind = Kind::kExpert;
      } else {
        return Status::InvalidArgument("unknown placeholder {" + std::string(ph) + "} in \"" + t.text_ + "\"");
      }
      if (!lit.empty()) t.pieces_.push_back({Kind::kLiteral, std::move(lit)});
      lit.clear();
      if (kind == Kind::kExpert && !t.pieces_.empty() && t.pieces_.back().kind != Kind::kLiteral) {
        return Status::InvalidArgument("placeholders must be separated by text in \"" + t.text_ + "\"");
      }
      t.pieces_.push_back({kind, {}});
      i = close + 1;
    } else if (text[i] == '}') {
      return Status::InvalidArgument("stray '}' in \"" + t.text_ + "\"");
    } else {
      lit.push_back(text[i++]);
    }
  }
  if (!lit.empty()) t.pieces_.push_back({Kind::kLiteral, std::move(lit)});
  if (t.pieces_.empty() || (t.pieces_.size() == 1 && t.pieces_[0].kind != Kind::kLiteral)) {
    return Status::InvalidArgument("pattern \"" + t.text_ + "\" has no fixed text");
  }
  if (t.pieces_.back().kind == Kind::kLiteral) t.tail_ = t.pieces_.back().literal;
  return t;
}

bool NameTemplate::MatchFrom(size_t piece, std::string_view rest, Match& m, bool whole) const {
  if (piece == pieces_.size()) return whole ? rest.empty() : !rest.empty();
  const Piece& p = pieces_[piece];
  switch (p.kind) {
    case Kind::kLiteral:
      if (rest.substr(0, p.literal.size()) != p.literal) return false;
      return MatchFrom(piece + 1, rest.substr(p.literal.size()), m, whole);
    case Kind::kExpert: {
      size_t n = 0;
      while (n < rest.size() && std::isdigit(static_cast<unsigned char>(rest[n]))) ++n;
      // Only the maximal digit run: "12" is never read as expert 1 followed by "2".
      if (n == 0 || n > 9) return false;
      if (n > 1 && rest[0] == '0') return false;  // "07" is not a canonical id
      int64_t v = 0;
      for (size_t k = 0; k < n; ++k) v = v * 10 + (rest[k] - '0');
      if (!MatchFrom(piece + 1, rest.substr(n), m, whole)) return false;
      m.expert = v;
      return true;
    }
    case Kind::kPrefix:
      // Try the longest prefix first; prefixes end at a '.' boundary.
      for (size_t len = rest.size() + 1; len-- > 0;) {
        if (len > 0 && rest[len - 1] != '.') continue;
        if (MatchFrom(piece + 1, rest.substr(len), m, whole)) {
          m.prefix = std::string(rest.substr(0, len));
          return true;
        }
      }
      return false;
  }
  return false;
}

std::optional<NameTemplate::Match> NameTemplate::Matches(std::string_view name) const {
  if (name.size() < tail_.size() || name.substr(name.size() - tail_.size()) != tail_) return std::nullopt;
  Match m;
  if (!MatchFrom(0, name, m, true)) return std::nullopt;
  return m;
}

std::optional<NameTemplate::Match> NameTemplate::MatchesStart(std::string_view name) const {
  Match m;
  if (!MatchFrom(0, name, m, false)) return std::nullopt;
  return m;
}

std::string NameTemplate::Render(std::string_view prefix, int64_t expert) const {
  std::string out;
  for (const Piece& p : pieces_) {
    switch (p.kind) {
      case Kind::kLiteral: out += p.literal; break;
      case Kind::kPrefix: out += prefix; break;
      case Kind::kExpert: out += std::to_string(expert); break;
    }
  }
  return out;
}

}  // namespace moepack::internal
