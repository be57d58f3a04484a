// The numeric kernels against references written here from the formats'
// definitions, never from the code under test: codes are decoded with
// ldexp, products taken in float, and results rounded by looking up the
// nearest value in a table of every value of the target format (ties to
// the even code; past the largest finite value, IEEE's overflow rule for
// BF16/F16 and saturation for e4m3). Every instruction set this CPU runs is
// checked, bit for bit, NaN patterns included.
#include <gtest/gtest.h>
#include <xmmintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "plan/ops/numerics.h"
#include "plan/ops/numerics_kernels.h"

namespace moepack::ops {
namespace numerics {
void PrintTo(Isa isa, std::ostream* os) { *os << IsaName(isa); }
}  // namespace numerics

namespace numerics_test {
namespace {

using numerics::Isa;
using numerics::Kernels;

constexpr FloatType kOutTypes[] = {FloatType::kBF16, FloatType::kF16, FloatType::kF32};

uint32_t Bits(float f) { return std::bit_cast<uint32_t>(f); }
float FromBits(uint32_t u) { return std::bit_cast<float>(u); }

// ---- Reference decoders, from the formats' definitions -------------------

// e4m3fn: s eeee mmm, bias 7, subnormals m * 2^-9, S.1111.111 NaN.
float RefE4M3(uint8_t c) {
  const int e = (c >> 3) & 15, m = c & 7;
  float mag;
  if (e == 15 && m == 7) {
    mag = FromBits(0x7FF00000u);  // the NaN numerics.h documents
  } else if (e == 0) {
    mag = std::ldexp(static_cast<float>(m), -9);
  } else {
    mag = std::ldexp(static_cast<float>(8 + m), e - 10);  // (1 + m/8) * 2^(e-7)
  }
  return std::copysign(mag, (c & 0x80) ? -1.0f : 1.0f);
}

// e2m1: s ee m, bias 1, one subnormal (0.5).
float RefE2M1(uint8_t n) {
  const int e = (n >> 1) & 3, m = n & 1;
  const float mag = e == 0 ? 0.5f * static_cast<float>(m) : std::ldexp(1.0f + 0.5f * static_cast<float>(m), e - 1);
  return std::copysign(mag, (n & 8) ? -1.0f : 1.0f);
}

// Magnitudes of non-negative finite codes, as doubles.
double BF16Mag(uint32_t c) {
  const int e = static_cast<int>(c >> 7), m = static_cast<int>(c & 0x7F);
  return e == 0 ? std::ldexp(m, -133) : std::ldexp(128 + m, e - 134);
}
double F16Mag(uint32_t c) {
  const int e = static_cast<int>(c >> 10), m = static_cast<int>(c & 0x3FF);
  return e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
}
double E4M3Mag(uint32_t c) { return static_cast<double>(RefE4M3(static_cast<uint8_t>(c))); }

float RefF16ToFloat(uint16_t h) {
  const float sign = (h & 0x8000) ? -1.0f : 1.0f;
  if ((h & 0x7C00) == 0x7C00) {
    return (h & 0x3FF) ? std::copysign(std::numeric_limits<float>::quiet_NaN(), sign)
                       : sign * std::numeric_limits<float>::infinity();
  }
  return sign * static_cast<float>(F16Mag(h & 0x7FFFu));
}

// ---- Reference rounding: nearest in a table of every value ---------------

struct Format {
  std::vector<double> mags;  // ascending, index = code
  uint32_t sign_bit;
  // Round |x| (not NaN) to nearest, ties to the even code. Past the last
  // entry: the last entry (the overflow entry, or saturation).
  uint32_t Round(double a) const {
    const size_t hi = static_cast<size_t>(std::upper_bound(mags.begin(), mags.end(), a) - mags.begin());
    if (hi == mags.size()) return static_cast<uint32_t>(hi - 1);
    const size_t lo = hi - 1;  // mags[0] is 0 <= a
    if (mags[lo] == a) return static_cast<uint32_t>(lo);
    const double dl = a - mags[lo], dh = mags[hi] - a;  // exact: see the format's spacing
    if (dl != dh) return static_cast<uint32_t>(dl < dh ? lo : hi);
    return static_cast<uint32_t>(lo % 2 == 0 ? lo : hi);
  }
  uint32_t RoundSigned(float x) const {
    return Round(std::fabs(static_cast<double>(x))) | (std::signbit(x) ? sign_bit : 0u);
  }
};

// BF16 and F16: every finite magnitude, then infinity standing at the value
// the next binade would start (2^128, 2^16), as IEEE's overflow rule has it.
const Format& BF16Format() {
  static const Format f = [] {
    Format r{{}, 0x8000};
    for (uint32_t c = 0; c < 0x7F80; ++c) r.mags.push_back(BF16Mag(c));
    r.mags.push_back(std::ldexp(1.0, 128));
    return r;
  }();
  return f;
}
const Format& F16Format() {
  static const Format f = [] {
    Format r{{}, 0x8000};
    for (uint32_t c = 0; c < 0x7C00; ++c) r.mags.push_back(F16Mag(c));
    r.mags.push_back(65536.0);
    return r;
  }();
  return f;
}
// e4m3fn has no infinity: 0x7E (448) is the last entry, so larger values saturate.
const Format& E4M3Format() {
  static const Format f = [] {
    Format r{{}, 0x80};
    for (uint32_t c = 0; c < 0x7F; ++c) r.mags.push_back(E4M3Mag(c));
    return r;
  }();
  return f;
}

// The NaN patterns numerics.h documents.
uint16_t RefBF16(float x) {
  if (std::isnan(x)) return static_cast<uint16_t>((Bits(x) >> 16) | 0x0040);
  return static_cast<uint16_t>(BF16Format().RoundSigned(x));
}
uint16_t RefF16(float x) {
  if (std::isnan(x)) return static_cast<uint16_t>(((Bits(x) >> 16) & 0x8000) | 0x7E00 | ((Bits(x) >> 13) & 0x3FF));
  return static_cast<uint16_t>(F16Format().RoundSigned(x));
}
uint8_t RefE4M3Encode(float x) {
  if (std::isnan(x)) return std::signbit(x) ? 0xFF : 0x7F;
  return static_cast<uint8_t>(E4M3Format().RoundSigned(x));
}

// Element i of an output of type t, as raw bits.
uint32_t OutBits(const std::vector<uint8_t>& buf, FloatType t, uint64_t i) {
  if (t == FloatType::kF32) {
    uint32_t v;
    std::memcpy(&v, buf.data() + 4 * i, 4);
    return v;
  }
  uint16_t v;
  std::memcpy(&v, buf.data() + 2 * i, 2);
  return v;
}
uint32_t RefOut(float y, FloatType t) {
  switch (t) {
    case FloatType::kBF16: return RefBF16(y);
    case FloatType::kF16: return RefF16(y);
    case FloatType::kF32: return Bits(y);
  }
  return 0;
}
const char* Name(FloatType t) { return t == FloatType::kBF16 ? "bf16" : t == FloatType::kF16 ? "f16" : "f32"; }

// The FP8 dequantization reference: a NaN code gives its own NaN, anything
// else one float multiply.
float RefDequantFp8(uint8_t code, float scale) {
  const float v = RefE4M3(code);
  return (code & 0x7F) == 0x7F ? v : v * scale;
}

// Scales of every kind: signs, zeros, subnormals, huge (where a product
// overflows), infinities, and NaNs quiet and signaling.
std::vector<float> Scales(std::mt19937_64& rng) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  std::vector<float> s = {1.0f,         -1.0f,       0.0f,        -0.0f,        0.5f,        448.0f,
                          1.0f / 448.0f, 3.14159f,   -2.5e-3f,    0x1p-126f,    -0x1p-126f,  0x1p-149f,
                          3 * 0x1p-140f, -0x1p-130f, 1e-20f,      0x1p100f,     0x1p120f,    0x1p121f,
                          -0x1p127f,    std::numeric_limits<float>::max(), kInf, -kInf,
                          FromBits(0x7FC00000u), FromBits(0x7F812345u), FromBits(0xFFC12345u)};
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 200; ++i) {
    uint32_t u = any(rng);
    if ((u & 0x7F800000u) == 0x7F800000u) u &= 0xBFFFFFFFu;  // keep these finite
    s.push_back(FromBits(u));
  }
  return s;
}

// A random e4m3 code, NaN codes included.
uint8_t RandomCode(std::mt19937_64& rng) { return static_cast<uint8_t>(rng()); }

class NumericsIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!numerics::IsaSupported(GetParam())) GTEST_SKIP() << "this CPU lacks " << numerics::IsaName(GetParam());
  }
  const Kernels& K() const { return numerics::KernelsFor(GetParam()); }
};

// ---- Scalar conversions ---------------------------------------------------

TEST(NumericsScalar, DecodersMatchTheSpec) {
  for (int c = 0; c < 256; ++c) {
    EXPECT_EQ(Bits(E4M3ToFloat(static_cast<uint8_t>(c))), Bits(RefE4M3(static_cast<uint8_t>(c)))) << c;
    EXPECT_EQ(Bits(E2M1ToFloat(static_cast<uint8_t>(c))), Bits(RefE2M1(static_cast<uint8_t>(c & 0xF)))) << c;
  }
  EXPECT_EQ(Bits(E4M3ToFloat(0x7F)), 0x7FF00000u);
  EXPECT_EQ(Bits(E4M3ToFloat(0xFF)), 0xFFF00000u);
  EXPECT_EQ(E4M3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(E4M3ToFloat(0x01), 0x1p-9f);
  EXPECT_EQ(E4M3ToFloat(0x08), 0x1p-6f);
  EXPECT_EQ(Bits(E4M3ToFloat(0x80)), 0x80000000u);
  const float table[16] = {0, .5, 1, 1.5, 2, 3, 4, 6, -0.0f, -.5, -1, -1.5, -2, -3, -4, -6};
  for (int n = 0; n < 16; ++n) EXPECT_EQ(Bits(E2M1ToFloat(static_cast<uint8_t>(n))), Bits(table[n])) << n;

  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    EXPECT_EQ(Bits(BF16ToFloat(b)), h << 16);
    const float ref = RefF16ToFloat(b);
    if (std::isnan(ref)) {  // quiet, sign and payload kept
      EXPECT_EQ(Bits(F16ToFloat(b)), (h & 0x8000u) << 16 | 0x7FC00000u | (h & 0x3FFu) << 13) << h;
    } else {
      EXPECT_EQ(Bits(F16ToFloat(b)), Bits(ref)) << h;
    }
  }
}

// Every representable value of the three formats, the midpoints between
// neighbours (ties), one fp32 ulp either side of both, both signs, and a
// million random bit patterns.
std::vector<float> RoundingInputs() {
  std::vector<float> v;
  auto around = [&v](double x) {
    const float f = static_cast<float>(x);  // exact: midpoints of these formats fit in fp32
    for (float g : {f, std::nextafter(f, 0.0f), std::nextafter(f, std::numeric_limits<float>::infinity())}) {
      v.push_back(g);
      v.push_back(-g);
    }
  };
  for (const Format* f : {&BF16Format(), &F16Format(), &E4M3Format()}) {
    for (size_t i = 0; i < f->mags.size(); ++i) {
      if (!std::isfinite(static_cast<float>(f->mags[i]))) continue;
      around(f->mags[i]);
      if (i + 1 < f->mags.size()) around((f->mags[i] + f->mags[i + 1]) / 2);
    }
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000000; ++i) v.push_back(FromBits(static_cast<uint32_t>(rng())));
  for (uint32_t u : {0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7F812345u, 0xFFFFFFFFu, 0x7F7FFFFFu,
                     0x00000001u, 0x80000001u, 0x7F7F8000u, 0x7F7F7FFFu}) {
    v.push_back(FromBits(u));
  }
  return v;
}

TEST(NumericsScalar, RoundingMatchesNearestSearch) {
  size_t bad_bf16 = 0, bad_f16 = 0, bad_e4m3 = 0;
  for (float x : RoundingInputs()) {
    if (FloatToBF16(x) != RefBF16(x) && bad_bf16++ < 5) ADD_FAILURE() << "bf16 of " << std::hex << Bits(x);
    if (FloatToF16(x) != RefF16(x) && bad_f16++ < 5) ADD_FAILURE() << "f16 of " << std::hex << Bits(x);
    if (FloatToE4M3(x) != RefE4M3Encode(x) && bad_e4m3++ < 5) ADD_FAILURE() << "e4m3 of " << std::hex << Bits(x);
  }
  EXPECT_EQ(bad_bf16 + bad_f16 + bad_e4m3, 0u);
}

TEST(NumericsScalar, RoundingLandmarks) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBF16(FromBits(0x3F808000u)), 0x3F80);  // tie, to even
  EXPECT_EQ(FloatToBF16(FromBits(0x3F818000u)), 0x3F82);  // tie, to even
  EXPECT_EQ(FloatToBF16(FromBits(0x7F7F8000u)), 0x7F80);  // overflows to inf
  EXPECT_EQ(FloatToBF16(FromBits(0x7F7F7FFFu)), 0x7F7F);
  EXPECT_EQ(FloatToBF16(FromBits(0x00000001u)), 0x0000);
  EXPECT_EQ(FloatToBF16(FromBits(0x00008000u)), 0x0000);  // tie, to even (0)
  EXPECT_EQ(FloatToBF16(FromBits(0x00018000u)), 0x0002);
  EXPECT_EQ(FloatToBF16(FromBits(0x7F812345u)), 0x7FC1);  // NaN made quiet
  EXPECT_EQ(FloatToBF16(FromBits(0xFFC00000u)), 0xFFC0);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65519.996f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7C00);
  EXPECT_EQ(FloatToF16(0x1p-24f), 0x0001);
  EXPECT_EQ(FloatToF16(0x1p-25f), 0x0000);  // tie, to even
  EXPECT_EQ(FloatToF16(-0x1.8p-24f), 0x8002);  // tie, to even
  EXPECT_EQ(FloatToF16(FromBits(0x7F812345u)), 0x7E09);
  EXPECT_EQ(FloatToE4M3(448.0f), 0x7E);
  EXPECT_EQ(FloatToE4M3(464.0f), 0x7E);
  EXPECT_EQ(FloatToE4M3(470.0f), 0x7E);  // torch's unclamped cast gives NaN here
  EXPECT_EQ(FloatToE4M3(-1e30f), 0xFE);
  EXPECT_EQ(FloatToE4M3(-std::numeric_limits<float>::infinity()), 0xFE);
  EXPECT_EQ(FloatToE4M3(0x1p-10f), 0x00);    // tie, to even
  EXPECT_EQ(FloatToE4M3(0x1.8p-10f), 0x01);  // 0.75 * 2^-9
  EXPECT_EQ(FloatToE4M3(0x1.8p-9f), 0x02);   // 1.5 * 2^-9: tie, to even
  EXPECT_EQ(FloatToE4M3(0x1.ep-7f), 0x08);   // 7.5 * 2^-9: tie between 7 and 8, to the normal 2^-6
  EXPECT_EQ(FloatToE4M3(432.0f), 0x7E);      // tie between 416 (0x7D) and 448, to even
  EXPECT_EQ(FloatToE4M3(400.0f), 0x7C);      // tie between 384 (0x7C) and 416, to even
  EXPECT_EQ(FloatToE4M3(440.0f), 0x7E);
  EXPECT_EQ(FloatToE4M3(FromBits(0xFFC00000u)), 0xFF);
  EXPECT_EQ(FloatToE4M3(FromBits(0x7FC00000u)), 0x7F);
}

TEST(NumericsScalar, FloatTypes) {
  for (FloatType t : kOutTypes) {
    EXPECT_EQ(FloatTypeOf(ToDType(t)), t);
    EXPECT_EQ(FloatTypeBytes(t) * 8, static_cast<uint32_t>(DTypeBits(ToDType(t))));
  }
  EXPECT_FALSE(FloatTypeOf(DType::F8_E4M3).has_value());
  EXPECT_FALSE(FloatTypeOf(DType::I32).has_value());
}

TEST(NumericsDispatch, PicksTheWidestSupported) {
  const Isa want = numerics::IsaSupported(Isa::kAvx512) ? Isa::kAvx512
                   : numerics::IsaSupported(Isa::kAvx2) ? Isa::kAvx2
                                                        : Isa::kScalar;
  EXPECT_EQ(numerics::ActiveIsa(), want);
  EXPECT_TRUE(numerics::IsaSupported(Isa::kScalar));
  std::printf("numerics: running %s kernels\n", numerics::IsaName(numerics::ActiveIsa()));
}

// ---- FP8 dequantization ---------------------------------------------------

// Every code under every scale: one block of 256 columns per scale, each
// holding all 256 codes in a shuffled order.
TEST_P(NumericsIsa, Fp8AllCodesAllScales) {
  std::mt19937_64 rng(1);
  const std::vector<float> scales = Scales(rng);
  std::vector<uint8_t> w(256 * scales.size());
  for (size_t b = 0; b < scales.size(); ++b) {
    for (int c = 0; c < 256; ++c) w[256 * b + c] = static_cast<uint8_t>(c);
    std::shuffle(w.begin() + 256 * b, w.begin() + 256 * (b + 1), rng);
  }
  for (FloatType t : kOutTypes) {
    std::vector<uint8_t> out(w.size() * FloatTypeBytes(t));
    K().dequant_fp8_row(w.data(), scales.data(), w.size(), 256, t, out.data(), 0);
    size_t bad = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      const uint32_t want = RefOut(RefDequantFp8(w[i], scales[i / 256]), t);
      if (OutBits(out, t, i) != want && bad++ < 5) {
        ADD_FAILURE() << Name(t) << " code " << int(w[i]) << " scale " << std::hex << Bits(scales[i / 256]) << ": got "
                      << OutBits(out, t, i) << " want " << want;
      }
    }
    EXPECT_EQ(bad, 0u) << Name(t);
  }
}

// The documented NaN patterns, whatever the scale.
TEST_P(NumericsIsa, Fp8NanCodes) {
  const float scales[] = {2.0f, -3.0f, FromBits(0xFF812345u), 0.0f};
  for (float s : scales) {
    std::vector<uint8_t> w(40);
    for (size_t i = 0; i < w.size(); ++i) w[i] = i % 2 ? 0xFF : 0x7F;
    for (FloatType t : kOutTypes) {
      std::vector<uint8_t> out(w.size() * FloatTypeBytes(t));
      K().dequant_fp8_row(w.data(), &s, w.size(), 128, t, out.data(), 0);
      const uint32_t pos = t == FloatType::kF32 ? 0x7FF00000u : t == FloatType::kBF16 ? 0x7FF0u : 0x7F80u;
      const uint32_t neg = t == FloatType::kF32 ? 0xFFF00000u : pos | 0x8000u;
      for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(OutBits(out, t, i), i % 2 ? neg : pos) << Name(t) << " " << i;
    }
  }
}

// Matrices whose shapes the blocks do not tile (ceil grids), odd block
// sizes (tails inside every block), through the matrix entry point.
TEST_P(NumericsIsa, Fp8PartialBlocks) {
  struct Case {
    uint64_t rows, cols, br, bc;
  };
  const Case cases[] = {{200, 300, 128, 128}, {576, 200, 128, 128}, {130, 129, 128, 128}, {5, 37, 2, 7},
                        {3, 1000, 1, 1},      {17, 45, 64, 16},     {1, 1, 128, 128},     {9, 40, 3, 33},
                        {4, 17, 300, 300}};
  std::mt19937_64 rng(2);
  for (const Case& k : cases) {
    const uint64_t gr = (k.rows + k.br - 1) / k.br, gc = (k.cols + k.bc - 1) / k.bc;
    std::vector<uint8_t> w(k.rows * k.cols);
    for (auto& c : w) c = RandomCode(rng);
    std::vector<float> s(gr * gc);
    const std::vector<float> pool = Scales(rng);
    for (auto& v : s) v = pool[rng() % pool.size()];
    for (FloatType t : kOutTypes) {
      std::vector<uint8_t> out(w.size() * FloatTypeBytes(t));
      numerics::DequantFp8With(K(), w.data(), s.data(), k.rows, k.cols, k.br, k.bc, t, out.data());
      size_t bad = 0;
      for (uint64_t r = 0; r < k.rows; ++r) {
        for (uint64_t c = 0; c < k.cols; ++c) {
          const uint64_t i = r * k.cols + c;
          const uint32_t want = RefOut(RefDequantFp8(w[i], s[(r / k.br) * gc + c / k.bc]), t);
          if (OutBits(out, t, i) != want && bad++ < 5) ADD_FAILURE() << Name(t) << " at " << r << "," << c;
        }
      }
      EXPECT_EQ(bad, 0u) << Name(t) << " " << k.rows << "x" << k.cols << " blocks " << k.br << "x" << k.bc;
    }
  }
}

// A slice of a row that starts inside a block (a rank's slice) uses the
// blocks of its columns in the full row.
TEST_P(NumericsIsa, Fp8SliceStartingInsideABlock) {
  std::mt19937_64 rng(3);
  const uint64_t cols = 700, bc = 128;
  std::vector<uint8_t> w(cols);
  for (auto& c : w) c = RandomCode(rng);
  std::vector<float> s(6);
  for (auto& v : s) v = std::ldexp(static_cast<float>(rng() % 1000) - 500.0f, static_cast<int>(rng() % 40) - 30);
  for (FloatType t : kOutTypes) {
    const uint32_t eb = FloatTypeBytes(t);
    std::vector<uint8_t> full(cols * eb);
    K().dequant_fp8_row(w.data(), s.data(), cols, bc, t, full.data(), 0);
    for (uint64_t c0 : {0, 1, 15, 16, 17, 100, 127, 128, 129, 250, 690}) {
      for (uint64_t len : {1, 7, 16, 50, 171, 500}) {
        if (c0 + len > cols) continue;
        std::vector<uint8_t> part(len * eb);
        K().dequant_fp8_row(w.data() + c0, s.data(), len, bc, t, part.data(), c0);
        EXPECT_EQ(0, std::memcmp(part.data(), full.data() + c0 * eb, len * eb)) << Name(t) << " " << c0 << "+" << len;
      }
    }
  }
}

// ---- MXFP4 dequantization ---------------------------------------------------

TEST_P(NumericsIsa, Mxfp4AllBytesAllExponents) {
  const uint8_t exps[] = {0, 1, 2, 100, 126, 127, 128, 200, 253, 254, 255};
  // For each exponent, 16 groups holding the 256 byte values in order.
  const uint64_t groups = 16 * std::size(exps);
  std::vector<uint8_t> blocks(16 * groups), scales(groups);
  for (uint64_t g = 0; g < groups; ++g) {
    scales[g] = exps[g / 16];
    for (int b = 0; b < 16; ++b) blocks[16 * g + b] = static_cast<uint8_t>(16 * (g % 16) + b);
  }
  for (FloatType t : kOutTypes) {
    std::vector<uint8_t> out(32 * groups * FloatTypeBytes(t));
    K().dequant_mxfp4_row(blocks.data(), scales.data(), groups, t, out.data());
    size_t bad = 0;
    for (uint64_t g = 0; g < groups; ++g) {
      const float scale = std::ldexp(1.0f, scales[g] - 127);  // 2^-127 is subnormal; 2^128 overflows to inf
      for (int b = 0; b < 16; ++b) {
        const uint8_t byte = blocks[16 * g + b];
        for (int half = 0; half < 2; ++half) {  // low nibble first
          const uint64_t i = 32 * g + 2 * b + half;
          const uint32_t want = RefOut(RefE2M1(half ? byte >> 4 : byte & 0xF) * scale, t);
          if (OutBits(out, t, i) != want && bad++ < 5) {
            ADD_FAILURE() << Name(t) << " byte " << int(byte) << " e8m0 " << int(scales[g]) << " half " << half;
          }
        }
      }
    }
    EXPECT_EQ(bad, 0u) << Name(t);
  }
}

TEST_P(NumericsIsa, Mxfp4Landmarks) {
  // Group 0: e8m0 0 (2^-127); group 1: e8m0 255 (inf); group 2: e8m0 127 (1).
  std::vector<uint8_t> blocks(48, 0), scales = {0, 255, 127};
  blocks[0] = 0x81;   // elements 0, 1: 0.5 and -0
  blocks[16] = 0x90;  // elements 32, 33: +0 and -0.5
  blocks[32] = 0x7F;  // elements 64, 65: -6 and 6
  std::vector<uint8_t> f32(96 * 4), bf16(96 * 2);
  K().dequant_mxfp4_row(blocks.data(), scales.data(), 3, FloatType::kF32, f32.data());
  K().dequant_mxfp4_row(blocks.data(), scales.data(), 3, FloatType::kBF16, bf16.data());
  EXPECT_EQ(OutBits(f32, FloatType::kF32, 0), 0x00200000u);  // 2^-128, subnormal
  EXPECT_EQ(OutBits(bf16, FloatType::kBF16, 0), 0x0020u);
  EXPECT_EQ(OutBits(bf16, FloatType::kBF16, 1), 0x8000u);
  EXPECT_EQ(OutBits(f32, FloatType::kF32, 32), 0xFFC00000u);  // 0 * inf: x86's default NaN
  EXPECT_EQ(OutBits(f32, FloatType::kF32, 33), 0xFF800000u);  // -0.5 * inf
  EXPECT_EQ(OutBits(bf16, FloatType::kBF16, 32), 0xFFC0u);
  EXPECT_EQ(OutBits(bf16, FloatType::kBF16, 64), 0xC0C0u);  // -6
  EXPECT_EQ(OutBits(bf16, FloatType::kBF16, 65), 0x40C0u);  // 6
}

// ---- FP8 quantization -------------------------------------------------------

// Source data of one float type, kept both as stored and as floats.
struct Source {
  FloatType type;
  uint64_t rows, cols, stride;
  std::vector<uint8_t> raw;
  std::vector<float> values;  // [rows * stride]
  void Set(uint64_t i, uint32_t bits) {
    if (type == FloatType::kF32) {
      std::memcpy(raw.data() + 4 * i, &bits, 4);
      values[i] = FromBits(bits);
    } else {
      const uint16_t h = static_cast<uint16_t>(bits);
      std::memcpy(raw.data() + 2 * i, &h, 2);
      values[i] = type == FloatType::kBF16 ? FromBits(bits << 16) : RefF16ToFloat(h);
    }
  }
};

// Random bits of `type` with magnitudes spread by a per-block exponent:
// normals, subnormals, zeros of both signs, NaNs of both signs.
Source RandomSource(std::mt19937_64& rng, FloatType type, uint64_t rows, uint64_t cols, uint64_t stride,
                    uint64_t br, uint64_t bc) {
  Source s{type, rows, cols, stride, std::vector<uint8_t>(rows * stride * FloatTypeBytes(type)),
           std::vector<float>(rows * stride)};
  const int ebits = type == FloatType::kF32 ? 8 : type == FloatType::kBF16 ? 8 : 5;
  const int mbits = type == FloatType::kF32 ? 23 : type == FloatType::kBF16 ? 7 : 10;
  const int emax = (1 << ebits) - 2;
  std::vector<int> block_exp((rows / br + 1) * (cols / bc + 1));
  for (auto& e : block_exp) e = 1 + static_cast<int>(rng() % static_cast<uint64_t>(emax));
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < stride; ++c) {
      const uint32_t kind = static_cast<uint32_t>(rng() % 1000);
      const uint32_t sign = static_cast<uint32_t>(rng() & 1) << (ebits + mbits);
      const uint32_t mant = static_cast<uint32_t>(rng()) & ((1u << mbits) - 1);
      uint32_t bits;
      if (kind < 3) {
        bits = sign | (((1u << ebits) - 1) << mbits) | mant | 1u;  // NaN
      } else if (kind < 10) {
        bits = sign;  // +-0
      } else if (kind < 20) {
        bits = sign | mant;  // subnormal
      } else {
        const int e = std::clamp(block_exp[(r / br) * (cols / bc + 1) + std::min(c, cols - 1) / bc] -
                                     static_cast<int>(rng() % 12),
                                 1, emax);
        bits = sign | (static_cast<uint32_t>(e) << mbits) | mant;
      }
      s.Set(r * stride + c, bits);
    }
  }
  return s;
}

struct Quantized {
  std::vector<uint8_t> q;
  std::vector<float> s;
};

// The reference quantizer, from the definition in numerics.h.
Quantized RefQuantize(const Source& src, uint64_t br, uint64_t bc) {
  const uint64_t gr = (src.rows + br - 1) / br, gc = (src.cols + bc - 1) / bc;
  Quantized out{std::vector<uint8_t>(src.rows * src.cols), std::vector<float>(gr * gc)};
  for (uint64_t bi = 0; bi < gr; ++bi) {
    for (uint64_t bj = 0; bj < gc; ++bj) {
      const uint64_t r1 = std::min(src.rows, (bi + 1) * br), c1 = std::min(src.cols, (bj + 1) * bc);
      float amax = 0.0f;
      for (uint64_t r = bi * br; r < r1; ++r) {
        for (uint64_t c = bj * bc; c < c1; ++c) {
          const float x = src.values[r * src.stride + c];
          if (!std::isnan(x)) amax = std::max(amax, std::fabs(x));
        }
      }
      float s = amax == 0.0f ? 1.0f : amax / 448.0f;
      if (s == 0.0f) s = std::numeric_limits<float>::denorm_min();
      out.s[bi * gc + bj] = s;
      for (uint64_t r = bi * br; r < r1; ++r) {
        for (uint64_t c = bj * bc; c < c1; ++c) {
          out.q[r * src.cols + c] = RefE4M3Encode(src.values[r * src.stride + c] / s);
        }
      }
    }
  }
  return out;
}

Quantized Quantize(const Kernels& k, const Source& src, uint64_t br, uint64_t bc) {
  const uint64_t gr = (src.rows + br - 1) / br, gc = (src.cols + bc - 1) / bc;
  Quantized out{std::vector<uint8_t>(src.rows * src.cols), std::vector<float>(gr * gc)};
  numerics::QuantizeFp8With(k, src.raw.data(), src.type, src.rows, src.cols, src.stride, br, bc, out.q.data(),
                            out.s.data());
  return out;
}

void ExpectSame(const Quantized& got, const Quantized& want, const std::string& what) {
  size_t bad = 0;
  for (size_t i = 0; i < want.s.size(); ++i) {
    if (Bits(got.s[i]) != Bits(want.s[i]) && bad++ < 5) ADD_FAILURE() << what << ": scale " << i;
  }
  for (size_t i = 0; i < want.q.size(); ++i) {
    if (got.q[i] != want.q[i] && bad++ < 10) {
      ADD_FAILURE() << what << ": code " << i << " got " << int(got.q[i]) << " want " << int(want.q[i]);
    }
  }
  EXPECT_EQ(bad, 0u) << what;
}

TEST_P(NumericsIsa, QuantizeMatchesReference) {
  struct Case {
    uint64_t rows, cols, stride, br, bc;
  };
  const Case cases[] = {{300, 200, 200, 128, 128}, {256, 1024, 1030, 128, 128}, {130, 129, 129, 128, 128},
                        {5, 37, 40, 2, 7},         {1, 1, 1, 128, 128},         {128, 128, 128, 128, 128},
                        {33, 70, 75, 1, 1},        {64, 96, 96, 32, 48},        {7, 300, 301, 300, 300}};
  std::mt19937_64 rng(4);
  for (FloatType t : kOutTypes) {
    for (const Case& k : cases) {
      const Source src = RandomSource(rng, t, k.rows, k.cols, k.stride, k.br, k.bc);
      ExpectSame(Quantize(K(), src, k.br, k.bc), RefQuantize(src, k.br, k.bc),
                 std::string(Name(t)) + " " + std::to_string(k.rows) + "x" + std::to_string(k.cols));
    }
  }
}

// F32 sources reach what 16-bit ones cannot: any fp32 value, including
// blocks so small that amax / 448 underflows.
TEST_P(NumericsIsa, QuantizeF32Extremes) {
  std::mt19937_64 rng(5);
  Source src{FloatType::kF32, 4, 64, 64, std::vector<uint8_t>(4 * 64 * 4), std::vector<float>(4 * 64)};
  for (uint64_t i = 0; i < 4 * 64; ++i) {
    const uint64_t block = i % 64 / 16;
    uint32_t bits = static_cast<uint32_t>(rng());
    if (block == 0) bits &= 0x8000000Fu;                               // |x| <= 15 * 2^-149: s underflows
    if (block == 1) bits = (bits & 0x807FFFFFu) | 0x43000000u;          // [128, 256)
    if (block == 2 && (bits & 0x7F800000u) == 0x7F800000u) bits ^= 1u << 30;  // any finite value
    // block 3: any bits at all, infinities and NaNs included
    src.Set(i, bits);
  }
  src.Set(3, 0x00000007u);  // amax of block 0: 7 * 2^-149
  const Quantized got = Quantize(K(), src, 4, 16), want = RefQuantize(src, 4, 16);
  ExpectSame(got, want, "f32 extremes");
  EXPECT_EQ(got.s[0], std::numeric_limits<float>::denorm_min());
  EXPECT_EQ(got.q[3], FloatToE4M3(7.0f));
}

TEST_P(NumericsIsa, QuantizeZeroAndNanBlocks) {
  // Four 16x16 blocks: all +-0; all NaN; NaNs among values; values with an
  // infinity.
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN(), kInf = std::numeric_limits<float>::infinity();
  Source src{FloatType::kF32, 16, 64, 64, std::vector<uint8_t>(16 * 64 * 4), std::vector<float>(16 * 64)};
  for (uint64_t r = 0; r < 16; ++r) {
    for (uint64_t c = 0; c < 64; ++c) {
      const bool neg = (r + c) % 3 == 0;
      float x = 0.0f;
      if (c < 16) x = 0.0f;
      if (c >= 16 && c < 32) x = kNaN;
      if (c >= 32) x = static_cast<float>(r * 16 + c % 16 + 1) / 8.0f;  // up to 32
      if (c >= 32 && c < 48 && (r + c) % 5 == 0) x = kNaN;
      if (c >= 48 && r == 3 && c == 50) x = kInf;
      src.Set(r * 64 + c, Bits(neg ? -x : x));
    }
  }
  const Quantized got = Quantize(K(), src, 16, 16);
  ExpectSame(got, RefQuantize(src, 16, 16), "zero and nan blocks");
  EXPECT_EQ(got.s[0], 1.0f);
  EXPECT_EQ(got.s[1], 1.0f);
  EXPECT_EQ(got.s[2], 32.0f / 448.0f);
  EXPECT_TRUE(std::isinf(got.s[3]));
  for (uint64_t r = 0; r < 16; ++r) {
    for (uint64_t c = 0; c < 64; ++c) {
      const uint8_t q = got.q[r * 64 + c];
      const float x = src.values[r * 64 + c];
      if (c < 16) {
        EXPECT_EQ(q, std::signbit(x) ? 0x80 : 0x00);  // zeros stay zeros
      }
      if (std::isnan(x)) {
        EXPECT_EQ(q, std::signbit(x) ? 0xFF : 0x7F);  // NaN keeps its sign
      } else if (c >= 32 && c < 48) {
        EXPECT_NE(q & 0x7F, 0x7F);  // nothing else becomes NaN
      } else if (c >= 48 && !std::isinf(x)) {
        EXPECT_EQ(q & 0x7F, 0);  // finite / inf = 0
      }
    }
  }
  EXPECT_EQ(got.q[3 * 64 + 50] & 0x7F, 0x7F);  // inf / inf
}

TEST_P(NumericsIsa, QuantizeSubnormalCodes) {
  // s = 1 (amax 448), so each code is FloatToE4M3 of the value itself.
  const float v[] = {448.0f,     0x1p-9f,   2 * 0x1p-9f, 7 * 0x1p-9f, 0x1p-10f,  3 * 0x1p-10f, 5 * 0x1p-10f,
                     7 * 0x1p-10f, 15 * 0x1p-10f, 0x1p-6f, -0x1p-9f,  -3 * 0x1p-10f, 1e-30f, 0x1.1p-10f};
  const uint8_t want[] = {0x7E, 0x01, 0x02, 0x07, 0x00, 0x02, 0x02, 0x04, 0x08, 0x08, 0x81, 0x82, 0x00, 0x01};
  const uint64_t n = std::size(v);
  Source src{FloatType::kF32, 1, n, n, std::vector<uint8_t>(n * 4), std::vector<float>(n)};
  for (uint64_t i = 0; i < n; ++i) src.Set(i, Bits(v[i]));
  const Quantized got = Quantize(K(), src, 1, 128);
  EXPECT_EQ(got.s[0], 1.0f);
  for (uint64_t i = 0; i < n; ++i) EXPECT_EQ(got.q[i], want[i]) << i;
  // The same values sixteen-fold wide, so the vector loops see them too.
  Source wide{FloatType::kF32, 1, 16 * n, 16 * n, std::vector<uint8_t>(16 * n * 4), std::vector<float>(16 * n)};
  for (uint64_t i = 0; i < 16 * n; ++i) wide.Set(i, Bits(v[i % n]));
  const Quantized got_wide = Quantize(K(), wide, 1, 16 * n);
  for (uint64_t i = 0; i < 16 * n; ++i) EXPECT_EQ(got_wide.q[i], want[i % n]) << i;
}

// bf16 -> fp8 -> bf16 through the public entry points. The error of each
// element x of a block with scale s is bounded by
//   half an e4m3 ulp at |x| / s, times s        (the fp8 rounding)
// + half a bf16 ulp at max(|x|, |y|)             (the bf16 rounding of y)
// + 2^-22 * max(|x|, |y|)                        (the two fp32 roundings,
//                                                 of x / s and of q * s)
// where an e4m3 ulp at m is 2^-9 below 2^-6, else 2^(floor(log2 m) - 3),
// and a bf16 ulp at m is 2^-133 below 2^-126, else 2^(floor(log2 m) - 7).
TEST(NumericsRoundTrip, Bf16ThroughFp8WithinTheBound) {
  std::mt19937_64 rng(6);
  std::normal_distribution<float> normal;
  const uint64_t rows = 300, cols = 520, br = 128, bc = 128, gc = (cols + bc - 1) / bc;
  std::vector<uint16_t> x(rows * cols);
  std::vector<int> block_exp(3 * gc);
  for (auto& e : block_exp) e = static_cast<int>(rng() % 60) - 40;
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) {
      x[r * cols + c] = FloatToBF16(std::ldexp(normal(rng), block_exp[(r / br) * gc + c / bc]));
    }
  }
  std::vector<uint8_t> q(rows * cols);
  std::vector<float> s(3 * gc);
  QuantizeFp8(x.data(), FloatType::kBF16, rows, cols, cols, br, bc, q.data(), s.data());
  std::vector<uint16_t> y(rows * cols);
  DequantFp8(q.data(), s.data(), rows, cols, br, bc, FloatType::kBF16, y.data());

  auto ulp8 = [](double m) {
    return m < 0x1p-6 ? 0x1p-9 : std::ldexp(1.0, static_cast<int>(std::floor(std::log2(m))) - 3);
  };
  auto ulp16 = [](double m) {
    return m < 0x1p-126 ? 0x1p-133 : std::ldexp(1.0, static_cast<int>(std::floor(std::log2(m))) - 7);
  };
  double worst = 0;
  uint64_t inexact = 0, at_max = 0;
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) {
      const uint64_t i = r * cols + c;
      const double xv = BF16ToFloat(x[i]), yv = BF16ToFloat(y[i]), sv = s[(r / br) * gc + c / bc];
      const double m = std::max(std::fabs(xv), std::fabs(yv));
      const double bound = 0.5 * ulp8(std::fabs(xv) / sv) * sv + 0.5 * ulp16(m) + 0x1p-22 * m;
      const double err = std::fabs(yv - xv);
      ASSERT_LE(err, bound) << "at " << r << "," << c << ": x " << xv << " y " << yv << " s " << sv;
      worst = std::max(worst, err / bound);
      if (err != 0) ++inexact;
      if ((q[i] & 0x7F) == 0x7E) ++at_max;
    }
  }
  // The bound is not loose: some element comes close to it, and most are
  // not exact (e4m3 keeps 3 bits of bf16's 8).
  EXPECT_GT(worst, 0.7);
  EXPECT_GT(inexact, rows * cols / 2);
  // Each block's largest element lands on +-448 exactly.
  EXPECT_GE(at_max, 3 * gc);
}

// The public entry points give the same bytes under a caller's MXCSR with
// flush-to-zero, denormals-are-zero, rounding toward -inf and the invalid
// and overflow exceptions unmasked (a trap would end the test), and leave
// that MXCSR as they found it.
TEST(NumericsFpEnv, ResultsDoNotDependOnTheCallersMxcsr) {
  std::mt19937_64 rng(8);
  std::vector<uint8_t> w(1024);
  for (auto& c : w) c = RandomCode(rng);
  const float fp8_scales[8] = {0x1p-140f, 3e-41f, -0x1p-130f, 1e-3f, 0.0f, std::numeric_limits<float>::infinity(),
                               0x1p-149f, 7.0f};
  std::vector<uint8_t> blocks(16 * 8), mx_scales = {0, 1, 255, 127, 0, 2, 255, 3};
  for (auto& b : blocks) b = static_cast<uint8_t>(rng());
  Source src = RandomSource(rng, FloatType::kF32, 16, 64, 64, 16, 16);
  for (uint64_t i = 0; i < 64; ++i) src.Set(i, static_cast<uint32_t>(rng()) & 0x803FFFFFu);  // subnormals

  struct Results {
    std::vector<uint8_t> fp8_bf16 = std::vector<uint8_t>(2048), fp8_f32 = std::vector<uint8_t>(4096);
    std::vector<uint8_t> mx_bf16 = std::vector<uint8_t>(512), mx_f16 = std::vector<uint8_t>(512);
    std::vector<uint8_t> q = std::vector<uint8_t>(16 * 64);
    std::vector<float> s = std::vector<float>(4);
    std::vector<uint8_t> e4m3 = std::vector<uint8_t>(64);
    bool operator==(const Results&) const = default;
  };
  // Expected: the kernels themselves (checked against the references above)
  // under this test's default MXCSR.
  Results want, got;
  const Kernels& k = numerics::KernelsFor(numerics::ActiveIsa());
  k.dequant_fp8_row(w.data(), fp8_scales, 1024, 128, FloatType::kBF16, want.fp8_bf16.data(), 0);
  k.dequant_fp8_row(w.data(), fp8_scales, 1024, 128, FloatType::kF32, want.fp8_f32.data(), 0);
  k.dequant_mxfp4_row(blocks.data(), mx_scales.data(), 8, FloatType::kBF16, want.mx_bf16.data());
  k.dequant_mxfp4_row(blocks.data(), mx_scales.data(), 8, FloatType::kF16, want.mx_f16.data());
  numerics::QuantizeFp8With(k, src.raw.data(), FloatType::kF32, 16, 64, 64, 16, 16, want.q.data(), want.s.data());
  for (int i = 0; i < 64; ++i) want.e4m3[i] = RefE4M3Encode(src.values[i]);
  auto run = [&](Results& r) {
    DequantFp8Row(w.data(), fp8_scales, 1024, 128, FloatType::kBF16, r.fp8_bf16.data());
    DequantFp8(w.data(), fp8_scales, 1, 1024, 128, 128, FloatType::kF32, r.fp8_f32.data());
    DequantMxfp4Row(blocks.data(), mx_scales.data(), 8, FloatType::kBF16, r.mx_bf16.data());
    DequantMxfp4Row(blocks.data(), mx_scales.data(), 8, FloatType::kF16, r.mx_f16.data());
    QuantizeFp8(src.raw.data(), FloatType::kF32, 16, 64, 64, 16, 16, r.q.data(), r.s.data());
    for (int i = 0; i < 64; ++i) r.e4m3[i] = FloatToE4M3(src.values[i]);
  };
  const unsigned saved = _mm_getcsr();
  const unsigned odd = (saved | (1u << 15) | (1u << 6) | (1u << 13)) & ~((1u << 7) | (1u << 10));
  _mm_setcsr(odd);
  run(got);
  const unsigned after = _mm_getcsr();
  _mm_setcsr(saved);
  EXPECT_EQ(after & ~0x3Fu, odd & ~0x3Fu);  // the mode bits as they were; flags may be raised
  EXPECT_TRUE(got == want);
  // Not vacuous: under that MXCSR plain arithmetic differs.
  volatile float tiny = 0x1p-140f;
  _mm_setcsr(odd | 0x1F80u);  // everything masked, FTZ/DAZ kept
  const float flushed = tiny * 0.5f;
  _mm_setcsr(saved);
  EXPECT_EQ(flushed, 0.0f);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, NumericsIsa, ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const ::testing::TestParamInfo<Isa>& i) {
                           return std::string(numerics::IsaName(i.param));
                         });

}  // namespace
}  // namespace numerics_test
}  // namespace moepack::ops
