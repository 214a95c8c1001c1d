// Eigen adapter: every layout Eigen can hold (row/column-major, inner and
// outer strides, blocks, rows, columns, refs, const and not) is read through
// the ktsa view element by element against Eigen's own operator(); writes go
// through to the Eigen storage; a ktsa kernel runs on an Eigen matrix; views
// map back with to_eigen; every run-time rejection is checked. The
// compile-time rejections (expressions, temporaries) are documented in the
// header; tests/interop/CMakeLists.txt builds each one and expects a failure.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "ktsa/interop/eigen.hpp"
#include "ktsa/kernels/logprob.hpp"

using namespace ktsa;
using Catch::Matchers::Contains;

// The exception's type, then its message.
#define KTSA_CHECK_THROWS(expr, type, matcher) \
  do {                                         \
    CHECK_THROWS_AS(expr, type);               \
    CHECK_THROWS_WITH(expr, matcher);          \
  } while (0)

namespace {

template <class View, class M>
void require_same(const View& v, const M& m) {
  REQUIRE(v.extent(0) == m.rows());
  REQUIRE(v.extent(1) == m.cols());
  for (index_t i = 0; i < m.rows(); ++i)
    for (index_t j = 0; j < m.cols(); ++j) REQUIRE(v(i, j) == m(i, j));
}

Eigen::MatrixXd numbered(int rows, int cols) {
  Eigen::MatrixXd m(rows, cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) m(i, j) = 100.0 * i + j;
  return m;
}

}  // namespace

TEST_CASE("eigen: column- and row-major matrices keep their strides", "[interop][eigen]") {
  Eigen::MatrixXd cm = numbered(3, 4);
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm = cm;
  auto vc = interop::as_view(cm);
  auto vr = interop::as_view(rm);
  static_assert(std::is_same_v<decltype(vc), matrix_view<double>>);
  CHECK(vc.stride(0) == 1);
  CHECK(vc.stride(1) == 3);
  CHECK(vr.stride(0) == 4);
  CHECK(vr.stride(1) == 1);
  CHECK(vc.data() == cm.data());
  require_same(vc, cm);
  require_same(vr, rm);
  vc(2, 1) = -5;  // a write lands in the Eigen matrix
  CHECK(cm(2, 1) == -5);
}

TEST_CASE("eigen: const objects, Map<const>, Ref<const> give views of const", "[interop][eigen]") {
  const Eigen::MatrixXf m = Eigen::MatrixXf::Random(2, 5);
  auto v = interop::as_view(m);
  static_assert(std::is_same_v<decltype(v), matrix_view<const float>>);
  require_same(v, m);
  std::vector<float> buf(10, 1.5f);
  Eigen::Map<const Eigen::MatrixXf> cmap(buf.data(), 2, 5);
  auto vm = interop::as_view(cmap);
  static_assert(std::is_same_v<decltype(vm), matrix_view<const float>>);
  Eigen::Ref<const Eigen::MatrixXf> ref = m;
  auto vref = interop::as_view(ref);
  static_assert(std::is_same_v<decltype(vref), matrix_view<const float>>);
  require_same(vref, m);
}

TEST_CASE("eigen: maps with inner and outer strides, blocks, refs", "[interop][eigen]") {
  std::vector<double> buf(64);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<double>(i);
  // Column-major map, outer stride 10 and inner stride 3.
  Eigen::Map<Eigen::MatrixXd, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> strided(
      buf.data(), 3, 4, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(10, 3));
  auto v = interop::as_view(strided);
  CHECK(v.stride(0) == 3);
  CHECK(v.stride(1) == 10);
  require_same(v, strided);
  // Row-major map with inner stride 2.
  Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
             Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>
      rstrided(buf.data(), 4, 3, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(7, 2));
  auto vr = interop::as_view(rstrided);
  CHECK(vr.stride(0) == 7);
  CHECK(vr.stride(1) == 2);
  require_same(vr, rstrided);
  // A block (a temporary view object) and a Ref to a block.
  Eigen::MatrixXd m = numbered(6, 5);
  auto vb = interop::as_view(m.block(1, 2, 3, 2));
  static_assert(std::is_same_v<decltype(vb), matrix_view<double>>);
  require_same(vb, m.block(1, 2, 3, 2));
  CHECK(vb.stride(1) == 6);
  Eigen::Ref<Eigen::MatrixXd> ref = m.bottomRows(2);
  require_same(interop::as_view(ref), m.bottomRows(2));
}

TEST_CASE("eigen: vectors, rows and columns keep their stride", "[interop][eigen]") {
  Eigen::MatrixXd m = numbered(4, 3);
  Eigen::VectorXd col = m.col(1);
  auto vcol = interop::as_vector_view(col);
  CHECK(vcol.extent(0) == 4);
  CHECK(vcol.stride(0) == 1);
  auto vrow = interop::as_vector_view(m.row(2));  // a row of a column-major matrix
  CHECK(vrow.extent(0) == 3);
  CHECK(vrow.stride(0) == 4);
  for (index_t j = 0; j < 3; ++j) CHECK(vrow[j] == m(2, j));
  auto vmcol = interop::as_vector_view(m.col(2));
  for (index_t i = 0; i < 4; ++i) CHECK(vmcol[i] == m(i, 2));
  Eigen::RowVectorXf r = Eigen::RowVectorXf::LinSpaced(5, 0, 4);
  auto vr = interop::as_vector_view(r);
  CHECK(vr.extent(0) == 5);
  CHECK(vr[4] == 4.0f);
  // A dynamic matrix that happens to be one column is a vector too.
  Eigen::MatrixXd one = numbered(3, 1);
  CHECK(interop::as_vector_view(one).extent(0) == 3);
}

TEST_CASE("eigen: rejections name the argument and the value", "[interop][eigen]") {
  Eigen::MatrixXd m = numbered(3, 4);
  KTSA_CHECK_THROWS(interop::as_vector_view(m, "weights"), shape_error,
                    Contains("'weights' is a 3 x 4 Eigen matrix"));
  // Column-major logits do not have contiguous rows.
  KTSA_CHECK_THROWS(interop::as_row_view(m, "logits"), shape_error,
                    Contains("'logits' has column stride 3"));
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm = m;
  CHECK(interop::as_row_view(rm, "logits").stride(1) == 1);
  // A single column needs no column stride.
  Eigen::MatrixXd single = numbered(4, 1);
  CHECK_NOTHROW(interop::as_row_view(single, "logits"));
  std::vector<double> buf(8);
  matrix_view<double> negative(buf.data() + 7, {2, 2}, {-2, -1});
  KTSA_CHECK_THROWS(interop::to_eigen(negative, "out"), invalid_argument,
                    Contains("'out' = -2") && Contains("negative stride"));
  vector_view<double> neg1(buf.data() + 7, {3}, {-1});
  KTSA_CHECK_THROWS(interop::to_eigen(neg1, "v"), invalid_argument, Contains("'v' = -1"));
}

TEST_CASE("eigen: to_eigen maps ktsa views without a copy", "[interop][eigen]") {
  std::vector<float> buf(12);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  matrix_view<float> v(buf.data(), {3, 2}, {4, 2});  // every other column of a 3 x 4
  auto e = interop::to_eigen(v);
  REQUIRE(e.rows() == 3);
  REQUIRE(e.cols() == 2);
  for (index_t i = 0; i < 3; ++i)
    for (index_t j = 0; j < 2; ++j) CHECK(e(i, j) == buf[static_cast<size_t>(4 * i + 2 * j)]);
  e(1, 1) = 99;
  CHECK(buf[6] == 99);
  matrix_view<const float> cv = v;
  auto ce = interop::to_eigen(cv);
  static_assert(!std::is_assignable_v<decltype(ce(0, 0)), float>);
  CHECK(ce.sum() == e.sum());
  vector_view<float> col(buf.data() + 1, {3}, {4});
  auto ve = interop::to_eigen(col);
  CHECK(ve(2) == buf[9]);
  // Round trip: the view of the map is the view.
  auto back = interop::as_view(e);
  CHECK(back.data() == v.data());
  CHECK(back.stride(0) == 4);
  CHECK(back.stride(1) == 2);
}

TEST_CASE("eigen: a row-major Eigen matrix of logits feeds the log-prob kernel",
          "[interop][eigen]") {
  // [N, V] logits as a [1, N, V] cube over the Eigen storage; labels from a VectorX.
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> logits(3, 5);
  logits << 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, -1, 0, 1, 2, 3, 2, 2, 2, 2, 2;
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> labels(3);
  labels << 4, 0, 2;
  auto lv = interop::as_row_view(logits, "logits");
  cube_view<const float> cube(lv.data(), {1, lv.extent(0), lv.extent(1)},
                              {0, lv.stride(0), lv.stride(1)});
  auto yv = interop::as_vector_view(labels);
  matrix_view<const std::int64_t> y2(yv.data(), {1, 3}, {0, yv.stride(0)});
  double seq = 0;
  kernels::sequence_logprob_forward(exec::host{}, cube, y2, make_view(&seq, 1),
                                    tensor_view<std::int64_t, 1>{});
  double expected = 0;  // log-softmax in fp64, written here
  for (int i = 0; i < 3; ++i) {
    double z = 0;
    for (int j = 0; j < 5; ++j) z += std::exp(static_cast<double>(logits(i, j)));
    expected += static_cast<double>(logits(i, static_cast<int>(labels(i)))) - std::log(z);
  }
  CHECK(seq == Approx(expected).epsilon(1e-6));
}
