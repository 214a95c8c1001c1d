// Exact top-K: against a brute-force reference (full sort in double), with
// ties, K > items, empty inputs, zero vectors, NaN, bad shapes, and the same
// result for every thread count and block size.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "ktsa/retrieval/cbf.hpp"
#include "ktsa/retrieval/topk.hpp"

using namespace ktsa;
using retrieval::no_item;

namespace {
struct result {
  std::vector<index_t> ids;
  std::vector<float> scores;
};

// The reference: every score in double, sorted by (score desc, id asc), cut at k.
result brute_force(const std::vector<float>& q, const std::vector<float>& x, index_t nq, index_t n,
                   index_t d, index_t k) {
  result r;
  for (index_t a = 0; a < nq; ++a) {
    std::vector<std::pair<double, index_t>> all;
    for (index_t i = 0; i < n; ++i) {
      double s = 0;
      for (index_t t = 0; t < d; ++t) s += double(q[size_t(a * d + t)]) * x[size_t(i * d + t)];
      all.push_back({s, i});
    }
    std::sort(all.begin(), all.end(), [](auto& u, auto& v) {
      return u.first > v.first || (u.first == v.first && u.second < v.second);
    });
    for (index_t j = 0; j < k; ++j) {
      r.ids.push_back(j < n ? all[size_t(j)].second : no_item);
      r.scores.push_back(j < n ? float(all[size_t(j)].first)
                               : -std::numeric_limits<float>::infinity());
    }
  }
  return r;
}

result run_exact(const std::vector<float>& q, const std::vector<float>& x, index_t nq, index_t n,
                 index_t d, index_t k, int threads = 1, retrieval::topk_options opt = {}) {
  result r{std::vector<index_t>(size_t(nq * k), 7), std::vector<float>(size_t(nq * k), 7.f)};
  retrieval::exact_topk(exec::host{threads}, make_view(q.data(), nq, d), make_view(x.data(), n, d),
                        k, make_view(r.ids.data(), nq, k), make_view(r.scores.data(), nq, k), opt);
  return r;
}

// Small integers: every dot product is exact in f32, so ties are exact ties.
std::vector<float> small_ints(size_t count, std::mt19937& gen, int lo = -2, int hi = 2) {
  std::uniform_int_distribution<int> u(lo, hi);
  std::vector<float> v(count);
  for (auto& e : v) e = float(u(gen));
  return v;
}
}  // namespace

TEST_CASE("retrieval exact_topk matches brute force, ties broken by item id", "[retrieval]") {
  std::mt19937 gen(3);
  const index_t nq = 37, n = 301, d = 5;
  const auto q = small_ints(size_t(nq * d), gen), x = small_ints(size_t(n * d), gen);
  for (index_t k : {1, 10, 64}) {
    const result ref = brute_force(q, x, nq, n, d, k);
    // Many ties: with 5 entries in [-2, 2] there are few distinct scores.
    const result got = run_exact(q, x, nq, n, d, k, 1, {8, 50});
    CHECK(got.ids == ref.ids);
    CHECK(got.scores == ref.scores);
    for (int threads : {2, 3}) {
      const result other = run_exact(q, x, nq, n, d, k, threads, {8, 50});
      CHECK(other.ids == ref.ids);
      CHECK(other.scores == ref.scores);
    }
    const result one_block = run_exact(q, x, nq, n, d, k, 2, {1000, 100000});
    CHECK(one_block.ids == ref.ids);
  }
}

TEST_CASE("retrieval exact_topk on random floats agrees with the double reference", "[retrieval]") {
  std::mt19937 gen(5);
  std::normal_distribution<float> g;
  const index_t nq = 9, n = 5000, d = 64, k = 10;
  std::vector<float> q(size_t(nq * d)), x(size_t(n * d));
  for (auto& e : q) e = g(gen);
  for (auto& e : x) e = g(gen);
  const result ref = brute_force(q, x, nq, n, d, k);
  const result got = run_exact(q, x, nq, n, d, k, 2, {4, 700});
  for (size_t j = 0; j < ref.scores.size(); ++j) {
    CHECK(got.scores[j] == Approx(ref.scores[j]).epsilon(1e-5));
    // Same id unless the reference itself has a near-tie there.
    if (got.ids[j] != ref.ids[j]) CHECK(std::fabs(got.scores[j] - ref.scores[j]) < 1e-4f);
  }
}

TEST_CASE("retrieval exact_topk with K greater than the number of items pads with -1 and -inf",
          "[retrieval]") {
  const std::vector<float> q{1, 0, 0, 1}, x{1, 0, 0, 2, 1, 1};  // 2 queries, 3 items, d = 2
  const result got = run_exact(q, x, 2, 3, 2, 5);
  CHECK(got.ids == std::vector<index_t>{0, 2, 1, no_item, no_item, 1, 2, 0, no_item, no_item});
  CHECK(got.scores[0] == 1.f);
  CHECK(got.scores[5] == 2.f);
  CHECK(got.scores[3] == -std::numeric_limits<float>::infinity());
  // No items at all.
  const result none = run_exact(q, {}, 2, 0, 2, 2);
  CHECK(none.ids == std::vector<index_t>(4, no_item));
}

TEST_CASE("retrieval exact_topk with no queries or K = 0 writes nothing", "[retrieval]") {
  const std::vector<float> x{1, 2, 3, 4};
  std::vector<index_t> ids;
  std::vector<float> s;
  retrieval::exact_topk(exec::host{1}, make_view(x.data(), 0, 2), make_view(x.data(), 2, 2), 3,
                        make_view(ids.data(), 0, 3), make_view(s.data(), 0, 3));
  const result k0 = run_exact(x, x, 2, 2, 2, 0);
  CHECK(k0.ids.empty());
}

TEST_CASE("retrieval zero vectors: inner product scores 0, cosine throws or keeps zero",
          "[retrieval]") {
  const std::vector<float> q{0, 0, 1, 0}, x{3, 4, -1, 0, 0, 0};
  const result got = run_exact(q, x, 2, 3, 2, 3);
  // Query 0 is zero: every score 0, order by id.
  CHECK(got.ids == std::vector<index_t>{0, 1, 2, 0, 2, 1});
  CHECK(got.scores[0] == 0.f);
  std::vector<index_t> ids(6);
  std::vector<float> s(6);
  CHECK_THROWS_AS(
      retrieval::cbf_topk(exec::host{1}, make_view(q.data(), 2, 2), make_view(x.data(), 3, 2), 3,
                          make_view(ids.data(), 2, 3), make_view(s.data(), 2, 3)),
      ktsa::data_error);
  CHECK_THROWS_WITH(
      retrieval::cbf_topk(exec::host{1}, make_view(q.data(), 2, 2), make_view(x.data(), 3, 2), 3,
                          make_view(ids.data(), 2, 3), make_view(s.data(), 2, 3)),
      Catch::Contains("'queries' row 0 is a zero vector"));
  retrieval::cbf_topk(exec::host{1}, make_view(q.data(), 2, 2), make_view(x.data(), 3, 2), 3,
                      make_view(ids.data(), 2, 3), make_view(s.data(), 2, 3),
                      retrieval::zero_rows::keep_zero);
  // Query 1 = (1, 0): cosines 0.6 (item 0), -1 (item 1), 0 (item 2, zero).
  CHECK(ids[3] == 0);
  CHECK(s[3] == Approx(0.6));
  CHECK(ids[4] == 2);
  CHECK(ids[5] == 1);
  CHECK(s[5] == Approx(-1.0));
}

TEST_CASE("retrieval NaN scores and bad shapes are errors naming the argument", "[retrieval]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> q{1, 1}, x{1, 0, nan, 1};
  std::vector<index_t> ids(2);
  std::vector<float> s(2);
  CHECK_THROWS_WITH(
      retrieval::exact_topk(exec::host{1}, make_view(q.data(), 1, 2), make_view(x.data(), 2, 2), 2,
                            make_view(ids.data(), 1, 2), make_view(s.data(), 1, 2)),
      Catch::Contains("query 0 and item 1 is NaN"));
  CHECK_THROWS_AS(
      retrieval::exact_topk(exec::host{1}, make_view(q.data(), 1, 2), make_view(x.data(), 4, 1), 2,
                            make_view(ids.data(), 1, 2), make_view(s.data(), 1, 2)),
      ktsa::shape_error);
  CHECK_THROWS_WITH(
      retrieval::exact_topk(exec::host{1}, make_view(q.data(), 1, 2), make_view(x.data(), 2, 2), 1,
                            make_view(ids.data(), 1, 2), make_view(s.data(), 1, 2)),
      Catch::Contains("'ids' has extent 2 in dimension 1, expected 1"));
  CHECK_THROWS_WITH(
      retrieval::exact_topk(exec::host{1}, make_view(q.data(), 1, 2), make_view(x.data(), 2, 2), -1,
                            make_view(ids.data(), 1, 2), make_view(s.data(), 1, 2)),
      Catch::Contains("'k' = -1"));
  retrieval::topk_options bad;
  bad.item_block = 0;
  CHECK_THROWS_WITH(
      retrieval::exact_topk(exec::host{1}, make_view(q.data(), 1, 2), make_view(x.data(), 2, 2), 2,
                            make_view(ids.data(), 1, 2), make_view(s.data(), 1, 2), bad),
      Catch::Contains("'item_block' = 0"));
  // A column-strided view is refused (rows must be contiguous).
  const matrix_view<const float> strided(x.data(), {2, 2}, {1, 2});  // column-major
  CHECK_THROWS_WITH(retrieval::exact_topk(exec::host{1}, make_view(q.data(), 1, 2), strided, 2,
                                          make_view(ids.data(), 1, 2), make_view(s.data(), 1, 2)),
                    Catch::Contains("'items' = 2"));
}

TEST_CASE("retrieval topk_rows matches a full sort of each row", "[retrieval]") {
  std::mt19937 gen(9);
  const index_t nq = 40, n = 77, k = 12;
  const auto scores = small_ints(size_t(nq * n), gen, 0, 5);  // many ties
  std::vector<index_t> ids(size_t(nq * k));
  std::vector<float> top(size_t(nq * k));
  retrieval::topk_rows(exec::host{2}, make_view(scores.data(), nq, n), k,
                       make_view(ids.data(), nq, k), make_view(top.data(), nq, k));
  for (index_t q = 0; q < nq; ++q) {
    std::vector<index_t> order(static_cast<size_t>(n));
    for (index_t i = 0; i < n; ++i) order[size_t(i)] = i;
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
      return scores[size_t(q * n + a)] > scores[size_t(q * n + b)];
    });
    for (index_t j = 0; j < k; ++j) CHECK(ids[size_t(q * k + j)] == order[size_t(j)]);
  }
}

TEST_CASE("retrieval gemm providers agree with a double reference on every tail shape",
          "[retrieval]") {
  using kernels::detail::simd_level;
  std::mt19937 gen(11);
  std::normal_distribution<float> g;
  for (index_t m : {1, 3, 4, 5, 9})
    for (index_t n : {1, 16, 17, 33, 40})
      for (index_t k : {1, 15, 16, 17, 64}) {
        std::vector<float> a(size_t(m * (k + 2))), b(size_t(n * (k + 3)));
        for (auto& e : a) e = g(gen);
        for (auto& e : b) e = g(gen);
        const index_t lda = k + 2, ldb = k + 3, ldc = n + 1;  // strided rows
        std::vector<double> ref(size_t(m * n));
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j)
            for (index_t t = 0; t < k; ++t)
              ref[size_t(i * n + j)] += double(a[size_t(i * lda + t)]) * b[size_t(j * ldb + t)];
        const auto check = [&](const std::vector<float>& c) {
          for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < n; ++j)
              REQUIRE(c[size_t(i * ldc + j)] == Approx(ref[size_t(i * n + j)]).margin(1e-4));
        };
        std::vector<float> c(size_t(m * ldc), 9.f);
        retrieval::detail::gemm_nt_loop(m, n, k, a.data(), lda, b.data(), ldb, c.data(), ldc);
        check(c);
        for (simd_level level : {simd_level::scalar, simd_level::avx512}) {
          kernels::detail::scoped_simd_cap cap(level);  // scalar: Eigen or the loop
          std::fill(c.begin(), c.end(), 9.f);
          retrieval::detail::gemm_nt(m, n, k, a.data(), lda, b.data(), ldb, c.data(), ldc);
          check(c);
          for (index_t i = 0; i < m; ++i)
            REQUIRE(c[size_t(i * ldc + n)] == 9.f);  // padding untouched
        }
      }
}

TEST_CASE("retrieval exact_topk ties hold on every gemm provider", "[retrieval]") {
  using kernels::detail::simd_level;
  std::mt19937 gen(13);
  const index_t nq = 6, n = 130, d = 17, k = 20;
  const auto q = small_ints(size_t(nq * d), gen), x = small_ints(size_t(n * d), gen);
  const result ref = brute_force(q, x, nq, n, d, k);
  for (simd_level level : {simd_level::scalar, simd_level::avx512}) {
    kernels::detail::scoped_simd_cap cap(level);
    const result got = run_exact(q, x, nq, n, d, k, 2, {4, 33});
    CHECK(got.ids == ref.ids);
    CHECK(got.scores == ref.scores);
  }
}
