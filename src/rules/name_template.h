// Tensor-name templates with two placeholders: {prefix} (any text that is
// empty or ends with '.', so it stops at a name component) and {expert} (a
// canonical decimal number). Matching is anchored at both ends, so
// "experts.gate_up_proj" never matches "experts.gate_up_proj_scale_inv".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moepack/status.h"

namespace moepack::internal {

class NameTemplate {
 public:
  static Result<NameTemplate> Parse(std::string_view text);

  bool has_prefix() const { return has_prefix_; }
  bool has_expert() const { return has_expert_; }
  const std::string& text() const { return text_; }

  struct Match {
    std::string prefix;
    int64_t expert = -1;
  };
  std::optional<Match> Matches(std::string_view name) const;
  // The template matches a proper prefix of `name` (something follows).
  std::optional<Match> MatchesStart(std::string_view name) const;
  std::string Render(std::string_view prefix, int64_t expert) const;

 private:
  enum class Kind { kLiteral, kPrefix, kExpert };
  struct Piece {
    Kind kind;
    std::string literal;
  };
  bool MatchFrom(size_t piece, std::string_view rest, Match& m, bool whole) const;
  std::vector<Piece> pieces_;
  std::string text_;
  std::string tail_;  // literal the name must end with, for a cheap reject
  bool has_prefix_ = false;
  bool has_expert_ = false;
};

}  // namespace moepack::internal
