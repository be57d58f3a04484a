// moepack._moepack: the C++ library as the Python package sees it. Thin on
// purpose: every decision is made in the library (the CLI calls the same
// functions) and the Python-facing conveniences (dtypes, torch, groups,
// protocol checks) live in the pure-Python package. Errors travel as
// moepack.errors classes carrying the library's message unchanged, which is
// what the CLI prints after "moepack: error: ".
//
// Long calls (convert, verify, reads) release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "moepack/convert.h"
#include "moepack/families.h"
#include "moepack/inspect.h"
#include "moepack/loader.h"
#include "moepack/parse.h"
#include "moepack/rules.h"
#include "moepack/streaming.h"
#include "moepack/verify.h"
#include "host_buffer.h"

namespace py = pybind11;

namespace moepack::python {
namespace {

// A non-OK Status on its way to Python.
struct StatusError {
  Status status;
};

const char* CodeName(Status::Code c) {
  switch (c) {
    case Status::Code::kOk: return "ok";
    case Status::Code::kInvalidArgument: return "invalid_argument";
    case Status::Code::kCorrupt: return "corrupt";
    case Status::Code::kIOError: return "io";
    case Status::Code::kMismatch: return "mismatch";
    case Status::Code::kNotFound: return "not_found";
  }
  return "error";
}

void Check(const Status& s) {
  if (!s.ok()) throw StatusError{s};
}

template <typename T>
T Unwrap(Result<T> r) {
  if (!r.ok()) throw StatusError{r.status()};
  return std::move(r).value();
}

Status BadArgument(const std::string& msg) { return Status::InvalidArgument(msg); }

// The library's parsers (parse.h), with the argument's name in front.
Direction ParseTo(const std::string& to, const char* arg = "to") {
  auto d = ParseDirection(to);
  if (!d.ok()) throw StatusError{d.status().WithPrefix(arg)};
  return *d;
}

DTypeChange ParseDTypeArg(const std::string& s) {
  auto d = ParseDTypeChange(s);
  if (!d.ok()) throw StatusError{d.status().WithPrefix("dtype")};
  return *d;
}

SourceLayout ParseLayoutArg(const std::optional<std::string>& s) {
  auto l = ParseSourceLayout(s.value_or(""));
  if (!l.ok()) throw StatusError{l.status().WithPrefix("source_layout")};
  return *l;
}

DType ParseDTypeOrThrow(const std::string& name) {
  auto d = ParseDType(name);
  if (!d) throw StatusError{BadArgument("'" + name + "' is not a safetensors dtype")};
  return *d;
}

// A contiguous byte view of any object exporting the buffer protocol.
struct Bytes {
  py::buffer_info info;
  uint8_t* data = nullptr;
  uint64_t size = 0;
};

Bytes View(const py::buffer& b, bool writable) {
  Bytes out{b.request(writable)};
  const auto& i = out.info;
  // C-contiguous check from the strides.
  py::ssize_t expect = i.itemsize;
  for (py::ssize_t d = i.ndim - 1; d >= 0; --d) {
    if (i.shape[d] != 1 && i.strides[d] != expect) {
      throw StatusError{BadArgument("buffer is not C-contiguous")};
    }
    expect *= i.shape[d];
  }
  out.data = static_cast<uint8_t*>(i.ptr);
  out.size = static_cast<uint64_t>(i.size * i.itemsize);
  return out;
}

// The bytes of an OwnedTensor as a 1-D uint8 numpy array sharing its memory.
py::array BytesArray(const OwnedTensor& t) {
  auto* holder = new std::shared_ptr<uint8_t[]>(t.data);
  py::capsule owner(holder, [](void* p) { delete static_cast<std::shared_ptr<uint8_t[]>*>(p); });
  return py::array(py::dtype::of<uint8_t>(), {static_cast<py::ssize_t>(t.nbytes)}, {1}, t.data.get(), owner);
}

py::tuple TensorTuple(const OwnedTensor& t) {
  return py::make_tuple(t.name, std::string(DTypeName(t.dtype)), t.shape, BytesArray(t));
}

void CheckThreads(int threads) {
  if (threads < 0 || threads > 64) throw StatusError{BadArgument("threads: " + std::to_string(threads) + " is not in [0, 64]")};
}

// --- one-call commands --------------------------------------------------

std::string PyInspect(const std::string& path) {
  py::gil_scoped_release nogil;
  return InspectToJson(Unwrap(Inspect(path)));
}

std::string PyConvert(const std::string& src, const std::string& dst, const std::string& to,
                      const std::string& model_type, const std::string& rules, uint64_t max_shard_size, int threads,
                      bool force, bool dry_run, const std::optional<std::string>& source_layout, bool sync,
                      const std::string& dtype, bool align_pages) {
  ConvertOptions o;
  o.direction = ParseTo(to);
  o.dtype = ParseDTypeArg(dtype);
  o.model_type = model_type;
  o.rules_file = rules;
  o.max_shard_size = max_shard_size;
  o.source_layout = ParseLayoutArg(source_layout);
  CheckThreads(threads);
  o.threads = threads;
  o.force = force;
  o.sync = sync;
  o.align_pages = align_pages;
  o.dry_run = dry_run;
  py::gil_scoped_release nogil;
  ConvertResult r = Unwrap(Convert(src, dst, o));
  return PlanToJson(r.plan, dry_run);
}

std::string PyVerify(const std::string& src, const std::string& dst, const std::string& model_type,
                     const std::string& rules, const std::optional<std::string>& source_layout, int threads,
                     bool forward) {
  VerifyOptions o;
  o.model_type = model_type;
  o.rules_file = rules;
  o.source_layout = ParseLayoutArg(source_layout);
  CheckThreads(threads);
  o.threads = threads;
  o.forward = forward;
  py::gil_scoped_release nogil;
  return VerifyToJson(Unwrap(Verify(src, dst, o)), forward);
}

uint64_t PyParseSize(const std::string& text) { return Unwrap(ParseSize(text)); }

std::string PyFamilies() { return FamiliesToJson(Unwrap(DescribeFamilies())); }

// --- the loader -----------------------------------------------------------

class PyLoader {
 public:
  PyLoader(const std::string& path, const std::string& to, const std::string& model_type, const std::string& rules,
           const std::optional<std::string>& source_layout, int ep_rank, int ep_size, int tp_rank, int tp_size,
           bool raw, uint64_t max_gap, const std::string& dtype) {
    LoadOptions o;
    o.direction = ParseTo(to, "layout");
    o.model_type = model_type;
    o.rules_file = rules;
    o.source_layout = ParseLayoutArg(source_layout);
    o.parallel = {ep_rank, ep_size, tp_rank, tp_size};
    o.raw = raw;
    o.max_gap = max_gap;
    o.dtype = ParseDTypeArg(dtype);
    py::gil_scoped_release nogil;
    loader_ = std::make_unique<Loader>(Unwrap(Loader::Open(path, o)));
  }

  size_t size() const { return loader_->tensors().size(); }

  py::tuple Info(size_t i) const {
    if (i >= size()) throw py::index_error("tensor index out of range");
    const LoadTensor& t = loader_->tensors()[i];
    return py::make_tuple(t.name, std::string(DTypeName(t.dtype)), t.shape, t.full_shape, t.nbytes,
                          std::string(SplitName(t.split)));
  }

  void ReadInto(size_t i, const py::buffer& dst) const {
    Bytes b = View(dst, /*writable=*/true);
    py::gil_scoped_release nogil;
    Check(loader_->ReadInto(i, b.data, b.size));
  }

  // [(index, buffer)] over `threads` threads, the GIL released throughout.
  void ReadMany(const std::vector<std::pair<size_t, py::buffer>>& items, int threads) const {
    CheckThreads(threads);
    std::vector<Bytes> views;
    views.reserve(items.size());  // the buffer_info of each stays put while the GIL is released
    std::vector<ReadRequest> reqs;
    reqs.reserve(items.size());
    for (const auto& [i, b] : items) {
      views.push_back(View(b, /*writable=*/true));
      reqs.push_back(ReadRequest{i, views.back().data, views.back().size});
    }
    py::gil_scoped_release nogil;
    Check(loader_->ReadMany(reqs, {.threads = threads}));
  }

  void ReadRange(size_t i, uint64_t offset, const py::buffer& dst) const {
    Bytes b = View(dst, /*writable=*/true);
    py::gil_scoped_release nogil;
    Check(loader_->ReadRange(i, offset, b.data, b.size));
  }

  std::vector<std::pair<uint64_t, uint64_t>> Chunks(size_t i, uint64_t max_bytes) const {
    if (i >= size()) throw py::index_error("tensor index out of range");
    return loader_->Chunks(i, max_bytes);
  }

  const Loader& loader() const { return *loader_; }

 private:
  std::unique_ptr<Loader> loader_;
};

// --- the streaming converter ----------------------------------------------

class PyStreamingConverter {
 public:
  PyStreamingConverter(const std::string& model_type, const std::string& rules_file, const std::string& config_text,
                       const std::string& config_what, const std::string& to,
                       const std::optional<std::string>& source_layout, const std::string& dtype) {
    ModelConfig config = Unwrap(ModelConfig::Parse(config_text, config_what));
    RuleSet rules = Unwrap(ChooseRules(&config, config_what, model_type, rules_file));
    family_ = rules.family();
    conv_ = std::make_unique<StreamingConverter>(
        Unwrap(StreamingConverter::Create(std::move(rules), std::move(config), ParseTo(to),
                                                                ParseLayoutArg(source_layout), ParseDTypeArg(dtype))));
  }

  bool CanHandle(const std::string& name) const { return conv_->CanHandle(name); }
  std::string Rename(const std::string& name) const { return conv_->Rename(name); }

  py::list Convert(const std::string& name, const std::string& dtype, const std::vector<uint64_t>& shape,
                   const py::buffer& data) {
    Bytes b = View(data, /*writable=*/false);
    TensorView v{ParseDTypeOrThrow(dtype), shape, b.data, b.size};
    std::vector<OwnedTensor> out;
    {
      py::gil_scoped_release nogil;
      out = Unwrap(conv_->Convert(name, v));
    }
    py::list l;
    for (const auto& t : out) l.append(TensorTuple(t));
    return l;
  }

  py::list Finalize() {
    py::list l;
    for (const auto& t : Unwrap(conv_->Finalize())) l.append(TensorTuple(t));
    return l;
  }

  uint64_t pending_bytes() const { return conv_->pending_bytes(); }
  const std::string& family() const { return family_; }

 private:
  std::unique_ptr<StreamingConverter> conv_;
  std::string family_;
};

// The moepack.errors classes, looked up once at import.
py::handle g_errors_raise;

}  // namespace
}  // namespace moepack::python

PYBIND11_MODULE(_moepack, m) {
  using namespace moepack::python;
  m.doc() = "moepack C++ core (use the moepack package, not this module)";

  // moepack.errors._from_code(code, message) -> exception instance.
  g_errors_raise = py::object(py::module_::import("moepack.errors").attr("_from_code")).release();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      py::object exc = py::reinterpret_borrow<py::object>(g_errors_raise)(CodeName(e.status.code()), e.status.message());
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });

  m.def("inspect", &PyInspect, py::arg("path"));
  m.def("convert", &PyConvert, py::arg("src"), py::arg("dst"), py::arg("to"), py::arg("model_type"), py::arg("rules"),
        py::arg("max_shard_size"), py::arg("threads"), py::arg("force"), py::arg("dry_run"), py::arg("source_layout"),
        py::arg("sync"), py::arg("dtype"), py::arg("align_pages"));
  m.def("verify", &PyVerify, py::arg("src"), py::arg("dst"), py::arg("model_type"), py::arg("rules"),
        py::arg("source_layout"), py::arg("threads"), py::arg("forward"));
  m.def("families", &PyFamilies);
  m.def("parse_size", &PyParseSize, py::arg("text"));
  m.def("dtype_bits", [](const std::string& name) { return moepack::DTypeBits(ParseDTypeOrThrow(name)); });

  py::class_<PyLoader>(m, "Loader")
      .def(py::init<const std::string&, const std::string&, const std::string&, const std::string&,
                    const std::optional<std::string>&, int, int, int, int, bool, uint64_t, const std::string&>(),
           py::arg("path"), py::arg("to"), py::arg("model_type"), py::arg("rules"), py::arg("source_layout"),
           py::arg("ep_rank"), py::arg("ep_size"), py::arg("tp_rank"), py::arg("tp_size"), py::arg("raw"),
           py::arg("max_gap"), py::arg("dtype") = "")
      .def("__len__", &PyLoader::size)
      .def("info", &PyLoader::Info, py::arg("index"),
           "(name, dtype, shape, full_shape, nbytes, split) of tensor `index`")
      .def("read_into", &PyLoader::ReadInto, py::arg("index"), py::arg("buffer"))
      .def("read_many", &PyLoader::ReadMany, py::arg("items"), py::arg("threads"),
           "reads [(index, buffer)] in parallel; refuses (before any read) wrong sizes and overlapping buffers")
      .def("read_range", &PyLoader::ReadRange, py::arg("index"), py::arg("offset"), py::arg("buffer"))
      .def("chunks", &PyLoader::Chunks, py::arg("index"), py::arg("max_bytes"))
      .def_property_readonly("bytes_read", [](const PyLoader& l) { return l.loader().bytes_read(); })
      .def_property_readonly("read_calls", [](const PyLoader& l) { return l.loader().read_calls(); })
      .def_property_readonly("total_bytes", [](const PyLoader& l) { return l.loader().total_bytes(); })
      .def_property_readonly("rank_bytes", [](const PyLoader& l) { return l.loader().rank_bytes(); })
      .def_property_readonly("family", [](const PyLoader& l) { return l.loader().family(); })
      .def("reset_counters", [](const PyLoader& l) { l.loader().ResetCounters(); });

  py::class_<HostBuffer>(m, "HostBuffer", py::buffer_protocol())
      .def(py::init<size_t>(), py::arg("size"))
      .def("__len__", &HostBuffer::size)
      .def("grow", &HostBuffer::Grow, py::arg("size"),
           "at least `size` bytes, contents kept; the caller makes sure nothing views it")
      .def_buffer([](HostBuffer& b) {
        return py::buffer_info(b.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.size())}, {static_cast<py::ssize_t>(1)});
      });

  py::class_<PyStreamingConverter>(m, "StreamingConverter")
      .def(py::init<const std::string&, const std::string&, const std::string&, const std::string&, const std::string&,
                    const std::optional<std::string>&, const std::string&>(),
           py::arg("model_type"), py::arg("rules"), py::arg("config_text"), py::arg("config_what"), py::arg("to"),
           py::arg("source_layout"), py::arg("dtype") = "")
      .def("can_handle", &PyStreamingConverter::CanHandle, py::arg("name"))
      .def("rename", &PyStreamingConverter::Rename, py::arg("name"))
      .def("convert", &PyStreamingConverter::Convert, py::arg("name"), py::arg("dtype"), py::arg("shape"),
           py::arg("data"))
      .def("finalize", &PyStreamingConverter::Finalize)
      .def_property_readonly("pending_bytes", &PyStreamingConverter::pending_bytes)
      .def_property_readonly("family", &PyStreamingConverter::family);
}
