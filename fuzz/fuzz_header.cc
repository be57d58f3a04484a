// Fuzzes the safetensors header parser. Input: 8 bytes (little-endian data
// section size) followed by the header text. A header that parses must
// describe a data section exactly, and the writer's layout of the same
// tensors must parse back to the same tensors.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_models.h"
#include "fuzz_util.h"
#include "moepack/safetensors.h"

using namespace moepack;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fuzz::SeedDir()) {
    for (size_t i = 0; i < fuzz::kNumModels; ++i) {
      uint64_t n = 0;
      std::string h = fuzz::HeaderOf(fuzz::kModels[i]->tensors, &n);
      fuzz::WriteSeed("model" + std::to_string(i), fuzz::U64Le(n) + h);
    }
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t data_size = 0;
  for (int i = 7; i >= 0; --i) data_size = (data_size << 8) | data[i];
  std::string_view text(reinterpret_cast<const char*>(data) + 8, size - 8);
  auto h = ParseHeader(text, data_size, "fuzz.safetensors");
  if (!h.ok()) {
    FUZZ_CHECK(!h.status().message().empty(), "an error has a message");
    return 0;
  }
  uint64_t at = 0;
  std::vector<TensorSpec> specs;
  for (const TensorInfo& t : h->tensors()) {
    FUZZ_CHECK(t.begin == at, t.name.c_str());
    FUZZ_CHECK(h->Find(t.name) == &t, t.name.c_str());
    at = t.end;
    specs.push_back(TensorSpec{t.name, t.dtype, t.shape});
  }
  FUZZ_CHECK(at == data_size, "tensors cover the data section");
  FUZZ_CHECK(h->header_len() == text.size(), "header_len");

  std::map<std::string, std::string> meta = h->metadata();
  auto layout = LayoutFile(meta, specs);
  if (!layout.ok()) return 0;  // e.g. names the writer will not emit
  FUZZ_CHECK(layout->data_size == data_size, "layout keeps the data size");
  FUZZ_CHECK(layout->prefix.size() % 8 == 0, "header padded to 8 bytes");
  auto back = ParseHeader(std::string_view(layout->prefix).substr(8), layout->data_size, "relaid.safetensors");
  FUZZ_CHECK(back.ok(), back.ok() ? "" : back.status().message().c_str());
  FUZZ_CHECK(back->tensors().size() == h->tensors().size(), "same tensor count");
  for (const TensorInfo& t : back->tensors()) {
    const TensorInfo* o = h->Find(t.name);
    FUZZ_CHECK(o && o->dtype == t.dtype && o->shape == t.shape && o->nbytes() == t.nbytes(), t.name.c_str());
  }
  FUZZ_CHECK(back->metadata() == meta, "metadata round trip");
  return 0;
}
