// ktsa/loss/kto.hpp: the KTO family of losses with exact gradients.
//
// Inputs per example i of a batch of B: the policy's and the frozen
// reference's sequence log-probs, log pi(y|x) and log pi_ref(y|x), and a
// desirable flag. With r = policy - reference (the implied reward before beta):
//
//   kto               D: wD (1 - s(b (r - z0)))     U: wU (1 - s(b (z0 - r)))
//   kto_log_sigmoid   D: -wD log s(b (r - z0))       U: -wU log s(b (z0 - r))
//   ktsa              kto - gamma r  (Eq. 3-4 of the KTSA paper: overall value
//                     v = v_buyer + gamma r, loss = weight - v; gamma = 1 there)
//                     (examples/self_alignment uses gamma = 0.01: on on-policy samples
//                     the gamma r term's gradient has zero mean and, at gamma = 1,
//                     a variance that swamps the KTO term; docs/self_alignment.md)
//   apo_zero_unpaired D: wD (1 - s(b r))             U: wU s(b r)   (no z0)
//   kto_zero          an alias of apo_zero_unpaired (the same enumerator):
//                     KTO with z0 = 0 is 1 - s(b r) / 1 - s(-b r) = s(b r), the
//                     same function, so it has one implementation and one name
//   bco               D: -wD log s(b r - delta)      U: -wU log s(-(b r - delta))
//                     delta = running mean of the rewards b r, from a
//                     bco_running_mean (ktsa/loss/bco.hpp) that starts at 0; by
//                     default the batch is folded in before the loss (TRL's order,
//                     config::bco_order)
//
// s is the logistic sigmoid, b = beta. The batch loss is the mean over the B
// examples; grad[i] is the exact derivative of the batch loss with respect to
// policy[i] (z0 and delta are constants: no gradient flows through them).
//
// Config bounds (validate): beta in (0, 1e6], weights in (0, 1e15], |gamma| <=
// 1e6: beyond them the rewards b r and losses overflow or saturate for any
// realistic log-prob, so such a config is an error, not a silent inf. A
// per-example reward, loss or gradient that still overflows (log-probs near
// 1e300) is a data_error naming the example.
#pragma once

#include <cmath>
#include <type_traits>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/math.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/loss/bco.hpp"
#include "ktsa/loss/class_weights.hpp"

namespace ktsa::loss {

/// The integer values are stable (bindings cast ints); 2 was kto_zero, now an
/// alias of apo_zero_unpaired, and is rejected like any value outside the enum.
enum class variant : int {
  kto = 0,
  kto_log_sigmoid = 1,
  ktsa = 3,
  apo_zero_unpaired = 4,
  bco = 5,
  kto_zero = apo_zero_unpaired,  ///< alias: KTO with z0 = 0 is apo_zero_unpaired
};
static_assert(variant::kto_zero == variant::apo_zero_unpaired, "kto_zero is an alias");

inline const char* variant_name(variant v) {
  switch (v) {
    case variant::kto:
      return "kto";
    case variant::kto_log_sigmoid:
      return "kto_log_sigmoid";
    case variant::ktsa:
      return "ktsa";
    case variant::apo_zero_unpaired:
      return "apo_zero_unpaired";
    case variant::bco:
      return "bco";
  }
  return "unknown";
}

/// Largest config values validate() accepts (see the file comment).
inline constexpr double max_beta = 1e6;
inline constexpr double max_abs_gamma = 1e6;

struct config {
  double beta = 0.1;                ///< temperature of the implied reward, in (0, max_beta]
  double desirable_weight = 1.0;    ///< lambda_D, in (0, max_class_weight]
  double undesirable_weight = 1.0;  ///< lambda_U, in (0, max_class_weight]
  double gamma = 1.0;               ///< weight of r in the ktsa variant (Eq. 4), |gamma| <= 1e6
  variant kind = variant::kto;
  /// bco only: when the batch is folded into the running mean (TRL: before).
  bco_update bco_order = bco_update::before_loss;
};

namespace detail {
/// Throws invalid_argument for a value outside the enum (an int cast by a binding).
inline void require_valid(variant v) {
  const int i = static_cast<int>(v);
  if (!(i == 0 || i == 1 || i == 3 || i == 4 || i == 5))
    ktsa::detail::fail_argument("kind", i,
                                "is not a loss::variant (kto 0, kto_log_sigmoid 1, ktsa 3, "
                                "apo_zero_unpaired 4 = kto_zero, bco 5)");
}
}  // namespace detail

/// Throws ktsa::invalid_argument naming the bad field.
inline void validate(const config& c) {
  ktsa::detail::require(std::isfinite(c.beta) && c.beta > 0 && c.beta <= max_beta, "beta", c.beta,
                        "must be finite, > 0 and <= 1e6 (loss::max_beta)");
  ktsa::detail::require(std::isfinite(c.desirable_weight) && c.desirable_weight > 0 &&
                            c.desirable_weight <= max_class_weight,
                        "desirable_weight", c.desirable_weight,
                        "must be finite, > 0 and <= 1e15 (loss::max_class_weight)");
  ktsa::detail::require(std::isfinite(c.undesirable_weight) && c.undesirable_weight > 0 &&
                            c.undesirable_weight <= max_class_weight,
                        "undesirable_weight", c.undesirable_weight,
                        "must be finite, > 0 and <= 1e15 (loss::max_class_weight)");
  ktsa::detail::require(std::isfinite(c.gamma) && std::abs(c.gamma) <= max_abs_gamma, "gamma",
                        c.gamma, "must be finite with |gamma| <= 1e6 (loss::max_abs_gamma)");
  detail::require_valid(c.kind);
  detail::require_valid(c.bco_order);
}

/// cfg's lambda_D and lambda_U, for the class_weights checks:
///   loss::require_weights_in_recommended_range(loss::class_weights_of(cfg), nD, nU);
/// (a function rather than config overloads of the checks, so that a braced
/// {wD, wU} argument stays unambiguous).
inline class_weights class_weights_of(const config& cfg) {
  return class_weights{cfg.desirable_weight, cfg.undesirable_weight};
}

/// The logged metrics of a step, as sums and counts so ranks can be combined.
/// Means of an empty group are NaN.
struct batch_metrics {
  double kl = 0;                   ///< the reference point z0 used (delta for bco)
  double chosen_reward_sum = 0;    ///< sum of b r over desirable examples
  double rejected_reward_sum = 0;  ///< sum of b r over undesirable examples
  double chosen_logp_sum = 0;      ///< sum of policy log-probs over desirable examples
  double rejected_logp_sum = 0;
  index_t chosen_count = 0;
  index_t rejected_count = 0;

  double rewards_chosen() const { return mean(chosen_reward_sum, chosen_count); }
  double rewards_rejected() const { return mean(rejected_reward_sum, rejected_count); }
  double rewards_margins() const { return rewards_chosen() - rewards_rejected(); }
  double logps_chosen() const { return mean(chosen_logp_sum, chosen_count); }
  double logps_rejected() const { return mean(rejected_logp_sum, rejected_count); }

 private:
  static double mean(double sum, index_t n) {
    return n > 0 ? sum / static_cast<double>(n) : std::nan("");
  }
};

struct loss_result {
  double loss = 0;  ///< mean of the per-example losses
  batch_metrics metrics;
};

/// Per-example loss and its derivative with respect to r (the shared formula;
/// host loops and CUDA kernels both call this).
template <class T>
struct example_loss {
  T loss;
  T dloss_dr;
};

/// s(x) s(-x) = s'(x), computed without cancellation.
template <class T>
KTSA_HOST_DEVICE inline T sigmoid_slope(T x) {
  return math::sigmoid(x) * math::sigmoid(-x);
}

/// The loss of one example. `shift` is z0 for the KTO variants and delta for
/// bco; it is ignored by apo_zero_unpaired (= kto_zero). A kind outside the
/// enum gives NaN (validate() rejects it before any backend gets here).
template <class T>
KTSA_HOST_DEVICE inline example_loss<T> example(variant kind, T r, bool desirable, T shift, T beta,
                                                T desirable_weight, T undesirable_weight, T gamma) {
  const T w = desirable ? desirable_weight : undesirable_weight;
  // x is the argument the sigmoid "wants large": b (r - z0) when desirable,
  // b (z0 - r) when undesirable; dx/dr = +b or -b.
  const T sign = desirable ? T(1) : T(-1);
  switch (kind) {
    case variant::kto:
    case variant::ktsa: {
      const T x = sign * beta * (r - shift);
      example_loss<T> e{w * math::sigmoid(-x), -w * sigmoid_slope(x) * sign * beta};
      if (kind == variant::ktsa) {
        e.loss -= gamma * r;
        e.dloss_dr -= gamma;
      }
      return e;
    }
    case variant::kto_log_sigmoid: {
      const T x = sign * beta * (r - shift);
      return {-w * math::log_sigmoid(x), -w * math::sigmoid(-x) * sign * beta};
    }
    case variant::apo_zero_unpaired: {
      // D: 1 - s(b r) = s(-b r); U: s(b r). Both are s(-sign b r).
      const T x = sign * beta * r;
      return {w * math::sigmoid(-x), -w * sigmoid_slope(x) * sign * beta};
    }
    case variant::bco: {
      const T x = sign * (beta * r - shift);
      return {-w * math::log_sigmoid(x), -w * math::sigmoid(-x) * sign * beta};
    }
  }
  const T nan = math::infinity<T>() - math::infinity<T>();
  return {nan, nan};
}

namespace detail {
template <class V>
void require_finite_values(V v, const char* name) {
  for (index_t i = 0; i < v.extent(0); ++i) {
    const double x = static_cast<double>(v[i]);
    if (!std::isfinite(x))
      throw data_error(ktsa::detail::concat("ktsa: argument '", name, "' has a non-finite value ",
                                            x, " at index ", i));
  }
}

/// The argument checks of kto_loss on every backend: the config, a non-empty
/// batch, the lengths of the inputs and of the outputs given, a finite z0 and
/// bco's running mean. (The log-probs' values are checked by each backend:
/// the host throws, the CUDA backend records them in ex.status.)
template <class P, class R, class F, class L, class G>
void validate_kto_inputs(const vector_view<P>& policy_logps, const vector_view<R>& reference_logps,
                         const vector_view<F>& desirable, double z0, const config& cfg,
                         const vector_view<L>& per_example_loss, const vector_view<G>& grad,
                         const bco_running_mean* bco_state) {
  validate(cfg);
  const index_t n = policy_logps.extent(0);
  ktsa::detail::require(n > 0, "policy_logps.size", n, "the batch must hold at least one example");
  ktsa::detail::require_same_length("policy_logps", n, "reference_logps",
                                    reference_logps.extent(0));
  ktsa::detail::require_same_length("policy_logps", n, "desirable", desirable.extent(0));
  if (per_example_loss.data() != nullptr)
    ktsa::detail::require_same_length("policy_logps", n, "per_example_loss",
                                      per_example_loss.extent(0));
  if (grad.data() != nullptr)
    ktsa::detail::require_same_length("policy_logps", n, "grad", grad.extent(0));
  ktsa::detail::require(std::isfinite(z0), "z0", z0, "must be finite");
  if (cfg.kind == variant::bco && bco_state == nullptr)
    ktsa::detail::fail_argument("bco_state", "null", "variant bco needs a bco_running_mean");
}
}  // namespace detail

namespace detail {
[[noreturn]] inline void fail_overflow(const char* what, double value, index_t i) {
  throw data_error(ktsa::detail::concat("ktsa: ", what, " = ", value, " at index ", i,
                                        " is not finite: the log-probs (or z0) are too large "
                                        "for this beta, weight and gamma"));
}

/// The loop shared by both kto_loss overloads; z0_of(i) is example i's z0
/// (the same for every i when !per_example_z0).
template <class P, class R, class F, class L, class G, class Z0>
loss_result kto_loss_impl(vector_view<P> policy_logps, vector_view<R> reference_logps,
                          vector_view<F> desirable, Z0 z0_of, bool per_example_z0,
                          const config& cfg, vector_view<L> per_example_loss, vector_view<G> grad,
                          bco_running_mean* bco_state) {
  const index_t n = policy_logps.extent(0);
  require_finite_values(policy_logps, "policy_logps");
  require_finite_values(reference_logps, "reference_logps");
  const bool is_bco = cfg.kind == variant::bco;
  // The rewards b r, checked once: a finite log-prob pair can still overflow.
  double reward_sum = 0;
  for (index_t i = 0; i < n; ++i) {
    const double r = static_cast<double>(policy_logps[i]) - static_cast<double>(reference_logps[i]);
    const double reward = cfg.beta * r;
    if (!std::isfinite(reward)) fail_overflow("the reward beta * r", reward, i);
    reward_sum += reward;
  }
  if (!std::isfinite(reward_sum)) fail_overflow("the batch's reward sum", reward_sum, n - 1);
  // bco: the state after this step, computed (and checked) now, stored at the
  // end so that a throw leaves the caller's state unchanged. TRL's order
  // (before_loss) uses it as delta; after_loss and none use the current mean.
  bco_running_mean next_state;
  if (is_bco) {
    next_state = *bco_state;
    if (cfg.bco_order != bco_update::none) next_state.update(reward_sum, n);
  }
  // bco shifts by its running mean; apo_zero_unpaired (= kto_zero) by nothing.
  const bool uses_z0 =
      cfg.kind == variant::kto || cfg.kind == variant::kto_log_sigmoid || cfg.kind == variant::ktsa;
  const double fixed_shift =
      !is_bco ? 0.0
              : (cfg.bco_order == bco_update::before_loss ? next_state.mean() : bco_state->mean());

  loss_result out;
  double loss_sum = 0, z0_sum = 0, z0_scaled_sum = 0;
  const double inv_n = 1.0 / static_cast<double>(n);
  for (index_t i = 0; i < n; ++i) {
    const double policy = static_cast<double>(policy_logps[i]);
    const double r = policy - static_cast<double>(reference_logps[i]);
    const bool is_desirable = static_cast<bool>(desirable[i]);
    const double shift = uses_z0 ? z0_of(i) : fixed_shift;
    z0_sum += shift;
    z0_scaled_sum += shift * inv_n;  // finite where z0_sum overflows (z0 near 1e308)
    const example_loss<double> e =
        example<double>(cfg.kind, r, is_desirable, shift, cfg.beta, cfg.desirable_weight,
                        cfg.undesirable_weight, cfg.gamma);
    if (!std::isfinite(e.loss)) fail_overflow("the per-example loss", e.loss, i);
    if (!std::isfinite(e.dloss_dr)) fail_overflow("the per-example gradient", e.dloss_dr, i);
    loss_sum += e.loss;
    if (per_example_loss.data() != nullptr)
      per_example_loss[i] = static_cast<std::remove_cv_t<L>>(e.loss);
    if (grad.data() != nullptr) grad[i] = static_cast<std::remove_cv_t<G>>(e.dloss_dr * inv_n);
    const double reward = cfg.beta * r;
    if (is_desirable) {
      out.metrics.chosen_reward_sum += reward;
      out.metrics.chosen_logp_sum += policy;
      ++out.metrics.chosen_count;
    } else {
      out.metrics.rejected_reward_sum += reward;
      out.metrics.rejected_logp_sum += policy;
      ++out.metrics.rejected_count;
    }
  }
  if (!std::isfinite(loss_sum)) fail_overflow("the batch's loss sum", loss_sum, n - 1);
  const double z0_mean = std::isfinite(z0_sum) ? z0_sum * inv_n : z0_scaled_sum;
  out.metrics.kl = !uses_z0 ? fixed_shift : per_example_z0 ? z0_mean : z0_of(0);
  out.loss = loss_sum * inv_n;
  if (is_bco) *bco_state = next_state;
  return out;
}
}  // namespace detail

/// Computes the batch loss, per-example losses and gradient of a KTO-family
/// variant. `per_example_loss` and `grad` may be empty views ({}) to skip them.
/// For variant::bco, `bco_state` is required: delta is its mean, and
/// cfg.bco_order says when this step's rewards are folded in: before the loss
/// (default, TRL's order: delta includes this batch), after it, or never
/// (none, for evaluation). The state is changed only once every check passed.
/// Throws shape_error on length mismatches, invalid_argument on a bad config,
/// z0 or empty batch, data_error on non-finite log-probs or on a reward, loss
/// or gradient that overflows double.
template <class P, class R, class F, class L, class G>
loss_result kto_loss(const exec::host&, vector_view<P> policy_logps, vector_view<R> reference_logps,
                     vector_view<F> desirable, double z0, const config& cfg,
                     vector_view<L> per_example_loss, vector_view<G> grad,
                     bco_running_mean* bco_state = nullptr) {
  detail::validate_kto_inputs(policy_logps, reference_logps, desirable, z0, cfg, per_example_loss,
                              grad, bco_state);
  return detail::kto_loss_impl(
      policy_logps, reference_logps, desirable, [z0](index_t) { return z0; }, false, cfg,
      per_example_loss, grad, bco_state);
}

/// As above with one reference point per example: KTSA's Eq. 2 gives each
/// product its own z0 = max(R_avg, mean key-feature KL), so a batch mixing
/// products passes z0[i] for example i. Used by kto, kto_log_sigmoid and
/// ktsa (the other variants ignore z0, as above). metrics.kl is the mean z0.
template <class P, class R, class F, class Z, class L, class G>
loss_result kto_loss(const exec::host&, vector_view<P> policy_logps, vector_view<R> reference_logps,
                     vector_view<F> desirable, vector_view<Z> z0_per_example, const config& cfg,
                     vector_view<L> per_example_loss, vector_view<G> grad,
                     bco_running_mean* bco_state = nullptr) {
  detail::validate_kto_inputs(policy_logps, reference_logps, desirable, 0.0, cfg, per_example_loss,
                              grad, bco_state);
  ktsa::detail::require_same_length("policy_logps", policy_logps.extent(0), "z0_per_example",
                                    z0_per_example.extent(0));
  detail::require_finite_values(z0_per_example, "z0_per_example");
  return detail::kto_loss_impl(
      policy_logps, reference_logps, desirable,
      [z0_per_example](index_t i) { return static_cast<double>(z0_per_example[i]); }, true, cfg,
      per_example_loss, grad, bco_state);
}

}  // namespace ktsa::loss
