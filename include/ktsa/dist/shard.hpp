// ktsa/dist/shard.hpp: a rank's slice of the vocabulary, the check that the
// slices of every rank tile [0, V), and the merge of the gathered per-row
// shard states (used by the host ops in ktsa/dist/sharded.hpp and the CUDA
// ops in ktsa/cuda/sharded.cuh alike, so both finish a row the same way).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/half.hpp"
#include "ktsa/core/math.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/dist/check.hpp"
#include "ktsa/dist/merge.hpp"
#include "ktsa/dist/reducer.hpp"
#include "ktsa/kernels/detail/checks.hpp"
#include "ktsa/kernels/detail/rows.hpp"
#include "ktsa/kernels/options.hpp"

namespace ktsa::dist {

/// This rank's slice [begin, end) of a vocabulary of vocab_size columns.
struct vocab_shard {
  index_t vocab_size = 0;
  index_t begin = 0;
  index_t end = 0;
  index_t size() const { return end - begin; }
};

/// The even split used by most tensor-parallel engines: rank k of n holds
/// [k V / n, (k + 1) V / n).
inline vocab_shard even_shard(index_t vocab_size, int rank, int ranks) {
  ktsa::detail::require(ranks >= 1 && ranks <= vocab_size, "ranks", ranks,
                        "must be in [1, vocab_size]");
  ktsa::detail::require(rank >= 0 && rank < ranks, "rank", rank, "must be in [0, ranks)");
  return {vocab_size, vocab_size * rank / ranks, vocab_size * (rank + 1) / ranks};
}

namespace detail {

using kernels::logprob_options;

inline std::uint64_t targets_fingerprint(const kernels::detail::targets& tg,
                                         const logprob_options& o) {
  fingerprint f;
  for (std::int64_t y : tg.label) f.add(y);
  f.add(o.reduce).add(o.check_finite);
  return f.value();
}

/// One rank's shard, as every rank sees it after the check.
struct rank_shard {
  int rank;
  index_t begin, end;
};

/// Gathers (V, begin, end, B, T, fingerprint) of every rank and checks them
/// identically on every rank. Returns the shards in vocabulary order.
template <class R>
std::vector<rank_shard> check_shards(R& r, const vocab_shard& s, index_t B, index_t T,
                                     std::uint64_t fp, const char* what) {
  using ktsa::detail::concat;
  std::int64_t fpi;
  std::memcpy(&fpi, &fp, sizeof fpi);
  const std::int64_t mine[6] = {s.vocab_size, s.begin, s.end, B, T, fpi};
  const std::vector<std::int64_t> all = all_gather(r, mine, 6);
  const int n = r.size();
  auto at = [&](int k, int f) { return all[static_cast<std::size_t>(6 * k + f)]; };
  for (int k = 1; k < n; ++k) {
    if (at(k, 0) != at(0, 0))
      throw shape_error(concat("ktsa: ", what, ": vocab_size differs between ranks (rank 0: ",
                               at(0, 0), ", rank ", k, ": ", at(k, 0), ")"));
    if (at(k, 3) != at(0, 3) || at(k, 4) != at(0, 4))
      throw shape_error(concat("ktsa: ", what, ": the batch shape differs between ranks (rank 0: [",
                               at(0, 3), ", ", at(0, 4), "], rank ", k, ": [", at(k, 3), ", ",
                               at(k, 4), "]): every rank holds the whole batch"));
    if (at(k, 5) != at(0, 5))
      throw ktsa::invalid_argument(concat("ktsa: ", what,
                                          ": the labels or options differ between rank 0 and rank ",
                                          k, ": every rank passes the same labels and options"));
  }
  std::vector<int> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return at(x, 1) < at(y, 1); });
  std::int64_t expect = 0;
  for (int k : order) {
    if (at(k, 1) != expect || at(k, 2) <= at(k, 1))
      throw shape_error(concat("ktsa: ", what, ": the vocabulary shards do not tile [0, ", at(0, 0),
                               "): rank ", k, " holds [", at(k, 1), ", ", at(k, 2),
                               ") where a non-empty shard starting at ", expect, " was expected (",
                               n, " ranks)"));
    expect = at(k, 2);
  }
  if (expect != at(0, 0))
    throw shape_error(concat("ktsa: ", what, ": the vocabulary shards end at ", expect,
                             ", short of vocab_size ", at(0, 0)));
  std::vector<rank_shard> out;
  for (int k : order) out.push_back({k, at(k, 1), at(k, 2)});
  return out;
}

/// Local argument checks shared by the forward passes (before any collective).
template <class L>
void check_local_logits(const tensor_view<L, 3>& x, const vocab_shard& s, const char* name) {
  kernels::detail::check_logits(x, name);
  ktsa::detail::require(s.vocab_size >= 1, "shard.vocab_size", s.vocab_size, "must be >= 1");
  if (s.begin < 0 || s.end > s.vocab_size || s.end <= s.begin)
    throw shape_error(ktsa::detail::concat("ktsa: shard [", s.begin, ", ", s.end,
                                           ") is not a non-empty part of [0, ", s.vocab_size, ")"));
  if (x.extent(2) != s.size())
    throw shape_error(ktsa::detail::concat("ktsa: '", name, "' has ", x.extent(2),
                                           " vocabulary columns but the shard [", s.begin, ", ",
                                           s.end, ") has ", s.size()));
}

/// With check_finite: the first NaN/+inf of the local shard (lowest row, then
/// column), named by its global vocabulary index.
template <class L>
void scan_finite(kernels::detail::simd_level level, const tensor_view<L, 3>& x,
                 const kernels::detail::targets& tg, index_t begin, const char* name) {
  const index_t Tn = x.extent(1), Vl = x.extent(2);
  for (index_t r = 0; r < x.extent(0) * Tn; ++r) {
    if (tg.label[static_cast<std::size_t>(r)] < 0) continue;
    const index_t b = r / Tn, t = r % Tn;
    const auto* row = x.data() + b * x.stride(0) + t * x.stride(1);
    const index_t j = kernels::detail::first_nonfinite(level, row, Vl);
    if (j >= 0) kernels::detail::fail_nonfinite_logit(name, b, t, begin + j, row[j]);
  }
}

/// Merges the gathered log-prob states of every row in vocabulary order (the
/// same on every rank) and finishes each row as the single-process kernel
/// does; out(b, t, lse, token_logp) receives every row (0, 0 when masked).
/// Returns the per-token log-probs. An all -inf row throws on every rank.
template <class Out>
std::vector<double> merge_logprob_rows(const std::vector<double>& all, std::size_t stride,
                                       const std::vector<rank_shard>& order,
                                       const kernels::detail::targets& tg, index_t Tn, Out out) {
  const index_t N = static_cast<index_t>(tg.label.size());
  std::vector<double> token(static_cast<std::size_t>(N), 0.0);
  for (index_t row = 0; row < N; ++row) {
    const std::int64_t y = tg.label[static_cast<std::size_t>(row)];
    const index_t b = row / Tn, t = row % Tn;
    if (y < 0) {
      out(b, t, 0.0, 0.0);
      continue;
    }
    math::online_lse<double> acc;
    double xy = 0;
    for (const rank_shard& k : order) {
      const double* p = all.data() + static_cast<std::size_t>(k.rank) * stride + 3 * row;
      acc.merge({p[0], p[1]});
      if (y >= k.begin && y < k.end) xy = p[2];  // the owner's target logit
    }
    double row_lse, lp;
    if (acc.max != -math::infinity<double>() && acc.sum > 0 && acc.sum < HUGE_VAL) {
      const double log_sum = std::log(acc.sum);
      row_lse = acc.max + log_sum;
      lp = (xy - acc.max) - log_sum;  // the single-process kernel's formula
    } else {
      if (acc.max == -math::infinity<double>()) kernels::detail::fail_all_neg_inf("logits", b, t);
      row_lse = lp = std::numeric_limits<double>::quiet_NaN();
    }
    token[static_cast<std::size_t>(row)] = lp;
    out(b, t, row_lse, lp);
  }
  return token;
}

/// The same for the KL states: out(b, t, kl, lse_a, lse_b, entropy).
template <class Out>
std::vector<double> merge_kl_rows(const std::vector<double>& all, std::size_t stride,
                                  const std::vector<rank_shard>& order,
                                  const kernels::detail::targets& tg, index_t Tn, Out out) {
  const index_t N = static_cast<index_t>(tg.label.size());
  const double ninf = -math::infinity<double>();
  std::vector<double> token(static_cast<std::size_t>(N), 0.0);
  for (index_t row = 0; row < N; ++row) {
    const index_t b = row / Tn, t = row % Tn;
    double kl = 0, la = 0, lb = 0, h = 0;
    if (tg.label[static_cast<std::size_t>(row)] >= 0) {
      kl_partial_state acc = kl_partial_state::empty();
      for (const rank_shard& k : order) {
        const double* p = all.data() + static_cast<std::size_t>(k.rank) * stride + 6 * row;
        acc.merge({p[0], p[1], p[2], p[3], p[4], p[5]});
      }
      const bool ok_a = acc.max_a != ninf && acc.sum_a > 0 && acc.sum_a < HUGE_VAL;
      const bool ok_b = acc.max_b != ninf && acc.sum_b > 0 && acc.sum_b < HUGE_VAL;
      if (ok_a && ok_b) {
        const double log_sa = std::log(acc.sum_a), log_sb = std::log(acc.sum_b);
        la = acc.max_a + log_sa;
        lb = acc.max_b + log_sb;
        kl = acc.w / acc.sum_a - (log_sa - log_sb);  // finish_kl_row's formula
        if (!std::isfinite(kl)) kl = HUGE_VAL;
        h = log_sa - acc.u / acc.sum_a;
      } else {
        if (acc.max_a == ninf) kernels::detail::fail_all_neg_inf("a_logits", b, t);
        if (acc.max_b == ninf) kernels::detail::fail_all_neg_inf("b_logits", b, t);
        kl = la = lb = h = std::numeric_limits<double>::quiet_NaN();
      }
    }
    token[static_cast<std::size_t>(row)] = kl;
    out(b, t, kl, la, lb, h);
  }
  return token;
}

/// Per-sequence sums of the token values in a fixed order, then the reduction.
inline double sequence_value(const std::vector<double>& token, const kernels::detail::targets& tg,
                             index_t b, index_t Tn, kernels::reduction red) {
  double sum = 0;
  for (index_t t = 0; t < Tn; ++t) sum += token[static_cast<std::size_t>(b * Tn + t)];
  return kernels::detail::reduce_sequence(sum, tg.count[static_cast<std::size_t>(b)], red);
}

}  // namespace detail

}  // namespace ktsa::dist
