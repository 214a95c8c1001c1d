// ktsa/sim/calibration.hpp: fits the buyer's per-category thresholds so that
// a calibration sample converts at target rates (the KTSA paper's Base CVRs
// by default).
//
// The procedure (deterministic, no random draws): compute the buyer's utility
// U_i of every impression of the sample; under logistic noise of scale s the
// probability that impression i converts at threshold t is
// sigmoid((U_i - t) / s), so the sample's expected rate
//
//   rate(t) = (1/n) sum_i sigmoid((U_i - t) / s)
//
// falls strictly and continuously in t. Bisection on t finds rate(t) = target
// to within 1e-12 of t; the purchase threshold is fitted to the target CVR and
// the add-to-cart threshold to CVR + target add-to-cart rate. Nothing about the
// outcomes is forced: a threshold is the net value a shopper of that category
// asks before paying, and the impressions of other descriptions (a trained
// generator's) convert by the same rule.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/sim/buyer.hpp"
#include "ktsa/sim/catalogue.hpp"

namespace ktsa::sim {

/// Table 3 of the KTSA paper, Base column (as fractions), in category order:
/// All Beauty, Appliances, Baby Products, Beauty & Care, Books, Apparel, Pet
/// Supplies, Toys and Games.
inline constexpr std::array<double, num_categories> paper_base_cvr = {
    0.0211, 0.0113, 0.0271, 0.0211, 0.0193, 0.0195, 0.0214, 0.0285};

/// The expected rate of U + e >= threshold over a sample of utilities, e
/// logistic of scale noise_scale (0: the fraction with U >= threshold). Summed
/// in the sample's order.
inline double expected_rate_above(const std::vector<double>& utilities, double threshold,
                                  double noise_scale) {
  ktsa::detail::require(!utilities.empty(), "utilities.size", 0, "must be > 0");
  double sum = 0;
  for (double u : utilities) sum += prospect_buyer::above(u, threshold, noise_scale);
  return sum / static_cast<double>(utilities.size());
}

/// The threshold t with expected_rate_above(utilities, t, noise_scale) =
/// target_rate, by bisection (at most 200 halvings, stops when the bracket no
/// longer shrinks). With noise_scale = 0 the rate is a step function and the
/// result is the largest t whose rate is >= target_rate, to within 1e-12.
inline double fit_threshold(const std::vector<double>& utilities, double noise_scale,
                            double target_rate) {
  ktsa::detail::require(!utilities.empty(), "utilities.size", 0, "must be > 0");
  ktsa::detail::require(std::isfinite(target_rate) && target_rate > 0 && target_rate < 1,
                        "target_rate", target_rate, "must be in (0, 1)");
  ktsa::detail::require(std::isfinite(noise_scale) && noise_scale >= 0, "noise_scale", noise_scale,
                        "must be finite and >= 0");
  double lo = utilities[0], hi = utilities[0];
  for (double u : utilities) {
    ktsa::detail::require(std::isfinite(u), "utility", u, "must be finite");
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  // rate(lo - 40 s - 1) > target > rate(hi + 40 s + 1) for every target in
  // (sigmoid(-41), 1 - sigmoid(-41)); widen until the bracket holds.
  double width = 40 * noise_scale + 1;
  lo -= width;
  hi += width;
  for (int k = 0; k < 60 && expected_rate_above(utilities, lo, noise_scale) < target_rate; ++k)
    lo -= (width *= 2);
  for (int k = 0; k < 60 && expected_rate_above(utilities, hi, noise_scale) > target_rate; ++k)
    hi += (width *= 2);
  for (int k = 0; k < 200 && hi - lo > 1e-12; ++k) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;
    if (expected_rate_above(utilities, mid, noise_scale) >= target_rate)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/// One impression of a calibration sample: what the buyer is shown.
struct shown_impression {
  const query* q = nullptr;
  const product* p = nullptr;
  const std::vector<int>* description = nullptr;
};

/// Target rates per category id (num_categories entries each).
struct calibration_targets {
  std::array<double, num_categories> purchase_rate = paper_base_cvr;
  /// Add-to-cart share of impressions, by category. The default is three times
  /// the purchase rate: shoppers put in the cart more than they buy, and the
  /// paper's three actions stay populated (a choice, not a figure of the paper).
  std::array<double, num_categories> cart_rate = [] {
    std::array<double, num_categories> r{};
    for (int c = 0; c < num_categories; ++c)
      r[static_cast<size_t>(c)] = 3 * paper_base_cvr[static_cast<size_t>(c)];
    return r;
  }();
};

/// Returns `start` with per-category thresholds fitted to the sample: for each
/// category that has impressions in the sample, purchase and add-to-cart
/// thresholds by fit_threshold; categories without impressions keep start's
/// global thresholds. Every other parameter is unchanged.
inline buyer_params calibrate_thresholds(const buyer_params& start,
                                         const std::vector<shown_impression>& sample,
                                         const calibration_targets& targets = {}) {
  const prospect_buyer buyer(start);
  ktsa::detail::require(start.noise_scale > 0, "noise_scale", start.noise_scale,
                        "must be > 0 to calibrate (the rate is a step otherwise)");
  std::array<std::vector<double>, num_categories> utilities;
  for (size_t i = 0; i < sample.size(); ++i) {
    const shown_impression& s = sample[i];
    if (s.q == nullptr || s.p == nullptr || s.description == nullptr)
      throw invalid_argument(
          ktsa::detail::concat("ktsa: argument 'sample' has a null pointer at index ", i));
    utilities[static_cast<size_t>(s.p->category)].push_back(
        buyer.utility_total(*s.q, *s.p, *s.description));
  }
  buyer_params out = start;
  out.purchase_threshold_by_category.assign(num_categories, start.purchase_threshold);
  out.cart_threshold_by_category.assign(num_categories, start.cart_threshold);
  for (int c = 0; c < num_categories; ++c) {
    const auto& u = utilities[static_cast<size_t>(c)];
    if (u.empty()) continue;
    const double buy = targets.purchase_rate[static_cast<size_t>(c)];
    const double cart = targets.cart_rate[static_cast<size_t>(c)];
    ktsa::detail::require(buy > 0 && buy < 1, "purchase_rate", buy, "must be in (0, 1)");
    ktsa::detail::require(cart >= 0 && buy + cart < 1, "cart_rate", cart,
                          "must be >= 0 with purchase_rate + cart_rate < 1");
    out.purchase_threshold_by_category[static_cast<size_t>(c)] =
        fit_threshold(u, start.noise_scale, buy);
    out.cart_threshold_by_category[static_cast<size_t>(c)] =
        cart > 0 ? fit_threshold(u, start.noise_scale, buy + cart)
                 : out.purchase_threshold_by_category[static_cast<size_t>(c)];
  }
  validate(out);
  return out;
}

}  // namespace ktsa::sim
