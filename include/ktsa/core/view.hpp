// ktsa/core/view.hpp: non-owning strided views of rank 1 to 3.
//
// A view is a pointer, a shape and strides counted in elements (not bytes),
// all 64-bit, so a caller's tensor is used where it lies. const-correctness
// follows the element type: tensor_view<const float, 2> reads, and a
// tensor_view<float, 2> converts to it implicitly.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "ktsa/config.hpp"
#include "ktsa/core/errors.hpp"

namespace ktsa {

using index_t = std::int64_t;

template <class T, int Rank>
class tensor_view {
  static_assert(Rank >= 1 && Rank <= 3, "ktsa views have rank 1 to 3");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  static constexpr int rank = Rank;

  constexpr tensor_view() = default;

  /// Strided view: strides in elements, may be any value (including 0).
  KTSA_HOST_DEVICE constexpr tensor_view(T* data, const index_t (&shape)[Rank],
                                         const index_t (&strides)[Rank])
      : data_(data) {
    for (int d = 0; d < Rank; ++d) {
      shape_[d] = shape[d];
      strides_[d] = strides[d];
    }
  }

  /// Contiguous row-major view. (Strides are formed modulo 2^64, so absurd
  /// shapes are no undefined behaviour here; every kernel checks shape x
  /// stride x element size before it touches memory.)
  KTSA_HOST_DEVICE constexpr tensor_view(T* data, const index_t (&shape)[Rank]) : data_(data) {
    std::uint64_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      shape_[d] = shape[d];
      strides_[d] = static_cast<index_t>(s);
      s *= static_cast<std::uint64_t>(shape[d]);
    }
  }

  /// A mutable view converts to a read-only one.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_const_v<U>>>
  KTSA_HOST_DEVICE constexpr tensor_view(const tensor_view<U, Rank>& other) : data_(other.data()) {
    for (int d = 0; d < Rank; ++d) {
      shape_[d] = other.extent(d);
      strides_[d] = other.stride(d);
    }
  }

  KTSA_HOST_DEVICE constexpr T* data() const { return data_; }
  KTSA_HOST_DEVICE constexpr index_t extent(int d) const { return shape_[d]; }
  KTSA_HOST_DEVICE constexpr index_t stride(int d) const { return strides_[d]; }
  /// Product of the extents (modulo 2^64 when it does not fit; the kernels
  /// use a checked count, kernels::detail::checked_size).
  KTSA_HOST_DEVICE constexpr index_t size() const {
    std::uint64_t n = 1;
    for (int d = 0; d < Rank; ++d) n *= static_cast<std::uint64_t>(shape_[d]);
    return static_cast<index_t>(n);
  }
  KTSA_HOST_DEVICE constexpr bool empty() const { return size() == 0; }
  KTSA_HOST_DEVICE constexpr bool is_contiguous() const {
    std::uint64_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      if (shape_[d] != 1 && static_cast<std::uint64_t>(strides_[d]) != s) return false;
      s *= static_cast<std::uint64_t>(shape_[d]);
    }
    return true;
  }

  template <class... I>
  KTSA_HOST_DEVICE constexpr T& operator()(I... i) const {
    static_assert(sizeof...(I) == Rank, "one index per dimension");
    const index_t idx[Rank] = {static_cast<index_t>(i)...};
    index_t off = 0;
    for (int d = 0; d < Rank; ++d) off += idx[d] * strides_[d];
    return data_[off];
  }
  KTSA_HOST_DEVICE constexpr T& operator[](index_t i) const {
    static_assert(Rank == 1, "operator[] is for rank-1 views");
    return data_[i * strides_[0]];
  }

  /// The sub-view at index i of the first dimension (rank - 1).
  template <int R = Rank, class = std::enable_if_t<(R > 1)>>
  KTSA_HOST_DEVICE constexpr tensor_view<T, Rank - 1> operator[](index_t i) const {
    tensor_view<T, Rank - 1> v;
    v.data_ = data_ + i * strides_[0];
    for (int d = 1; d < Rank; ++d) {
      v.shape_[d - 1] = shape_[d];
      v.strides_[d - 1] = strides_[d];
    }
    return v;
  }

 private:
  template <class, int>
  friend class tensor_view;
  T* data_ = nullptr;
  index_t shape_[Rank] = {};
  index_t strides_[Rank] = {};
};

template <class T>
using vector_view = tensor_view<T, 1>;
template <class T>
using matrix_view = tensor_view<T, 2>;
template <class T>
using cube_view = tensor_view<T, 3>;

/// Contiguous rank-1 view of n elements.
template <class T>
KTSA_HOST_DEVICE constexpr vector_view<T> make_view(T* data, index_t n) {
  return vector_view<T>(data, {n});
}
/// Contiguous row-major view of rows x cols.
template <class T>
KTSA_HOST_DEVICE constexpr matrix_view<T> make_view(T* data, index_t rows, index_t cols) {
  return matrix_view<T>(data, {rows, cols});
}
/// Contiguous row-major view of d0 x d1 x d2.
template <class T>
KTSA_HOST_DEVICE constexpr cube_view<T> make_view(T* data, index_t d0, index_t d1, index_t d2) {
  return cube_view<T>(data, {d0, d1, d2});
}
/// A std::vector as a rank-1 view (mutable or const as the vector is).
template <class T, class A>
vector_view<T> make_view(std::vector<T, A>& v) {
  return make_view(v.data(), static_cast<index_t>(v.size()));
}
template <class T, class A>
vector_view<const T> make_view(const std::vector<T, A>& v) {
  return make_view(v.data(), static_cast<index_t>(v.size()));
}

namespace detail {
/// Checks that a view has the expected extent in dimension d; names the argument.
template <class View>
void require_extent(const View& v, int d, index_t expected, const char* name) {
  if (v.extent(d) != expected)
    fail_shape(concat("'", name, "' has extent ", v.extent(d), " in dimension ", d, ", expected ",
                      expected));
}
}  // namespace detail

}  // namespace ktsa
