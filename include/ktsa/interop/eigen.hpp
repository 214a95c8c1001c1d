// ktsa/interop/eigen.hpp: Eigen matrices, maps, refs and blocks as ktsa views,
// and ktsa views as Eigen maps. No copies: a view points at the Eigen storage.
//
//   Eigen::MatrixXf logits(N, V);               // column-major
//   auto v = ktsa::interop::as_view(logits);    // matrix_view<float>, strides {1, N}
//   auto r = ktsa::interop::as_row_view(rm, "logits");  // rows contiguous, or shape_error
//   auto m = ktsa::interop::to_eigen(v);        // Eigen::Map with the view's strides
//
// Anything with direct access (Matrix, Array, Map, Ref, Block of those, const
// or not, row- or column-major, any inner and outer stride) is taken; an
// expression (a + b, a.transpose() * b) is a compile-time error, since it has
// no storage to point at: evaluate it into a matrix first. A view of a
// temporary matrix would dangle and does not compile either. A read-only
// Eigen object (const, Map<const ...>, Ref<const ...>) gives a view of const.
// Eigen's own half types are not mapped (ktsa::f16 is a different type).
#pragma once

#include <type_traits>

#include <Eigen/Core>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/view.hpp"

namespace ktsa::interop {

namespace detail {

template <class Derived>
inline constexpr bool eigen_direct_access_v = (int(Eigen::internal::traits<Derived>::Flags) &
                                               Eigen::DirectAccessBit) != 0;

template <class Derived>
inline constexpr bool eigen_writable_v = (int(Eigen::internal::traits<Derived>::Flags) &
                                          Eigen::LvalueBit) != 0;

template <class Derived>
constexpr void check_eigen_type() {
  static_assert(eigen_direct_access_v<Derived>,
                "ktsa::interop: this Eigen object is an expression with no storage (a sum, a "
                "product, a transpose of an expression...); a ktsa view needs memory to point "
                "at: evaluate it into an Eigen::Matrix first");
  static_assert(std::is_arithmetic_v<typename Derived::Scalar>,
                "ktsa::interop: the Eigen scalar must be an arithmetic type (float, double, "
                "int32, int64, ...)");
}

template <class Derived>
using eigen_element_t = std::conditional_t<eigen_writable_v<Derived>, typename Derived::Scalar,
                                           const typename Derived::Scalar>;

template <class E, class Derived>
matrix_view<E> eigen_matrix_view(const Eigen::DenseBase<Derived>& m) {
  // data() of a read-only object is const; E restores the object's writability.
  E* p = const_cast<E*>(m.derived().data());
  return matrix_view<E>(p, {static_cast<index_t>(m.rows()), static_cast<index_t>(m.cols())},
                        {static_cast<index_t>(m.derived().rowStride()),
                         static_cast<index_t>(m.derived().colStride())});
}

template <class E, class Derived>
vector_view<E> eigen_vector_view(const Eigen::DenseBase<Derived>& m, const char* name) {
  const index_t rows = static_cast<index_t>(m.rows()), cols = static_cast<index_t>(m.cols());
  if (rows != 1 && cols != 1)
    ktsa::detail::fail_shape(ktsa::detail::concat("'", name, "' is a ", rows, " x ", cols,
                                                  " Eigen matrix: a vector view needs one row "
                                                  "or one column"));
  E* p = const_cast<E*>(m.derived().data());
  const index_t n = rows == 1 ? cols : rows;
  const index_t stride = static_cast<index_t>(cols == 1 && rows != 1 ? m.derived().rowStride()
                                                                     : m.derived().colStride());
  return vector_view<E>(p, {n}, {stride});
}

template <class T, class View>
void require_eigen_strides(const View& v, const char* name) {
  for (int d = 0; d < View::rank; ++d)
    if (v.stride(d) < 0)
      ktsa::detail::fail_argument(name, v.stride(d),
                                  "a negative stride: Eigen::Map takes strides >= 0");
}

}  // namespace detail

/// A matrix view of an Eigen object with storage (writable when the object is).
template <class Derived>
auto as_view(Eigen::DenseBase<Derived>& m) {
  detail::check_eigen_type<Derived>();
  return detail::eigen_matrix_view<detail::eigen_element_t<Derived>>(m);
}
/// A read-only matrix view of a const Eigen object.
template <class Derived>
auto as_view(const Eigen::DenseBase<Derived>& m) {
  detail::check_eigen_type<Derived>();
  return detail::eigen_matrix_view<const typename Derived::Scalar>(m);
}
/// Temporaries that are themselves views (a Block, Map or Ref returned by a
/// call) are fine; a temporary Matrix would leave the view dangling.
template <class Derived>
auto as_view(Eigen::DenseBase<Derived>&& m) {
  static_assert(!std::is_base_of_v<Eigen::PlainObjectBase<Derived>, Derived>,
                "ktsa::interop::as_view: a view of a temporary Eigen matrix would dangle: "
                "store the matrix in a variable first");
  return as_view(static_cast<Eigen::DenseBase<Derived>&>(m));
}

/// A matrix view whose rows are contiguous (column stride 1, the layout of
/// [N, V] logits): throws shape_error naming `name` and the stride otherwise.
template <class M>
auto as_row_view(M&& m, const char* name = "matrix") {
  const auto v = as_view(std::forward<M>(m));
  if (v.extent(1) > 1 && v.stride(1) != 1)
    ktsa::detail::fail_shape(ktsa::detail::concat(
        "'", name, "' has column stride ", v.stride(1),
        ": rows must be contiguous (column stride 1): use a row-major matrix, or a map or ref "
        "with inner stride 1"));
  return v;
}

/// A vector view of an Eigen vector, or of a matrix with one row or one column
/// (a row or column of a matrix keeps its stride); shape_error otherwise.
template <class Derived>
auto as_vector_view(Eigen::DenseBase<Derived>& m, const char* name = "vector") {
  detail::check_eigen_type<Derived>();
  return detail::eigen_vector_view<detail::eigen_element_t<Derived>>(m, name);
}
template <class Derived>
auto as_vector_view(const Eigen::DenseBase<Derived>& m, const char* name = "vector") {
  detail::check_eigen_type<Derived>();
  return detail::eigen_vector_view<const typename Derived::Scalar>(m, name);
}
template <class Derived>
auto as_vector_view(Eigen::DenseBase<Derived>&& m, const char* name = "vector") {
  static_assert(!std::is_base_of_v<Eigen::PlainObjectBase<Derived>, Derived>,
                "ktsa::interop::as_vector_view: a view of a temporary Eigen vector would "
                "dangle: store it in a variable first");
  return as_vector_view(static_cast<Eigen::DenseBase<Derived>&>(m), name);
}

/// The Eigen map of a ktsa matrix view: row-major with the view's strides
/// (outer = row stride, inner = column stride). Negative strides are an
/// invalid_argument naming `name`.
template <class T>
auto to_eigen(matrix_view<T> v, const char* name = "view") {
  using Scalar = std::remove_cv_t<T>;
  using Plain = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Target = std::conditional_t<std::is_const_v<T>, const Plain, Plain>;
  detail::require_eigen_strides<T>(v, name);
  return Eigen::Map<Target, Eigen::Unaligned, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>(
      v.data(), v.extent(0), v.extent(1),
      Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(v.stride(0), v.stride(1)));
}

/// The Eigen map (a column vector) of a ktsa vector view.
template <class T>
auto to_eigen(vector_view<T> v, const char* name = "view") {
  using Scalar = std::remove_cv_t<T>;
  using Plain = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Target = std::conditional_t<std::is_const_v<T>, const Plain, Plain>;
  detail::require_eigen_strides<T>(v, name);
  return Eigen::Map<Target, Eigen::Unaligned, Eigen::InnerStride<Eigen::Dynamic>>(
      v.data(), v.extent(0), Eigen::InnerStride<Eigen::Dynamic>(v.stride(0)));
}

}  // namespace ktsa::interop
