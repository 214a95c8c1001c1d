// ktsa/metrics/incomplete_beta.hpp: the regularized incomplete beta function
// I_x(a, b), its complement 1 - I_x(a, b) and their inverses, to nearly full
// double precision for a + b up to 1e10 and beyond (docs/metrics.md states the
// tested accuracy).
//
// The scheme follows the analysis of DiDonato and Morris (ACM TOMS 708, 1992):
//  * the prefactor x^a y^b / B(a, b) is never formed from lgamma differences,
//    which cancel for large a + b (lgamma(1e7) ~ 1.5e8 loses 8 digits): for
//    a, b >= 10 it is exp(-(a rlog1(-l/a) + b rlog1(l/b))) sqrt(ab / 2 pi (a+b))
//    e^-bcorr with l = a - (a + b) x and rlog1(t) = t - log(1 + t); with one
//    parameter small, log Gamma(b) - log Gamma(a + b) comes from Stirling's
//    series with the large terms removed analytically;
//  * each tail is computed directly on the side where it is the smaller one
//    (x below the mean for a, b > 1; the power series and -expm1 of an
//    absolutely accurate logarithm where a parameter is <= 1), so neither
//    1 - I nor I is ever obtained by cancellation;
//  * the continued fraction is DiDonato and Morris' form in l = (a + b) y - b,
//    which does not cancel near the mean the way 1 - (a + b) x / (a + 1) does.
// x and y = 1 - x are passed separately inside, so a tail given by y (an upper
// bound near 1) keeps its precision.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "ktsa/core/errors.hpp"
#include "ktsa/metrics/normal.hpp"

namespace ktsa::metrics {

namespace detail {

/// Both tails: lower = I_x(a, b), upper = 1 - I_x(a, b).
struct beta_tails {
  double lower;
  double upper;
};

// t - log(1 + t) for t > -1, without the cancellation of the direct formula
// near 0: with s = t / (2 + t), log(1 + t) = 2 atanh(s) and t - 2s = s t.
inline double rlog1(double t) {
  if (t < -0.5 || t > 0.5) return t - std::log1p(t);
  const double s = t / (2.0 + t), s2 = s * s;
  double power = s * s2, sum = 0.0;  // s^3/3 + s^5/5 + ...
  for (int k = 3; k < 200; k += 2) {
    const double add = power / k;
    sum += add;
    if (std::fabs(add) <= 1e-18 * std::fabs(sum)) break;
    power *= s2;
  }
  return s * t - 2.0 * sum;
}

// Stirling's correction lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2) for
// z >= 10 (the series B_2k / (2k (2k - 1) z^(2k-1)); 8 terms leave < 2e-18).
inline double stirling_correction(double z) {
  static constexpr double c[] = {1.0 / 12,   -1.0 / 360,        1.0 / 1260, -1.0 / 1680,
                                 1.0 / 1188, -691.0 / 360360.0, 1.0 / 156,  -3617.0 / 122400.0};
  const double r = 1.0 / z, r2 = r * r;
  double s = c[7];
  for (int k = 6; k >= 0; --k) s = s * r2 + c[k];
  return s * r;
}

// log Gamma(1 + a) for a >= 0, accurate in the absolute sense near a = 0 (the
// argument 1 + a would round away a's low bits): the Taylor series
// -gamma a + sum_k (-1)^k zeta(k)/k a^k for a <= 0.2.
inline double lgamma1p(double a) {
  if (a > 0.2) return std::lgamma(1.0 + a);
  // zeta(k) / k, k = 2 .. 27 (mpmath, 20 digits).
  static constexpr double c[] = {
      0.82246703342411321824,  0.40068563438653142847,  0.27058080842778454788,
      0.20738555102867398527,  0.16955717699740818995,  0.14404989676884611812,
      0.12550966952474304242,  0.11133426586956469049,  0.10009945751278180853,
      0.090954017145829042233, 0.083353840546109004025, 0.076932516411352191473,
      0.071432946295361336059, 0.066668705882420468033, 0.062500955141213040742,
      0.058823978658684582339, 0.055555767627403611102, 0.052631679379616660734,
      0.05000004769810169364,  0.047619070330142227991, 0.045454556293204669442,
      0.043478266053040259361, 0.041666669150341210469, 0.040000001192140140586,
      0.038461539034675185706, 0.037037037312989325549};
  double s = c[25];
  for (int j = 24; j >= 0; --j) s = s * -a + c[j];
  return -0.57721566490153286061 * a + a * a * s;
}

// log Gamma(b) - log Gamma(b + a) = rest - a log(base), for a < 10 and any
// b > 0 (b is first raised to >= 10 with log1p terms). Returned in two parts
// so that the caller can merge -a log(base) with its a log x.
inline double lgamma_ratio(double b, double a, double& base) {
  double rest = 0.0;
  while (b < 10.0) {
    rest += std::log1p(a / b);  // Gamma(b) = Gamma(b + 1) / b
    b += 1.0;
  }
  // (b - 1/2) log b - (a + b - 1/2) log(a + b) + a = b rlog1(a/b) - (1/2) log1p(a/b) ... with
  // the sign worked out: -(b - 1/2) log1p(t) + a - a log(a + b), t = a / b.
  const double t = a / b;
  rest += b * rlog1(t) + 0.5 * std::log1p(t) + stirling_correction(b) - stirling_correction(b + a);
  base = b + a;
  return rest;
}

// a log(x) + a log(base) as a log(x base) while x base is a normal number.
inline double log_scaled(double a, double x, double log_x, double base) {
  const double xb = x * base;
  if (x <= 0.5 && xb >= 1e-290) return a * std::log(xb);
  return a * (log_x + std::log(base));
}

// l = a - (a + b) x = (a + b) y - b, from whichever of x, y is the smaller
// (the one that carries full precision), with a + b and the product kept exact
// (TwoSum, fma): near the mean l is a small difference of large numbers.
inline double beta_lambda(double a, double b, double x, double y) {
  const double s = a + b, bv = s - a, s_lo = (a - (s - bv)) + (b - bv);
  if (x <= y) {
    const double p = s * x, p_lo = std::fma(s, x, -p);
    return ((a - p) - p_lo) - s_lo * x;
  }
  const double p = s * y, p_lo = std::fma(s, y, -p);
  return ((p - b) + p_lo) + s_lo * y;
}

// log(x^a y^b / (a B(a, b))), with an absolute error of a few ulps of the
// terms that do not cancel; without the y^b factor when with_y is false (the
// power series' front, so that b log y is not added and taken away again).
inline double log_beta_front(double a, double b, double x, double y, bool with_y = true) {
  const double log_x = x <= 0.5 ? std::log(x) : std::log1p(-y);
  const double log_y = y <= 0.5 ? std::log(y) : std::log1p(-x);
  if (std::min(a, b) >= 10.0) {
    // a log(x / x0) + b log(y / y0), x0 = a / (a + b), y0 = b / (a + b), is
    // -l - a rlog1(-l/a) + l - b rlog1(l/b): the l terms cancel exactly. Where
    // |l / a| or |l / b| is large the log is taken directly (no cancellation there).
    const double l = beta_lambda(a, b, x, y), s = a + b;
    const double ta = -l / a, tb = l / b;
    double e = 0.0;
    if (std::fabs(ta) <= 0.5)
      e += -a * rlog1(ta) - l;
    else
      e += a * (ta < -0.5 ? std::log(x * s / a) : std::log1p(ta));
    if (std::fabs(tb) <= 0.5)
      e += -b * rlog1(tb) + l;
    else
      e += b * (tb < -0.5 ? std::log(y * s / b) : std::log1p(tb));
    // log B(a, b) = log sqrt(2 pi) + a log x0 + b log y0 - (1/2) log(ab / (a + b)) + bcorr.
    const double bcorr = stirling_correction(a) + stirling_correction(b) - stirling_correction(s);
    return e + 0.5 * (std::log(b / s) - std::log(a)) - 0.91893853320467274178 - bcorr -
           (with_y ? 0.0 : b * log_y);
  }
  double base = 0.0;
  if (a <= b) {  // log(a B) = log Gamma(1 + a) + log Gamma(b) - log Gamma(a + b)
    const double rest = lgamma_ratio(b, a, base);
    return log_scaled(a, x, log_x, base) + (with_y ? b * log_y : 0.0) - lgamma1p(a) - rest;
  }
  // b < a, b < 10: log(a B) = log a + log Gamma(b) + log Gamma(a) - log Gamma(a + b)
  const double rest = lgamma_ratio(a, b, base);
  return a * log_x + (with_y ? log_scaled(b, y, log_y, base) : b * std::log(base)) - std::log(a) -
         std::lgamma(b) - rest;
}

// The power series I_x(a, b) = x^a / (a B(a, b)) (1 + a sum_{n>=1} (1-b)_n x^n / (n! (a+n))):
// returns the a * sum part. Fast for x <= 1/2 with b <= 1, or b x small.
inline double beta_series_tail(double a, double b, double x) {
  double term = 1.0, sum = 0.0;
  for (int n = 1; n < 100000; ++n) {
    term *= (n - b) * x / n;
    const double add = a * term / (a + n);
    sum += add;
    if (std::fabs(add) <= 1e-17 * std::fabs(1.0 + sum)) break;
  }
  return sum;
}

// DiDonato and Morris' continued fraction for I_x(a, b) / (x^a y^b / B(a, b)),
// valid for l = a - (a + b) x >= 0, evaluated by the modified Lentz method:
// f = b0 + a1 / (b1 + a2 / (b2 + ...)), result 1 / f, with
//   b0 = (1 + l) / (1 + 1/a),
//   a_n = (1 + (n-1)/a) (1 + (n-1)/a + b/a) (a / (a + 2n - 1))^2 n (b - n) x^2,
//   b_n = n + n (b - n) x / (a + 2n - 1) + (1 + n/a) / (1 + 1/a + 2n/a) (1 + l + n (1 + y)).
inline double beta_fraction(double a, double b, double x, double y, double l) {
  const double tiny = 1e-300, c0 = b / a, c1 = 1.0 + 1.0 / a, cl = 1.0 + l;
  double f = cl / c1;
  if (f == 0.0) f = tiny;
  double C = f, D = 0.0;
  constexpr int max_terms = 2000000;  // grows like sqrt(min(a, b)) near the mean
  for (int n = 1; n <= max_terms; ++n) {
    const double t = n / a, p = 1.0 + (n - 1) / a, s = a + 2.0 * n - 1.0, w = n * (b - n) * x;
    const double e = a / s;
    const double alpha = p * (p + c0) * e * e * (w * x);
    const double beta = n + w / s + (1.0 + t) / (c1 + t + t) * (cl + n * (1.0 + y));
    D = beta + alpha * D;
    if (std::fabs(D) < tiny) D = tiny;
    C = beta + alpha / C;
    if (std::fabs(C) < tiny) C = tiny;
    D = 1.0 / D;
    const double step = C * D;
    f *= step;
    if (std::fabs(step - 1.0) <= 2.3e-16) return 1.0 / f;
  }
  throw ktsa::data_error(
      ktsa::detail::concat("ktsa: incomplete beta continued fraction did not converge for a = ", a,
                           ", b = ", b, ", x = ", x));
}

inline void require_beta_shape(double a, double b) {
  ktsa::detail::require(std::isfinite(a) && a > 0, "a", a, "must be finite and > 0");
  ktsa::detail::require(std::isfinite(b) && b > 0, "b", b, "must be finite and > 0");
}

// Both tails at (x, y = 1 - x); x and y must be consistent (one of them exact,
// the other 1 minus it, rounded), a, b > 0 finite.
inline beta_tails incomplete_beta_tails(double a, double b, double x, double y) {
  if (x <= 0.0) return {0.0, 1.0};
  if (y <= 0.0) return {1.0, 0.0};
  bool swapped = false;
  const auto swap_all = [&] {
    std::swap(a, b);
    std::swap(x, y);
    swapped = !swapped;
  };
  double w = 0.0, w1 = 0.0;  // I_x(a, b) and its complement after any swap
  const auto by_series = [&] {
    // log I_x(a, b) with an absolute error of a few ulps, so that the
    // complement -expm1(log I) keeps its digits when I is near 1.
    const double log_w = log_beta_front(a, b, x, y, false) + std::log1p(beta_series_tail(a, b, x));
    w = std::exp(log_w);
    w1 = -std::expm1(log_w);
  };
  if (std::min(a, b) <= 1.0) {
    if (x > 0.5) swap_all();
    if (b <= 1.0 || b * x <= 2.0) {
      by_series();
    } else {
      // The complement I_y(b, a) is the small tail here (b x > 2, a <= 1) and
      // its fraction converges: l' = b - (a + b) y = (a + b) x - a > 0.
      const double l = beta_lambda(b, a, y, x);
      w1 = std::exp(log_beta_front(b, a, y, x) + std::log(b)) * beta_fraction(b, a, y, x, l);
      w = 1.0 - w1;
    }
  } else {
    if (beta_lambda(a, b, x, y) < 0.0) swap_all();  // x at or below the mean a / (a + b)
    if (b < 40.0 && b * x <= 0.7) {
      by_series();
    } else {
      const double l = beta_lambda(a, b, x, y);
      w = std::exp(log_beta_front(a, b, x, y) + std::log(a)) * beta_fraction(a, b, x, y, l);
      w1 = 1.0 - w;
    }
  }
  w = std::min(1.0, std::max(0.0, w));
  w1 = std::min(1.0, std::max(0.0, w1));
  return swapped ? beta_tails{w1, w} : beta_tails{w, w1};
}

}  // namespace detail

/// I_x(a, b), the regularized incomplete beta function (the Beta(a, b) CDF at x).
inline double regularized_incomplete_beta(double a, double b, double x) {
  detail::require_beta_shape(a, b);
  ktsa::detail::require(x >= 0.0 && x <= 1.0, "x", x, "must be in [0, 1]");
  return detail::incomplete_beta_tails(a, b, x, 1.0 - x).lower;
}

/// 1 - I_x(a, b) (the Beta(a, b) upper tail at x), computed directly: no
/// cancellation when I_x(a, b) is near 1.
inline double regularized_incomplete_beta_complement(double a, double b, double x) {
  detail::require_beta_shape(a, b);
  ktsa::detail::require(x >= 0.0 && x <= 1.0, "x", x, "must be in [0, 1]");
  return detail::incomplete_beta_tails(a, b, x, 1.0 - x).upper;
}

namespace detail {

// x with I_x(a, b) = p, where q = 1 - p is given too (the smaller of the two
// carries the precision). Searches the variable on the side of 1/2 where the
// root lies (x, or y = 1 - x with a and b swapped), so a root near 1 keeps its
// digits; Newton's method inside a bisection bracket (geometric while the
// bracket spans orders of magnitude), so it always ends.
inline double inverse_beta(double a, double b, double p, double q) {
  if (p <= 0.0) return 0.0;
  if (q <= 0.0) return 1.0;
  const beta_tails half = incomplete_beta_tails(a, b, 0.5, 0.5);
  const bool upper_side = p <= q ? p > half.lower : q < half.upper;
  if (upper_side) {  // solve I_y(b, a) = q for y <= 1/2
    std::swap(a, b);
    std::swap(p, q);
  }
  const bool use_lower = p <= q;  // residual in the smaller tail
  const double target = use_lower ? p : q, log_target = std::log(target);
  double lo = 0.0, hi = 0.5;
  // Start: the normal approximation when both parameters are large, else the
  // leading term of the power series, x^a / (a B(a, b)) = p (a rough guess:
  // Newton and the bracket do the rest).
  double v;
  if (std::min(a, b) >= 5.0) {
    const double s = a + b, sd = std::sqrt(a * b / (s * s * (s + 1.0)));
    const double z = use_lower ? normal_quantile(p) : -normal_quantile(q);
    v = a / s + z * sd;
  } else if (a <= b) {
    // log(a B(a, b)) from log_beta_front at x = 1/2 (no lgamma difference,
    // which cancels to nothing for b ~ 1e15: the start would be garbage).
    const double log_aB = a * std::log(0.5) - log_beta_front(a, b, 0.5, 0.5, false);
    v = std::exp((std::log(p) + log_aB) / a);
  } else {
    v = std::exp(
        (std::log(p) + std::log(a) + std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b)) / a);
  }
  if (!(v > lo && v < hi)) v = 0.25;
  // Newton on g(v) = +-(log tail(v) - log target), increasing in v: the tails
  // are close to exponential in v far out, where Newton on the tail itself
  // crawls (each step a fraction of the distance).
  for (int it = 0; it < 400; ++it) {
    const beta_tails t = incomplete_beta_tails(a, b, v, 1.0 - v);
    const double tail = use_lower ? t.lower : t.upper;
    if (tail == target) break;
    const bool below = use_lower ? tail < target : tail > target;  // root lies above v
    (below ? lo : hi) = v;
    double next = std::numeric_limits<double>::quiet_NaN();  // no Newton step (tail underflows)
    if (tail > 0.0) {
      // log of the ratio, not a difference of logs: near the root the two logs
      // agree to more digits than a log of ~-700 can hold.
      const double r = tail / target;
      const double log_r = r > 0.0 && std::isfinite(r) ? std::log(r) : std::log(tail) - log_target;
      const double g = use_lower ? log_r : -log_r;
      const double log_density =
          log_beta_front(a, b, v, 1.0 - v) + std::log(a) - std::log(v) - std::log1p(-v);
      next = v - g * tail / std::exp(log_density);
    }
    // A step within 4 ulps ends the search (next may equal v: nothing left to gain).
    if (std::isfinite(next) &&
        std::fabs(next - v) <= 4 * std::numeric_limits<double>::epsilon() * v) {
      v = std::min(hi, std::max(lo, next));
      break;
    }
    const bool newton = std::isfinite(next) && next > lo && next < hi;
    if (!newton)
      next = (lo > 0.0 && hi > 4.0 * lo) ? std::sqrt(lo * hi)
             : lo == 0.0                 ? std::sqrt(hi) * 1e-160  // sqrt(1e-320 hi), no underflow
                                         : 0.5 * (lo + hi);
    if (next <= lo || next >= hi) break;
    v = next;
  }
  return upper_side ? 1.0 - v : v;
}

}  // namespace detail

/// x in [0, 1] with I_x(a, b) = p (the Beta(a, b) quantile).
inline double inverse_regularized_incomplete_beta(double a, double b, double p) {
  detail::require_beta_shape(a, b);
  ktsa::detail::require(p >= 0.0 && p <= 1.0, "p", p, "must be in [0, 1]");
  return detail::inverse_beta(a, b, p, 1.0 - p);
}

/// x in [0, 1] with 1 - I_x(a, b) = q (the Beta(a, b) upper-tail quantile),
/// solved on the upper tail itself: exact for q far below 1 - 2^-53.
inline double inverse_regularized_incomplete_beta_complement(double a, double b, double q) {
  detail::require_beta_shape(a, b);
  ktsa::detail::require(q >= 0.0 && q <= 1.0, "q", q, "must be in [0, 1]");
  return detail::inverse_beta(a, b, 1.0 - q, q);
}

}  // namespace ktsa::metrics
