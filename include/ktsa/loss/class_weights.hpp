// ktsa/loss/class_weights.hpp: class weights lambda_D / lambda_U for
// unbalanced desirable / undesirable feedback.
//
// In e-commerce a purchase (desirable) is 1-4 % of impressions. TRL's KTO
// documentation asks for weights with
//   ratio = (desirable_weight * n_desirable) / (undesirable_weight * n_undesirable)
// in [1, 4/3]. balanced_weights keeps undesirable_weight = 1 and picks the
// smallest desirable_weight whose ratio (computed in double, as below) is >= 1,
// the lower end of that range. weight_ratio / weights_in_recommended_range /
// require_weights_in_recommended_range check weights a caller already has
// (e.g. {cfg.desirable_weight, cfg.undesirable_weight}).
//
// A count of 0 in either class has no balancing weight (the ratio is 0 or
// infinite whatever the weights): every function here throws invalid_argument
// for it, as for a negative count.
#pragma once

#include <cmath>
#include <cstdint>

#include "ktsa/core/errors.hpp"

namespace ktsa::loss {

/// lambda_D and lambda_U, as loss::config holds them.
struct class_weights {
  double desirable = 1.0;
  double undesirable = 1.0;
};

/// TRL's recommended range of (wD nD) / (wU nU).
inline constexpr double recommended_weight_ratio_min = 1.0;
inline constexpr double recommended_weight_ratio_max = 4.0 / 3.0;

namespace detail {
inline void require_class_counts(std::int64_t n_desirable, std::int64_t n_undesirable) {
  ktsa::detail::require(n_desirable > 0, "n_desirable", n_desirable,
                        "must be > 0: with no desirable examples no weight balances the classes");
  ktsa::detail::require(n_undesirable > 0, "n_undesirable", n_undesirable,
                        "must be > 0: with no undesirable examples no weight balances the classes");
}
inline double ratio_of(double wd, double wu, std::int64_t nd, std::int64_t nu) {
  return (wd * static_cast<double>(nd)) / (wu * static_cast<double>(nu));
}
}  // namespace detail

/// (w.desirable * n_desirable) / (w.undesirable * n_undesirable).
/// Throws invalid_argument for a count <= 0 or a weight that is not finite and > 0.
inline double weight_ratio(const class_weights& w, std::int64_t n_desirable,
                           std::int64_t n_undesirable) {
  detail::require_class_counts(n_desirable, n_undesirable);
  ktsa::detail::require(std::isfinite(w.desirable) && w.desirable > 0, "desirable_weight",
                        w.desirable, "must be finite and > 0");
  ktsa::detail::require(std::isfinite(w.undesirable) && w.undesirable > 0, "undesirable_weight",
                        w.undesirable, "must be finite and > 0");
  return detail::ratio_of(w.desirable, w.undesirable, n_desirable, n_undesirable);
}

/// Whether weight_ratio lies in [1, 4/3] (TRL's recommendation).
inline bool weights_in_recommended_range(const class_weights& w, std::int64_t n_desirable,
                                         std::int64_t n_undesirable) {
  const double r = weight_ratio(w, n_desirable, n_undesirable);
  return r >= recommended_weight_ratio_min && r <= recommended_weight_ratio_max;
}

/// Throws invalid_argument naming the ratio, the weights and the counts when
/// weight_ratio is outside [1, 4/3].
inline void require_weights_in_recommended_range(const class_weights& w, std::int64_t n_desirable,
                                                 std::int64_t n_undesirable) {
  const double r = weight_ratio(w, n_desirable, n_undesirable);
  if (!(r >= recommended_weight_ratio_min && r <= recommended_weight_ratio_max))
    throw invalid_argument(ktsa::detail::concat(
        "ktsa: argument 'class weights' = {desirable ", w.desirable, ", undesirable ",
        w.undesirable,
        "}: (desirable_weight * n_desirable) / (undesirable_weight * n_undesirable) = ", r,
        " with n_desirable = ", n_desirable, ", n_undesirable = ", n_undesirable,
        " is outside TRL's recommended [1, 4/3] (see loss::balanced_weights)"));
}

/// Weights for a data set of n_desirable and n_undesirable examples:
/// undesirable 1, desirable the smallest double with weight_ratio >= 1
/// (n_undesirable / n_desirable within an ulp or two).
/// E.g. (2, 98) -> {49, 1}; (50, 50) -> {1, 1}; (98, 2) -> {2/98, 1}.
/// Throws invalid_argument when either count is <= 0.
inline class_weights balanced_weights(std::int64_t n_desirable, std::int64_t n_undesirable) {
  detail::require_class_counts(n_desirable, n_undesirable);
  class_weights w;
  w.desirable = static_cast<double>(n_undesirable) / static_cast<double>(n_desirable);
  // The quotient is rounded to nearest; move an ulp at a time to the smallest
  // double whose ratio, computed as the check computes it, is not below 1.
  const auto ratio = [&](double wd) {
    return detail::ratio_of(wd, 1.0, n_desirable, n_undesirable);
  };
  while (ratio(w.desirable) < recommended_weight_ratio_min)
    w.desirable = std::nextafter(w.desirable, INFINITY);
  while (ratio(std::nextafter(w.desirable, 0.0)) >= recommended_weight_ratio_min)
    w.desirable = std::nextafter(w.desirable, 0.0);
  return w;
}

}  // namespace ktsa::loss
