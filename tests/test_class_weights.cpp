// loss::balanced_weights and the weight-ratio check (TRL's recommended
// (wD nD) / (wU nU) in [1, 4/3]). References: the quotients written out by
// hand, and an exhaustive sweep whose ratio is recomputed here in long double.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include "ktsa/loss/class_weights.hpp"

using namespace ktsa;
using Catch::Matchers::Contains;

TEST_CASE("balanced_weights on the issue's counts", "[loss][class_weights]") {
  // 2 purchases in 100 impressions: desirable weighted 98 / 2 = 49.
  loss::class_weights w = loss::balanced_weights(2, 98);
  CHECK(w.desirable == 49.0);
  CHECK(w.undesirable == 1.0);
  CHECK(loss::weight_ratio(w, 2, 98) == 1.0);
  CHECK(loss::weights_in_recommended_range(w, 2, 98));

  w = loss::balanced_weights(50, 50);
  CHECK(w.desirable == 1.0);
  CHECK(w.undesirable == 1.0);

  // The rare class is undesirable: desirable is weighted down to 2/98.
  w = loss::balanced_weights(98, 2);
  CHECK(w.undesirable == 1.0);
  CHECK(std::abs(w.desirable - 1.0 / 49.0) <= 2 * std::numeric_limits<double>::epsilon() / 49.0);
  const double r = loss::weight_ratio(w, 98, 2);
  CHECK(r >= 1.0);
  CHECK(r <= 4.0 / 3.0);

  w = loss::balanced_weights(3, 7);  // 7/3 is not a double: rounded so the ratio is >= 1
  CHECK(w.desirable * 3.0 >= 7.0);
  CHECK(std::abs(w.desirable - 7.0L / 3.0L) <= 2 * std::numeric_limits<double>::epsilon() * 7 / 3);
}

TEST_CASE("balanced_weights: every ratio in [1, 4/3] and the weight minimal",
          "[loss][class_weights]") {
  for (std::int64_t nd = 1; nd <= 120; ++nd)
    for (std::int64_t nu = 1; nu <= 120; ++nu) {
      const loss::class_weights w = loss::balanced_weights(nd, nu);
      const double r = loss::weight_ratio(w, nd, nu);
      INFO("nd " << nd << " nu " << nu << " wd " << w.desirable);
      REQUIRE(r >= 1.0);
      REQUIRE(r <= 4.0 / 3.0);
      // minimal: one ulp less falls below 1 (computed as the check computes it)
      const double below = std::nextafter(w.desirable, 0.0);
      REQUIRE((below * static_cast<double>(nd)) / static_cast<double>(nu) < 1.0);
      // and close to the exact quotient (long double reference)
      const long double exact = static_cast<long double>(nu) / static_cast<long double>(nd);
      REQUIRE(std::abs(static_cast<long double>(w.desirable) - exact) <=
              2 * std::numeric_limits<double>::epsilon() * exact);
    }
}

TEST_CASE("balanced_weights: extreme counts stay finite", "[loss][class_weights]") {
  const std::int64_t big = std::numeric_limits<std::int64_t>::max();
  loss::class_weights w = loss::balanced_weights(1, big);
  CHECK(std::isfinite(w.desirable));
  CHECK(loss::weights_in_recommended_range(w, 1, big));
  w = loss::balanced_weights(big, 1);
  CHECK(w.desirable > 0);
  CHECK(loss::weights_in_recommended_range(w, big, 1));
}

TEST_CASE("balanced_weights: empty or negative classes are errors", "[loss][class_weights]") {
  CHECK_THROWS_AS(loss::balanced_weights(0, 10), ktsa::invalid_argument);
  CHECK_THROWS_WITH(loss::balanced_weights(0, 10), Contains("'n_desirable' = 0"));
  CHECK_THROWS_WITH(loss::balanced_weights(10, 0), Contains("'n_undesirable' = 0"));
  CHECK_THROWS_WITH(loss::balanced_weights(-3, 10), Contains("'n_desirable' = -3"));
  CHECK_THROWS_WITH(loss::weight_ratio({1, 1}, 5, 0), Contains("'n_undesirable' = 0"));
  CHECK_THROWS_WITH(loss::weight_ratio({0, 1}, 5, 5), Contains("'desirable_weight' = 0"));
  CHECK_THROWS_WITH(loss::weight_ratio({1, NAN}, 5, 5), Contains("'undesirable_weight'"));
}

TEST_CASE("weight check reports weights outside [1, 4/3]", "[loss][class_weights]") {
  // TRL's default weights 1 / 1 on 2 % purchases: ratio 2/98, far below 1.
  CHECK_FALSE(loss::weights_in_recommended_range({1, 1}, 2, 98));
  CHECK_THROWS_AS(loss::require_weights_in_recommended_range({1, 1}, 2, 98),
                  ktsa::invalid_argument);
  CHECK_THROWS_WITH(
      loss::require_weights_in_recommended_range({1, 1}, 2, 98),
      Contains("0.020408163265306") && Contains("n_desirable = 2") && Contains("[1, 4/3]"));
  // Both ends of the range are in; just outside them is out.
  CHECK(loss::weights_in_recommended_range({1, 1}, 50, 50));
  CHECK(loss::weights_in_recommended_range({4, 3}, 1, 1));
  CHECK_FALSE(loss::weights_in_recommended_range({1.34, 1}, 1, 1));
  CHECK_FALSE(loss::weights_in_recommended_range({0.99, 1}, 1, 1));
  CHECK_NOTHROW(loss::require_weights_in_recommended_range({60, 1}, 2, 98));  // 120/98 = 1.22
  CHECK_THROWS_WITH(loss::require_weights_in_recommended_range({70, 1}, 2, 98),
                    Contains("1.428571428571"));
}
