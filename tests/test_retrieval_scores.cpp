// CBF, CF and hybrid scores against dense double references written from the
// formulas; CSR validation; the text encoder's features and its ridge fit
// (normal equations checked independently).
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "ktsa/retrieval/cbf.hpp"
#include "ktsa/retrieval/cf.hpp"
#include "ktsa/retrieval/hybrid.hpp"
#include "ktsa/retrieval/text_encoder.hpp"

using namespace ktsa;

TEST_CASE("retrieval cbf_scores is the cosine", "[retrieval]") {
  std::mt19937 gen(1);
  std::normal_distribution<float> g;
  const index_t nq = 5, n = 13, d = 7;
  std::vector<float> q(size_t(nq * d)), x(size_t(n * d)), out(size_t(nq * n));
  for (auto& e : q) e = g(gen);
  for (auto& e : x) e = 3.f * g(gen);
  retrieval::cbf_scores(exec::host{2}, make_view(q.data(), nq, d), make_view(x.data(), n, d),
                        make_view(out.data(), nq, n));
  for (index_t a = 0; a < nq; ++a)
    for (index_t i = 0; i < n; ++i) {
      double dot = 0, qq = 0, xx = 0;
      for (index_t t = 0; t < d; ++t) {
        dot += double(q[size_t(a * d + t)]) * x[size_t(i * d + t)];
        qq += double(q[size_t(a * d + t)]) * q[size_t(a * d + t)];
        xx += double(x[size_t(i * d + t)]) * x[size_t(i * d + t)];
      }
      CHECK(out[size_t(a * n + i)] == Approx(dot / std::sqrt(qq * xx)).margin(1e-6));
    }
  std::vector<float> bad = q;
  bad[3] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(retrieval::cbf_scores(exec::host{1}, make_view(bad.data(), nq, d),
                                          make_view(x.data(), n, d), make_view(out.data(), nq, n)),
                    Catch::Contains("'queries' row 0 has a non-finite entry"));
}

namespace {
// Dense item-item CF from the definition, in double.
std::vector<double> dense_cf(const std::vector<std::vector<double>>& r,
                             const std::vector<std::vector<double>>& profiles, size_t items) {
  std::vector<double> norm(items, 0.0);
  for (const auto& row : r)
    for (size_t i = 0; i < items; ++i) norm[i] += row[i] * row[i];
  for (auto& v : norm) v = std::sqrt(v);
  std::vector<double> sim(items * items, 0.0);
  for (size_t i = 0; i < items; ++i)
    for (size_t j = 0; j < items; ++j) {
      double dot = 0;
      for (const auto& row : r) dot += row[i] * row[j];
      sim[i * items + j] = norm[i] > 0 && norm[j] > 0 ? dot / (norm[i] * norm[j]) : 0.0;
    }
  std::vector<double> out;
  for (const auto& p : profiles)
    for (size_t i = 0; i < items; ++i) {
      double s = 0;
      for (size_t j = 0; j < items; ++j) s += p[j] * sim[i * items + j];
      out.push_back(s);
    }
  return out;
}

retrieval::csr_matrix to_csr(const std::vector<std::vector<double>>& dense, index_t cols) {
  retrieval::csr_matrix m(cols);
  for (const auto& row : dense) {
    std::vector<std::pair<index_t, float>> e;
    for (index_t c = 0; c < cols; ++c)
      if (row[size_t(c)] != 0) e.push_back({c, float(row[size_t(c)])});
    m.add_row(e);
  }
  return m;
}
}  // namespace

TEST_CASE("retrieval item-item CF matches the dense definition", "[retrieval]") {
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> u(0, 1);
  const size_t users = 40, items = 25;
  std::vector<std::vector<double>> r(users, std::vector<double>(items, 0.0));
  for (auto& row : r)
    for (size_t i = 0; i + 3 < items; ++i)                    // the last 3 items stay cold
      if (u(gen) < 0.2) row[i] = std::round(1 + 4 * u(gen));  // ratings 1..5
  std::vector<std::vector<double>> prof(6, std::vector<double>(items, 0.0));
  for (auto& p : prof)
    for (size_t i = 0; i < items; ++i)
      if (u(gen) < 0.15) p[i] = 1;
  prof[5].assign(items, 0.0);  // an empty profile scores 0 everywhere
  const auto rc = to_csr(r, index_t(items)), pc = to_csr(prof, index_t(items));
  const retrieval::item_item_cf cf(rc.view());
  std::vector<float> out(prof.size() * items, -1.f);
  cf.scores(exec::host{2}, pc.view(), make_view(out.data(), index_t(prof.size()), index_t(items)));
  const auto ref = dense_cf(r, prof, items);
  for (size_t e = 0; e < ref.size(); ++e) CHECK(out[e] == Approx(ref[e]).margin(1e-5));
  for (size_t i = 0; i < items; ++i) CHECK(out[5 * items + i] == 0.f);
  CHECK_FALSE(cf.has_interactions(index_t(items - 1)));
  CHECK(cf.has_interactions(0) ==
        (std::count_if(r.begin(), r.end(), [](auto& row) { return row[0] != 0; }) > 0));
  // similarity() by the definition too.
  std::vector<std::vector<double>> unit(items, std::vector<double>(items, 0.0));
  for (size_t i = 0; i < items; ++i) unit[i][i] = 1;
  const auto sim = dense_cf(r, unit, items);
  CHECK(cf.similarity(2, 5) == Approx(sim[2 * items + 5]).margin(1e-12));
}

TEST_CASE("retrieval CSR validation and CF errors", "[retrieval]") {
  retrieval::csr_matrix m(3);
  m.add_row({{0, 1.f}, {2, 1.f}});
  m.add_row({{1, 1.f}, {1, 2.f}});  // duplicate
  CHECK_THROWS_WITH(retrieval::item_item_cf(m.view()),
                    Catch::Contains("row 1 stores column 1 twice"));
  retrieval::csr_matrix out_of_range(2);
  out_of_range.add_row({{2, 1.f}});
  CHECK_THROWS_WITH(retrieval::item_item_cf(out_of_range.view()),
                    Catch::Contains("column index 2 at entry 0 is outside [0, 2)"));
  retrieval::csr_matrix nan_value(2);
  nan_value.add_row({{0, std::numeric_limits<float>::quiet_NaN()}});
  CHECK_THROWS_AS(retrieval::item_item_cf(nan_value.view()), ktsa::data_error);
  retrieval::csr_matrix ok(3);
  ok.add_row({{0, 1.f}, {1, 1.f}});
  const retrieval::item_item_cf cf(ok.view());
  retrieval::csr_matrix wrong(4);
  wrong.add_row({{0, 1.f}});
  std::vector<float> out(4);
  CHECK_THROWS_WITH(cf.scores(exec::host{1}, wrong.view(), make_view(out.data(), 1, 4)),
                    Catch::Contains("'profiles.cols' = 4"));
}

TEST_CASE("retrieval hybrid blends cosine with max-scaled CF", "[retrieval]") {
  const std::vector<float> cbf{0.5f, -0.2f, 0.9f, 0.1f, 0.3f, 0.0f},
      cf{2.f, 4.f, 0.f, 0.f, 0.f, 0.f};
  std::vector<float> out(6);
  retrieval::hybrid_scores(exec::host{1}, make_view(cbf.data(), 2, 3), make_view(cf.data(), 2, 3),
                           make_view(out.data(), 2, 3), {0.25});
  CHECK(out[0] == Approx(0.25 * 0.5 + 0.75 * 0.5));
  CHECK(out[1] == Approx(0.25 * -0.2 + 0.75 * 1.0));
  CHECK(out[2] == Approx(0.25 * 0.9));
  CHECK(out[3] == Approx(0.25 * 0.1));  // a row of zero CF keeps w cbf
  CHECK_THROWS_WITH(
      retrieval::hybrid_scores(exec::host{1}, make_view(cbf.data(), 2, 3),
                               make_view(cf.data(), 2, 3), make_view(out.data(), 2, 3), {1.5}),
      Catch::Contains("'cbf_weight' = 1.5"));
}

TEST_CASE("retrieval text encoder: features, seeded projection, ridge normal equations",
          "[retrieval]") {
  retrieval::text_encoder_config cfg;
  cfg.buckets = 1 << 12;
  cfg.dim = 8;
  cfg.ridge = 0.5;
  retrieval::text_encoder enc(cfg);
  CHECK(retrieval::text_encoder::words("Pet Supplies: my dog's 90-pound lab!") ==
        std::vector<std::string>{"pet", "supplies", "my", "dog's", "90", "pound", "lab"});
  const auto x = enc.features("quiet quiet fan");  // quiet x2, fan, "quiet quiet", "quiet fan"
  double ss = 0, biggest = 0;
  for (const auto& e : x) {
    ss += double(e.second) * e.second;
    biggest = std::max(biggest, double(e.second));
  }
  CHECK(ss == Approx(1.0));
  CHECK(biggest == Approx(2.0 / std::sqrt(7.0)));  // counts 2, 1, 1, 1
  CHECK(enc.features("").empty());
  // Same seed, same item embedding; another seed, another one.
  std::vector<float> a(8), b(8), c(8);
  enc.encode_items({"fragrance-free, bestseller"}, make_view(a.data(), 1, 8));
  retrieval::text_encoder same(cfg);
  same.encode_items({"fragrance-free, bestseller"}, make_view(b.data(), 1, 8));
  cfg.seed = 2;
  retrieval::text_encoder other(cfg);
  other.encode_items({"fragrance-free, bestseller"}, make_view(c.data(), 1, 8));
  CHECK(a == b);
  CHECK(a != c);
  CHECK_THROWS_AS(enc.encode_queries({"x"}, make_view(a.data(), 1, 8)), ktsa::invalid_argument);

  // Fit, then check (X^T X + ridge I) W = X^T Y over the features seen, in
  // dense double arithmetic written here.
  const std::vector<std::string> qs{"no loud noise", "won't wake the baby", "small apartment",
                                    "no loud noise please"},
      items{"quiet operation", "quiet operation", "compact design", "quiet operation"};
  enc.fit(qs, items);
  std::map<index_t, size_t> col;
  for (const auto& t : qs)
    for (const auto& e : enc.features(t)) col.emplace(e.first, col.size());
  const size_t m = col.size(), d = 8, n = qs.size();
  std::vector<double> X(n * m, 0.0), Y(n * d);
  std::vector<float> y(n * d);
  enc.encode_items(items, make_view(y.data(), index_t(n), index_t(d)));
  for (size_t r = 0; r < n; ++r) {
    for (const auto& e : enc.features(qs[r])) X[r * m + col[e.first]] = e.second;
    for (size_t k = 0; k < d; ++k) Y[r * d + k] = y[r * d + k];
  }
  // E = X W with (X^T X + ridge I) W = X^T Y means E = K (K + ridge I)^-1 Y
  // with K = X X^T, i.e. (K + ridge I) E = K Y: checked without inverting.
  std::vector<float> e(n * d);
  enc.encode_queries(qs, make_view(e.data(), index_t(n), index_t(d)));
  std::vector<double> K(n * n, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j)
      for (size_t t = 0; t < m; ++t) K[i * n + j] += X[i * m + t] * X[j * m + t];
  for (size_t i = 0; i < n; ++i)
    for (size_t k = 0; k < d; ++k) {
      double lhs = 0.5 * e[i * d + k], rhs = 0;
      for (size_t j = 0; j < n; ++j) {
        lhs += K[i * n + j] * e[j * d + k];
        rhs += K[i * n + j] * Y[j * d + k];
      }
      CHECK(lhs == Approx(rhs).margin(1e-5));
    }
  // A query made only of unseen words embeds to zero.
  std::vector<float> z(8, 1.f);
  enc.encode_queries({"zzz qqq"}, make_view(z.data(), 1, 8));
  CHECK(z == std::vector<float>(8, 0.f));
}
