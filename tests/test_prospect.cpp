// Prospect value function, derivative and probability weighting against the
// published reference values, an fp64 formula and finite differences.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "ktsa/prospect/value.hpp"

using Catch::Matchers::Contains;

TEST_CASE("value function meets the issue's reference values (alpha 0.88, lambda 2.25)") {
  const double z[] = {-2, -0.5, 0, 0.5, 2};
  const double expected[] = {-4.140844427811937, -1.2225767203418152, 0, 0.543367431263029,
                             1.8403753012497501};
  for (int i = 0; i < 5; ++i)
    REQUIRE(ktsa::prospect::value(z[i]) == Approx(expected[i]).epsilon(1e-15));
}

TEST_CASE("value function matches the fp64 formula around a non-zero reference point") {
  for (double z = -3; z <= 3; z += 0.37) {
    const double z0 = 0.6, a = 0.7, l = 1.8;
    const double expected = z >= z0 ? std::pow(z - z0, a) : -l * std::pow(z0 - z, a);
    REQUIRE(ktsa::prospect::value(z, a, l, z0) == Approx(expected).epsilon(1e-14).margin(1e-300));
  }
}

TEST_CASE("derivative matches central finite differences away from z0") {
  for (double eps : {0.0, 0.05}) {
    for (double z : {-2.5, -1.0, -0.1, 0.2, 0.9, 3.0}) {
      const double h = 1e-6, z0 = 0.3;
      const double fd = (ktsa::prospect::value(z + h, 0.88, 2.25, z0, eps) -
                         ktsa::prospect::value(z - h, 0.88, 2.25, z0, eps)) /
                        (2 * h);
      INFO("z = " << z << ", eps = " << eps);
      REQUIRE(ktsa::prospect::derivative(z, 0.88, 2.25, z0, eps) == Approx(fd).epsilon(1e-6));
    }
  }
}

TEST_CASE("derivative at z0: infinite for alpha < 1, finite when smoothed") {
  REQUIRE(std::isinf(ktsa::prospect::derivative(0.0)));
  REQUIRE(ktsa::prospect::derivative(0.0, 1.0, 2.25) == 1.0);
  REQUIRE(ktsa::prospect::derivative(0.0, 1.5, 2.25) == 0.0);
  const double eps = 1e-3;
  REQUIRE(ktsa::prospect::derivative(0.0, 0.88, 2.25, 0.0, eps) ==
          Approx(0.88 * std::pow(eps, -0.12)).epsilon(1e-14));
  // The smoothed value is continuous at z0 and tends to v as eps -> 0.
  REQUIRE(ktsa::prospect::value(0.0, 0.88, 2.25, 0.0, eps) == 0.0);
  REQUIRE(ktsa::prospect::value(1.0, 0.88, 2.25, 0.0, 1e-12) == Approx(1.0).epsilon(1e-9));
}

TEST_CASE("probability weighting matches Tversky-Kahneman 1992") {
  for (double p : {0.01, 0.1, 0.3, 0.5, 0.9, 0.99}) {
    for (double g : {0.61, 0.69}) {
      const double expected = std::pow(p, g) / std::pow(std::pow(p, g) + std::pow(1 - p, g), 1 / g);
      REQUIRE(ktsa::prospect::weight_probability(p, g) == Approx(expected).epsilon(1e-14));
    }
  }
  REQUIRE(ktsa::prospect::weight_probability(0.0, 0.61) == 0.0);
  REQUIRE(ktsa::prospect::weight_probability(1.0, 0.61) == 1.0);
  // Small probabilities are overweighted, large ones underweighted.
  REQUIRE(ktsa::prospect::weight_probability(0.01, 0.61) > 0.01);
  REQUIRE(ktsa::prospect::weight_probability(0.9, 0.61) < 0.9);
}

TEST_CASE("batch apply over strided views, in place and across thread counts") {
  std::vector<double> data(2 * 1000);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = -3.0 + 6.0 * static_cast<double>(i) / data.size();
  ktsa::vector_view<const double> every_other(data.data(), {1000}, {2});
  std::vector<float> out1(1000), out2(1000);
  ktsa::prospect::value_params p;
  p.z0 = 0.25;
  ktsa::prospect::apply_value(ktsa::exec::host{1}, every_other, ktsa::make_view(out1), p);
  ktsa::prospect::apply_value(ktsa::exec::host{2}, every_other, ktsa::make_view(out2), p);
  for (int i = 0; i < 1000; ++i) {
    const double z = data[2 * i];
    const double expected = z >= 0.25 ? std::pow(z - 0.25, 0.88) : -2.25 * std::pow(0.25 - z, 0.88);
    REQUIRE(out1[i] == Approx(expected).epsilon(1e-6).margin(1e-7));
    REQUIRE(out1[i] == out2[i]);
  }
  std::vector<double> inplace(data.begin(), data.begin() + 10);
  ktsa::prospect::apply_derivative(ktsa::exec::host{}, ktsa::make_view(inplace),
                                   ktsa::make_view(inplace), p);
  REQUIRE(inplace[0] == Approx(2.25 * 0.88 * std::pow(3.25, -0.12)).epsilon(1e-14));
}

TEST_CASE("bad parameters are rejected with the argument's name and value") {
  std::vector<double> z(3), out(3), short_out(2);
  ktsa::prospect::value_params p;
  p.alpha = -1;
  REQUIRE_THROWS_WITH(
      ktsa::prospect::apply_value(ktsa::exec::host{}, ktsa::make_view(z), ktsa::make_view(out), p),
      Contains("'alpha' = -1"));
  p = {};
  p.lambda = 0;
  REQUIRE_THROWS_AS(
      ktsa::prospect::apply_value(ktsa::exec::host{}, ktsa::make_view(z), ktsa::make_view(out), p),
      ktsa::invalid_argument);
  p = {};
  p.epsilon = -0.5;
  REQUIRE_THROWS_WITH(
      ktsa::prospect::apply_value(ktsa::exec::host{}, ktsa::make_view(z), ktsa::make_view(out), p),
      Contains("'epsilon' = -0.5"));
  REQUIRE_THROWS_AS(ktsa::prospect::apply_value(ktsa::exec::host{}, ktsa::make_view(z),
                                                ktsa::make_view(short_out)),
                    ktsa::shape_error);
  REQUIRE_THROWS_WITH(ktsa::prospect::weight_probability(1.5, 0.61), Contains("'p' = 1.5"));
  REQUIRE_THROWS_WITH(ktsa::prospect::weight_probability(0.5, 0), Contains("'g' = 0"));
  REQUIRE_THROWS_WITH(ktsa::exec::host{-2}.resolved_threads(), Contains("= -2"));
}

TEST_CASE("NaN flows through value and derivative alike (issue 16 item 6)") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const double alpha : {0.88, 1.0, 1.5}) {
    INFO("alpha " << alpha);
    REQUIRE(std::isnan(ktsa::prospect::value(nan, alpha, 2.25)));
    REQUIRE(std::isnan(ktsa::prospect::derivative(nan, alpha, 2.25)));  // was lambda at alpha 1
    REQUIRE(std::isnan(ktsa::prospect::derivative(1.0, alpha, 2.25, nan)));
    REQUIRE(std::isnan(ktsa::prospect::derivative(nan, alpha, 2.25, 0.0, 0.1)));
  }
  REQUIRE(std::isnan(ktsa::prospect::probability_weight(nan, 0.61)));
}

TEST_CASE("probability_weight stays in [0, 1] for extreme g (issue 16 item 6)") {
  // g -> inf and g -> 0 both send w(p) to 0 for p in (0, 1); the direct formula
  // gave 0 / 0 = NaN at g = 1e300.
  for (const double p : {1e-9, 0.3, 0.5, 0.7, 0.999999}) {
    INFO("p " << p);
    REQUIRE(ktsa::prospect::probability_weight(p, 1e300) == 0.0);
    REQUIRE(ktsa::prospect::weight_probability(p, 1e300) == 0.0);
    REQUIRE(ktsa::prospect::probability_weight(p, 1e-300) == 0.0);
  }
  // p^g and (1-p)^g subnormal (direct formula) and 0 (log-domain path). Reference
  // from mpmath, 50 digits: p**g / (p**g + (1-p)**g)**(1/g) at p = 1/2, g = 1070.
  const double w = ktsa::prospect::probability_weight(0.5, 1070.0);
  REQUIRE(std::abs(w - 1.5799862182872823e-322) <= 2 * 4.9406564584124654e-324);
  // g = 1100: both powers underflow to 0; the true w is about 1e-331, below the
  // smallest subnormal, so 0 (and not NaN) is the correctly rounded answer.
  REQUIRE(ktsa::prospect::probability_weight(0.5, 1100.0) == 0.0);
  REQUIRE(ktsa::prospect::probability_weight(0.6, 3000.0) == 0.0);
}
