// ktsa/metrics/interval.hpp: binomial confidence intervals and the comparison
// of two proportions (an arm against a base arm).
//
// With p = x / n, z = Phi^-1(1 - alpha / 2), alpha = 1 - confidence:
//   wilson           (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
//   agresti_coull    n~ = n + z^2, p~ = (x + z^2/2) / n~, p~ +- z sqrt(p~(1-p~)/n~),
//                    clipped to [0, 1] (as statsmodels does)
//   wald             p +- z sqrt(p(1-p)/n), clipped to [0, 1]
//   clopper_pearson  [B^-1(alpha/2; x, n-x+1), B^-1(1-alpha/2; x+1, n-x)], 0 at x = 0,
//                    1 at x = n (exact: the binomial tails equal alpha/2)
//   jeffreys         Beta(x + 1/2, n - x + 1/2) quantiles alpha/2 and 1 - alpha/2,
//                    with lower = 0 at x = 0 and upper = 1 at x = n (Brown, Cai and
//                    DasGupta 2001)
// n = 0 carries no information: every method returns [0, 1].
//
// Two proportions p1 = x1/n1 (the arm) and p2 = x2/n2 (the base):
//   two_proportion_z_test  z = (p1 - p2) / sqrt(P(1-P)(1/n1 + 1/n2)), P = (x1+x2)/(n1+n2),
//                          two-sided p = erfc(|z| / sqrt 2); z = 0, p = 1 when P is 0 or 1
//   newcombe_interval      p1 - p2: Newcombe's hybrid score interval (his method 10)
//                          from the two Wilson intervals [l1, u1], [l2, u2]:
//                          [d - sqrt((p1-l1)^2 + (u2-p2)^2), d + sqrt((u1-p1)^2 + (p2-l2)^2)]
//   log_ratio_interval     p1 / p2 with 0.5 added to every count and trial:
//                          exp(log(p1'/p2') +- z sqrt(1/x1' - 1/n1' + 1/x2' - 1/n2'))
//   uplift_interval        relative uplift p1/p2 - 1 by the delta method:
//                          +- z sqrt(v1/p2^2 + p1^2 v2/p2^4), v = p(1-p)/n; NaN if p2 = 0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "ktsa/core/errors.hpp"
#include "ktsa/metrics/special.hpp"

namespace ktsa::metrics {

enum class interval_method { wilson, agresti_coull, clopper_pearson, jeffreys, wald };

inline const char* interval_method_name(interval_method m) {
  switch (m) {
    case interval_method::wilson:
      return "wilson";
    case interval_method::agresti_coull:
      return "agresti_coull";
    case interval_method::clopper_pearson:
      return "clopper_pearson";
    case interval_method::jeffreys:
      return "jeffreys";
    case interval_method::wald:
      return "wald";
  }
  return "unknown";
}

/// Parses a method name ("wilson", "agresti_coull", "clopper_pearson", "jeffreys",
/// "wald"; '-' may stand for '_'). Throws invalid_argument on anything else.
inline interval_method parse_interval_method(std::string name) {
  for (char& ch : name)
    if (ch == '-') ch = '_';
  for (interval_method m :
       {interval_method::wilson, interval_method::agresti_coull, interval_method::clopper_pearson,
        interval_method::jeffreys, interval_method::wald})
    if (name == interval_method_name(m)) return m;
  ktsa::detail::fail_argument("method", name,
                              "must be wilson, agresti_coull, clopper_pearson, jeffreys or wald");
}

/// A closed interval [lower, upper]; NaN bounds where the quantity is undefined.
struct interval {
  double lower;
  double upper;
};

namespace detail {

inline void require_confidence(double confidence) {
  ktsa::detail::require(confidence > 0.0 && confidence < 1.0, "confidence", confidence,
                        "must be in (0, 1)");
}

// Counts are converted to double: above 2^53 they would not be exact (and
// sums of two could overflow int64), so they are refused.
inline constexpr std::int64_t max_count = std::int64_t{1} << 53;

inline void require_counts(const char* x_name, std::int64_t x, const char* n_name, std::int64_t n) {
  ktsa::detail::require(n >= 0, n_name, n, "must be >= 0");
  ktsa::detail::require(x >= 0, x_name, x, "must be >= 0");
  ktsa::detail::require(n <= max_count, n_name, n,
                        "must be <= 2^53 = 9007199254740992 (counts are exact in double only "
                        "up to there)");
  if (x > n)
    throw ktsa::invalid_argument(ktsa::detail::concat("ktsa: argument '", x_name, "' = ", x,
                                                      ": must be <= '", n_name, "' = ", n));
}

// z = Phi^-1(1 - alpha/2), taken from the lower tail for full precision.
inline double critical_z(double confidence) {
  return -normal_quantile(0.5 * (1.0 - confidence));
}

inline double clip01(double v) {
  return std::min(1.0, std::max(0.0, v));
}

inline interval wilson(std::int64_t x, std::int64_t n, double z) {
  const double nd = static_cast<double>(n), p = static_cast<double>(x) / nd, z2 = z * z;
  const double denom = 1.0 + z2 / nd;
  const double center = (p + z2 / (2.0 * nd)) / denom;
  const double half = z / denom * std::sqrt(p * (1.0 - p) / nd + z2 / (4.0 * nd * nd));
  // The bounds at x = 0 and x = n are exactly 0 and 1; say so rather than round.
  return {x == 0 ? 0.0 : clip01(center - half), x == n ? 1.0 : clip01(center + half)};
}

}  // namespace detail

/// Confidence interval for a binomial proportion successes / trials.
/// Throws ktsa::invalid_argument for negative counts, successes > trials,
/// trials > 2^53 or a confidence outside (0, 1).
inline interval binomial_interval(std::int64_t successes, std::int64_t trials,
                                  double confidence = 0.95,
                                  interval_method method = interval_method::wilson) {
  detail::require_counts("successes", successes, "trials", trials);
  detail::require_confidence(confidence);
  if (trials == 0) return {0.0, 1.0};
  const double x = static_cast<double>(successes), n = static_cast<double>(trials);
  const double alpha = 1.0 - confidence;
  switch (method) {
    case interval_method::wilson:
      return detail::wilson(successes, trials, detail::critical_z(confidence));
    case interval_method::agresti_coull: {
      const double z = detail::critical_z(confidence), z2 = z * z;
      const double nt = n + z2, pt = (x + 0.5 * z2) / nt;
      const double half = z * std::sqrt(pt * (1.0 - pt) / nt);
      return {detail::clip01(pt - half), detail::clip01(pt + half)};
    }
    case interval_method::wald: {
      const double z = detail::critical_z(confidence), p = x / n;
      const double half = z * std::sqrt(p * (1.0 - p) / n);
      return {detail::clip01(p - half), detail::clip01(p + half)};
    }
    // The upper bounds solve the upper tail 1 - I = alpha / 2 directly
    // (inverse_beta with q = alpha / 2): 1 - alpha / 2 would round the tail
    // away at high confidence.
    case interval_method::clopper_pearson:
      return {successes == 0
                  ? 0.0
                  : metrics::detail::inverse_beta(x, n - x + 1.0, 0.5 * alpha, 1.0 - 0.5 * alpha),
              successes == trials
                  ? 1.0
                  : metrics::detail::inverse_beta(x + 1.0, n - x, 1.0 - 0.5 * alpha, 0.5 * alpha)};
    case interval_method::jeffreys:
      return {successes == 0 ? 0.0
                             : metrics::detail::inverse_beta(x + 0.5, n - x + 0.5, 0.5 * alpha,
                                                             1.0 - 0.5 * alpha),
              successes == trials ? 1.0
                                  : metrics::detail::inverse_beta(x + 0.5, n - x + 0.5,
                                                                  1.0 - 0.5 * alpha, 0.5 * alpha)};
  }
  ktsa::detail::fail_argument("method", static_cast<int>(method), "is not an interval_method");
}

struct z_test_result {
  double z;        ///< (p1 - p2) / pooled standard error
  double p_value;  ///< two-sided
};

namespace detail {
inline void require_two_samples(std::int64_t x1, std::int64_t n1, std::int64_t x2,
                                std::int64_t n2) {
  require_counts("successes1", x1, "trials1", n1);
  require_counts("successes2", x2, "trials2", n2);
  ktsa::detail::require(n1 > 0, "trials1", n1, "must be > 0 to compare proportions");
  ktsa::detail::require(n2 > 0, "trials2", n2, "must be > 0 to compare proportions");
}
}  // namespace detail

/// Two-proportion z-test with pooled variance (statsmodels'
/// proportions_ztest default). Both trials must be > 0.
inline z_test_result two_proportion_z_test(std::int64_t successes1, std::int64_t trials1,
                                           std::int64_t successes2, std::int64_t trials2) {
  detail::require_two_samples(successes1, trials1, successes2, trials2);
  const double n1 = static_cast<double>(trials1), n2 = static_cast<double>(trials2);
  const double p1 = static_cast<double>(successes1) / n1;
  const double p2 = static_cast<double>(successes2) / n2;
  // In double: the int64 sum could overflow (counts are <= 2^53, see require_counts).
  const double pooled =
      (static_cast<double>(successes1) + static_cast<double>(successes2)) / (n1 + n2);
  // All successes or all failures: the two rates are equal, nothing to test.
  if (pooled == 0.0 || pooled == 1.0) return {0.0, 1.0};
  const double z = (p1 - p2) / std::sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2));
  return {z, std::erfc(std::fabs(z) / std::sqrt(2.0))};
}

/// Newcombe's hybrid score interval for p1 - p2. Both trials must be > 0.
inline interval newcombe_interval(std::int64_t successes1, std::int64_t trials1,
                                  std::int64_t successes2, std::int64_t trials2,
                                  double confidence = 0.95) {
  detail::require_two_samples(successes1, trials1, successes2, trials2);
  detail::require_confidence(confidence);
  const double z = detail::critical_z(confidence);
  const double p1 = static_cast<double>(successes1) / static_cast<double>(trials1);
  const double p2 = static_cast<double>(successes2) / static_cast<double>(trials2);
  const interval w1 = detail::wilson(successes1, trials1, z);
  const interval w2 = detail::wilson(successes2, trials2, z);
  const double d = p1 - p2;
  return {d - std::hypot(p1 - w1.lower, w2.upper - p2),
          d + std::hypot(w1.upper - p1, p2 - w2.lower)};
}

/// Interval for the ratio p1 / p2 on the log scale, 0.5 added to each count
/// and trial (finite even when a count is 0). Both trials must be > 0.
inline interval log_ratio_interval(std::int64_t successes1, std::int64_t trials1,
                                   std::int64_t successes2, std::int64_t trials2,
                                   double confidence = 0.95) {
  detail::require_two_samples(successes1, trials1, successes2, trials2);
  detail::require_confidence(confidence);
  const double z = detail::critical_z(confidence);
  const double x1 = static_cast<double>(successes1) + 0.5, n1 = static_cast<double>(trials1) + 0.5;
  const double x2 = static_cast<double>(successes2) + 0.5, n2 = static_cast<double>(trials2) + 0.5;
  const double log_ratio = std::log(x1 / n1) - std::log(x2 / n2);
  const double se = std::sqrt(1.0 / x1 - 1.0 / n1 + 1.0 / x2 - 1.0 / n2);
  return {std::exp(log_ratio - z * se), std::exp(log_ratio + z * se)};
}

/// Delta-method interval for the relative uplift p1 / p2 - 1. NaN bounds when
/// p2 = 0 (the uplift is undefined). Both trials must be > 0.
inline interval uplift_interval(std::int64_t successes1, std::int64_t trials1,
                                std::int64_t successes2, std::int64_t trials2,
                                double confidence = 0.95) {
  detail::require_two_samples(successes1, trials1, successes2, trials2);
  detail::require_confidence(confidence);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (successes2 == 0) return {nan, nan};
  const double z = detail::critical_z(confidence);
  const double n1 = static_cast<double>(trials1), n2 = static_cast<double>(trials2);
  const double p1 = static_cast<double>(successes1) / n1;
  const double p2 = static_cast<double>(successes2) / n2;
  const double v1 = p1 * (1.0 - p1) / n1, v2 = p2 * (1.0 - p2) / n2;
  const double uplift = p1 / p2 - 1.0;
  const double se = std::sqrt(v1 / (p2 * p2) + p1 * p1 * v2 / (p2 * p2 * p2 * p2));
  return {uplift - z * se, uplift + z * se};
}

}  // namespace ktsa::metrics
