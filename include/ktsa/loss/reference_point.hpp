// ktsa/loss/reference_point.hpp: the reference point z0.
//
// Batch KL (KTO): pair each prompt x_i with a mismatched completion y_j
// (a rotation, so no pair is matched even for odd B) and estimate
//   z0 = max(0, mean_i [log pi(y_j|x_i) - log pi_ref(y_j|x_i)]).
// pairing::previous (default) is TRL's j = i - 1 (mod B); pairing::next,
// j = i + 1, is ktsa's earlier convention. B < 2 is an error (TRL silently
// pairs the completion of a batch of one with its own prompt).
// The mean is taken before the clamp. No gradient flows through z0.
// Partial sums and counts let a distributed reducer combine ranks:
//   kl_reduction::count_weighted (default, unbiased): sum of all log-ratios
//     over the number of pairs; HALOs' convention (it weights ranks by count);
//   kl_reduction::mean_of_means: the mean of the per-rank means, TRL's
//     convention (it averages the gathered per-rank KLs); ranks without pairs
//     are skipped here, where TRL's KL becomes NaN.
// A NaN or infinite partial sum (from a reducer) is a data_error, never a
// quiet z0 = 0 from the clamp; so is a sum or mean that overflows double.
//
// KTSA buyer reference (Eq. 2 of the KTSA paper):
//   z0 = max(R_avg, (1/K) sum_k KL(pi(.|x) || pi(.|x_k)))
// with R_avg the product's normalised average rating in [0, 1] and x_k the
// prompt extended with the k-th review key feature (K = 6 in the paper: top-3
// features and top-3 concerns). Each KL is estimated from S completions sampled
// under x: KL ~ (1/S) sum_s [log pi(y_s|x) - log pi(y_s|x_k)].
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <new>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/loss/kto.hpp"

namespace ktsa::loss {

/// Sum of log-ratios over the KL pairs of one rank, and how many there were.
struct kl_partial {
  double sum = 0;
  index_t count = 0;
};

/// How combine_kl_partials merges ranks (see the file comment).
enum class kl_reduction : int {
  count_weighted = 0,  ///< HALOs: global sum / global count (default)
  mean_of_means = 1,   ///< TRL: mean of the per-rank means
};

/// Which completion prompt i is paired with for the batch KL.
enum class pairing : int {
  previous = 0,  ///< TRL: (i - 1 + B) mod B (default)
  next = 1,      ///< (i + 1) mod B
};

/// The largest batch mismatched_pair_indices allocates for (2^31 - 1 indices,
/// 16 GiB); mismatched_pair_index computes one index for any B.
inline constexpr index_t max_pair_indices = 2147483647;

namespace detail {
inline void require_valid(kl_reduction how) {
  const int v = static_cast<int>(how);
  if (v != 0 && v != 1)
    ktsa::detail::fail_argument("kl_reduction", v,
                                "is not a kl_reduction (count_weighted 0, mean_of_means 1)");
}
inline void require_valid(pairing p) {
  const int v = static_cast<int>(p);
  if (v != 0 && v != 1)
    ktsa::detail::fail_argument("pairing", v, "is not a pairing (previous 0, next 1)");
}
inline void require_pair_batch(index_t batch_size) {
  ktsa::detail::require(batch_size >= 2, "batch_size", batch_size,
                        "must be >= 2 to form mismatched (prompt, completion) pairs");
}
}  // namespace detail

/// The index of the completion prompt i is paired with (no allocation).
/// Throws invalid_argument for B < 2, i outside [0, B) or a bad pairing.
inline index_t mismatched_pair_index(index_t i, index_t batch_size, pairing p = pairing::previous) {
  detail::require_valid(p);
  detail::require_pair_batch(batch_size);
  ktsa::detail::require(i >= 0 && i < batch_size, "i", i, "must be in [0, batch_size)");
  if (p == pairing::previous) return i == 0 ? batch_size - 1 : i - 1;
  return i == batch_size - 1 ? 0 : i + 1;
}

/// For each prompt i, the index of the completion it is paired with:
/// (i - 1 + B) mod B for pairing::previous (TRL's, default), (i + 1) mod B for next.
/// Throws invalid_argument for B < 2 (a batch of one has no mismatched pair),
/// for B > max_pair_indices, and (as invalid_argument naming B, never
/// std::bad_alloc) when the vector cannot be allocated.
inline std::vector<index_t> mismatched_pair_indices(index_t batch_size,
                                                    pairing p = pairing::previous) {
  detail::require_valid(p);
  detail::require_pair_batch(batch_size);
  ktsa::detail::require(batch_size <= max_pair_indices, "batch_size", batch_size,
                        "exceeds loss::max_pair_indices (2^31 - 1); use mismatched_pair_index");
  std::vector<index_t> idx;
  try {
    idx.resize(static_cast<size_t>(batch_size));
  } catch (const std::bad_alloc&) {
    ktsa::detail::fail_argument("batch_size", batch_size,
                                "cannot allocate its pair indices; use mismatched_pair_index");
  }
  for (index_t i = 0; i < batch_size; ++i)
    idx[static_cast<size_t>(i)] = mismatched_pair_index(i, batch_size, p);
  return idx;
}

/// Sums the log-ratios of a rank's KL pairs: policy and reference log-probs of
/// the mismatched completions.
template <class P, class R>
kl_partial kl_partial_sum(vector_view<P> kl_policy_logps, vector_view<R> kl_reference_logps) {
  ktsa::detail::require_same_length("kl_policy_logps", kl_policy_logps.extent(0),
                                    "kl_reference_logps", kl_reference_logps.extent(0));
  detail::require_finite_values(kl_policy_logps, "kl_policy_logps");
  detail::require_finite_values(kl_reference_logps, "kl_reference_logps");
  kl_partial p;
  for (index_t i = 0; i < kl_policy_logps.extent(0); ++i)
    p.sum += static_cast<double>(kl_policy_logps[i]) - static_cast<double>(kl_reference_logps[i]);
  p.count = kl_policy_logps.extent(0);
  if (!std::isfinite(p.sum))
    throw data_error(
        ktsa::detail::concat("ktsa: the sum of the KL log-ratios overflows double (", p.sum, ")"));
  return p;
}

/// z0 from the partials of every rank (one entry per rank). Ranks with no pairs
/// are skipped by mean_of_means; an all-empty set is an error (invalid_argument),
/// as are a negative count and a total count that overflows int64. A NaN or
/// infinite partial sum, or a sum or mean that overflows double, is a data_error.
inline double combine_kl_partials(const std::vector<kl_partial>& ranks,
                                  kl_reduction how = kl_reduction::count_weighted) {
  detail::require_valid(how);
  double sum = 0, mean_sum = 0;
  index_t count = 0, ranks_with_pairs = 0;
  for (size_t k = 0; k < ranks.size(); ++k) {
    const kl_partial& p = ranks[k];
    ktsa::detail::require(p.count >= 0, "kl_partial.count", p.count, "must be >= 0");
    if (!std::isfinite(p.sum))
      throw data_error(ktsa::detail::concat("ktsa: argument 'kl_partial.sum' of rank ", k,
                                            " is not finite: ", p.sum));
    ktsa::detail::require(p.count <= std::numeric_limits<index_t>::max() - count,
                          "kl_partial.count", p.count,
                          "makes the total KL pair count overflow int64");
    sum += p.sum;
    count += p.count;
    if (p.count > 0) {
      mean_sum += p.sum / static_cast<double>(p.count);
      ++ranks_with_pairs;
    }
  }
  ktsa::detail::require(count > 0, "kl pair count", count,
                        "the batch has no KL pairs to estimate z0 from");
  const double mean = how == kl_reduction::count_weighted
                          ? sum / static_cast<double>(count)
                          : mean_sum / static_cast<double>(ranks_with_pairs);
  if (!std::isfinite(mean))
    throw data_error(
        ktsa::detail::concat("ktsa: the KL partial sums overflow double (mean ", mean, ")"));
  return std::max(0.0, mean);
}

/// z0 of a single process: max(0, mean log-ratio of the KL pairs).
template <class P, class R>
double batch_kl_reference_point(vector_view<P> kl_policy_logps, vector_view<R> kl_reference_logps) {
  return combine_kl_partials({kl_partial_sum(kl_policy_logps, kl_reference_logps)});
}

/// Monte Carlo estimate of KL(pi(.|x) || pi(.|x_k)) from S completions sampled
/// under x, scored under x and under x_k.
template <class A, class B>
double key_feature_kl_estimate(vector_view<A> logp_under_x, vector_view<B> logp_under_feature) {
  ktsa::detail::require_same_length("logp_under_x", logp_under_x.extent(0), "logp_under_feature",
                                    logp_under_feature.extent(0));
  ktsa::detail::require(logp_under_x.extent(0) > 0, "samples", logp_under_x.extent(0),
                        "need at least one sampled completion");
  detail::require_finite_values(logp_under_x, "logp_under_x");
  detail::require_finite_values(logp_under_feature, "logp_under_feature");
  double sum = 0;
  for (index_t s = 0; s < logp_under_x.extent(0); ++s)
    sum += static_cast<double>(logp_under_x[s]) - static_cast<double>(logp_under_feature[s]);
  const double count = static_cast<double>(logp_under_x.extent(0));
  if (std::isfinite(sum)) return sum / count;
  // The sum overflowed: the mean of d / S may still be finite. A log-ratio
  // that itself overflows (finite log-probs of +-1.7e308) has no finite
  // estimate: an error, as kl_partial_sum's overflow is, never a silent +-inf.
  double mean = 0;
  for (index_t s = 0; s < logp_under_x.extent(0); ++s) {
    const double d =
        static_cast<double>(logp_under_x[s]) - static_cast<double>(logp_under_feature[s]);
    if (!std::isfinite(d))
      throw data_error(ktsa::detail::concat("ktsa: the log-ratio of sample ", s,
                                            " overflows double (", logp_under_x[s], " - ",
                                            logp_under_feature[s], ")"));
    mean += d / count;
  }
  if (!std::isfinite(mean))
    throw data_error(ktsa::detail::concat("ktsa: the mean key-feature log-ratio overflows double"));
  return mean;
}

/// KTSA's buyer reference point, Eq. 2: max(R_avg, mean of the K key-feature KLs).
template <class K>
double ktsa_reference_point(double rating_average, vector_view<K> key_feature_kls) {
  ktsa::detail::require(rating_average >= 0 && rating_average <= 1, "rating_average",
                        rating_average, "must be a normalised rating in [0, 1]");
  const index_t k = key_feature_kls.extent(0);
  ktsa::detail::require(k >= 1, "key_feature_kls.size", k,
                        "need at least one key feature (K >= 1)");
  detail::require_finite_values(key_feature_kls, "key_feature_kls");
  double sum = 0;
  for (index_t i = 0; i < k; ++i) sum += static_cast<double>(key_feature_kls[i]);
  if (!std::isfinite(sum)) {  // finite KLs whose sum overflows: their mean is still finite
    sum = 0;
    for (index_t i = 0; i < k; ++i)
      sum += static_cast<double>(key_feature_kls[i]) / static_cast<double>(k);
    return std::max(rating_average, sum);
  }
  return std::max(rating_average, sum / static_cast<double>(k));
}

}  // namespace ktsa::loss
