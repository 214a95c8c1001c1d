// xtensor adapter: containers, adapted buffers and strided views are read
// through the ktsa view element by element against xtensor's own operator();
// strides (negative steps, transposes, column-major) are honoured; writes land
// in the xtensor storage; the rank check throws naming the argument.
// Expressions without storage fail to compile (compile_fail tests in
// tests/interop/CMakeLists.txt). Built against the installed xtensor (Debian
// 12: 0.24, the old header layout).
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#if __has_include(<xtensor/containers/xarray.hpp>)
#include <xtensor/containers/xadapt.hpp>
#include <xtensor/containers/xarray.hpp>
#include <xtensor/containers/xtensor.hpp>
#include <xtensor/views/xstrided_view.hpp>
#include <xtensor/views/xview.hpp>
#else
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xstrided_view.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#endif

#include "ktsa/interop/xtensor.hpp"
#include "ktsa/kernels/token_kl.hpp"

using namespace ktsa;
using Catch::Matchers::Contains;

// The exception's type, then its message.
#define KTSA_CHECK_THROWS(expr, type, matcher) \
  do {                                         \
    CHECK_THROWS_AS(expr, type);               \
    CHECK_THROWS_WITH(expr, matcher);          \
  } while (0)

namespace {

template <class V, class E>
void require_same2(const V& v, const E& e) {
  REQUIRE(v.extent(0) == static_cast<index_t>(e.shape()[0]));
  REQUIRE(v.extent(1) == static_cast<index_t>(e.shape()[1]));
  for (index_t i = 0; i < v.extent(0); ++i)
    for (index_t j = 0; j < v.extent(1); ++j)
      REQUIRE(v(i, j) == e(static_cast<size_t>(i), static_cast<size_t>(j)));
}

xt::xtensor<double, 2> numbered(size_t r, size_t c) {
  xt::xtensor<double, 2> a({r, c});
  for (size_t i = 0; i < r; ++i)
    for (size_t j = 0; j < c; ++j)
      a(i, j) = 100.0 * static_cast<double>(i) + static_cast<double>(j);
  return a;
}

}  // namespace

TEST_CASE("xtensor: containers (row- and column-major) keep their strides", "[interop][xtensor]") {
  xt::xtensor<double, 2> a = numbered(3, 4);
  auto v = interop::as_view<2>(a);
  static_assert(std::is_same_v<decltype(v), matrix_view<double>>);
  CHECK(v.stride(0) == 4);
  CHECK(v.stride(1) == 1);
  require_same2(v, a);
  v(1, 2) = -7;
  CHECK(a(1, 2) == -7);
  xt::xtensor<double, 2, xt::layout_type::column_major> cm = a;
  auto vc = interop::as_view<2>(cm);
  CHECK(vc.stride(0) == 1);
  CHECK(vc.stride(1) == 3);
  require_same2(vc, cm);
  xt::xarray<float> dyn = xt::xarray<float>::from_shape({2, 3, 4});
  for (size_t i = 0; i < dyn.size(); ++i) dyn.data()[i] = static_cast<float>(i);
  auto v3 = interop::as_view<3>(dyn);
  CHECK(v3(1, 2, 3) == dyn(1, 2, 3));
  CHECK(v3.stride(0) == 12);
  const xt::xarray<float>& cdyn = dyn;
  auto cv = interop::as_view<3>(cdyn);
  static_assert(std::is_same_v<decltype(cv), cube_view<const float>>);
  CHECK(cv(0, 1, 2) == 6.0f);
}

TEST_CASE("xtensor: adapted buffers and strided views", "[interop][xtensor]") {
  std::vector<std::int64_t> buf(24);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<std::int64_t>(i);
  std::vector<size_t> shape{4, 6};
  auto adapted = xt::adapt(buf, shape);
  auto va = interop::as_view<2>(adapted);
  CHECK(va.data() == buf.data());
  require_same2(va, adapted);
  // Rows 1..3, every other column from 1: offset and strides from the view.
  auto sub = xt::view(adapted, xt::range(1, 4), xt::range(1, 6, 2));
  auto vs = interop::as_view<2>(sub);
  CHECK(vs.stride(1) == 2);
  CHECK(vs.data() == buf.data() + 7);
  require_same2(vs, sub);
  // A negative step.
  auto rev = xt::view(adapted, xt::all(), xt::range(5, xt::placeholders::_, -1));
  auto vrev = interop::as_view<2>(rev);
  CHECK(vrev.stride(1) == -1);
  require_same2(vrev, rev);
  // An integer index drops a dimension.
  auto row = xt::view(adapted, 2, xt::all());
  auto vrow = interop::as_view<1>(row);
  for (index_t j = 0; j < 6; ++j) CHECK(vrow[j] == buf[static_cast<size_t>(12 + j)]);
  // Transposed container.
  xt::xtensor<double, 2> a = numbered(3, 5);
  auto t = xt::transpose(a);
  auto vt = interop::as_view<2>(t);
  CHECK(vt.stride(0) == 1);
  CHECK(vt.stride(1) == 5);
  require_same2(vt, t);
  // strided_view with a dynamic slice vector.
  auto sv = xt::strided_view(a, {xt::range(0, 3, 2), xt::all()});
  require_same2(interop::as_view<2>(sv), sv);
}

TEST_CASE("xtensor: size-1 dimensions (stride 0 in xtensor) read correctly", "[interop][xtensor]") {
  xt::xtensor<float, 3> a({1, 3, 1});
  a(0, 0, 0) = 1;
  a(0, 1, 0) = 2;
  a(0, 2, 0) = 3;
  auto v = interop::as_view<3>(a);
  CHECK(v(0, 2, 0) == 3.0f);
  CHECK(v.extent(1) == 3);
}

TEST_CASE("xtensor: rank mismatch names the argument", "[interop][xtensor]") {
  xt::xarray<double> a = xt::xarray<double>::from_shape({2, 3});
  KTSA_CHECK_THROWS(interop::as_view<3>(a, "logits"), shape_error,
                    Contains("'logits' has 2 dimensions, expected 3"));
}

TEST_CASE("xtensor: a [B, T, V] xtensor feeds the token-KL kernel", "[interop][xtensor]") {
  xt::xtensor<float, 3> p({1, 2, 3}), q({1, 2, 3});
  const float pv[] = {0.5f, -1, 2, 0, 0, 0}, qv[] = {1, 1, 1, 3, -2, 0.25f};
  std::copy(pv, pv + 6, p.data());
  std::copy(qv, qv + 6, q.data());
  xt::xtensor<std::int32_t, 2> labels({1, 2});
  labels.fill(0);
  double seq = 0;
  kernels::token_kl_forward(exec::host{}, interop::as_view<3>(p), interop::as_view<3>(q),
                            interop::as_view<2>(labels), make_view(&seq, 1));
  double expected = 0;  // KL(softmax(p) || softmax(q)) per row in fp64, summed
  for (int t = 0; t < 2; ++t) {
    double zp = 0, zq = 0;
    for (int j = 0; j < 3; ++j) {
      zp += std::exp(static_cast<double>(pv[3 * t + j]));
      zq += std::exp(static_cast<double>(qv[3 * t + j]));
    }
    for (int j = 0; j < 3; ++j) {
      const double lp = pv[3 * t + j] - std::log(zp), lq = qv[3 * t + j] - std::log(zq);
      expected += std::exp(lp) * (lp - lq);
    }
  }
  CHECK(seq == Approx(expected).epsilon(1e-6));
}
