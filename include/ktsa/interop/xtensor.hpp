// ktsa/interop/xtensor.hpp: xtensor containers, adapted buffers and strided
// views as ktsa views, with their strides. No copies.
//
//   xt::xtensor<float, 3> logits({B, T, V});
//   auto v = ktsa::interop::as_view<3>(logits);           // cube_view<float>
//   auto s = ktsa::interop::as_view<2>(xt::view(m, xt::range(0, 4), xt::all()));
//
// Taken: xt::xarray, xt::xtensor, xt::xtensor_fixed, xt::adapt(...) of a
// buffer, and views that keep a data interface (xt::view with integers,
// ranges (any step) and all(), xt::strided_view, transposes of containers).
// Rejected at compile time: expressions without storage (a + b, xt::exp(a),
// views of expressions): evaluate them first (xt::eval). The rank is checked
// at run time (shape_error naming `name`). A const container or view gives a
// view of const. Strides of size-1 dimensions, which xtensor sets to 0, are
// taken as they are (a view never steps along them).
//
// Debian 12 ships xtensor 0.24 (headers in <xtensor/...>); 0.26 moved them
// into subfolders (<xtensor/utils/...>): both layouts are found here.
#pragma once

#include <type_traits>
#include <utility>

#if __has_include(<xtensor/utils/xutils.hpp>)
#include <xtensor/core/xexpression.hpp>
#include <xtensor/utils/xutils.hpp>
#elif __has_include(<xtensor/xutils.hpp>)
#include <xtensor/xexpression.hpp>
#include <xtensor/xutils.hpp>
#else
#error "ktsa/interop/xtensor.hpp: xtensor headers not found (neither the 0.26 nor the 0.24 layout)"
#endif

#include "ktsa/core/errors.hpp"
#include "ktsa/core/view.hpp"

namespace ktsa::interop {

namespace detail {

template <class E, class = void>
struct xt_has_offset : std::false_type {};
template <class E>
struct xt_has_offset<E, std::void_t<decltype(std::declval<E&>().data_offset())>> : std::true_type {
};

}  // namespace detail

/// A rank-`Rank` ktsa view of an xtensor expression with storage.
template <int Rank, class E>
auto as_view(E&& e, const char* name = "tensor") {
  using X = std::remove_reference_t<E>;
  static_assert(xt::is_xexpression<std::decay_t<E>>::value,
                "ktsa::interop::as_view<Rank>: not an xtensor expression");
  static_assert(xt::has_data_interface<X&>::value,
                "ktsa::interop::as_view<Rank>: this xtensor expression has no storage (a "
                "function of tensors, or a view of one); a ktsa view needs memory to point at: "
                "evaluate it first (xt::eval)");
  using P = decltype(std::declval<X&>().data());
  using T = std::remove_pointer_t<P>;
  static_assert(std::is_arithmetic_v<std::remove_cv_t<T>>,
                "ktsa::interop::as_view<Rank>: the value type must be an arithmetic type");
  const index_t dim = static_cast<index_t>(e.dimension());
  if (dim != Rank)
    ktsa::detail::fail_shape(
        ktsa::detail::concat("'", name, "' has ", dim, " dimensions, expected ", Rank));
  index_t shape[Rank], strides[Rank];
  for (int d = 0; d < Rank; ++d) {
    shape[d] = static_cast<index_t>(e.shape()[static_cast<size_t>(d)]);
    strides[d] = static_cast<index_t>(e.strides()[static_cast<size_t>(d)]);
  }
  T* p = e.data();
  if constexpr (detail::xt_has_offset<X>::value) p += static_cast<index_t>(e.data_offset());
  return tensor_view<T, Rank>(p, shape, strides);
}

}  // namespace ktsa::interop
