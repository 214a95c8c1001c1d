// Issue 10: the special functions and the exact intervals at e-commerce scale,
// against values from python3-mpmath (50+ digits) computed by the scripts in
// tools/reference/ (commands in the data files' headers and below); issue 16
// item 9 / 4: counts that cannot be counts, bounded allocations, no overflow.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

#include "ktsa/metrics/classification.hpp"
#include "ktsa/metrics/interval.hpp"
#include "ktsa/metrics/ranking.hpp"

using namespace ktsa::metrics;
using Catch::Matchers::Contains;

namespace {

constexpr double kEps = DBL_EPSILON;

struct beta_row {
  double a, b, x;
  double lower, upper;              // I_x(a, b) and 1 - I_x(a, b); 0.0 = below the double range
  double kappa_lower, kappa_upper;  // |x d tail / dx / tail|, the condition number in x
};

// python3 tools/reference/incomplete_beta_reference.py > tests/data/incomplete_beta_reference.inc
const beta_row kBeta[] = {
#include "data/incomplete_beta_reference.inc"
};

// The tested bound: 1e-13 relative, widened by the conditioning of the
// function itself where that says more: 2 eps |ln I| (any exp(log) scheme
// rounds the log; matters only for results below ~1e-200) and 8 eps kappa
// (a backward error of 8 ulps of x, for the points where a 1-ulp change of x
// moves I by more than 1e-13).
double beta_tolerance(double value, double kappa) {
  return 1e-13 + 2 * kEps * std::fabs(std::log(value)) + 8 * kEps * kappa;
}

void check_tail(double got, double want, double kappa) {
  if (want == 0.0) {  // the exact value is below the normal range
    CHECK(got <= 1e-300);
    return;
  }
  INFO("got " << got << ", want " << want << ", kappa " << kappa);
  CHECK(std::fabs(got - want) <= beta_tolerance(want, kappa) * want);
}

}  // namespace

TEST_CASE("incomplete beta: both tails on the mpmath grid (a + b up to 1e10, x to 1e-300 of 0)") {
  REQUIRE(sizeof(kBeta) / sizeof(kBeta[0]) > 300);
  for (const beta_row& r : kBeta) {
    INFO("a = " << r.a << ", b = " << r.b << ", x = " << r.x);
    check_tail(regularized_incomplete_beta(r.a, r.b, r.x), r.lower, r.kappa_lower);
    check_tail(regularized_incomplete_beta_complement(r.a, r.b, r.x), r.upper, r.kappa_upper);
  }
}

TEST_CASE("incomplete beta: the issue's cases") {
  // mpmath: betainc(1, 1e7, 0, 2.5e-9, regularized=True) at 50 digits
  CHECK(regularized_incomplete_beta(1, 1e7, 2.5e-9) ==
        Approx(0.024690088002145766684).epsilon(1e-14));
  // the small result of a complement branch: I_{1 - 1.9e-8}(1e7, 0.001), the
  // hypergeometric series of tools/reference/incomplete_beta_reference.py
  CHECK(regularized_incomplete_beta(1e7, 0.001, 1 - 1.9e-8) ==
        Approx(0.0012647110890909642126).epsilon(1e-13));
  CHECK(regularized_incomplete_beta(2.5, 3.5, 0.0) == 0.0);
  CHECK(regularized_incomplete_beta(2.5, 3.5, 1.0) == 1.0);
  CHECK(regularized_incomplete_beta_complement(2.5, 3.5, 0.0) == 1.0);
  CHECK(regularized_incomplete_beta_complement(2.5, 3.5, 1.0) == 0.0);
  CHECK_THROWS_WITH(regularized_incomplete_beta_complement(1, 1, -0.5), Contains("'x' = -0.5"));
  CHECK_THROWS_WITH(regularized_incomplete_beta(1e7, 0, 0.5), Contains("'b' = 0"));
}

TEST_CASE("inverse incomplete beta: back to x from each tail on the grid") {
  int tested = 0;
  for (const beta_row& r : kBeta) {
    INFO("a = " << r.a << ", b = " << r.b << ", x = " << r.x);
    // A tail value determines x to tolerance / kappa relative (dx/x = dI/I / kappa).
    if (r.lower > 1e-290 && r.lower < 0.999 && r.kappa_lower > 1e-3) {
      const double x = inverse_regularized_incomplete_beta(r.a, r.b, r.lower);
      CHECK(std::fabs(x - r.x) <=
            (beta_tolerance(r.lower, r.kappa_lower) / r.kappa_lower + 4 * kEps) * r.x);
      ++tested;
    }
    if (r.upper > 1e-290 && r.upper < 0.999 && r.kappa_upper > 1e-3) {
      const double x = inverse_regularized_incomplete_beta_complement(r.a, r.b, r.upper);
      CHECK(std::fabs(x - r.x) <=
            (beta_tolerance(r.upper, r.kappa_upper) / r.kappa_upper + 4 * kEps) * r.x);
      ++tested;
    }
  }
  CHECK(tested > 200);
  CHECK_THROWS_WITH(inverse_regularized_incomplete_beta_complement(1, 1, 2), Contains("'q' = 2"));
}

TEST_CASE("normal quantile: within 2 ulp of mpmath, subnormal p and p = 1/2 +- 1 ulp included") {
  struct row {
    double p, x;
  };
  // python3 tools/reference/normal_quantile_reference.py
  const row table[] = {
      {5e-324, -38.467405617144346251},
      {1e-310, -37.663060331949523732},
      {2.2250738585072014e-308, -37.519379347144499821},
      {1e-300, -37.047096299361199237},
      {1e-291, -36.483851329760485805},
      {1e-289, -36.357502600721117359},
      {1e-200, -30.205594179579643063},
      {1e-100, -21.273453560965324294},
      {1e-20, -9.2623400897984075796},
      {1e-10, -6.3613409024040561991},
      {0.0001, -3.7190164854556805523},
      {0.001, -3.0902323061678135354},
      {0.01, -2.3263478740408410931},
      {0.02425, -1.9729610513118848376},
      {0.025, -1.9599639845400542118},
      {0.1, -1.2815515655446004353},
      {0.2, -0.84162123357291416552},
      {0.25, -0.6744897501960817432},
      {0.2500000000000001, -0.67448975019608139383},
      {0.3, -0.52440051270804081597},
      {0.49, -0.025068908258711058033},
      {0.49999999999999994, -1.3914582123358834611e-16},
      {0.5000000000000001, 2.7829164246717669222e-16},
      {0.51, 0.025068908258711058033},
      {0.75, 0.6744897501960817432},
      {0.975, 1.9599639845400538556},
      {0.9999999999, 6.3613408896974218642},
  };
  for (const row& r : table) {
    INFO("p = " << r.p);
    const double x = normal_quantile(r.p);
    const double ulp = std::nextafter(std::fabs(r.x), HUGE_VAL) - std::fabs(r.x);
    CHECK(std::fabs(x - r.x) <= 2 * ulp);
  }
  CHECK(normal_quantile(0.5) == 0.0);
  CHECK(normal_quantile(0.25) == -normal_quantile(0.75));
}

TEST_CASE("Clopper-Pearson and Jeffreys at n = 1e5, 1e7, 1e9 against mpmath") {
  struct row {
    std::int64_t x, n;
    double confidence;
    interval_method method;
    double lower, upper;
  };
  // python3 tools/reference/interval_reference.py > tests/data/interval_reference.inc
  const row table[] = {
#include "data/interval_reference.inc"
  };
  REQUIRE(sizeof(table) / sizeof(table[0]) > 50);
  for (const row& r : table) {
    INFO(interval_method_name(r.method)
         << " x = " << r.x << ", n = " << r.n << ", confidence = " << r.confidence);
    const interval i = binomial_interval(r.x, r.n, r.confidence, r.method);
    CHECK(std::fabs(i.lower - r.lower) <= 1e-13 * r.lower);
    CHECK(std::fabs(i.upper - r.upper) <= 1e-13 * r.upper);
  }
}

TEST_CASE("exact intervals up to n = 2^53, refused beyond") {
  // x = 98438538553317, n = 2^52 (issue 16): not inverted, contains x / n, and
  // its half-widths agree with z sqrt(p (1 - p) / n) to 1e-6 (the normal
  // limit is exact to O(1 / sqrt(n x)) here).
  const std::int64_t x = 98438538553317, n = std::int64_t{1} << 52;
  const double p = double(x) / double(n), half = 1.959963984540054 * std::sqrt(p * (1 - p) / n);
  for (auto m : {interval_method::clopper_pearson, interval_method::jeffreys}) {
    INFO(interval_method_name(m));
    const interval i = binomial_interval(x, n, 0.95, m);
    CHECK(i.lower < p);
    CHECK(i.upper > p);
    CHECK((p - i.lower) == Approx(half).epsilon(1e-6));
    CHECK((i.upper - p) == Approx(half).epsilon(1e-6));
  }
  const std::int64_t max = std::int64_t{1} << 53;
  const interval top = binomial_interval(max / 2, max, 0.95, interval_method::clopper_pearson);
  CHECK(top.lower < 0.5);
  CHECK(top.upper > 0.5);
  CHECK_THROWS_WITH(binomial_interval(1, max + 1), Contains("must be <= 2^53"));
  CHECK_THROWS_WITH(binomial_interval(1, 4000000000000000000, 0.95, interval_method::jeffreys),
                    Contains("'trials' = 4000000000000000000"));
}

TEST_CASE("Clopper-Pearson with few successes at n = 2^52: closed forms (fuzz_metrics finding)") {
  // x = 0 and x = 1 have closed forms: I_p(1, n) = 1 - (1 - p)^n, so the x = 1
  // lower bound is -expm1(log1p(-alpha/2) / n) and the x = 0 upper bound
  // -expm1(log(alpha/2) / n). Before the fix the inverse's start came from a
  // cancelling lgamma difference and its bisection floor underflowed to 0:
  // x = 1 returned [1.27e-14, 3.8e-16] (inverted) at any confidence.
  for (const double n : {1e5, 1e9, 4503599627370496.0}) {
    const auto trials = static_cast<std::int64_t>(n);
    for (const double conf : {1e-4, 0.5, 0.95, 0.999999, 1 - 1e-12}) {
      INFO("n " << n << " confidence " << conf);
      const double a2 = 0.5 * (1 - conf);
      const interval one = binomial_interval(1, trials, conf, interval_method::clopper_pearson);
      CHECK(one.lower == Approx(-std::expm1(std::log1p(-a2) / n)).epsilon(1e-13));
      CHECK(one.lower < 1 / n);
      CHECK(one.upper > 1 / n);
      const interval zero = binomial_interval(0, trials, conf, interval_method::clopper_pearson);
      CHECK(zero.upper == Approx(-std::expm1(std::log(a2) / n)).epsilon(1e-13));
      for (const std::int64_t x : {1, 2, 5}) {
        const interval j = binomial_interval(x, trials, conf, interval_method::jeffreys);
        const interval c = binomial_interval(x, trials, conf, interval_method::clopper_pearson);
        CHECK(j.lower < j.upper);
        CHECK(c.lower < c.upper);
        if (conf >= 0.5) CHECK(c.lower < x / n);  // CP covers x / n from the median on
        if (conf >= 0.5) CHECK(c.upper > x / n);
      }
    }
  }
  // The inverse at (1, 2^52) against the same closed form, p from 1e-200 to 1 - 1e-12.
  const double n = 4503599627370496.0;
  for (const double p : {1e-200, 1e-20, 0.025, 0.5, 0.975, 1 - 1e-12})
    CHECK(inverse_regularized_incomplete_beta(1.0, n, p) ==
          Approx(-std::expm1(std::log1p(-p) / n)).epsilon(1e-13));
}

TEST_CASE("z-test with counts at the limit: no overflow, clear error beyond") {
  const std::int64_t max = std::int64_t{1} << 53;
  const z_test_result t = two_proportion_z_test(max - 1, max, max - 1, max);
  CHECK(t.z == 0.0);
  CHECK(t.p_value == 1.0);
  // 2^52 and 2^52 - 2^30 successes of 2^53: z = (p1 - p2) / sqrt(P (1 - P) (2 / n))
  const double n = double(max), p1 = 0.5, p2 = (double(max / 2) - 1073741824.0) / n;
  const double pooled = (p1 + p2) / 2;
  const z_test_result u = two_proportion_z_test(max / 2, max, max / 2 - 1073741824, max);
  CHECK(u.z == Approx((p1 - p2) / std::sqrt(pooled * (1 - pooled) * 2 / n)).epsilon(1e-12));
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max();
  CHECK_THROWS_WITH(two_proportion_z_test(huge, huge, huge, huge), Contains("must be <= 2^53"));
  CHECK_THROWS_AS(newcombe_interval(1, huge, 1, 2), ktsa::invalid_argument);
}

TEST_CASE("confusion matrix: impossible counts and labels are refused") {
  confusion_matrix cm(3);
  CHECK_THROWS_WITH(cm.add(0, 1, -1), Contains("'count' = -1"));
  cm.add(0, 0, 5);
  CHECK(cm.total() == 5);
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max();
  CHECK_THROWS_AS(cm.add(1, 1, huge), ktsa::data_error);  // total would overflow
  CHECK(cm.total() == 5);                                 // unchanged
  // F1 with a count near INT64_MAX: 2 TP and TP + FP + FN in double, no overflow.
  confusion_matrix big(2);
  big.add(0, 0, huge - 10);
  big.add(0, 1, 10);
  const classification_scores s = classification_report(big);
  CHECK(s.f1[0] == Approx(2.0 * (huge - 10) / (2.0 * (huge - 10) + 10)));
  CHECK(s.micro.f1 == Approx(s.accuracy));
  // A label of 2e9 with num_classes = 0 would mean 4e18 cells: refused before allocating.
  CHECK_THROWS_WITH(make_confusion_matrix({0, 2000000000}, {0, 1}), Contains("2000000000"));
  CHECK_THROWS_AS(make_confusion_matrix({0, std::numeric_limits<int>::max()}, {0, 1}),
                  ktsa::data_error);
  CHECK_THROWS_WITH(confusion_matrix(5000), Contains("'num_classes' = 5000"));
  CHECK(make_confusion_matrix({0, 4095}, {4095, 0}).num_classes() == 4096);
}

TEST_CASE("nDCG with exponential gains for grades whose 2^r overflows") {
  // mpmath at 50 digits: sum (2^r - 1) / log2(i + 2) over the run and the ideal order.
  CHECK(ndcg_at(ranked_query{{1999, 0, 2000}, {2000, 1999, 0, 1}}, 10, gain::exponential) ==
        Approx(0.76018753343186855526).epsilon(1e-14));
  CHECK(ndcg_at(ranked_query{{1023, 1, 1024}, {1024, 1023, 1}}, 10, gain::exponential) ==
        Approx(0.76018753343186855526).epsilon(1e-14));
  CHECK(ndcg_at(ranked_query{{1, 1000000}, {1000000, 1}}, 10, gain::exponential) ==
        Approx(0.6309297535714574371).epsilon(1e-14));
  // small grades unchanged: {2: 5, 4: 4, 5: 3, 10: 2} with run [1..5] (docs/metrics.md)
  CHECK(ndcg_at(ranked_query{{0, 5, 0, 4, 3}, {5, 4, 3, 2}}, 10, gain::exponential) ==
        Approx(0.63477).epsilon(1e-4));
}
