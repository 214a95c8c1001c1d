// Buyer calibration (sim/calibration.hpp) and per-category thresholds: the
// bisection fit against an independent rate computation, the paper market at
// the default seed within +/- 0.10 pp of Table 3's Base column, the exact
// action probabilities against Monte Carlo frequencies, and bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "ktsa/sim/buyer.hpp"
#include "ktsa/sim/calibration.hpp"
#include "ktsa/sim/catalogue.hpp"

using namespace ktsa::sim;
using Catch::Matchers::Contains;

namespace {

// The expected conversion rate written out here: mean of 1 / (1 + exp(-(u - t) / s)).
double reference_rate(const std::vector<double>& u, double t, double s) {
  long double sum = 0;
  for (double x : u) sum += 1.0L / (1.0L + std::exp(-static_cast<long double>(x - t) / s));
  return static_cast<double>(sum / u.size());
}

std::vector<double> spread_utilities(int n) {
  std::vector<double> u;
  rng gen(11);
  for (int i = 0; i < n; ++i) u.push_back(gen.uniform(-1.5, 0.8));
  return u;
}

}  // namespace

TEST_CASE("fit_threshold hits the target rate of an independent computation",
          "[sim][calibration]") {
  const auto u = spread_utilities(5000);
  for (double s : {0.05, 0.15, 0.6})
    for (double target : {0.0113, 0.02, 0.0285, 0.3, 0.9}) {
      const double t = fit_threshold(u, s, target);
      CHECK(reference_rate(u, t, s) == Approx(target).epsilon(1e-9));
      // Monotone: a slightly higher threshold converts less.
      CHECK(reference_rate(u, t + 1e-3, s) < target);
    }
}

TEST_CASE("fit_threshold without noise is the step at the right quantile", "[sim][calibration]") {
  const std::vector<double> u = {0.1, 0.4, -0.2, 0.9, 0.3, -1.0, 0.5, 0.0, 0.2, 0.7};
  // 3 of 10 at or above t for target 0.3: t is within 1e-12 below 0.5.
  const double t = fit_threshold(u, 0.0, 0.3);
  CHECK(t <= 0.5);
  CHECK(t > 0.5 - 1e-9);
  CHECK(expected_rate_above(u, t, 0.0) == Approx(0.3));
}

TEST_CASE("fit_threshold rejects bad input", "[sim][calibration]") {
  const auto u = spread_utilities(10);
  REQUIRE_THROWS_WITH(fit_threshold({}, 0.1, 0.02), Contains("utilities.size"));
  REQUIRE_THROWS_WITH(fit_threshold(u, 0.1, 0.0), Contains("target_rate"));
  REQUIRE_THROWS_WITH(fit_threshold(u, 0.1, 1.0), Contains("target_rate"));
  REQUIRE_THROWS_WITH(fit_threshold(u, -1, 0.5), Contains("noise_scale"));
  REQUIRE_THROWS_WITH(fit_threshold({0.1, NAN}, 0.1, 0.5), Contains("utility"));
}

TEST_CASE("the paper market at the default seed converts at Table 3's Base CVRs",
          "[sim][calibration]") {
  // The example's procedure on a smaller market: calibrate on the training
  // queries' listings, measure the held-out queries' listings. 15,000 queries
  // per side and category: the query-to-query spread of P(purchase) (sd about
  // 0.035) leaves a standard error near 0.04 pp for the difference.
  market_config mc;
  mc.seed = 1;
  mc.train_queries_per_category = 15000;
  mc.test_queries_per_category = 15000;
  const market m(mc);
  buyer_params start;
  start.seed = hash_key(1, 0xB0B);
  std::vector<shown_impression> sample;
  for (const query& q : m.train_queries())
    sample.push_back({&q, &m.product_of(q), &m.product_of(q).seller_description});
  const buyer_params fitted = calibrate_thresholds(start, sample);
  const prospect_buyer buyer(fitted);
  std::vector<double> buy(num_categories), cart(num_categories), n(num_categories);
  for (const query& q : m.test_queries()) {
    const product& p = m.product_of(q);
    const double u = buyer.utility_total(q, p, p.seller_description);
    const double s = fitted.noise_scale;
    const double tb = fitted.purchase_threshold_by_category[static_cast<size_t>(q.category)];
    const double tc = fitted.cart_threshold_by_category[static_cast<size_t>(q.category)];
    const double pb = 1 / (1 + std::exp(-(u - tb) / s)), pc = 1 / (1 + std::exp(-(u - tc) / s));
    buy[static_cast<size_t>(q.category)] += pb;
    cart[static_cast<size_t>(q.category)] += pc - pb;
    n[static_cast<size_t>(q.category)] += 1;
  }
  for (int c = 0; c < num_categories; ++c) {
    INFO("category " << category(c).name);
    const double cvr = buy[static_cast<size_t>(c)] / n[static_cast<size_t>(c)];
    CHECK(std::abs(cvr - paper_base_cvr[static_cast<size_t>(c)]) <= 0.0010);
    // Add to cart: the default target is three times the CVR.
    const double atc = cart[static_cast<size_t>(c)] / n[static_cast<size_t>(c)];
    CHECK(std::abs(atc - 3 * paper_base_cvr[static_cast<size_t>(c)]) <= 0.0030);
    // Every other parameter is the start's.
    CHECK(fitted.noise_scale == start.noise_scale);
  }
}

TEST_CASE("action_probabilities are the frequencies of respond()", "[sim][calibration]") {
  buyer_params b;
  b.purchase_threshold_by_category = {0.3, 0.4, 0.29, 0.32, 0.31, 0.32, 0.28, 0.25};
  b.cart_threshold_by_category = {0.07, 0.19, 0.04, 0.08, 0.06, 0.08, 0.03, -0.01};
  const prospect_buyer buyer(b);
  market_config mc;
  mc.train_queries_per_category = 2;
  mc.test_queries_per_category = 2;
  const market m(mc);
  for (const query& q : m.test_queries()) {
    const product& p = m.product_of(q);
    // A description that converts often enough to count.
    std::vector<int> d;
    for (const need& n : q.needs) d.push_back(vocabulary::claim_token(q.category, n.attribute));
    d.push_back(vocabulary::eos);
    const double u = buyer.utility_total(q, p, d);
    CHECK(u == buyer.utility(q, p, d).total);
    const auto prob = buyer.action_probabilities(u, q.category);
    CHECK(prob[0] + prob[1] + prob[2] == Approx(1.0).margin(1e-15));
    const int draws = 40000;
    double counts[3] = {};
    for (int k = 0; k < draws; ++k)
      counts[static_cast<int>(buyer.respond(q, p, d, static_cast<std::uint64_t>(k)))] += 1;
    for (int a = 0; a < 3; ++a) {
      const double se =
          std::sqrt(prob[static_cast<size_t>(a)] * (1 - prob[static_cast<size_t>(a)]) / draws);
      CHECK(std::abs(counts[a] / draws - prob[static_cast<size_t>(a)]) <= 5 * se + 1e-12);
    }
    // respond() uses the category's thresholds.
    const double e = buyer.noise(7);
    CHECK(buyer.respond(q, p, d, 7) == buyer.decide(u, e, q.category));
  }
}

TEST_CASE("per-category thresholds are validated", "[sim][calibration]") {
  buyer_params b;
  b.purchase_threshold_by_category = {0.1, 0.2};
  b.cart_threshold_by_category = {0.0, 0.0};
  REQUIRE_THROWS_WITH(prospect_buyer(b), Contains("purchase_threshold_by_category.size"));
  b.purchase_threshold_by_category.assign(num_categories, 0.1);
  b.cart_threshold_by_category.assign(3, 0.0);
  REQUIRE_THROWS_WITH(prospect_buyer(b), Contains("cart_threshold_by_category.size"));
  b.cart_threshold_by_category.assign(num_categories, 0.0);
  b.cart_threshold_by_category[5] = 0.2;  // above its purchase threshold
  REQUIRE_THROWS_WITH(prospect_buyer(b), Contains("cart_threshold_by_category"));
  b.cart_threshold_by_category[5] = 0.0;
  b.purchase_threshold_by_category[2] = NAN;
  REQUIRE_THROWS_WITH(prospect_buyer(b), Contains("purchase_threshold_by_category"));
}

TEST_CASE("calibrate_thresholds rejects bad input", "[sim][calibration]") {
  buyer_params b;
  const std::vector<int> d = {vocabulary::eos};
  REQUIRE_THROWS_WITH(calibrate_thresholds(b, {{nullptr, nullptr, &d}}), Contains("null pointer"));
  market_config mc;
  mc.train_queries_per_category = 3;
  mc.test_queries_per_category = 0;
  const market m(mc);
  std::vector<shown_impression> sample;
  for (const query& q : m.train_queries()) sample.push_back({&q, &m.product_of(q), &d});
  calibration_targets t;
  t.purchase_rate[0] = 0;
  REQUIRE_THROWS_WITH(calibrate_thresholds(b, sample, t), Contains("purchase_rate"));
  t.purchase_rate[0] = 0.5;
  t.cart_rate[0] = 0.6;
  REQUIRE_THROWS_WITH(calibrate_thresholds(b, sample, t), Contains("cart_rate"));
  b.noise_scale = 0;
  REQUIRE_THROWS_WITH(calibrate_thresholds(b, sample), Contains("noise_scale"));
}
