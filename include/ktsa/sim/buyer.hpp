// ktsa/sim/buyer.hpp: the oracle interface and a prospect-theoretic buyer,
// a stand-in for the KTSA paper's Oracle.
//
// The buyer reads a description of the product a recommender showed for their
// query and, knowing the product's average rating and its review key features
// (top-3 features, top-3 concerns), decides to purchase, add to cart or abandon.
//
// For each need a of the query (weight w_a, weights summing to 1) the buyer
// faces a gamble: the product meets the need (outcome 1) with subjective
// probability p_a, or not (outcome 0). Its prospect value is
//
//   V_a = w+(p_a) v(1 - z_a) + w-(1 - p_a) v(0 - z_a)
//
// with v the value function of Eq. 1 (alpha 0.88, lambda 2.25, around 0),
// w+ / w- the Tversky-Kahneman probability weights (gamma 0.61 / 0.69), and a
// reference point built from the rating and the key features:
//
//   z_a = z_base + z_rating R + z_key ([a is a top feature] - [a is a concern])
//
// (R = (rating - 1) / 4: a well-rated product, or one praised for a, sets a
// higher expectation). p_a comes from what the buyer reads:
//
//   a is a top concern            p = p_concern (reviews contradict any claim)
//   a claimed, top feature        p = p_silent_feature + trust (p_claimed_feature -
//   p_silent_feature) a claimed, otherwise          p = p_silent(R) + trust (p_claimed(R) -
//   p_silent(R)) a not claimed                 p = p_silent_feature or p_silent(R) = s0 + s1 R
//
// Over-claiming is felt as a loss: every claimed attribute that reviews name a
// concern costs deception_weight * v(quality_a - 1) (a certain loss on the
// gap between the claim and the truth) and multiplies trust, which scales the
// credibility every other claim earns, by trust_per_contradiction. Claims for
// attributes the buyer does not need, hype fillers, repeats and words of
// another category each cost a little attention. The utility is
//
//   U = sum_a w_a V_a + deception + attention costs
//
// and the decision adds logistic noise of scale noise_scale drawn from a hash
// of (buyer seed, draw key): purchase if U + e >= purchase_threshold, add to
// cart if U + e >= cart_threshold, abandon otherwise. The thresholds may be set
// per category (how much net value a shopper of that category asks before
// paying); sim/calibration.hpp fits them to target conversion rates. With
// logistic noise P(purchase) = sigmoid((U - purchase_threshold) / noise_scale)
// exactly, which action_probabilities() returns.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/metrics/conversion.hpp"
#include "ktsa/prospect/value.hpp"
#include "ktsa/sim/catalogue.hpp"
#include "ktsa/sim/random.hpp"

namespace ktsa::sim {

/// The buyer's action: the same type the conversion report counts.
using action = metrics::action;

/// What a user implements to plug in another simulator or a model (an LLM
/// judge, logged human feedback): given the query, the product shown and the
/// description tokens, an action. `draw` is a key for any randomness, so a
/// decision depends on what is asked, not on the order of asking; the same
/// arguments must give the same action. respond() is const and is called from
/// several threads at once.
class oracle {
 public:
  virtual ~oracle() = default;
  virtual action respond(const query& q, const product& p, const std::vector<int>& description,
                         std::uint64_t draw) const = 0;
  virtual std::string name() const = 0;
};

struct buyer_params {
  std::uint64_t seed = 7;
  // Eq. 1 and Tversky-Kahneman (1992).
  double alpha = 0.88;
  double lambda = 2.25;
  double gain_weighting = prospect::gain_weighting_gamma;  // 0.61
  double loss_weighting = prospect::loss_weighting_gamma;  // 0.69
  // Reference point z_a = z_base + z_rating R + z_key ([feature] - [concern]).
  double z_base = 0.3;
  double z_rating = 0.4;
  double z_key = 0.1;
  // Subjective probability that the product meets a need.
  double p_claimed_feature = 0.92;
  double p_silent_feature = 0.7;
  double p_concern = 0.08;
  double p_claimed_base = 0.45, p_claimed_rating = 0.3;  // p_claimed(R)
  double p_silent_base = 0.2, p_silent_rating = 0.3;     // p_silent(R)
  // Over-claiming.
  double deception_weight = 0.25;
  double trust_per_contradiction = 0.5;
  // Attention costs per token.
  double irrelevant_claim_cost = 0.02;
  double filler_cost = 0.01;
  double repeat_cost = 0.05;
  double off_category_cost = 0.15;
  // Decision.
  double noise_scale = 0.15;
  double purchase_threshold = -0.3;
  double cart_threshold = -0.5;
  /// Per-category thresholds, indexed by category id: empty (the two above
  /// apply everywhere) or num_categories entries each.
  std::vector<double> purchase_threshold_by_category;
  std::vector<double> cart_threshold_by_category;
};

inline void validate(const buyer_params& b) {
  auto finite = [](double x) { return std::isfinite(x); };
  detail::require(finite(b.alpha) && b.alpha > 0 && b.alpha <= 1, "alpha", b.alpha,
                  "must be in (0, 1]");
  detail::require(finite(b.lambda) && b.lambda > 0, "lambda", b.lambda, "must be > 0");
  detail::require(finite(b.gain_weighting) && b.gain_weighting > 0, "gain_weighting",
                  b.gain_weighting, "must be > 0");
  detail::require(finite(b.loss_weighting) && b.loss_weighting > 0, "loss_weighting",
                  b.loss_weighting, "must be > 0");
  for (double z : {b.z_base, b.z_rating, b.z_key})
    detail::require(finite(z), "reference coefficient", z, "must be finite");
  const double probs[] = {b.p_claimed_feature,
                          b.p_silent_feature,
                          b.p_concern,
                          b.p_claimed_base,
                          b.p_claimed_base + b.p_claimed_rating,
                          b.p_silent_base,
                          b.p_silent_base + b.p_silent_rating};
  for (double p : probs)
    detail::require(finite(p) && p >= 0 && p <= 1, "probability", p,
                    "every credibility (and base + rating slope) must lie in [0, 1]");
  detail::require(finite(b.deception_weight) && b.deception_weight >= 0, "deception_weight",
                  b.deception_weight, "must be >= 0");
  detail::require(finite(b.trust_per_contradiction) && b.trust_per_contradiction >= 0 &&
                      b.trust_per_contradiction <= 1,
                  "trust_per_contradiction", b.trust_per_contradiction, "must be in [0, 1]");
  for (double c : {b.irrelevant_claim_cost, b.filler_cost, b.repeat_cost, b.off_category_cost})
    detail::require(finite(c) && c >= 0, "attention cost", c, "must be finite and >= 0");
  detail::require(finite(b.noise_scale) && b.noise_scale >= 0, "noise_scale", b.noise_scale,
                  "must be finite and >= 0");
  detail::require(finite(b.purchase_threshold), "purchase_threshold", b.purchase_threshold,
                  "must be finite");
  detail::require(finite(b.cart_threshold) && b.cart_threshold <= b.purchase_threshold,
                  "cart_threshold", b.cart_threshold, "must be finite and <= purchase_threshold");
  const auto n_p = b.purchase_threshold_by_category.size(),
             n_c = b.cart_threshold_by_category.size();
  detail::require(n_p == 0 || n_p == static_cast<size_t>(num_categories),
                  "purchase_threshold_by_category.size", n_p, "must be 0 or 8");
  detail::require(n_c == n_p, "cart_threshold_by_category.size", n_c,
                  "must equal purchase_threshold_by_category.size");
  for (size_t c = 0; c < n_p; ++c) {
    const double tp = b.purchase_threshold_by_category[c], tc = b.cart_threshold_by_category[c];
    detail::require(finite(tp), "purchase_threshold_by_category", tp, "must be finite");
    detail::require(finite(tc) && tc <= tp, "cart_threshold_by_category", tc,
                    "must be finite and <= the category's purchase threshold");
  }
}

/// The parts of a buyer's utility, for inspection and tests.
struct utility_breakdown {
  double total = 0;
  double needs = 0;      ///< sum_a w_a V_a
  double deception = 0;  ///< <= 0
  double attention = 0;  ///< <= 0
  double trust = 1;      ///< trust_per_contradiction ^ contradicted claims
  int contradictions = 0;
  std::vector<double> need_probability;  ///< p_a per need, in query order
  std::vector<double> need_reference;    ///< z_a per need
  std::vector<double> need_value;        ///< V_a per need
};

/// Checks a description against the vocabulary; the sequence ends at the
/// first eos or at its end.
inline void validate_description(const std::vector<int>& description) {
  for (size_t i = 0; i < description.size(); ++i) {
    const int t = description[i];
    if (t < 0 || t >= vocabulary::size)
      throw invalid_argument(detail::concat("ktsa: argument 'description' has token ", t,
                                            " at position ", i, ": must be in [0, ",
                                            vocabulary::size, ")"));
  }
}

class prospect_buyer final : public oracle {
 public:
  explicit prospect_buyer(const buyer_params& params = {}) : p_(params) { validate(p_); }

  const buyer_params& params() const { return p_; }
  std::string name() const override { return "prospect-theoretic buyer"; }

  utility_breakdown utility(const query& q, const product& prod,
                            const std::vector<int>& description) const {
    utility_breakdown u;
    evaluate(q, prod, description, &u);
    return u;
  }

  /// U alone, without the breakdown's allocations (the hot path of respond()).
  double utility_total(const query& q, const product& prod,
                       const std::vector<int>& description) const {
    return evaluate(q, prod, description, nullptr);
  }

  /// The logistic noise of one decision: noise_scale * logit(u), u from the key.
  double noise(std::uint64_t draw) const {
    const double uni = to_open_unit(hash_key(p_.seed, draw));
    return p_.noise_scale * std::log(uni / (1.0 - uni));
  }

  /// The thresholds that apply to a category.
  double purchase_threshold(int category_id) const {
    return p_.purchase_threshold_by_category.empty()
               ? p_.purchase_threshold
               : p_.purchase_threshold_by_category.at(static_cast<size_t>(category_id));
  }
  double cart_threshold(int category_id) const {
    return p_.cart_threshold_by_category.empty()
               ? p_.cart_threshold
               : p_.cart_threshold_by_category.at(static_cast<size_t>(category_id));
  }

  /// The action for a given utility and noise (the decision rule alone), with
  /// the global thresholds.
  action decide(double utility_total, double noise_value) const {
    return decide_between(utility_total + noise_value, p_.purchase_threshold, p_.cart_threshold);
  }
  /// The same with the thresholds of a category.
  action decide(double utility_total, double noise_value, int category_id) const {
    return decide_between(utility_total + noise_value, purchase_threshold(category_id),
                          cart_threshold(category_id));
  }

  /// P(purchase), P(add to cart), P(abandon) for a utility in a category: the
  /// exact probabilities of decide() under the logistic noise.
  std::array<double, 3> action_probabilities(double utility_total, int category_id) const {
    const double buy = above(utility_total, purchase_threshold(category_id), p_.noise_scale);
    const double cart_or_buy = above(utility_total, cart_threshold(category_id), p_.noise_scale);
    return {buy, cart_or_buy - buy, 1.0 - cart_or_buy};
  }

  action respond(const query& q, const product& prod, const std::vector<int>& description,
                 std::uint64_t draw) const override {
    return decide(utility_total(q, prod, description), noise(draw), prod.category);
  }

  /// P(U + e >= threshold) for logistic e of scale s (s = 0: a step).
  static double above(double utility_total, double threshold, double s) {
    if (s == 0) return utility_total >= threshold ? 1.0 : 0.0;
    return 1.0 / (1.0 + std::exp(-(utility_total - threshold) / s));
  }

 private:
  static action decide_between(double latent, double purchase, double cart) {
    if (latent >= purchase) return action::purchase;
    if (latent >= cart) return action::add_to_cart;
    return action::abandon;
  }

  // The utility; fills *out when given (one code path for both uses).
  double evaluate(const query& q, const product& prod, const std::vector<int>& description,
                  utility_breakdown* out) const {
    validate_description(description);
    detail::require(q.category == prod.category, "query.category", q.category,
                    "must equal the product's category");
    detail::require(!q.needs.empty(), "query.needs", 0, "a query needs at least one need");
    std::array<bool, attributes_per_category> claimed{}, needed{};
    for (const need& n : q.needs) {
      vocabulary::check_attribute(q.category, n.attribute);
      needed[static_cast<size_t>(n.attribute)] = true;
    }
    utility_breakdown local;  // only its scalars are used when out is null
    utility_breakdown& u = out ? *out : local;
    for (int t : description) {
      if (t == vocabulary::eos) break;
      if (vocabulary::is_filler(t)) {
        u.attention -= p_.filler_cost;
      } else if (vocabulary::claim_category(t) != prod.category) {
        u.attention -= p_.off_category_cost;
      } else {
        const int a = vocabulary::claim_attribute(t);
        if (claimed[static_cast<size_t>(a)]) {
          u.attention -= p_.repeat_cost;
          continue;
        }
        claimed[static_cast<size_t>(a)] = true;
        if (prod.is_concern(a)) {
          ++u.contradictions;
          u.deception +=
              p_.deception_weight *
              prospect::value(prod.quality[static_cast<size_t>(a)] - 1.0, p_.alpha, p_.lambda);
        } else if (!needed[static_cast<size_t>(a)]) {
          u.attention -= p_.irrelevant_claim_cost;
        }
      }
    }
    u.trust = std::pow(p_.trust_per_contradiction, u.contradictions);
    const double r = prod.rating_normalised();
    for (const need& n : q.needs) {
      const int a = n.attribute;
      const bool feature = prod.is_feature(a), concern = prod.is_concern(a);
      const double z =
          p_.z_base + p_.z_rating * r + p_.z_key * ((feature ? 1 : 0) - (concern ? 1 : 0));
      double prob;
      if (concern) {
        prob = p_.p_concern;
      } else {
        const double silent =
            feature ? p_.p_silent_feature : p_.p_silent_base + p_.p_silent_rating * r;
        const double loud =
            feature ? p_.p_claimed_feature : p_.p_claimed_base + p_.p_claimed_rating * r;
        prob = claimed[static_cast<size_t>(a)] ? silent + u.trust * (loud - silent) : silent;
      }
      const double value = prospect::probability_weight(prob, p_.gain_weighting) *
                               prospect::value(1.0 - z, p_.alpha, p_.lambda) +
                           prospect::probability_weight(1.0 - prob, p_.loss_weighting) *
                               prospect::value(0.0 - z, p_.alpha, p_.lambda);
      if (out) {
        out->need_probability.push_back(prob);
        out->need_reference.push_back(z);
        out->need_value.push_back(value);
      }
      u.needs += n.weight * value;
    }
    u.total = u.needs + u.deception + u.attention;
    return u.total;
  }

  buyer_params p_;
};

}  // namespace ktsa::sim
