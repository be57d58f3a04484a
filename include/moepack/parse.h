// What users type, parsed once for every front end: the CLI and the Python
// package accept exactly the same spellings. Errors say what was expected,
// without the flag or argument name (the caller prefixes it).
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>

#include "moepack/plan.h"
#include "moepack/rules.h"
#include "moepack/status.h"

namespace moepack {

// "5GB", "500MB", "2GiB", "1000": decimal units as the Hub (KB, MB, GB, TB),
// binary ones with "iB" (KiB ... TiB), case-insensitive; must be positive.
Result<uint64_t> ParseSize(std::string_view text);

// "fused" or "per-expert".
Result<Direction> ParseDirection(std::string_view text);
std::string_view DirectionName(Direction d);

// "" (let the shapes tell), "hf" (the Hub's) or "v5".
Result<SourceLayout> ParseSourceLayout(std::string_view text);

// "" (keep), "bf16", "f16", "f32" (dequantize) or "fp8" (quantize).
Result<DTypeChange> ParseDTypeChange(std::string_view text);
std::string_view DTypeChangeName(DTypeChange d);

// An FP8 block: "128" (square) or "128x64" (rows x cols), each in [1, 65536].
Result<std::pair<uint64_t, uint64_t>> ParseBlockSize(std::string_view text);

}  // namespace moepack
