// ktsa/dist/sharded.hpp: vocab-sharded (tensor-parallel) sequence log-prob
// and token KL on the host.
//
// Each rank holds the logits columns [begin, end) of a vocabulary of V (the
// shards of all ranks tile [0, V), in any rank order) and the full labels
// [B, T] (global token ids, the same on every rank). The forward reads the
// local shard once (the host kernels' blocked row loops), exchanges per row
// the shard's state through the reducer (log-prob: max, sum of exp, target
// logit if owned, 3 doubles; KL: 6 doubles) and merges the states in
// vocabulary order with the shared merges of ktsa/dist/merge.hpp. Every rank
// then holds the global per-token and per-sequence outputs and the global lse
// (save it for the backward). The backward is local to the shard: with the
// saved global lse (and KL) each gradient element needs only its own logit,
// so it makes no collective call.
//
// Exchange: an exact all-gather of rows x 3 (or 6) doubles per rank (see
// reducer.hpp), so results are bitwise identical on every rank and independent
// of the transport's reduction tree. Against the single-process kernel on the
// full logits they agree to fp32 rounding (about 1e-7 relative: the block
// boundaries of the fp32 partial sums move with the shard boundaries); with
// one rank they are bitwise the same.
//
// Checks, on every rank together (one all-gather of 6 int64 per rank): the
// shards tile [0, V) without gap or overlap, V, B, T, the labels and the
// options agree. A failure throws shape_error / invalid_argument on every
// rank; a local error (a label outside [0, V), a NaN logit with check_finite,
// which names the global vocabulary index) throws on every rank too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/half.hpp"
#include "ktsa/core/math.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/dist/check.hpp"
#include "ktsa/dist/merge.hpp"
#include "ktsa/dist/reducer.hpp"
#include "ktsa/kernels/detail/checks.hpp"
#include "ktsa/kernels/detail/rows.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/options.hpp"
#include "ktsa/kernels/token_kl.hpp"

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

}  // namespace detail

/// Vocab-sharded sequence_logprob_forward (same outputs and options as
/// ktsa/kernels/logprob.hpp, global values on every rank): `logits` is this
/// rank's [B, T, shard.size()] slice, labels are global ids. lse [B, T]
/// (optional) is the global lse that sharded_sequence_logprob_backward needs.
template <class R, class L, class I, class S>
void sharded_sequence_logprob_forward(const exec::host& ex, R& r, const vocab_shard& shard,
                                      tensor_view<L, 3> logits, tensor_view<I, 2> labels,
                                      tensor_view<S, 1> sequence_logp,
                                      tensor_view<std::int64_t, 1> token_count = {},
                                      tensor_view<float, 2> lse = {},
                                      tensor_view<float, 2> token_logp = {},
                                      const kernels::logprob_options& opts = {}) {
  KTSA_REQUIRE_REDUCER(R);
  namespace kd = kernels::detail;
  static_assert(kd::is_logit_type_v<L>, "logits are float, ktsa::f16 or ktsa::bf16");
  static_assert(kd::is_label_type_v<I>, "labels are int32 or int64");
  static_assert(kd::is_real_output_v<S>, "sequence_logp is a writable float or double view");
  const kd::simd_level level = kd::active_simd_level();
  index_t B = 0, Tn = 0;
  kd::targets tg;
  on_every_rank(r, [&] {
    detail::check_local_logits(logits, shard, "logits");
    B = logits.extent(0), Tn = logits.extent(1);
    kd::require_shape(labels, {B, Tn}, "labels");
    kd::check_logprob_outputs(B, Tn, sequence_logp, token_count, lse, token_logp);
    tg = kd::prepare_targets(labels, B, Tn, shard.vocab_size, opts, true);
  });
  const std::vector<detail::rank_shard> order = detail::check_shards(
      r, shard, B, Tn, detail::targets_fingerprint(tg, opts), "sharded log-prob");
  on_every_rank(r, [&] {
    if (opts.check_finite) detail::scan_finite(level, logits, tg, shard.begin, "logits");
  });

  // This shard's (max, sum, target) per row.
  const index_t N = B * Tn, Vl = shard.size();
  std::vector<double> part(static_cast<std::size_t>(3 * N), 0.0);
  ktsa::detail::parallel_chunks(
      ex, N, kernels::detail::min_rows_per_thread(Vl), [&](index_t begin, index_t end) {
        for (index_t row = begin; row < end; ++row) {
          const std::int64_t y = tg.label[static_cast<std::size_t>(row)];
          if (y < 0) continue;
          const index_t b = row / Tn, t = row % Tn;
          const L* x = logits.data() + b * logits.stride(0) + t * logits.stride(1);
          const kd::lse_state st = kd::row_lse(level, x, Vl);
          double* p = part.data() + 3 * row;
          p[0] = static_cast<double>(st.max);
          p[1] = st.sum;
          p[2] = (y >= shard.begin && y < shard.end)
                     ? static_cast<double>(to_float(x[y - shard.begin]))
                     : 0.0;
        }
      });
  const std::vector<double> all = all_gather(r, part.data(), part.size());

  // Merge in vocabulary order (the same on every rank).
  const std::size_t stride = part.size();
  std::vector<double> token(static_cast<std::size_t>(N), 0.0);
  for (index_t row = 0; row < N; ++row) {
    const std::int64_t y = tg.label[static_cast<std::size_t>(row)];
    const index_t b = row / Tn, t = row % Tn;
    if (y < 0) {
      if (lse.data() != nullptr) lse(b, t) = 0.0f;
      if (token_logp.data() != nullptr) token_logp(b, t) = 0.0f;
      continue;
    }
    math::online_lse<double> acc;
    double xy = 0;
    for (const detail::rank_shard& k : order) {
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
      if (acc.max == -math::infinity<double>()) kd::fail_all_neg_inf("logits", b, t);
      row_lse = lp = std::numeric_limits<double>::quiet_NaN();
    }
    token[static_cast<std::size_t>(row)] = lp;
    if (lse.data() != nullptr) lse(b, t) = static_cast<float>(row_lse);
    if (token_logp.data() != nullptr) token_logp(b, t) = static_cast<float>(lp);
  }
  for (index_t b = 0; b < B; ++b) {
    double sum = 0;
    for (index_t t = 0; t < Tn; ++t) sum += token[static_cast<std::size_t>(b * Tn + t)];
    const std::int64_t n = tg.count[static_cast<std::size_t>(b)];
    sequence_logp[b] = static_cast<S>(kd::reduce_sequence(sum, n, opts.reduce));
    if (token_count.data() != nullptr) token_count[b] = n;
  }
}

/// The backward of the sharded log-prob, local to the shard (no collective):
///   grad_logits[b, t, j] = g_b (onehot(begin + j == y) - exp(x_j - lse[b, t]))
/// with g_b = upstream_grad[b] (divided by the token count for mean) and lse
/// the global one saved by sharded_sequence_logprob_forward. grad_logits is
/// this rank's [B, T, shard.size()] slice, float or the logits' dtype, and may
/// be exactly the logits view (in place).
template <class L, class I, class U, class G>
void sharded_sequence_logprob_backward(const exec::host& ex, const vocab_shard& shard,
                                       tensor_view<L, 3> logits, tensor_view<I, 2> labels,
                                       tensor_view<const float, 2> lse,
                                       tensor_view<U, 1> upstream_grad,
                                       tensor_view<G, 3> grad_logits,
                                       const kernels::logprob_options& opts = {}) {
  namespace kd = kernels::detail;
  static_assert(kd::is_logit_type_v<L>, "logits are float, ktsa::f16 or ktsa::bf16");
  static_assert(kd::is_label_type_v<I>, "labels are int32 or int64");
  static_assert(std::is_floating_point_v<std::remove_cv_t<U>>, "upstream_grad is float or double");
  kd::check_grad_type<G, L>();
  detail::check_local_logits(logits, shard, "logits");
  const index_t B = logits.extent(0), Tn = logits.extent(1), Vl = shard.size();
  kd::require_shape(labels, {B, Tn}, "labels");
  kd::require_shape(lse, {B, Tn}, "lse");
  kd::require_shape(upstream_grad, {B}, "upstream_grad");
  kd::require_view(grad_logits, "grad_logits");
  const bool in_place = kd::check_grad_output(grad_logits, logits, "grad_logits", "logits");
  const bool stream = kd::use_streaming(grad_logits.size(), sizeof(G), in_place);
  const kd::targets tg = kd::prepare_targets(labels, B, Tn, shard.vocab_size, opts, true);
  kd::check_finite_vector(upstream_grad, "upstream_grad");
  kd::check_saved_finite(tg, B, Tn, {lse}, {"lse"},
                         "pass the global lse saved by sharded_sequence_logprob_forward");
  const std::vector<float> scale = kd::sequence_scales(upstream_grad, tg, opts.reduce);
  const kd::simd_level level = kd::active_simd_level();

  ktsa::detail::parallel_chunks(
      ex, B * Tn, kd::min_rows_per_thread(Vl), [&](index_t begin, index_t end) {
        for (index_t row = begin; row < end; ++row) {
          const index_t b = row / Tn, t = row % Tn;
          const L* x = logits.data() + b * logits.stride(0) + t * logits.stride(1);
          G* g = grad_logits.data() + b * grad_logits.stride(0) + t * grad_logits.stride(1);
          const std::int64_t y = tg.label[static_cast<std::size_t>(row)];
          if (y < 0) {
            kd::row_zero(g, Vl);
            continue;
          }
          const bool owned = y >= shard.begin && y < shard.end;
          const float xy = owned ? to_float(x[y - shard.begin]) : 0.0f;  // before in-place writes
          const float s = scale[static_cast<std::size_t>(b)], l = lse(b, t);
          kd::row_grad(level, x, Vl, l, s, g, stream);
          if (owned)
            g[y - shard.begin] = from_float<G>(kernels::logprob_grad_element(xy, l, true, s));
        }
        if (stream) kd::stream_fence();
      });
}

/// Vocab-sharded token_kl_forward (same outputs and options as
/// ktsa/kernels/token_kl.hpp, global values on every rank): a_logits and
/// b_logits are this rank's [B, T, shard.size()] slices of both tensors.
template <class R, class A, class Bv, class I, class S>
void sharded_token_kl_forward(const exec::host& ex, R& r, const vocab_shard& shard,
                              tensor_view<A, 3> a_logits, tensor_view<Bv, 3> b_logits,
                              tensor_view<I, 2> labels, tensor_view<S, 1> sequence_kl,
                              tensor_view<float, 2> token_kl = {}, tensor_view<float, 2> lse_a = {},
                              tensor_view<float, 2> lse_b = {},
                              const kernels::logprob_options& opts = {},
                              tensor_view<float, 2> token_entropy = {}) {
  KTSA_REQUIRE_REDUCER(R);
  namespace kd = kernels::detail;
  static_assert(kd::is_logit_type_v<A> && kd::is_logit_type_v<Bv>, "logits are float, f16 or bf16");
  static_assert(kd::is_label_type_v<I>, "labels are int32 or int64");
  static_assert(kd::is_real_output_v<S>, "sequence_kl is a writable float or double view");
  const kd::simd_level level = kd::active_simd_level();
  index_t B = 0, Tn = 0;
  kd::targets tg;
  on_every_rank(r, [&] {
    detail::check_local_logits(a_logits, shard, "a_logits");
    kd::check_pair(a_logits, b_logits);
    B = a_logits.extent(0), Tn = a_logits.extent(1);
    kd::check_token_kl_forward_args(B, Tn, labels, sequence_kl, token_kl, lse_a, lse_b,
                                    token_entropy);
    tg = kd::prepare_targets(labels, B, Tn, shard.vocab_size, opts, false);
  });
  const std::vector<detail::rank_shard> order = detail::check_shards(
      r, shard, B, Tn, detail::targets_fingerprint(tg, opts), "sharded token KL");
  on_every_rank(r, [&] {
    if (!opts.check_finite) return;
    detail::scan_finite(level, a_logits, tg, shard.begin, "a_logits");
    detail::scan_finite(level, b_logits, tg, shard.begin, "b_logits");
  });

  const index_t N = B * Tn, Vl = shard.size();
  const bool want_entropy = token_entropy.data() != nullptr;
  std::vector<double> part(static_cast<std::size_t>(6 * N), 0.0);
  ktsa::detail::parallel_chunks(
      ex, N, kd::min_rows_per_thread(Vl), [&](index_t begin, index_t end) {
        for (index_t row = begin; row < end; ++row) {
          if (tg.label[static_cast<std::size_t>(row)] < 0) continue;
          const index_t b = row / Tn, t = row % Tn;
          const A* pa = a_logits.data() + b * a_logits.stride(0) + t * a_logits.stride(1);
          const Bv* pb = b_logits.data() + b * b_logits.stride(0) + t * b_logits.stride(1);
          const kd::kl_state st = want_entropy ? kd::row_kl<true>(level, pa, pb, Vl)
                                               : kd::row_kl<false>(level, pa, pb, Vl);
          double* p = part.data() + 6 * row;
          p[0] = static_cast<double>(st.max_a);
          p[1] = static_cast<double>(st.max_b);
          p[2] = st.sum_a;
          p[3] = st.sum_b;
          p[4] = st.max_a == -kd::kInf ? 0.0 : st.w;  // no mass of p here: nothing to add
          p[5] = st.max_a == -kd::kInf ? 0.0 : st.u;
        }
      });
  const std::vector<double> all = all_gather(r, part.data(), part.size());

  const std::size_t stride = part.size();
  std::vector<double> token(static_cast<std::size_t>(N), 0.0);
  const double ninf = -math::infinity<double>();
  for (index_t row = 0; row < N; ++row) {
    const index_t b = row / Tn, t = row % Tn;
    double kl = 0, la = 0, lb = 0, h = 0;
    if (tg.label[static_cast<std::size_t>(row)] >= 0) {
      kl_partial_state acc = kl_partial_state::empty();
      for (const detail::rank_shard& k : order) {
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
        if (acc.max_a == ninf) kd::fail_all_neg_inf("a_logits", b, t);
        if (acc.max_b == ninf) kd::fail_all_neg_inf("b_logits", b, t);
        kl = la = lb = h = std::numeric_limits<double>::quiet_NaN();
      }
    }
    token[static_cast<std::size_t>(row)] = kl;
    if (token_kl.data() != nullptr) token_kl(b, t) = static_cast<float>(kl);
    if (lse_a.data() != nullptr) lse_a(b, t) = static_cast<float>(la);
    if (lse_b.data() != nullptr) lse_b(b, t) = static_cast<float>(lb);
    if (want_entropy) token_entropy(b, t) = static_cast<float>(h);
  }
  for (index_t b = 0; b < B; ++b) {
    double sum = 0;
    for (index_t t = 0; t < Tn; ++t) sum += token[static_cast<std::size_t>(b * Tn + t)];
    sequence_kl[b] = static_cast<S>(
        kd::reduce_sequence(sum, tg.count[static_cast<std::size_t>(b)], opts.reduce));
  }
}

/// The backward of the sharded token KL, local to the shard: it is
/// kernels::token_kl_backward on this rank's slices with the global lse_a,
/// lse_b and token_kl saved by sharded_token_kl_forward (each gradient element
/// needs only its own a_j, b_j and those row values).
template <class A, class Bv, class I, class U, class GA, class GB = float>
void sharded_token_kl_backward(const exec::host& ex, const vocab_shard& shard,
                               tensor_view<A, 3> a_logits, tensor_view<Bv, 3> b_logits,
                               tensor_view<I, 2> labels, tensor_view<const float, 2> lse_a,
                               tensor_view<const float, 2> lse_b,
                               tensor_view<const float, 2> token_kl,
                               tensor_view<U, 1> upstream_grad, tensor_view<GA, 3> grad_a,
                               tensor_view<GB, 3> grad_b = {},
                               const kernels::logprob_options& opts = {}) {
  detail::check_local_logits(a_logits, shard, "a_logits");
  kernels::token_kl_backward(ex, a_logits, b_logits, labels, lse_a, lse_b, token_kl, upstream_grad,
                             grad_a, grad_b, opts);
}

}  // namespace ktsa::dist
