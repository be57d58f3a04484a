// The safetensors format layer: dtypes, header validation (one crafted file
// per rule), the writer's exact bytes, and round trips.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/safetensors.h"
#include "testutil.h"

namespace moepack {
namespace safetensors_test {
namespace {

using moepack::testing::ReadFileOrDie;
using moepack::testing::TempDir;
using moepack::testing::WriteFileOrDie;

std::string LE64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A file image built by hand: 8-byte LE length + header text + data.
std::string Raw(std::string_view header, std::string_view data = {}) {
  return LE64(header.size()) + std::string(header) + std::string(data);
}

std::string Zeros(size_t n) { return std::string(n, '\0'); }

// Bytes 0, 1, 2, ... so that misplaced data shows.
std::string Pattern(size_t n, int seed = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + seed * 13 + 1) & 0xFF);
  return s;
}

std::string ReadRange(const std::string& path, uint64_t offset, uint64_t n) {
  std::string all = ReadFileOrDie(path);
  if (offset + n > all.size()) {
    ADD_FAILURE() << path << ": range past end";
    return {};
  }
  return all.substr(offset, n);
}

// ---------------------------------------------------------------- dtypes

struct DTypeCase {
  const char* name;
  DType dtype;
  int bits;
};

const DTypeCase kDTypes[] = {
    {"BOOL", DType::BOOL, 8},
    {"U8", DType::U8, 8},
    {"I8", DType::I8, 8},
    {"U16", DType::U16, 16},
    {"I16", DType::I16, 16},
    {"F16", DType::F16, 16},
    {"BF16", DType::BF16, 16},
    {"U32", DType::U32, 32},
    {"I32", DType::I32, 32},
    {"F32", DType::F32, 32},
    {"U64", DType::U64, 64},
    {"I64", DType::I64, 64},
    {"F64", DType::F64, 64},
    {"C64", DType::C64, 64},
    {"F8_E4M3", DType::F8_E4M3, 8},
    {"F8_E5M2", DType::F8_E5M2, 8},
    {"F8_E8M0", DType::F8_E8M0, 8},
    {"F8_E4M3FNUZ", DType::F8_E4M3FNUZ, 8},
    {"F8_E5M2FNUZ", DType::F8_E5M2FNUZ, 8},
    {"F6_E2M3", DType::F6_E2M3, 6},
    {"F6_E3M2", DType::F6_E3M2, 6},
    {"F4", DType::F4, 4},
};
static_assert(sizeof(kDTypes) / sizeof(kDTypes[0]) == kNumDTypes);

TEST(DTypeTest, NamesBitsAndSizes) {
  for (const auto& c : kDTypes) {
    SCOPED_TRACE(c.name);
    auto parsed = ParseDType(c.name);
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, c.dtype);
    EXPECT_EQ(DTypeName(c.dtype), c.name);
    EXPECT_EQ(DTypeBits(c.dtype), c.bits);
    EXPECT_EQ(ByteSize(c.dtype, 8), static_cast<uint64_t>(c.bits));  // 8 elements = bits bytes
    EXPECT_EQ(ByteSize(c.dtype, 0), 0u);
    EXPECT_EQ(IsFloat8(c.dtype), std::string_view(c.name).substr(0, 3) == "F8_");
  }
  for (const char* bad : {"", "f32", "F8", "FP8", "F32 ", "float32", "Q4_0", "F6", "F8_E4M3FN", "COMPLEX64"}) {
    EXPECT_FALSE(ParseDType(bad).has_value()) << bad;
  }
}

TEST(DTypeTest, SubByteSizes) {
  EXPECT_EQ(ByteSize(DType::F4, 2), 1u);
  EXPECT_EQ(ByteSize(DType::F4, 3), std::nullopt);
  EXPECT_EQ(ByteSize(DType::F4, 1), std::nullopt);
  EXPECT_EQ(ByteSize(DType::F6_E2M3, 4), 3u);
  EXPECT_EQ(ByteSize(DType::F6_E3M2, 4), 3u);
  EXPECT_EQ(ByteSize(DType::F6_E2M3, 3), std::nullopt);
  EXPECT_EQ(ByteSize(DType::F6_E3M2, 2), std::nullopt);
  EXPECT_EQ(ByteSize(DType::F6_E3M2, 1), std::nullopt);
  // Bit counts that overflow u64 are refused, not wrapped.
  EXPECT_EQ(ByteSize(DType::U64, uint64_t{1} << 61), std::nullopt);
  EXPECT_EQ(ByteSize(DType::U8, uint64_t{1} << 60), uint64_t{1} << 60);
}

TEST(DTypeTest, ReferenceOrder) {
  // The reference writer's Dtype order; the writer sorts by it, descending.
  const char* order[] = {"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
                         "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16",
                         "I32", "U32", "F32", "C64", "F64", "I64", "U64"};
  for (int i = 0; i + 1 < kNumDTypes; ++i) {
    EXPECT_LT(*ParseDType(order[i]), *ParseDType(order[i + 1])) << order[i] << " < " << order[i + 1];
  }
}

TEST(NumElementsTest, Basics) {
  EXPECT_EQ(NumElements({}), 1u);
  EXPECT_EQ(NumElements({0, 4}), 0u);
  EXPECT_EQ(NumElements({2, 3, 4}), 24u);
  EXPECT_EQ(NumElements({uint64_t{1} << 32, uint64_t{1} << 32}), std::nullopt);
  EXPECT_EQ(NumElements({uint64_t{1} << 32, uint64_t{1} << 31}), uint64_t{1} << 63);
  // A zero dimension after an overflowing prefix: the reference multiplies in
  // order with a checked product, so this overflows too.
  EXPECT_EQ(NumElements({uint64_t{1} << 32, uint64_t{1} << 32, 0}), std::nullopt);
}

// Each dtype written alone, read back: header facts and bytes.
TEST(SafetensorsRoundTrip, EveryDType) {
  TempDir dir;
  for (const auto& c : kDTypes) {
    SCOPED_TRACE(c.name);
    const std::string path = dir / (std::string(c.name) + ".safetensors");
    const uint64_t nbytes = static_cast<uint64_t>(c.bits) * 3;  // shape [4, 6] = 24 elements
    const std::string data = Pattern(nbytes, static_cast<int>(c.dtype));
    ASSERT_TRUE(WriteFile(path, {}, {{"t", c.dtype, {4, 6}}}, {data}).ok());
    auto h = ReadHeader(path);
    ASSERT_TRUE(h.ok()) << h.status().message();
    ASSERT_EQ(h->tensors().size(), 1u);
    const TensorInfo* t = h->Find("t");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, c.dtype);
    EXPECT_EQ(t->shape, (std::vector<uint64_t>{4, 6}));
    EXPECT_EQ(t->begin, 0u);
    EXPECT_EQ(t->nbytes(), nbytes);
    EXPECT_EQ(h->data_size(), nbytes);
    EXPECT_EQ(h->header_len() % 8, 0u);
    EXPECT_EQ(ReadRange(path, h->data_start() + t->begin, t->nbytes()), data);
    EXPECT_EQ(ReadFileOrDie(path).size(), h->data_start() + nbytes);
  }
}

// All dtypes in one file: ordering by descending dtype, every byte in place.
TEST(SafetensorsRoundTrip, AllDTypesInOneFile) {
  TempDir dir;
  const std::string path = dir / "all.safetensors";
  std::vector<TensorSpec> specs;
  std::vector<std::string> data;
  for (const auto& c : kDTypes) {
    specs.push_back({std::string("w.") + c.name, c.dtype, {2, 4}});
    data.push_back(Pattern(static_cast<size_t>(c.bits), static_cast<int>(c.dtype)));
  }
  std::vector<std::string_view> views(data.begin(), data.end());
  ASSERT_TRUE(WriteFile(path, {{"format", "pt"}}, specs, views).ok());
  auto h = ReadHeader(path);
  ASSERT_TRUE(h.ok()) << h.status().message();
  ASSERT_EQ(h->tensors().size(), static_cast<size_t>(kNumDTypes));
  // Data order = descending dtype.
  for (size_t i = 0; i + 1 < h->tensors().size(); ++i) {
    EXPECT_GT(h->tensors()[i].dtype, h->tensors()[i + 1].dtype);
  }
  EXPECT_EQ(h->tensors().front().dtype, DType::U64);
  EXPECT_EQ(h->tensors().back().dtype, DType::BOOL);
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorInfo* t = h->Find(specs[i].name);
    ASSERT_NE(t, nullptr) << specs[i].name;
    EXPECT_EQ(t->dtype, specs[i].dtype);
    EXPECT_EQ(ReadRange(path, h->data_start() + t->begin, t->nbytes()), data[i]) << specs[i].name;
  }
  EXPECT_TRUE(h->has_metadata());
  EXPECT_EQ(h->metadata().at("format"), "pt");
}

TEST(SafetensorsSubByte, WriterAcceptsWholeBytesOnly) {
  TempDir dir;
  // Accepted: F4 [2] = 1 byte, F6 [4] = 3 bytes, zero elements.
  EXPECT_TRUE(WriteFile(dir / "f4.safetensors", {}, {{"a", DType::F4, {2}}}, {"\x12"}).ok());
  EXPECT_TRUE(WriteFile(dir / "f6a.safetensors", {}, {{"a", DType::F6_E2M3, {4}}}, {"abc"}).ok());
  EXPECT_TRUE(WriteFile(dir / "f6b.safetensors", {}, {{"a", DType::F6_E3M2, {2, 2}}}, {"abc"}).ok());
  EXPECT_TRUE(WriteFile(dir / "f4z.safetensors", {}, {{"a", DType::F4, {0, 3}}}, {""}).ok());
  auto h = ReadHeader(dir / "f4.safetensors");
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->Find("a")->nbytes(), 1u);
  h = ReadHeader(dir / "f6a.safetensors");
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->Find("a")->nbytes(), 3u);
  // Refused: bits that do not make whole bytes.
  for (auto [dt, shape] : std::vector<std::pair<DType, std::vector<uint64_t>>>{
           {DType::F4, {3}}, {DType::F4, {1}}, {DType::F6_E2M3, {3}}, {DType::F6_E3M2, {3}}, {DType::F6_E3M2, {1, 5}}}) {
    SCOPED_TRACE(std::string(DTypeName(dt)) + " dims " + std::to_string(shape.size()));
    auto layout = LayoutFile({}, {{"odd", dt, shape}});
    ASSERT_FALSE(layout.ok());
    EXPECT_EQ(layout.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(layout.status().message().find("'odd'"), std::string::npos) << layout.status().message();
    EXPECT_NE(layout.status().message().find("whole bytes"), std::string::npos) << layout.status().message();
  }
}

// ---------------------------------------------------------------- validation

struct BadCase {
  const char* label;
  std::string bytes;                   // the whole file
  std::vector<std::string> want;       // substrings of the message (besides the path)
};

std::string Entry(std::string_view name, std::string_view dtype, std::string_view shape, std::string_view offsets) {
  return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) + "\",\"shape\":" + std::string(shape) +
         ",\"data_offsets\":" + std::string(offsets) + "}";
}

// A header {"a": U8 [4] at [0,4]} with an entry body replaced.
std::string OneEntry(std::string_view body, size_t data = 4) { return Raw("{\"a\":" + std::string(body) + "}", Zeros(data)); }

std::vector<BadCase> BadCases() {
  const std::string a4 = Entry("a", "U8", "[4]", "[0,4]");
  std::vector<BadCase> v = {
      // The 8-byte length and the size cap.
      {"empty_file", "", {"0 bytes", "too short"}},
      {"short_file", std::string("\x02\0\0\0\0\0\0", 7), {"7 bytes", "too short"}},
      {"header_over_cap", LE64(kMaxHeaderBytes + 1) + "{}", {"header length 100000001", "exceeds"}},
      {"header_len_max_u64", LE64(~uint64_t{0}) + "{}", {"exceeds"}},
      {"header_past_eof", LE64(100) + "{}", {"header length 100", "runs past the end", "10-byte file"}},
      {"header_at_cap_past_eof", LE64(kMaxHeaderBytes) + "{}", {"runs past the end"}},
      {"header_len_zero", LE64(0), {"does not start with '{'"}},
      // Text of the header.
      {"not_utf8", Raw("{\"a\xff\":{}}"), {"not valid UTF-8"}},
      {"overlong_utf8", Raw("{\"\xc0\xaf\":{}}"), {"not valid UTF-8"}},
      {"surrogate_utf8", Raw("{\"\xed\xa0\x80\":{}}"), {"not valid UTF-8"}},
      {"truncated_utf8", Raw("{\"a\":{}}\xe2\x82"), {"not valid UTF-8"}},
      {"invalid_json", Raw("{\"a\":"), {"header", "invalid JSON"}},
      {"trailing_comma", Raw("{" + a4 + ",}", Zeros(4)), {"invalid JSON"}},
      {"json_comment", Raw("{/* c */}"), {"invalid JSON"}},
      {"garbage_after_json", Raw("{} x"), {"invalid JSON"}},
      {"two_objects", Raw("{}{}"), {"invalid JSON"}},
      {"single_quotes", Raw("{'a':1}"), {"invalid JSON"}},
      {"lone_surrogate_escape", Raw("{\"\\ud800\":{}}"), {"invalid JSON"}},
      {"header_is_array", Raw("[]"), {"does not start with '{'"}},
      {"header_is_string", Raw("\"{}\""), {"does not start with '{'"}},
      {"leading_space", Raw(" {}"), {"does not start with '{'"}},
      {"leading_bom", Raw("\xef\xbb\xbf{}"), {"does not start with '{'"}},
      {"nul_padded", Raw(std::string("{}\0\0\0\0\0\0", 8)), {"NUL"}},
      {"nul_inside", Raw(std::string("{\"a\0\":{}}", 9)), {"NUL"}},
      // Entries.
      {"entry_array", OneEntry("[1,2]"), {"tensor 'a'", "entry is an array, not an object"}},
      {"entry_string", OneEntry("\"U8\""), {"tensor 'a'", "entry is a string, not an object"}},
      {"entry_null", OneEntry("null"), {"tensor 'a'", "entry is null, not an object"}},
      {"missing_dtype", OneEntry("{\"shape\":[4],\"data_offsets\":[0,4]}"), {"tensor 'a'", "missing field 'dtype'"}},
      {"missing_shape", OneEntry("{\"dtype\":\"U8\",\"data_offsets\":[0,4]}"), {"tensor 'a'", "missing field 'shape'"}},
      {"missing_offsets", OneEntry("{\"dtype\":\"U8\",\"shape\":[4]}"), {"tensor 'a'", "missing field 'data_offsets'"}},
      {"empty_entry", OneEntry("{}"), {"tensor 'a'", "missing field"}},
      {"duplicate_field", OneEntry("{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}"),
       {"duplicate key 'dtype'"}},
      {"dtype_number", OneEntry("{\"dtype\":8,\"shape\":[4],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "dtype is a number, not a string"}},
      {"dtype_null", OneEntry("{\"dtype\":null,\"shape\":[4],\"data_offsets\":[0,4]}"), {"tensor 'a'", "dtype is null"}},
      {"dtype_unknown", OneEntry("{\"dtype\":\"F8\",\"shape\":[4],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "unknown dtype 'F8'"}},
      {"dtype_lowercase", OneEntry("{\"dtype\":\"u8\",\"shape\":[4],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "unknown dtype 'u8'"}},
      {"shape_number", OneEntry("{\"dtype\":\"U8\",\"shape\":4,\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "shape is a number, not an array"}},
      {"shape_object", OneEntry("{\"dtype\":\"U8\",\"shape\":{},\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "shape is an object, not an array"}},
      {"dim_negative", OneEntry("{\"dtype\":\"U8\",\"shape\":[-4],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "negative integer dimension (-4)"}},
      {"dim_negative_zero", OneEntry("{\"dtype\":\"U8\",\"shape\":[-0,4],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "dimension"}},
      {"dim_fractional", OneEntry("{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "fractional number dimension (2.5)"}},
      {"dim_float_integral", OneEntry("{\"dtype\":\"U8\",\"shape\":[4.0],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "non-integer number dimension (4.0)"}},
      {"dim_exponent", OneEntry("{\"dtype\":\"U8\",\"shape\":[4e0],\"data_offsets\":[0,4]}"), {"tensor 'a'", "dimension"}},
      {"dim_huge", OneEntry("{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "out-of-range integer dimension"}},
      {"dim_huge_negative", OneEntry("{\"dtype\":\"U8\",\"shape\":[-18446744073709551616],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "out-of-range integer dimension"}},
      {"dim_string", OneEntry("{\"dtype\":\"U8\",\"shape\":[\"4\"],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "shape has a string dimension"}},
      {"dim_null", OneEntry("{\"dtype\":\"U8\",\"shape\":[null],\"data_offsets\":[0,4]}"), {"tensor 'a'", "null dimension"}},
      {"dim_nested", OneEntry("{\"dtype\":\"U8\",\"shape\":[[4]],\"data_offsets\":[0,4]}"),
       {"tensor 'a'", "shape has an array dimension"}},
      {"offsets_one", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4]}"),
       {"tensor 'a'", "data_offsets must be an array of two integers"}},
      {"offsets_three", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,4]}"),
       {"tensor 'a'", "data_offsets must be an array of two integers"}},
      {"offsets_empty", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[]}"),
       {"tensor 'a'", "data_offsets must be an array of two integers"}},
      {"offsets_object", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":{\"0\":4}}"),
       {"tensor 'a'", "data_offsets must be an array of two integers"}},
      {"offsets_negative", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-1,3]}"),
       {"tensor 'a'", "data_offsets has a negative integer (-1)"}},
      {"offsets_fractional", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4.5]}"),
       {"tensor 'a'", "data_offsets has a fractional number (4.5)"}},
      {"offsets_huge", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,99999999999999999999]}"),
       {"tensor 'a'", "data_offsets has an out-of-range integer"}},
      {"offsets_string", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[\"0\",4]}"),
       {"tensor 'a'", "data_offsets has a string"}},
      {"offsets_reversed", OneEntry("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,0]}"),
       {"tensor 'a'", "end before they begin"}},
      // __metadata__.
      {"metadata_array", Raw("{\"__metadata__\":[]}"), {"__metadata__ is not an object"}},
      {"metadata_string", Raw("{\"__metadata__\":\"pt\"}"), {"__metadata__ is not an object"}},
      {"metadata_number_value", Raw("{\"__metadata__\":{\"format\":\"pt\",\"step\":3}}"),
       {"__metadata__ value 'step' is not a string"}},
      {"metadata_null_value", Raw("{\"__metadata__\":{\"k\":null}}"), {"__metadata__ value 'k' is not a string"}},
      {"metadata_object_value", Raw("{\"__metadata__\":{\"k\":{}}}"), {"__metadata__ value 'k' is not a string"}},
      {"metadata_twice", Raw("{\"__metadata__\":{},\"__metadata__\":{}}"), {"duplicate key '__metadata__'"}},
      {"metadata_duplicate_key", Raw("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"), {"duplicate key 'k'"}},
      // Layout of the data section.
      {"gap_between", Raw("{" + a4 + "," + Entry("b", "U8", "[4]", "[8,12]") + "}", Zeros(12)),
       {"tensor 'b'", "gap before data_offsets [8, 12]", "previous data ends at 4"}},
      {"gap_at_start", Raw("{" + Entry("a", "U8", "[4]", "[4,8]") + "}", Zeros(8)), {"tensor 'a'", "gap", "ends at 0"}},
      {"overlap", Raw("{" + a4 + "," + Entry("b", "U8", "[4]", "[2,6]") + "}", Zeros(6)),
       {"tensor 'b'", "overlap tensor 'a'"}},
      {"same_range", Raw("{" + a4 + "," + Entry("b", "U8", "[4]", "[0,4]") + "}", Zeros(4)),
       {"tensor 'b'", "overlap tensor 'a'"}},
      {"empty_inside_other", Raw("{" + Entry("a", "U8", "[8]", "[0,8]") + "," + Entry("z", "U8", "[0]", "[4,4]") + "}",
                                 Zeros(8)),
       {"tensor 'z'", "overlap tensor 'a'"}},
      {"trailing_bytes", Raw("{" + a4 + "}", Zeros(5)), {"1 trailing bytes after the last tensor"}},
      {"trailing_bytes_no_tensors", Raw("{}", Zeros(3)), {"3 trailing bytes"}},
      {"data_short", Raw("{" + a4 + "}", Zeros(3)), {"data section is 3 bytes but the header needs 4"}},
      {"data_missing", Raw("{" + a4 + "}"), {"data section is 0 bytes but the header needs 4"}},
      {"size_mismatch_short", Raw("{" + Entry("a", "U16", "[2]", "[0,3]") + "}", Zeros(3)),
       {"tensor 'a'", "data_offsets span 3 bytes but dtype and shape need 4"}},
      {"size_mismatch_long", Raw("{" + Entry("a", "F32", "[2,2]", "[0,32]") + "}", Zeros(32)),
       {"tensor 'a'", "span 32 bytes", "need 16"}},
      {"scalar_size", Raw("{" + Entry("a", "F64", "[]", "[0,4]") + "}", Zeros(4)), {"tensor 'a'", "need 8"}},
      {"zero_sized_with_bytes", Raw("{" + Entry("a", "F32", "[0,4]", "[0,4]") + "}", Zeros(4)), {"tensor 'a'", "need 0"}},
      {"element_overflow", Raw("{" + Entry("a", "U8", "[4294967296,4294967296,16]", "[0,4]") + "}", Zeros(4)),
       {"tensor 'a'", "overflows the element count"}},
      {"bits_overflow", Raw("{" + Entry("a", "U64", "[2305843009213693952]", "[0,4]") + "}", Zeros(4)),
       {"tensor 'a'", "size overflows"}},
      {"f4_odd", Raw("{" + Entry("a", "F4", "[3]", "[0,2]") + "}", Zeros(2)),
       {"tensor 'a'", "F4 elements do not fill whole bytes"}},
      {"f6_odd", Raw("{" + Entry("a", "F6_E2M3", "[3]", "[0,3]") + "}", Zeros(3)),
       {"tensor 'a'", "F6_E2M3 elements do not fill whole bytes"}},
      {"f6_e3m2_odd", Raw("{" + Entry("a", "F6_E3M2", "[1]", "[0,1]") + "}", Zeros(1)), {"tensor 'a'", "whole bytes"}},
      // Names.
      {"duplicate_tensor", Raw("{" + a4 + "," + a4 + "}", Zeros(4)), {"duplicate key 'a'"}},
      {"duplicate_tensor_apart",
       Raw("{" + a4 + "," + Entry("b", "U8", "[4]", "[4,8]") + "," + Entry("a", "U8", "[4]", "[8,12]") + "}", Zeros(12)),
       {"duplicate key 'a'"}},
  };
  return v;
}

TEST(SafetensorsValidation, EachRuleHasItsOwnFault) {
  TempDir dir;
  std::set<std::string> labels;
  for (const BadCase& c : BadCases()) {
    SCOPED_TRACE(c.label);
    ASSERT_TRUE(labels.insert(c.label).second) << "duplicate label";
    const std::string path = dir / (std::string(c.label) + ".safetensors");
    WriteFileOrDie(path, c.bytes);
    auto h = ReadHeader(path);
    ASSERT_FALSE(h.ok()) << "accepted";
    const std::string msg = h.status().message();
    EXPECT_EQ(h.status().code(), Status::Code::kCorrupt) << msg;
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the file: " << msg;
    for (const std::string& w : c.want) EXPECT_NE(msg.find(w), std::string::npos) << "want '" << w << "' in: " << msg;
    // The message is one line.
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// Each bad case must also fail through ParseHeader (no file), naming the
// given file name.
TEST(SafetensorsValidation, ParseHeaderAgreesWithReadHeader) {
  for (const BadCase& c : BadCases()) {
    if (c.bytes.size() < 8) continue;
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(c.bytes[i]);
    if (n > kMaxHeaderBytes || n > c.bytes.size() - 8) continue;
    SCOPED_TRACE(c.label);
    auto h = ParseHeader(std::string_view(c.bytes).substr(8, n), c.bytes.size() - 8 - n, "mem.safetensors");
    ASSERT_FALSE(h.ok());
    EXPECT_EQ(h.status().message().rfind("mem.safetensors: ", 0), 0u) << h.status().message();
  }
}

TEST(SafetensorsValidation, MissingFileAndDirectory) {
  TempDir dir;
  auto h = ReadHeader(dir / "nope.safetensors");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Status::Code::kIOError);
  EXPECT_NE(h.status().message().find("nope.safetensors"), std::string::npos);
  h = ReadHeader(dir.path());
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("not a regular file"), std::string::npos) << h.status().message();
}

// A hostile header nested deeply must be refused without exhausting the stack
// (messages once echoed the offending value with a recursive dump()).
TEST(SafetensorsValidation, DeepNestingIsRefusedNotCrashed) {
  TempDir dir;
  const size_t depth = 200000;
  std::string deep = std::string(depth, '[') + "1" + std::string(depth, ']');
  struct {
    const char* label;
    std::string header;
  } cases[] = {
      {"deep_shape", "{\"a\":{\"dtype\":\"U8\",\"shape\":[" + deep + "],\"data_offsets\":[0,4]}}"},
      {"deep_offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[" + deep + ",4]}}"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string path = dir / (std::string(c.label) + ".safetensors");
    WriteFileOrDie(path, Raw(c.header, Zeros(4)));
    auto h = ReadHeader(path);
    ASSERT_FALSE(h.ok());
    EXPECT_NE(h.status().message().find(path), std::string::npos);
    EXPECT_LT(h.status().message().size(), 1000u) << "the message should not echo the document";
  }
}

// ---------------------------------------------------------------- accepted

Result<Header> ParseRaw(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return ParseHeader(std::string_view(bytes).substr(8, n), bytes.size() - 8 - n, "mem");
}

TEST(SafetensorsValidation, AcceptedShapes) {
  TempDir dir;
  struct Good {
    const char* label;
    std::string bytes;
    size_t tensors;
  } cases[] = {
      {"empty_header", Raw("{}"), 0},
      {"only_metadata", Raw("{\"__metadata__\":{\"format\":\"pt\"}}"), 0},
      {"empty_metadata", Raw("{\"__metadata__\":{}}"), 0},
      {"scalar", Raw("{" + Entry("s", "F32", "[]", "[0,4]") + "}", Zeros(4)), 1},
      {"zero_sized", Raw("{" + Entry("z", "F32", "[0,4]", "[0,0]") + "}"), 1},
      {"zero_sized_several_same_offset",
       Raw("{" + Entry("z1", "F32", "[0,4]", "[0,0]") + "," + Entry("z2", "BF16", "[4,0]", "[0,0]") + "," +
               Entry("a", "U8", "[4]", "[0,4]") + "," + Entry("z3", "I64", "[0]", "[4,4]") + "," +
               Entry("z4", "U8", "[0]", "[4,4]") + "}",
           Zeros(4)),
       5},
      {"zero_sized_between", Raw("{" + Entry("a", "U8", "[4]", "[0,4]") + "," + Entry("z", "U8", "[0]", "[4,4]") + "," +
                                     Entry("b", "U8", "[4]", "[4,8]") + "}",
                                 Zeros(8)),
       3},
      {"space_padding", Raw("{" + Entry("a", "U8", "[4]", "[0,4]") + "}       ", Zeros(4)), 1},
      {"whitespace_padding", Raw("{" + Entry("a", "U8", "[4]", "[0,4]") + "}\n\t\r ", Zeros(4)), 1},
      {"pretty_json", Raw("{\n  \"a\" : {\"dtype\": \"U8\", \"shape\": [ 4 ], \"data_offsets\": [0, 4]}\n}", Zeros(4)), 1},
      {"any_order", Raw("{" + Entry("c", "U8", "[2]", "[6,8]") + "," + Entry("a", "U8", "[4]", "[0,4]") + "," +
                            Entry("b", "U8", "[2]", "[4,6]") + "}",
                        Zeros(8)),
       3},
      {"metadata_last", Raw("{" + Entry("a", "U8", "[4]", "[0,4]") + ",\"__metadata__\":{\"format\":\"pt\"}}", Zeros(4)),
       1},
      {"unicode_name", Raw("{" + Entry("w\xc3\xa9ight.\xe2\x82\xac", "U8", "[4]", "[0,4]") + "}", Zeros(4)), 1},
      {"escaped_name", Raw("{" + Entry("a\\\"b\\u00e9", "U8", "[4]", "[0,4]") + "}", Zeros(4)), 1},
      {"empty_name", Raw("{" + Entry("", "U8", "[4]", "[0,4]") + "}", Zeros(4)), 1},
      {"field_order", Raw("{\"a\":{\"data_offsets\":[0,4],\"shape\":[4],\"dtype\":\"U8\"}}", Zeros(4)), 1},
      {"f4_pair", Raw("{" + Entry("a", "F4", "[2]", "[0,1]") + "}", Zeros(1)), 1},
      {"f6_four", Raw("{" + Entry("a", "F6_E2M3", "[4]", "[0,3]") + "}", Zeros(3)), 1},
      {"big_dims_zero_elements", Raw("{" + Entry("a", "U8", "[18446744073709551615,0]", "[0,0]") + "}"), 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string path = dir / (std::string(c.label) + ".safetensors");
    WriteFileOrDie(path, c.bytes);
    auto h = ReadHeader(path);
    ASSERT_TRUE(h.ok()) << h.status().message();
    EXPECT_EQ(h->tensors().size(), c.tensors);
    for (const auto& t : h->tensors()) EXPECT_EQ(h->Find(t.name), &t);
    EXPECT_EQ(h->data_start() + h->data_size(), c.bytes.size());
    EXPECT_TRUE(ParseRaw(c.bytes).ok());
  }
}

TEST(SafetensorsValidation, AcceptedDetails) {
  // Scalar.
  auto h = ParseRaw(Raw("{" + Entry("s", "F32", "[]", "[0,4]") + "}", Zeros(4)));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_TRUE(h->Find("s")->shape.empty());
  EXPECT_EQ(h->Find("s")->nbytes(), 4u);
  EXPECT_FALSE(h->has_metadata());
  EXPECT_TRUE(h->metadata().empty());
  EXPECT_EQ(h->Find("missing"), nullptr);

  // Any order in the JSON: tensors() comes back in offset order.
  h = ParseRaw(Raw("{" + Entry("c", "U8", "[2]", "[6,8]") + "," + Entry("a", "U8", "[4]", "[0,4]") + "," +
                   Entry("b", "U16", "[1]", "[4,6]") + "}",
                   Zeros(8)));
  ASSERT_TRUE(h.ok()) << h.status().message();
  ASSERT_EQ(h->tensors().size(), 3u);
  EXPECT_EQ(h->tensors()[0].name, "a");
  EXPECT_EQ(h->tensors()[1].name, "b");
  EXPECT_EQ(h->tensors()[1].dtype, DType::U16);
  EXPECT_EQ(h->tensors()[1].begin, 4u);
  EXPECT_EQ(h->tensors()[1].end, 6u);
  EXPECT_EQ(h->tensors()[2].name, "c");

  // Escapes in names are decoded.
  h = ParseRaw(Raw("{" + Entry("a\\\"b\\\\c\\n\\u00e9", "U8", "[4]", "[0,4]") + "}", Zeros(4)));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_NE(h->Find("a\"b\\c\n\xc3\xa9"), nullptr);

  // Metadata.
  h = ParseRaw(Raw("{\"__metadata__\":{\"format\":\"pt\",\"x\":\"\"}}"));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_TRUE(h->has_metadata());
  EXPECT_EQ(h->metadata().size(), 2u);
  EXPECT_EQ(h->metadata().at("format"), "pt");
  EXPECT_EQ(h->metadata().at("x"), "");

  // What the reference reader also accepts: null metadata means none, and
  // fields beyond dtype/shape/data_offsets are ignored.
  h = ParseRaw(Raw("{\"__metadata__\":null," + Entry("a", "U8", "[4]", "[0,4]") + "}", Zeros(4)));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_FALSE(h->has_metadata());
  EXPECT_EQ(h->tensors().size(), 1u);
  h = ParseRaw(Raw("{\"a\":{\"dtype\":\"U8\",\"offset\":9,\"shape\":[4],\"data_offsets\":[0,4],\"x\":[{}]}}", Zeros(4)));
  ASSERT_TRUE(h.ok()) << h.status().message();
  ASSERT_NE(h->Find("a"), nullptr);
  EXPECT_EQ(h->Find("a")->nbytes(), 4u);
  EXPECT_EQ(h->Find("a")->shape, std::vector<uint64_t>{4});

  // Header facts.
  const std::string bytes = Raw("{" + Entry("a", "U8", "[4]", "[0,4]") + "}   ", Zeros(4));
  h = ParseRaw(bytes);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->header_len(), bytes.size() - 12);
  EXPECT_EQ(h->data_start(), bytes.size() - 4);
  EXPECT_EQ(h->data_size(), 4u);
}

// Validation reads the header only: a sparse file with gigabytes of data
// opens at once.
TEST(SafetensorsValidation, NeverReadsPastTheHeader) {
  TempDir dir;
  const uint64_t big = uint64_t{16} << 30;  // 16 GiB of (unwritten) data
  auto layout = LayoutFile({}, {{"huge", DType::BF16, {big / 2}}, {"tail", DType::U8, {1}}});
  ASSERT_TRUE(layout.ok()) << layout.status().message();
  ASSERT_EQ(layout->data_size, big + 1);
  const std::string path = dir / "sparse.safetensors";
  WriteFileOrDie(path, layout->prefix);
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  if (::ftruncate(fd, static_cast<off_t>(layout->file_size())) != 0) {
    ::close(fd);
    GTEST_SKIP() << "filesystem refuses a " << layout->file_size() << "-byte sparse file";
  }
  ::close(fd);
  auto start = std::chrono::steady_clock::now();
  auto h = ReadHeader(path);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->data_size(), big + 1);
  EXPECT_EQ(h->Find("huge")->nbytes(), big);
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), 1000);

  // One byte short of the data: refused, also without reading it.
  fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(layout->file_size() - 1)), 0);
  ::close(fd);
  h = ReadHeader(path);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("header needs " + std::to_string(big + 1)), std::string::npos)
      << h.status().message();
}

// ---------------------------------------------------------------- writer bytes

TEST(SafetensorsWriter, ReferenceBytesI32) {
  TempDir dir;
  const std::string path = dir / "test.safetensors";
  ASSERT_TRUE(WriteFile(path, {}, {{"test", DType::I32, {2, 2}}}, {Zeros(16)}).ok());
  const std::string json = "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
  ASSERT_EQ(json.size(), 60u);
  const std::string expected = std::string("@\0\0\0\0\0\0\0", 8) + json + "    " + Zeros(16);
  EXPECT_EQ(ReadFileOrDie(path), expected);
  auto layout = LayoutFile({}, {{"test", DType::I32, {2, 2}}});
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->prefix, expected.substr(0, 72));
  EXPECT_EQ(layout->data_size, 16u);
  EXPECT_EQ(layout->file_size(), expected.size());
}

TEST(SafetensorsWriter, ReferenceBytesWithMetadata) {
  auto layout = LayoutFile({{"format", "pt"}}, {{"test", DType::I32, {2, 2}}});
  ASSERT_TRUE(layout.ok());
  const std::string json =
      "{\"__metadata__\":{\"format\":\"pt\"},\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
  const size_t padded = (json.size() + 7) / 8 * 8;
  EXPECT_EQ(layout->prefix, LE64(padded) + json + std::string(padded - json.size(), ' '));
}

TEST(SafetensorsWriter, HeaderIsPaddedToEight) {
  // Names of every length mod 8: the JSON is padded with spaces, never NULs.
  for (int len = 1; len <= 16; ++len) {
    auto layout = LayoutFile({}, {{std::string(static_cast<size_t>(len), 'x'), DType::U8, {1}}});
    ASSERT_TRUE(layout.ok());
    const std::string& p = layout->prefix;
    EXPECT_EQ(p.size() % 8, 0u);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(p[i]);
    EXPECT_EQ(n, p.size() - 8);
    const size_t close = p.rfind('}');
    EXPECT_LT(p.size() - 1 - close, 8u);
    for (size_t i = close + 1; i < p.size(); ++i) EXPECT_EQ(p[i], ' ');
  }
}

TEST(SafetensorsWriter, OrdersByDescendingDTypeThenName) {
  auto layout = LayoutFile({}, {{"b", DType::F32, {1}},
                                {"a", DType::BF16, {1}},
                                {"c", DType::F32, {1}},
                                {"a32", DType::F32, {1}},
                                {"z", DType::BOOL, {1}},
                                {"m", DType::U64, {1}},
                                {"e", DType::F4, {2}},
                                {"d", DType::F8_E4M3, {1}},
                                {"f", DType::F8_E5M2, {1}},
                                {"g", DType::I64, {1}},
                                {"B", DType::F32, {1}}});
  ASSERT_TRUE(layout.ok()) << layout.status().message();
  std::vector<std::string> names;
  for (const auto& t : layout->tensors) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"m", "g", "B", "a32", "b", "c", "a", "d", "f", "e", "z"}));
  // JSON order = data order, offsets contiguous.
  uint64_t off = 0;
  size_t pos = 0;
  for (const auto& t : layout->tensors) {
    EXPECT_EQ(t.begin, off);
    off = t.end;
    size_t p = layout->prefix.find("\"" + t.name + "\":{", pos);
    ASSERT_NE(p, std::string::npos) << t.name;
    pos = p;
  }
  EXPECT_EQ(layout->data_size, off);

  // Names compare as bytes (Rust's str order): 'z' (0x7a) before 'é' (0xc3 0xa9),
  // 'Z' before 'a'.
  layout = LayoutFile({}, {{"\xc3\xa9", DType::U8, {1}}, {"z", DType::U8, {1}}, {"a", DType::U8, {1}},
                           {"Z", DType::U8, {1}}});
  ASSERT_TRUE(layout.ok());
  names.clear();
  for (const auto& t : layout->tensors) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"Z", "a", "z", "\xc3\xa9"}));
}

TEST(SafetensorsWriter, EscapesNames) {
  TempDir dir;
  const std::string name = "a\"b\\c/d\b\f\n\r\t\x01\x1f\x7f \xc3\xa9";
  auto layout = LayoutFile({{"k\"", "v\n"}}, {{name, DType::U8, {1}}});
  ASSERT_TRUE(layout.ok());
  // serde_json's escaping: short escapes, \u00XX lowercase for other controls,
  // '/' and DEL and non-ASCII as they are.
  EXPECT_NE(layout->prefix.find("\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\\u001f\x7f \xc3\xa9\":{"), std::string::npos)
      << layout->prefix;
  EXPECT_NE(layout->prefix.find("{\"__metadata__\":{\"k\\\"\":\"v\\n\"},"), std::string::npos) << layout->prefix;
  const std::string path = dir / "esc.safetensors";
  ASSERT_TRUE(WriteFile(path, {{"k\"", "v\n"}}, {{name, DType::U8, {1}}}, {"x"}).ok());
  auto h = ReadHeader(path);
  ASSERT_TRUE(h.ok()) << h.status().message();
  ASSERT_NE(h->Find(name), nullptr);
  EXPECT_EQ(h->metadata().at("k\""), "v\n");
}

TEST(SafetensorsWriter, ReadBackYieldsTheSameInfo) {
  TempDir dir;
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"producer", "moepack"}};
  std::vector<TensorSpec> specs = {
      {"model.layers.0.mlp.experts.gate_up_proj", DType::BF16, {4, 6, 3}},
      {"model.layers.0.mlp.experts.down_proj", DType::BF16, {4, 3, 3}},
      {"model.embed_tokens.weight", DType::F32, {5, 3}},
      {"scale", DType::F32, {}},
      {"empty", DType::F16, {0, 7}},
      {"q", DType::F8_E4M3, {2, 2}},
      {"mx", DType::F4, {4, 2}},
      {"flags", DType::BOOL, {3}},
  };
  std::vector<std::string> data;
  for (size_t i = 0; i < specs.size(); ++i) {
    data.push_back(Pattern(*ByteSize(specs[i].dtype, *NumElements(specs[i].shape)), static_cast<int>(i)));
  }
  std::vector<std::string_view> views(data.begin(), data.end());
  const std::string path = dir / "rt.safetensors";
  ASSERT_TRUE(WriteFile(path, meta, specs, views).ok());
  auto layout = LayoutFile(meta, specs);
  ASSERT_TRUE(layout.ok());
  auto h = ReadHeader(path);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(ReadFileOrDie(path).substr(0, layout->prefix.size()), layout->prefix);
  EXPECT_EQ(h->header_len() + 8, layout->prefix.size());
  EXPECT_EQ(h->data_size(), layout->data_size);
  EXPECT_EQ(h->metadata(), meta);
  EXPECT_TRUE(h->has_metadata());
  // Zero-sized tensors may sort before a neighbour at the same offset; compare by name.
  ASSERT_EQ(h->tensors().size(), layout->tensors.size());
  for (const TensorInfo& w : layout->tensors) {
    SCOPED_TRACE(w.name);
    const TensorInfo* r = h->Find(w.name);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->name, w.name);
    EXPECT_EQ(r->dtype, w.dtype);
    EXPECT_EQ(r->shape, w.shape);
    EXPECT_EQ(r->begin, w.begin);
    EXPECT_EQ(r->end, w.end);
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorInfo* r = h->Find(specs[i].name);
    EXPECT_EQ(ReadRange(path, h->data_start() + r->begin, r->nbytes()), data[i]) << specs[i].name;
  }
}

TEST(SafetensorsWriter, EmptyFile) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir / "e.safetensors", {}, {}, {}).ok());
  EXPECT_EQ(ReadFileOrDie(dir / "e.safetensors"), LE64(8) + "{}      ");
  auto h = ReadHeader(dir / "e.safetensors");
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_TRUE(h->tensors().empty());
}

TEST(SafetensorsWriter, Refusals) {
  TempDir dir;
  struct {
    const char* label;
    std::vector<TensorSpec> specs;
    std::vector<std::string_view> data;
    const char* want;
  } cases[] = {
      {"duplicate", {{"a", DType::U8, {1}}, {"a", DType::U8, {1}}}, {"x", "y"}, "tensor 'a' is written twice"},
      {"duplicate_other_dtype", {{"a", DType::U8, {1}}, {"b", DType::U8, {1}}, {"a", DType::F32, {1}}},
       {"x", "y", "zzzz"}, "tensor 'a' is written twice"},
      {"metadata_name", {{"__metadata__", DType::U8, {1}}}, {"x"}, "'__metadata__'"},
      {"odd_f4", {{"a", DType::F4, {3}}}, {"xx"}, "whole bytes"},
      {"overflow", {{"a", DType::U8, {uint64_t{1} << 32, uint64_t{1} << 32, 16}}}, {""}, "overflows"},
      {"wrong_size", {{"a", DType::F32, {2}}}, {"1234567"}, "7 bytes given, 8 expected"},
      {"count_mismatch", {{"a", DType::U8, {1}}}, {}, "differ in count"},
      {"non_utf8_name", {{"a\xff", DType::U8, {1}}}, {"x"}, "UTF-8"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string path = dir / (std::string(c.label) + ".safetensors");
    Status s = WriteFile(path, {}, c.specs, c.data);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.message();
    EXPECT_NE(s.message().find(c.want), std::string::npos) << s.message();
  }
  // Non-UTF-8 metadata cannot be written either.
  Status s = WriteFile(dir / "meta.safetensors", {{"k", "\xc0\xaf"}}, {}, {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("UTF-8"), std::string::npos) << s.message();
  // Never overwrites.
  ASSERT_TRUE(WriteFile(dir / "once.safetensors", {}, {}, {}).ok());
  s = WriteFile(dir / "once.safetensors", {}, {}, {});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kIOError);
  EXPECT_NE(s.message().find("once.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace safetensors_test
}  // namespace moepack
