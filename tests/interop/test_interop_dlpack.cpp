// DLPack adapter: DLTensor and DLManagedTensor built here by hand, as a
// producer (torch.utils.dlpack, CuPy) fills them: compact (NULL strides) and
// strided tensors, byte_offset, extent-1 dimensions with arbitrary strides, and
// every rejection (device type and id, dtype code / bits / lanes, ndim,
// negative extent, NULL shape or data, byte_offset, layout), each checked for
// the field and the value in its message. The DLManagedTensorVersioned
// overload (read-only flag, major version) is compiled and tested only where
// the installed header has it (DLPACK_MAJOR_VERSION >= 1; not Debian 12's 0.6).
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "ktsa/interop/dlpack.hpp"

using namespace ktsa;
using Catch::Matchers::Contains;

// The exception's type, then its message.
#define KTSA_CHECK_THROWS(expr, type, matcher) \
  do {                                         \
    CHECK_THROWS_AS(expr, type);               \
    CHECK_THROWS_WITH(expr, matcher);          \
  } while (0)

namespace {

struct holder {
  std::vector<float> data;
  std::vector<std::int64_t> shape, strides;
  DLTensor t{};
  holder(std::vector<std::int64_t> s, std::vector<std::int64_t> st = {}) : shape(s), strides(st) {
    std::int64_t n = 1;
    for (auto e : shape) n *= e;
    data.resize(static_cast<size_t>(n > 0 ? n * 4 : 0));  // room for strided layouts
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i);
    t.data = data.empty() ? nullptr : data.data();
    t.device = {kDLCPU, 0};
    t.ndim = static_cast<int>(shape.size());
    t.dtype = {kDLFloat, 32, 1};
    t.shape = shape.data();
    t.strides = strides.empty() ? nullptr : strides.data();
    t.byte_offset = 0;
  }
};

}  // namespace

TEST_CASE("dlpack: NULL strides mean compact row-major", "[interop][dlpack]") {
  holder h({2, 3, 4});
  auto v = interop::from_dlpack<const float, 3>(h.t, "logits");
  CHECK(v.data() == h.data.data());
  CHECK(v.stride(0) == 12);
  CHECK(v.stride(1) == 4);
  CHECK(v.stride(2) == 1);
  CHECK(v(1, 2, 3) == 23.0f);
  DLManagedTensor m{h.t, nullptr, nullptr};
  auto vm = interop::from_dlpack<float, 3>(m, "logits");
  vm(0, 0, 1) = -1;  // writes land in the producer's memory
  CHECK(h.data[1] == -1.0f);
}

TEST_CASE("dlpack: explicit strides, byte_offset and extent-1 dimensions", "[interop][dlpack]") {
  holder h({3, 2}, {1, 3});  // a transposed 2 x 3
  auto v = interop::from_dlpack<const float, 2>(h.t);
  CHECK(v(2, 1) == 5.0f);
  CHECK(v(1, 0) == 1.0f);
  h.t.byte_offset = 2 * sizeof(float);
  auto vo = interop::from_dlpack<const float, 2>(h.t);
  CHECK(vo.data() == h.data.data() + 2);
  CHECK(vo(0, 0) == 2.0f);
  // Extent-1 dimensions may carry any stride (torch writes 1, others 0 or
  // garbage): contiguity ignores them.
  holder g({1, 4, 1}, {12345, 1, -7});
  interop::dlpack_expect ex;
  ex.required_layout = interop::layout::contiguous;
  auto vg = interop::from_dlpack<const float, 3>(g.t, "x", ex);
  CHECK(vg(0, 3, 0) == 3.0f);
  ex.required_layout = interop::layout::rows_contiguous;
  holder col({4, 1}, {5, 3});  // one column: its stride is never stepped along
  CHECK_NOTHROW(interop::from_dlpack<const float, 2>(col.t, "x", ex));
}

TEST_CASE("dlpack: every dtype ktsa takes", "[interop][dlpack]") {
  holder h({4});
  h.t.dtype = {kDLFloat, 16, 1};
  CHECK(interop::from_dlpack<const f16, 1>(h.t).extent(0) == 4);
  h.t.dtype = {kDLBfloat, 16, 1};
  CHECK(interop::from_dlpack<const bf16, 1>(h.t).extent(0) == 4);
  h.t.dtype = {kDLFloat, 64, 1};
  CHECK(interop::from_dlpack<const double, 1>(h.t).extent(0) == 4);
  h.t.dtype = {kDLInt, 64, 1};
  CHECK(interop::from_dlpack<const std::int64_t, 1>(h.t).extent(0) == 4);
  h.t.dtype = {kDLInt, 32, 1};
  CHECK(interop::from_dlpack<const std::int32_t, 1>(h.t).extent(0) == 4);
  h.t.dtype = {kDLUInt, 8, 1};
  CHECK(interop::from_dlpack<const std::uint8_t, 1>(h.t).extent(0) == 4);
}

TEST_CASE("dlpack: rejections name the field and the value", "[interop][dlpack]") {
  using interop::from_dlpack;
  {
    holder h({2, 3});
    h.t.device = {kDLCUDA, 1};
    KTSA_CHECK_THROWS((from_dlpack<const float, 2>(h.t, "logits")), invalid_argument,
                      Contains("'logits'") && Contains("'device.device_type' = 2 (kDLCUDA)") &&
                          Contains("expected 1 (kDLCPU)"));
    interop::dlpack_expect cuda0{kDLCUDA, 0};
    KTSA_CHECK_THROWS((from_dlpack<const float, 2>(h.t, "logits", cuda0)), invalid_argument,
                      Contains("'device.device_id' = 1") && Contains("expected device 0"));
    interop::dlpack_expect cuda_any{kDLCUDA};
    CHECK_NOTHROW(from_dlpack<const float, 2>(h.t, "logits", cuda_any));
    h.t.device = {kDLCUDAHost, 0};  // pinned host memory reads from the host
    CHECK_NOTHROW(from_dlpack<const float, 2>(h.t, "logits"));
  }
  {
    holder h({2, 3});
    KTSA_CHECK_THROWS((from_dlpack<const double, 2>(h.t, "x")), invalid_argument,
                      Contains("'dtype.bits' = 32") && Contains("expected 64"));
    KTSA_CHECK_THROWS(
        (from_dlpack<const bf16, 2>(h.t, "x")), invalid_argument,
        Contains("'dtype.code' = 2 (kDLFloat)") && Contains("expected 4 (kDLBfloat)"));
    KTSA_CHECK_THROWS(
        (from_dlpack<const std::int32_t, 2>(h.t, "labels")), invalid_argument,
        Contains("'labels'") && Contains("'dtype.code' = 2") && Contains("expected 0 (kDLInt)"));
    h.t.dtype.lanes = 4;
    KTSA_CHECK_THROWS((from_dlpack<const float, 2>(h.t, "x")), invalid_argument,
                      Contains("'dtype.lanes' = 4") && Contains("must be 1"));
  }
  {
    holder h({2, 3});
    KTSA_CHECK_THROWS((from_dlpack<const float, 3>(h.t, "x")), invalid_argument,
                      Contains("'ndim' = 2") && Contains("expected 3"));
    h.shape[1] = -3;
    KTSA_CHECK_THROWS((from_dlpack<const float, 2>(h.t, "x")), invalid_argument,
                      Contains("'shape' = -3 in dimension 1"));
    h.t.shape = nullptr;
    KTSA_CHECK_THROWS((from_dlpack<const float, 2>(h.t, "x")), invalid_argument,
                      Contains("'shape' = NULL"));
  }
  {
    holder h({2, 3});
    h.t.byte_offset = 6;
    KTSA_CHECK_THROWS((from_dlpack<const float, 2>(h.t, "x")), invalid_argument,
                      Contains("'byte_offset' = 6") && Contains("multiple of the element size 4"));
    h.t.byte_offset = 0;
    h.t.data = nullptr;
    KTSA_CHECK_THROWS((from_dlpack<const float, 2>(h.t, "x")), invalid_argument,
                      Contains("'data' = NULL") && Contains("6 elements"));
    holder empty({0, 3});  // an empty tensor may have no data
    CHECK(from_dlpack<const float, 2>(empty.t, "x").size() == 0);
  }
  {
    interop::dlpack_expect rows;
    rows.required_layout = interop::layout::rows_contiguous;
    holder h({3, 2}, {1, 3});
    KTSA_CHECK_THROWS((from_dlpack<const float, 2>(h.t, "logits", rows)), invalid_argument,
                      Contains("'strides' = 3 in dimension 1") && Contains("stride 1"));
    interop::dlpack_expect compact;
    compact.required_layout = interop::layout::contiguous;
    holder p({2, 3}, {4, 1});  // padded rows: rows contiguous, the tensor not
    CHECK_NOTHROW(from_dlpack<const float, 2>(p.t, "x", rows));
    KTSA_CHECK_THROWS(
        (from_dlpack<const float, 2>(p.t, "x", compact)), invalid_argument,
        Contains("'strides' = 4 in dimension 0") && Contains("compact row-major needs 3"));
  }
}

#if KTSA_DLPACK_HAS_VERSIONED
TEST_CASE("dlpack: versioned tensors: read-only flag and major version", "[interop][dlpack]") {
  holder h({2, 2});
  DLManagedTensorVersioned m{};
  m.version = {DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION};
  m.dl_tensor = h.t;
  m.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
  CHECK(interop::from_dlpack<const float, 2>(m, "x")(1, 1) == 3.0f);
  KTSA_CHECK_THROWS((interop::from_dlpack<float, 2>(m, "x")), invalid_argument,
                    Contains("'flags' = 1") && Contains("read-only"));
  m.flags = 0;
  CHECK_NOTHROW(interop::from_dlpack<float, 2>(m, "x"));
  m.version.major = DLPACK_MAJOR_VERSION + 1;
  KTSA_CHECK_THROWS((interop::from_dlpack<const float, 2>(m, "x")), invalid_argument,
                    Contains("'version.major'"));
}
#else
TEST_CASE("dlpack: the installed header has no versioned tensors", "[interop][dlpack]") {
  // Debian 12's libdlpack-dev is 0.6: the versioned overload is not compiled.
  CHECK(DLPACK_VERSION < 100);
}
#endif
