// ktsa/metrics/normal.hpp: the standard normal CDF and quantile.
//
//   normal_cdf(x)       Phi(x) = erfc(-x / sqrt 2) / 2
//   normal_quantile(p)  Phi^-1(p): Acklam's rational start (~1e-9), then
//                       Halley steps on a residual that keeps its digits in
//                       each region: erf near the centre (p in (1/4, 3/4)),
//                       erfc in the tails, and log Phi from the asymptotic
//                       Mills-ratio series where Phi(x) would be subnormal
//                       (p < 1e-290), where exp(x^2 / 2) overflows.
#pragma once

#include <cmath>
#include <limits>

#include "ktsa/core/errors.hpp"

namespace ktsa::metrics {

/// Standard normal CDF.
inline double normal_cdf(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0));
}

namespace detail {

// Acklam's rational approximation of the lower-tail quantile (relative error
// about 1e-9), for p in (0, 0.5].
inline double acklam_lower(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  if (p < 0.02425) {
    const double q = std::sqrt(-2.0 * std::log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  }
  const double q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
}

// For x <= -30: Phi(x) = phi(x) / |x| * S, S = 1 - 1/x^2 + 3/x^4 - 15/x^6 + ...
// (the terms shrink until k ~ x^2 / 2, far beyond the 12 used). Returns S.
inline double mills_series(double x) {
  const double r = 1.0 / (x * x);
  double term = 1.0, sum = 1.0;
  for (int k = 1; k <= 12; ++k) {
    term *= -(2.0 * k - 1.0) * r;
    sum += term;
  }
  return sum;
}

}  // namespace detail

/// Phi^-1(p) for p in [0, 1]; -inf at 0, +inf at 1. Exactly antisymmetric:
/// normal_quantile(1 - p) == -normal_quantile(p) whenever 1 - p is exact.
inline double normal_quantile(double p) {
  ktsa::detail::require(p >= 0.0 && p <= 1.0, "p", p, "must be in [0, 1]");
  if (p == 0.0) return -std::numeric_limits<double>::infinity();
  if (p == 1.0) return std::numeric_limits<double>::infinity();
  // Work in the lower tail, where p carries full relative precision
  // (1 - p is exact for p >= 0.5 by Sterbenz' lemma).
  const bool upper = p > 0.5;
  const double t = upper ? 1.0 - p : p;
  double x = detail::acklam_lower(t);
  const double sqrt_2pi = 2.5066282746310002, log_sqrt_2pi = 0.91893853320467274178;
  if (t < 1e-290) {
    // Newton on log Phi(x) = log t; d log Phi / dx = phi / Phi = |x| / S.
    const double log_t = std::log(t);
    for (int i = 0; i < 3; ++i) {
      const double s = detail::mills_series(x);
      const double g = -0.5 * x * x - std::log(-x) - log_sqrt_2pi + std::log(s) - log_t;
      x -= g * s / -x;
    }
  } else {
    // Halley steps on Phi(x) - t; the second one polishes the first's rounding.
    // Near the centre Phi(x) - 1/2 = erf(x / sqrt 2) / 2 and t - 1/2 (exact)
    // keep the digits that erfc(.) ~ 1 would round away.
    for (int i = 0; i < 2; ++i) {
      const double e =
          t > 0.25 ? 0.5 * std::erf(x * 0.70710678118654752440) - (t - 0.5) : normal_cdf(x) - t;
      const double u = e * sqrt_2pi * std::exp(0.5 * x * x);
      x -= u / (1.0 + 0.5 * x * u);
    }
  }
  return upper ? -x : x;
}

}  // namespace ktsa::metrics
