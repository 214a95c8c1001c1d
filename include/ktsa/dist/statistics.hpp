// ktsa/dist/statistics.hpp: the statistics of a data-parallel KTO step,
// combined across ranks: the reference point z0, BCO's running mean delta,
// the logged batch metrics and the conversion report's counts.
//
// Every function is a collective (every rank calls it, in the same order).
// Each gathers the ranks' partial sums and counts exactly (all_gather, see
// reducer.hpp) and combines them in rank order with the single-process code
// (loss::combine_kl_partials, bco_running_mean::update, ...), so
//   - every rank returns bitwise the same value, whatever the transport;
//   - the value is bitwise the single-process function applied to the
//     per-rank partials, and equals the single-process run on the whole batch
//     up to the order of the floating-point additions (a few ulp);
//   - a rank with no examples or no KL pairs contributes count 0: it neither
//     hangs (it makes the same calls) nor turns the result into NaN.
// Local bad input (a NaN log-prob on one rank) throws on every rank.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/dist/reducer.hpp"
#include "ktsa/loss/kto.hpp"
#include "ktsa/loss/reference_point.hpp"
#include "ktsa/metrics/conversion.hpp"

namespace ktsa::dist {

// ---------------------------------------------------------------- z0

/// z0 = max(0, mean mismatched-pair log-ratio) over every rank's pairs.
/// count_weighted (default): sum of every rank's sums / total count (HALOs'
/// reduction; equals the single-process z0 of the whole batch). mean_of_means:
/// the mean of the per-rank means over the ranks that have pairs (TRL's).
/// Throws invalid_argument on every rank when no rank has a pair.
template <class R>
double reference_point(R& r, const loss::kl_partial& local,
                       loss::kl_reduction how = loss::kl_reduction::count_weighted) {
  KTSA_REQUIRE_REDUCER(R);
  const double mine[2] = {local.sum, static_cast<double>(local.count)};  // counts < 2^53: exact
  const std::vector<double> all = all_gather(r, mine, 2);
  std::vector<loss::kl_partial> ranks(static_cast<std::size_t>(r.size()));
  for (std::size_t k = 0; k < ranks.size(); ++k)
    ranks[k] = {all[2 * k], static_cast<index_t>(all[2 * k + 1])};
  return loss::combine_kl_partials(ranks, how);
}

/// The same from this rank's KL pairs (policy and reference log-probs of the
/// mismatched completions; empty views when the rank has none, e.g. a rank
/// holding fewer than two examples).
template <class R, class P, class Q>
double batch_kl_reference_point(R& r, vector_view<P> kl_policy_logps,
                                vector_view<Q> kl_reference_logps,
                                loss::kl_reduction how = loss::kl_reduction::count_weighted) {
  loss::kl_partial local;
  on_every_rank(r, [&] { local = loss::kl_partial_sum(kl_policy_logps, kl_reference_logps); });
  return reference_point(r, local, how);
}

// ---------------------------------------------------------------- BCO's delta

/// When a BCO step folds its rewards into the running mean: loss::config's
/// update order (before_loss, TRL's, is the default there).
using bco_update = loss::bco_update;

namespace detail {
template <class Order>
std::int64_t bco_order_code(Order o) {
  static_assert(std::is_enum_v<Order>,
                "the update order is an enum with before_loss, "
                "after_loss and none (loss::config's or dist::bco_update)");
  if (o == Order::before_loss) return 0;
  if (o == Order::after_loss) return 1;
  return 2;
}
}  // namespace detail

/// BCO's delta for this step with the running mean pooled over every rank's
/// rewards. `local_reward_sum` and `local_count` are this rank's sum of
/// beta * r and number of examples (0 for a rank with none). `order` is
/// loss::config's update order (any enum with before_loss, after_loss, none):
///   before_loss: fold every rank's rewards in, return the new mean (TRL);
///   after_loss:  return the mean before this step, then fold them in;
///   none:        return the mean, leave it (evaluation steps).
/// Pass the result to kto_loss as the delta through a scratch
/// bco_running_mean(delta) and a copy of the config with bco_order = none,
/// not `state` itself, so kto_loss does not fold this rank's rewards in a
/// second time.
/// Communicates for every order, so a rank with another order gets an error
/// (on every rank) instead of a hang. state ends bitwise equal on every rank
/// when it started so.
template <class R, class Order>
double bco_delta(R& r, loss::bco_running_mean& state, double local_reward_sum, index_t local_count,
                 Order order) {
  KTSA_REQUIRE_REDUCER(R);
  const std::int64_t code = detail::bco_order_code(order);
  const double mine[3] = {local_reward_sum, static_cast<double>(local_count),
                          static_cast<double>(code)};
  const std::vector<double> all = all_gather(r, mine, 3);
  double sum = 0, count = 0;
  for (int k = 0; k < r.size(); ++k) {
    if (all[3 * k + 2] != all[2])
      throw ktsa::invalid_argument(ktsa::detail::concat(
          "ktsa: the BCO update order differs between ranks (rank 0: ", all[2], ", rank ", k, ": ",
          all[3 * k + 2], "; 0 before_loss, 1 after_loss, 2 none): pass the same config"));
    sum += all[3 * k];
    count += all[3 * k + 1];
  }
  if (code == 2) return state.mean();
  const double before = state.mean();
  state.update(sum, static_cast<index_t>(count));
  return code == 0 ? state.mean() : before;
}

/// The same from this rank's policy and reference log-probs: the reward sum
/// is beta * (policy - reference) summed in index order, as kto_loss sums it.
template <class R, class P, class Q, class Order>
double bco_delta(R& r, loss::bco_running_mean& state, vector_view<P> policy_logps,
                 vector_view<Q> reference_logps, double beta, Order order) {
  double sum = 0;
  on_every_rank(r, [&] {
    ktsa::detail::require_same_length("policy_logps", policy_logps.extent(0), "reference_logps",
                                      reference_logps.extent(0));
    ktsa::detail::require(std::isfinite(beta) && beta > 0, "beta", beta, "must be finite and > 0");
    loss::detail::require_finite_values(policy_logps, "policy_logps");
    loss::detail::require_finite_values(reference_logps, "reference_logps");
    for (index_t i = 0; i < policy_logps.extent(0); ++i)
      sum +=
          beta * (static_cast<double>(policy_logps[i]) - static_cast<double>(reference_logps[i]));
  });
  return bco_delta(r, state, sum, policy_logps.extent(0), order);
}

// ---------------------------------------------------------------- metrics

/// The step's metrics over every rank: sums and counts added in rank order.
/// kl (z0, or delta for bco) becomes the example-weighted mean of the ranks'
/// kl over the ranks with examples (the shared z0 itself when every rank used
/// it); a rank with no examples passes batch_metrics{} and contributes nothing.
template <class R>
loss::batch_metrics all_reduce_metrics(R& r, const loss::batch_metrics& local) {
  KTSA_REQUIRE_REDUCER(R);
  const double n_local = static_cast<double>(local.chosen_count + local.rejected_count);
  const double mine[7] = {local.kl * n_local,
                          local.chosen_reward_sum,
                          local.rejected_reward_sum,
                          local.chosen_logp_sum,
                          local.rejected_logp_sum,
                          static_cast<double>(local.chosen_count),
                          static_cast<double>(local.rejected_count)};
  const std::vector<double> all = all_gather(r, mine, 7);
  loss::batch_metrics out;
  double kl_weighted = 0, kl_same = 0;
  bool first = true, all_same = true;
  for (int k = 0; k < r.size(); ++k) {
    const double* p = all.data() + 7 * k;
    out.chosen_reward_sum += p[1];
    out.rejected_reward_sum += p[2];
    out.chosen_logp_sum += p[3];
    out.rejected_logp_sum += p[4];
    out.chosen_count += static_cast<index_t>(p[5]);
    out.rejected_count += static_cast<index_t>(p[6]);
    const double n = p[5] + p[6];
    if (n > 0) {
      kl_weighted += p[0];
      const double kl = p[0] / n;
      if (first) kl_same = kl;
      all_same = all_same && (first || kl == kl_same);
      first = false;
    }
  }
  const double n_total = static_cast<double>(out.chosen_count + out.rejected_count);
  // The shared value exactly when every rank used it (a shared z0 or delta);
  // x * n / n can differ from x in the last bit, so it is kept from one rank.
  out.kl = first ? local.kl : (all_same ? kl_same : kl_weighted / n_total);
  return out;
}

// ---------------------------------------------------------------- the loss

/// The batch loss over every rank and the scale of this rank's gradient.
struct global_loss_result {
  double loss = 0;        ///< mean of the per-example losses over every rank's examples
  double grad_scale = 0;  ///< local_count / total count: multiply kto_loss's grad by it
  index_t count = 0;      ///< examples over every rank
};

/// kto_loss returns this rank's mean loss and d(local mean)/d(policy); the
/// data-parallel objective is the mean over every rank's examples, whose
/// gradient is the local one times local_count / total. Sum-all-reducing the
/// scaled gradients (not averaging them) then gives the global gradient even
/// when ranks hold different numbers of examples (a plain DDP average is
/// right only for equal counts). A rank with no examples passes (0, 0).
template <class R>
global_loss_result global_loss(R& r, double local_mean_loss, index_t local_count) {
  KTSA_REQUIRE_REDUCER(R);
  const double mine[2] = {
      local_count > 0 ? local_mean_loss * static_cast<double>(local_count) : 0.0,
      static_cast<double>(local_count)};
  const std::vector<double> all = all_gather(r, mine, 2);
  double sum = 0, count = 0;
  for (int k = 0; k < r.size(); ++k) sum += all[2 * k], count += all[2 * k + 1];
  ktsa::detail::require(count > 0, "example count", count, "no rank has an example");
  return {sum / count, static_cast<double>(local_count) / count, static_cast<index_t>(count)};
}

// ---------------------------------------------------------------- conversion report

/// The conversion report (Table 3) of every rank's impressions, built on every
/// rank: the (category, arm, action) counts are summed exactly (int64) and the
/// report is built from them, so it equals build_conversion_report of all the
/// records in one process. Ids beyond the names, or bad actions, throw
/// data_error on every rank.
template <class R>
metrics::conversion_report build_conversion_report(R& r,
                                                   const std::vector<metrics::impression>& records,
                                                   const metrics::report_options& options = {}) {
  KTSA_REQUIRE_REDUCER(R);
  // Validate locally (same messages as one process), on every rank at once.
  on_every_rank(r, [&] {
    metrics::report_options local = options;
    local.base_arm = 0;  // checked on the global report: this rank may not see that arm
    if (!records.empty()) (void)metrics::build_conversion_report(records, local);
  });
  // The table's size: the largest ids anywhere (or the names).
  std::int64_t max_ids[2] = {-1, -1};
  for (const auto& rec : records) {
    max_ids[0] = std::max<std::int64_t>(max_ids[0], rec.category);
    max_ids[1] = std::max<std::int64_t>(max_ids[1], rec.arm);
  }
  r.all_reduce(max_ids, 2, reduce_op::max);
  const std::int64_t C = std::max<std::int64_t>(
      max_ids[0] + 1, static_cast<std::int64_t>(options.category_names.size()));
  const std::int64_t A =
      std::max<std::int64_t>(max_ids[1] + 1, static_cast<std::int64_t>(options.arm_names.size()));
  ktsa::detail::require(C * A <= (std::int64_t{1} << 22), "categories x arms", C * A,
                        "is too large for the dense count table (at most 2^22 cells)");
  // counts[(c * A + a) * 3 + action]; int64 sums are exact in any order.
  std::vector<std::int64_t> counts(static_cast<std::size_t>(C * A * 3), 0);
  for (const auto& rec : records)
    ++counts[static_cast<std::size_t>((rec.category * A + rec.arm) * 3 +
                                      static_cast<std::int64_t>(rec.act))];
  if (r.size() > 1 && !counts.empty()) r.all_reduce(counts.data(), counts.size(), reduce_op::sum);
  // The report depends on the records only through these counts.
  std::vector<metrics::impression> merged;
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t a = 0; a < A; ++a)
      for (int act = 0; act < 3; ++act)
        for (std::int64_t i = 0; i < counts[static_cast<std::size_t>((c * A + a) * 3 + act)]; ++i)
          merged.push_back(
              {static_cast<int>(c), static_cast<int>(a), static_cast<metrics::action>(act)});
  return metrics::build_conversion_report(merged, options);
}

}  // namespace ktsa::dist
