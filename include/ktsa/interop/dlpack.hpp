// ktsa/interop/dlpack.hpp: DLPack tensors (DLTensor, DLManagedTensor and,
// where the header has it, DLManagedTensorVersioned) as ktsa views. No
// copies; the producer keeps ownership (ktsa never calls the deleter).
//
//   DLManagedTensor* t = ...;  // torch.utils.dlpack.to_dlpack, CuPy, JAX, ...
//   auto logits = ktsa::interop::from_dlpack<const float, 3>(*t, "logits");
//   auto labels = ktsa::interop::from_dlpack<const std::int64_t, 2>(*t2, "labels");
//
// Checked, each failure naming the argument, the field and the value:
//   device      device_type must be the expected one (kDLCPU by default;
//               kDLCUDA for exec::cuda); device_id too when the expectation gives
//               one (>= 0). kDLCUDAHost and kDLCUDAManaged memory is readable
//               from the host and accepted when kDLCPU is expected.
//   dtype       code and bits match T (float 16/32/64, bfloat 16, int 8..64,
//               uint 8..64), lanes must be 1.
//   ndim        equals Rank; no extent is negative.
//   data        not null unless the tensor is empty; byte_offset a multiple of
//               the element size (the element is data + byte_offset).
//   strides     NULL means compact row-major. With layout::rows_contiguous the
//               last dimension must have stride 1, with layout::contiguous the
//               whole tensor must be compact row-major; either check ignores the
//               stride of a dimension of extent 1 (it is never stepped along, and
//               producers write anything there).
//   read-only   a DLManagedTensorVersioned flagged DLPACK_FLAG_BITMASK_READ_ONLY
//               only gives a view of const; its major version must be the
//               header's (DLPACK_MAJOR_VERSION).
// Debian 12's libdlpack-dev is 0.6, which has no versioned struct: that
// overload is compiled only where DLPACK_MAJOR_VERSION >= 1.
#pragma once

#include <cstdint>
#include <type_traits>

#include <dlpack/dlpack.h>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/half.hpp"
#include "ktsa/core/view.hpp"

#if defined(DLPACK_MAJOR_VERSION) && DLPACK_MAJOR_VERSION >= 1
#define KTSA_DLPACK_HAS_VERSIONED 1
#else
#define KTSA_DLPACK_HAS_VERSIONED 0
#endif

namespace ktsa::interop {

/// What a caller requires of the memory layout beyond what a view can express.
enum class layout {
  any,              ///< any strides
  rows_contiguous,  ///< the last dimension has stride 1 (logits rows, for the kernels)
  contiguous        ///< compact row-major
};

struct dlpack_expect {
  DLDeviceType device_type = kDLCPU;
  int device_id = -1;  ///< -1: any device of that type
  layout required_layout = layout::any;
};

namespace detail {

inline const char* device_type_name(int t) {
  switch (t) {
    case kDLCPU:
      return "kDLCPU";
    case kDLCUDA:
      return "kDLCUDA";
    case kDLCUDAHost:
      return "kDLCUDAHost";
    case kDLOpenCL:
      return "kDLOpenCL";
    case kDLVulkan:
      return "kDLVulkan";
    case kDLMetal:
      return "kDLMetal";
    case kDLVPI:
      return "kDLVPI";
    case kDLROCM:
      return "kDLROCM";
    case kDLROCMHost:
      return "kDLROCMHost";
    case kDLExtDev:
      return "kDLExtDev";
    case kDLCUDAManaged:
      return "kDLCUDAManaged";
    default:
      return "unknown device type";
  }
}

/// The (code, bits) DLPack uses for T.
template <class T>
struct dl_dtype_of {
  static_assert(sizeof(T) == 0,
                "ktsa::interop::from_dlpack: T must be float, double, ktsa::f16, ktsa::bf16 or a "
                "fixed-width integer");
};
template <>
struct dl_dtype_of<float> {
  static constexpr std::uint8_t code = kDLFloat, bits = 32;
};
template <>
struct dl_dtype_of<double> {
  static constexpr std::uint8_t code = kDLFloat, bits = 64;
};
template <>
struct dl_dtype_of<f16> {
  static constexpr std::uint8_t code = kDLFloat, bits = 16;
};
template <>
struct dl_dtype_of<bf16> {
  static constexpr std::uint8_t code = kDLBfloat, bits = 16;
};
#define KTSA_DL_INT(T, c)                                         \
  template <>                                                     \
  struct dl_dtype_of<T> {                                         \
    static constexpr std::uint8_t code = c, bits = 8 * sizeof(T); \
  };
KTSA_DL_INT(std::int8_t, kDLInt)
KTSA_DL_INT(std::int16_t, kDLInt)
KTSA_DL_INT(std::int32_t, kDLInt)
KTSA_DL_INT(std::int64_t, kDLInt)
KTSA_DL_INT(std::uint8_t, kDLUInt)
KTSA_DL_INT(std::uint16_t, kDLUInt)
KTSA_DL_INT(std::uint32_t, kDLUInt)
KTSA_DL_INT(std::uint64_t, kDLUInt)
#undef KTSA_DL_INT

inline const char* dtype_code_name(int code) {
  switch (code) {
    case kDLInt:
      return "kDLInt";
    case kDLUInt:
      return "kDLUInt";
    case kDLFloat:
      return "kDLFloat";
    case kDLOpaqueHandle:
      return "kDLOpaqueHandle";
    case kDLBfloat:
      return "kDLBfloat";
    case kDLComplex:
      return "kDLComplex";
    default:
      return "other";
  }
}

[[noreturn]] inline void fail_field(const char* name, const char* field, const std::string& value,
                                    const std::string& requirement) {
  throw invalid_argument(ktsa::detail::concat("ktsa: argument '", name, "' (DLPack) field '", field,
                                              "' = ", value, ": ", requirement));
}

inline bool host_readable(int t) {
  return t == kDLCPU || t == kDLCUDAHost || t == kDLCUDAManaged || t == kDLROCMHost;
}

template <class T, int Rank>
tensor_view<T, Rank> view_of(const DLTensor& t, const char* name, const dlpack_expect& ex) {
  using ktsa::detail::concat;
  using U = std::remove_cv_t<T>;
  const int dev = t.device.device_type;
  const bool device_ok = dev == ex.device_type || (ex.device_type == kDLCPU && host_readable(dev));
  if (!device_ok)
    fail_field(name, "device.device_type", concat(dev, " (", device_type_name(dev), ")"),
               concat("expected ", static_cast<int>(ex.device_type), " (",
                      device_type_name(ex.device_type), ")"));
  if (ex.device_id >= 0 && t.device.device_id != ex.device_id)
    fail_field(name, "device.device_id", concat(t.device.device_id),
               concat("expected device ", ex.device_id));
  constexpr std::uint8_t want_code = dl_dtype_of<U>::code, want_bits = dl_dtype_of<U>::bits;
  if (t.dtype.code != want_code)
    fail_field(
        name, "dtype.code",
        concat(static_cast<int>(t.dtype.code), " (", dtype_code_name(t.dtype.code), ")"),
        concat("expected ", static_cast<int>(want_code), " (", dtype_code_name(want_code), ")"));
  if (t.dtype.bits != want_bits)
    fail_field(name, "dtype.bits", concat(static_cast<int>(t.dtype.bits)),
               concat("expected ", static_cast<int>(want_bits)));
  if (t.dtype.lanes != 1)
    fail_field(name, "dtype.lanes", concat(t.dtype.lanes),
               "must be 1 (vector lanes are not taken)");
  if (t.ndim != Rank) fail_field(name, "ndim", concat(t.ndim), concat("expected ", Rank));
  if (t.shape == nullptr) fail_field(name, "shape", "NULL", "must point at ndim extents");
  index_t shape[Rank], strides[Rank];
  index_t size = 1;
  for (int d = 0; d < Rank; ++d) {
    shape[d] = t.shape[d];
    if (shape[d] < 0)
      fail_field(name, "shape", concat(shape[d], " in dimension ", d), "extents must be >= 0");
    size *= shape[d];
  }
  if (t.strides == nullptr) {
    index_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      strides[d] = s;
      s *= shape[d];
    }
  } else {
    for (int d = 0; d < Rank; ++d) strides[d] = t.strides[d];
  }
  if (ex.required_layout == layout::rows_contiguous && shape[Rank - 1] > 1 &&
      strides[Rank - 1] != 1)
    fail_field(name, "strides", concat(strides[Rank - 1], " in dimension ", Rank - 1),
               "the last dimension must have stride 1 (rows contiguous)");
  if (ex.required_layout == layout::contiguous) {
    index_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      if (shape[d] != 1 && strides[d] != s)
        fail_field(name, "strides", concat(strides[d], " in dimension ", d),
                   concat("compact row-major needs ", s, " (extent-1 dimensions are ignored)"));
      s *= shape[d];
    }
  }
  if (t.byte_offset % sizeof(U) != 0)
    fail_field(name, "byte_offset", concat(t.byte_offset),
               concat("must be a multiple of the element size ", sizeof(U)));
  if (t.data == nullptr && size > 0)
    fail_field(name, "data", "NULL", concat("the tensor has ", size, " elements"));
  auto* base = static_cast<char*>(t.data);
  T* p = t.data == nullptr ? nullptr : reinterpret_cast<T*>(base + t.byte_offset);
  return tensor_view<T, Rank>(p, shape, strides);
}

}  // namespace detail

/// A rank-`Rank` view of element type T (const T to read) of a DLTensor.
template <class T, int Rank>
tensor_view<T, Rank> from_dlpack(const DLTensor& t, const char* name = "tensor",
                                 const dlpack_expect& expect = {}) {
  return detail::view_of<T, Rank>(t, name, expect);
}

/// The same for a DLManagedTensor (the legacy, unversioned capsule content).
template <class T, int Rank>
tensor_view<T, Rank> from_dlpack(const DLManagedTensor& t, const char* name = "tensor",
                                 const dlpack_expect& expect = {}) {
  return detail::view_of<T, Rank>(t.dl_tensor, name, expect);
}

#if KTSA_DLPACK_HAS_VERSIONED
/// A DLManagedTensorVersioned: its major version must be the header's, and a
/// read-only tensor gives only a view of const.
template <class T, int Rank>
tensor_view<T, Rank> from_dlpack(const DLManagedTensorVersioned& t, const char* name = "tensor",
                                 const dlpack_expect& expect = {}) {
  using ktsa::detail::concat;
  if (t.version.major != DLPACK_MAJOR_VERSION)
    detail::fail_field(name, "version.major", concat(t.version.major),
                       concat("this build reads DLPack major version ", DLPACK_MAJOR_VERSION));
  if (!std::is_const_v<T> && (t.flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0)
    detail::fail_field(name, "flags", concat(t.flags),
                       "the tensor is read-only (DLPACK_FLAG_BITMASK_READ_ONLY): ask for a view "
                       "of const T");
  return detail::view_of<T, Rank>(t.dl_tensor, name, expect);
}
#endif

}  // namespace ktsa::interop
