// ktsa/prospect/value.hpp: the prospect-theory value function (Eq. 1 of the
// KTSA paper; Kahneman & Tversky 1979, Tversky & Kahneman 1992), its
// derivative, and the probability weighting function.
//
//   v(z) = (z - z0)^alpha            for z >= z0   (gains)
//   v(z) = -lambda (z0 - z)^alpha    for z <  z0   (losses)
//
// alpha = 0.88 and lambda = 2.25 by default (Tversky & Kahneman 1992).
//
// The alpha < 1 singularity: v'(z) = alpha |z - z0|^(alpha - 1) (times lambda
// on the loss side) grows without bound as z -> z0, and at z = z0 it is +inf.
// `value_params::epsilon > 0` smooths it: the smoothed value is
//   v_eps(z) = (d + eps)^alpha - eps^alpha  (times -lambda for losses), d = |z - z0|,
// whose derivative alpha (d + eps)^(alpha - 1) is finite everywhere, and which
// tends to v as eps -> 0. With eps = 0 (default) the exact v is used and
// v'(z0) is +inf for alpha < 1, alpha for alpha = 1 (the gain side's slope),
// and 0 for alpha > 1.
#pragma once

#include <type_traits>

#include "ktsa/config.hpp"
#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/math.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"

namespace ktsa::prospect {

struct value_params {
  double alpha = 0.88;   ///< curvature, > 0 (0 < alpha <= 1 is concave for gains)
  double lambda = 2.25;  ///< loss aversion, > 0
  double z0 = 0.0;       ///< reference point
  double epsilon = 0.0;  ///< optional smoothing of the singularity at z0, >= 0
};

/// Throws ktsa::invalid_argument naming the bad field.
inline void validate(const value_params& p) {
  detail::require(math::isfinite(p.alpha) && p.alpha > 0, "alpha", p.alpha,
                  "must be finite and > 0");
  detail::require(math::isfinite(p.lambda) && p.lambda > 0, "lambda", p.lambda,
                  "must be finite and > 0");
  detail::require(math::isfinite(p.z0), "z0", p.z0, "must be finite");
  detail::require(math::isfinite(p.epsilon) && p.epsilon >= 0, "epsilon", p.epsilon,
                  "must be finite and >= 0");
}

/// v(z; alpha, lambda, z0), optionally smoothed (see the file comment).
template <class T>
KTSA_HOST_DEVICE inline T value(T z, T alpha = T(0.88), T lambda = T(2.25), T z0 = T(0),
                                T epsilon = T(0)) {
  const bool gain = z >= z0;
  const T d = gain ? z - z0 : z0 - z;
  const T magnitude = epsilon > T(0) ? math::pow(d + epsilon, alpha) - math::pow(epsilon, alpha)
                                     : math::pow(d, alpha);
  return gain ? magnitude : -lambda * magnitude;
}

/// dv/dz. At z = z0 the gain side's slope is returned (see the file comment).
/// NaN in z or z0 gives NaN, as value() does (pow(NaN, 0) = 1 would otherwise
/// give lambda for alpha = 1).
template <class T>
KTSA_HOST_DEVICE inline T derivative(T z, T alpha = T(0.88), T lambda = T(2.25), T z0 = T(0),
                                     T epsilon = T(0)) {
  if (math::isnan(z) || math::isnan(z0)) return z + z0;  // NaN
  const bool gain = z >= z0;
  const T d = (gain ? z - z0 : z0 - z) + epsilon;
  T slope;
  if (d == T(0))
    slope = alpha < T(1) ? math::infinity<T>() : (alpha == T(1) ? T(1) : T(0));
  else
    slope = alpha * math::pow(d, alpha - T(1));
  return gain ? slope : lambda * slope;
}

/// Tversky-Kahneman (1992) probability weighting
///   w(p) = p^g / (p^g + (1 - p)^g)^(1/g),
/// g = 0.61 for gains and 0.69 for losses in their estimates. w(0) = 0, w(1) = 1,
/// NaN p gives NaN. Where p^g + (1 - p)^g underflows to 0 or overflows (huge
/// g, e.g. g = 1e300) the same w is computed in the log domain:
///   log w = g log p - log m - log1p((min(p, 1-p) / m)^g) / g,  m = max(p, 1 - p),
/// so w stays in [0, 1] instead of 0 / 0 = NaN.
template <class T>
KTSA_HOST_DEVICE inline T probability_weight(T p, T g) {
  if (math::isnan(p) || math::isnan(g)) return p + g;  // NaN
  if (p <= T(0)) return T(0);
  if (p >= T(1)) return T(1);
  const T q = T(1) - p;
  const T pg = math::pow(p, g);
  const T s = pg + math::pow(q, g);
  if (s > T(0) && s < math::infinity<T>()) return pg / math::pow(s, T(1) / g);
  const T m = p > q ? p : q, lo = p > q ? q : p;
  const T log_w = g * math::log(p) - math::log(m) - math::log1p(math::pow(lo / m, g)) / g;
  return math::exp(log_w);
}

inline constexpr double gain_weighting_gamma = 0.61;
inline constexpr double loss_weighting_gamma = 0.69;

/// Checked scalar form for callers outside hot loops.
inline double weight_probability(double p, double g) {
  detail::require(p >= 0 && p <= 1, "p", p, "must be a probability in [0, 1]");
  detail::require(math::isfinite(g) && g > 0, "g", g, "must be finite and > 0");
  return probability_weight(p, g);
}

namespace detail {
/// out[i] = f(z[i], p) in parallel, after checking p and the lengths.
template <class In, class Out, class F>
void apply_elementwise(const exec::host& ex, vector_view<In> z, vector_view<Out> out,
                       const value_params& p, F f) {
  validate(p);
  ktsa::detail::require_same_length("z", z.extent(0), "out", out.extent(0));
  ktsa::detail::parallel_chunks(ex, z.extent(0), 1 << 14, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i)
      out[i] = static_cast<std::remove_cv_t<Out>>(
          f(static_cast<double>(z[i]), p.alpha, p.lambda, p.z0, p.epsilon));
  });
}
}  // namespace detail

/// out[i] = v(z[i]) for every i (In may be const). z and out may alias exactly (in place).
template <class In, class Out>
void apply_value(const exec::host& ex, vector_view<In> z, vector_view<Out> out,
                 const value_params& p = {}) {
  detail::apply_elementwise(ex, z, out, p, value<double>);
}

/// out[i] = v'(z[i]) for every i.
template <class In, class Out>
void apply_derivative(const exec::host& ex, vector_view<In> z, vector_view<Out> out,
                      const value_params& p = {}) {
  detail::apply_elementwise(ex, z, out, p, derivative<double>);
}

}  // namespace ktsa::prospect
