// ktsa/kernels/token_kl.hpp: per-token and per-sequence KL divergence between
// two logits tensors, forward and backward, on the host.
//
// With p = softmax(a[b, t, :]) and q = softmax(b[b, t, :]):
//   token_kl[b, t]      = KL(p || q) = sum_j p_j (log p_j - log q_j)
//   sequence_kl[b]      = sum (or mean) over unmasked positions
//   token_entropy[b, t] = H(p) = -sum_j p_j log p_j                 (optional)
// This is the exact KL that the KTSA reference point (Eq. 2) averages over
// key features, e.g. a = the policy on x, b = the policy on x_i.
//
// Conventions are those of ktsa/kernels/logprob.hpp, except that labels are a
// mask only (a position is used unless its label is ignore_index, or it is
// shifted out); their values are not range-checked. a and b must have the
// same shape and may have different dtypes. -inf logits are legal: a_j = -inf
// contributes nothing; b_j = -inf where a_j is not gives KL = +inf (the
// backward rejects it). An unmasked row of a or b that is all -inf is a
// data_error. KL is not clamped: rounding can leave it about -1e-7 below 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/half.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/kernels/detail/checks.hpp"
#include "ktsa/kernels/detail/rows.hpp"
#include "ktsa/kernels/elementwise.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/options.hpp"

namespace ktsa::kernels {

namespace detail {

struct kl_row {
  double lse_a, lse_b, kl, entropy;
};

/// Finishes a row: classifies non-finite sums (throws for all -inf rows and,
/// with check_finite, for NaN/+inf), else forms lse, KL and entropy in fp64.
template <class TA, class TB>
kl_row finish_kl_row(simd_level level, const kl_state& st, const TA* a, const TB* b, index_t V,
                     index_t bi, index_t t, const logprob_options& o) {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  const bool ok_a = st.max_a != -kInf && st.sum_a > 0 && st.sum_a < HUGE_VAL;
  const bool ok_b = st.max_b != -kInf && st.sum_b > 0 && st.sum_b < HUGE_VAL;
  if (!ok_a || !ok_b) {
    const index_t ja = first_nonfinite(level, a, V), jb = first_nonfinite(level, b, V);
    if (ja >= 0 || jb >= 0) {
      if (o.check_finite) {
        if (ja >= 0) fail_nonfinite_logit("a_logits", bi, t, ja, a[ja]);
        fail_nonfinite_logit("b_logits", bi, t, jb, b[jb]);
      }
      return {nan, nan, nan, nan};
    }
    if (st.max_a == -kInf) fail_all_neg_inf("a_logits", bi, t);
    if (st.max_b == -kInf) fail_all_neg_inf("b_logits", bi, t);
    return {nan, nan, nan, nan};
  }
  if (level != simd_level::scalar && !(std::isfinite(st.w) && std::isfinite(st.u))) {
    // The vector levels sum w in fp32 lanes, which can overflow on finite
    // terms when logit gaps approach FLT_MAX; the scalar kernel sums in fp64.
    // Redo the row there (a rare path) so every level gives the scalar's answer.
    return finish_kl_row(simd_level::scalar, row_kl_scalar<TA, TB, true>(a, b, V), a, b, V, bi, t,
                         o);
  }
  const double log_sa = std::log(st.sum_a), log_sb = std::log(st.sum_b);
  kl_row r;
  r.lse_a = static_cast<double>(st.max_a) + log_sa;
  r.lse_b = static_cast<double>(st.max_b) + log_sb;
  // KL = E_p[c_a - c_b] - log(sum_a / sum_b) (see kl_state).
  r.kl = st.w / st.sum_a - (log_sa - log_sb);
  // With finite data a non-finite w means q_j = 0 where p_j > 0.
  if (!std::isfinite(r.kl)) r.kl = HUGE_VAL;
  r.entropy = log_sa - st.u / st.sum_a;
  return r;
}

}  // namespace detail

/// KL(softmax(a) || softmax(b)) per sequence [B] (sum or mean over unmasked
/// positions), optionally per token, with both log-sum-exps saved for the
/// backward and the entropy of softmax(a). Reads each unmasked row of a and b
/// once, together, in one blocked online pass (max, sum of exp, weighted
/// sums): the minimum, since every logit enters the result. Pass {} to skip an
/// optional output; masked positions get 0 in every per-token output.
template <class A, class Bv, class I, class S>
void token_kl_forward(const exec::host& ex, tensor_view<A, 3> a_logits, tensor_view<Bv, 3> b_logits,
                      tensor_view<I, 2> labels, tensor_view<S, 1> sequence_kl,
                      tensor_view<float, 2> token_kl = {}, tensor_view<float, 2> lse_a = {},
                      tensor_view<float, 2> lse_b = {}, const logprob_options& opts = {},
                      tensor_view<float, 2> token_entropy = {}) {
  using namespace detail;
  static_assert(is_logit_type_v<A> && is_logit_type_v<Bv>, "logits are float, f16 or bf16");
  static_assert(is_label_type_v<I>, "labels are int32 or int64");
  static_assert(is_real_output_v<S>, "sequence_kl is a writable float or double view");
  using TA = std::remove_cv_t<A>;
  using TB = std::remove_cv_t<Bv>;
  check_pair(a_logits, b_logits);
  const index_t B = a_logits.extent(0), Tn = a_logits.extent(1), V = a_logits.extent(2);
  check_token_kl_forward_args(B, Tn, labels, sequence_kl, token_kl, lse_a, lse_b, token_entropy);
  require_disjoint(
      {range_of(sequence_kl, "sequence_kl"), range_of(token_kl, "token_kl"),
       range_of(lse_a, "lse_a"), range_of(lse_b, "lse_b"),
       range_of(token_entropy, "token_entropy")},
      {range_of(a_logits, "a_logits"), range_of(b_logits, "b_logits"), range_of(labels, "labels")});
  const targets tg = prepare_targets(labels, B, Tn, V, opts, false);
  std::vector<double> token(static_cast<size_t>(B * Tn));
  const simd_level level = active_simd_level();
  const bool want_entropy = token_entropy.data() != nullptr;

  ktsa::detail::parallel_chunks(
      ex, B * Tn, min_rows_per_thread(V), [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {
          const index_t b = r / Tn, t = r % Tn;
          kl_row row{0, 0, 0, 0};
          if (tg.label[static_cast<size_t>(r)] >= 0) {
            const TA* pa = a_logits.data() + b * a_logits.stride(0) + t * a_logits.stride(1);
            const TB* pb = b_logits.data() + b * b_logits.stride(0) + t * b_logits.stride(1);
            const kl_state st =
                want_entropy ? row_kl<true>(level, pa, pb, V) : row_kl<false>(level, pa, pb, V);
            row = finish_kl_row(level, st, pa, pb, V, b, t, opts);
          }
          token[static_cast<size_t>(r)] = row.kl;
          if (token_kl.data() != nullptr) token_kl(b, t) = static_cast<float>(row.kl);
          if (lse_a.data() != nullptr) lse_a(b, t) = static_cast<float>(row.lse_a);
          if (lse_b.data() != nullptr) lse_b(b, t) = static_cast<float>(row.lse_b);
          if (want_entropy) token_entropy(b, t) = static_cast<float>(row.entropy);
        }
      });

  for (index_t b = 0; b < B; ++b) {
    double sum = 0;
    for (index_t t = 0; t < Tn; ++t) sum += token[static_cast<size_t>(b * Tn + t)];
    sequence_kl[b] =
        static_cast<S>(reduce_sequence(sum, tg.count[static_cast<size_t>(b)], opts.reduce));
  }
}

/// Gradient of L = sum_b upstream_grad[b] * sequence_kl[b]:
///   grad_a[b, t, j] = g_b p_j (log p_j - log q_j - KL[b, t])
///   grad_b[b, t, j] = g_b (q_j - p_j)                          (optional)
/// with g_b = upstream_grad[b] (divided by the token count for mean), 0 on
/// masked rows. lse_a, lse_b and token_kl are the forward's (same options).
/// grad_a / grad_b are float or their logits' dtype and may be exactly the
/// a / b view (in place). Reads each unmasked row of a and b once and writes
/// each gradient row once: the saved lse and KL make a second read unneeded.
template <class A, class Bv, class I, class U, class GA, class GB = float>
void token_kl_backward(const exec::host& ex, tensor_view<A, 3> a_logits,
                       tensor_view<Bv, 3> b_logits, tensor_view<I, 2> labels,
                       tensor_view<const float, 2> lse_a, tensor_view<const float, 2> lse_b,
                       tensor_view<const float, 2> token_kl, tensor_view<U, 1> upstream_grad,
                       tensor_view<GA, 3> grad_a, tensor_view<GB, 3> grad_b = {},
                       const logprob_options& opts = {}) {
  using namespace detail;
  static_assert(is_logit_type_v<A> && is_logit_type_v<Bv>, "logits are float, f16 or bf16");
  static_assert(is_label_type_v<I>, "labels are int32 or int64");
  static_assert(std::is_floating_point_v<std::remove_cv_t<U>>, "upstream_grad is float or double");
  check_grad_type<GA, A>();
  check_grad_type<GB, Bv>();
  using TA = std::remove_cv_t<A>;
  using TB = std::remove_cv_t<Bv>;
  check_pair(a_logits, b_logits);
  check_token_kl_backward_args(a_logits, b_logits, labels, lse_a, lse_b, token_kl, upstream_grad,
                               grad_a, grad_b);
  const index_t B = a_logits.extent(0), Tn = a_logits.extent(1), V = a_logits.extent(2);
  const bool has_b = grad_b.data() != nullptr;
  const targets tg = prepare_targets(labels, B, Tn, V, opts, false);
  require_disjoint({range_of(grad_a, "grad_a"), range_of(grad_b, "grad_b")},
                   {range_of(labels, "labels"), range_of(lse_a, "lse_a"), range_of(lse_b, "lse_b"),
                    range_of(token_kl, "token_kl"), range_of(upstream_grad, "upstream_grad")});
  check_finite_vector(upstream_grad, "upstream_grad");
  check_saved_finite(tg, B, Tn, {lse_a, lse_b, token_kl}, {"lse_a", "lse_b", "token_kl"},
                     "pass the finite values saved by token_kl_forward");
  const std::vector<float> scale = sequence_scales(upstream_grad, tg, opts.reduce);
  const simd_level level = active_simd_level();

  ktsa::detail::parallel_chunks(
      ex, B * Tn, min_rows_per_thread(V), [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {
          const index_t b = r / Tn, t = r % Tn;
          GA* ga = grad_a.data() + b * grad_a.stride(0) + t * grad_a.stride(1);
          GB* gb = has_b ? grad_b.data() + b * grad_b.stride(0) + t * grad_b.stride(1) : nullptr;
          if (tg.label[static_cast<size_t>(r)] < 0) {
            row_zero(ga, V);
            if (gb != nullptr) row_zero(gb, V);
            continue;
          }
          const TA* pa = a_logits.data() + b * a_logits.stride(0) + t * a_logits.stride(1);
          const TB* pb = b_logits.data() + b * b_logits.stride(0) + t * b_logits.stride(1);
          if (opts.check_finite) {
            const index_t ja = first_nonfinite(level, pa, V);
            if (ja >= 0) fail_nonfinite_logit("a_logits", b, t, ja, pa[ja]);
            const index_t jb = first_nonfinite(level, pb, V);
            if (jb >= 0) fail_nonfinite_logit("b_logits", b, t, jb, pb[jb]);
          }
          // Saved lse as is, or recomputed for huge logits (see recentre_lse).
          float ma = lse_a(b, t), lsa = 0.0f, mb = lse_b(b, t), lsb = 0.0f;
          recentre_lse(level, pa, V, ma, lsa);
          recentre_lse(level, pb, V, mb, lsb);
          row_kl_grad(level, pa, pb, V, ma, lsa, mb, lsb, token_kl(b, t),
                      scale[static_cast<size_t>(b)], ga, gb);
        }
      });
}

}  // namespace ktsa::kernels
