// ktsa/kernels/logprob.hpp: sequence log-probabilities from logits, forward
// and backward, on the host.
//
// For logits x[b, t, :] over a vocabulary of V and labels y[b, t]:
//   lse[b, t]       = log sum_j exp(x[b, t, j])
//   token_logp[b,t] = x[b, t, y] - lse[b, t]            (0 where masked)
//   sequence_logp[b] = sum_t token_logp[b, t]            (reduction::sum)
//                    = that sum / token_count[b]         (reduction::mean)
// A position is masked when its label equals ignore_index, or (shift) when it
// is the last position of the sequence; with shift, position t is scored
// against labels[b, t + 1]. A sequence whose tokens are all masked has
// log-prob 0 and count 0, and gets a zero gradient, for both reductions.
//
// Conventions
//   - logits [B, T, V]: float, f16 or bf16 (const or not); B >= 1, V >= 1, the
//     vocabulary stride must be 1, batch and time strides are arbitrary.
//   - labels [B, T]: int32 or int64. A used label outside [0, V) that is not
//     ignore_index is a data_error naming the batch, the position in labels
//     and the value. Unused labels (labels[b, 0] with shift) are not read.
//   - -inf logits are legal (masked vocabulary); a label whose logit is -inf
//     has log-prob -inf. An unmasked row that is all -inf is a data_error.
//   - NaN or +inf logits in an unmasked row: with check_finite a data_error
//     names the first one (batch, position, vocabulary index, value; the
//     lowest position wins); without it they propagate as NaN. Masked rows are
//     never read.
//   - Accumulation: fp32 lanes per 2048-element block, fp64 across blocks and
//     tokens; the token log-prob is (x_y - max) - log(sum) in fp64.
//   - Optional outputs are skipped when passed an empty view ({}). Masked
//     positions get lse 0 and token log-prob 0.
//   - Results are bitwise identical for any thread count (rows are
//     independent, sequence sums run in a fixed order).
#pragma once

#include <atomic>
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
#include "ktsa/kernels/options.hpp"

namespace ktsa::kernels {

namespace detail {

/// Rows per thread below which a second thread is not worth starting.
inline index_t min_rows_per_thread(index_t V) {
  return std::max<index_t>(1, 65536 / V);
}

/// Gradient outputs of at least this many bytes (out of place) are written with
/// non-temporal stores: they exceed the caches anyway, and streaming saves the
/// read-for-ownership of every line.
inline std::atomic<std::int64_t>& stream_threshold_bytes() {
  static std::atomic<std::int64_t> bytes{std::int64_t{64} << 20};
  return bytes;
}
inline bool use_streaming(index_t elements, size_t element_size, bool in_place) {
  return !in_place && elements * static_cast<index_t>(element_size) >=
                          stream_threshold_bytes().load(std::memory_order_relaxed);
}

/// The lse of a row whose sum is not a positive finite number: throws for an
/// all -inf row or (check_finite) for NaN/+inf, otherwise returns NaN.
template <class T>
double classify_bad_row(simd_level level, const T* x, index_t V, const lse_state& st, index_t b,
                        index_t t, const logprob_options& o, const char* name) {
  const index_t j = first_nonfinite(level, x, V);
  if (j >= 0) {
    if (o.check_finite) fail_nonfinite_logit(name, b, t, j, x[j]);
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (st.max == -kInf) fail_all_neg_inf(name, b, t);
  return std::numeric_limits<double>::quiet_NaN();
}

/// |lse| from which a backward recomputes a row's log-sum-exp instead of
/// using the saved float: one ulp of 64 is 7.6e-6, so below it the saved lse
/// costs at most 3.8e-6 relative in p; typical LLM rows (|lse| < 50) never
/// pay the extra pass.
inline constexpr float kSavedLseLimit = 64.0f;

/// Replaces (m, ls) = (saved lse, 0) by the row's own (max, log-sum) when
/// |lse| >= kSavedLseLimit (a second pass over that row only).
template <class T>
void recentre_lse(simd_level level, const T* x, index_t V, float& m, float& ls) {
  if (!(std::fabs(m) >= kSavedLseLimit)) return;
  const lse_state st = row_lse(level, x, V);
  if (st.max == -kInf || !(st.sum > 0) || !(st.sum < HUGE_VAL)) return;  // keep the saved one
  m = st.max;
  ls = static_cast<float>(std::log(st.sum));
}

template <class G, class L>
void check_grad_type() {
  static_assert(!std::is_const_v<G>, "the gradient output must be writable");
  static_assert(std::is_same_v<G, float> || std::is_same_v<G, std::remove_cv_t<L>>,
                "the gradient output is float or the logits' dtype");
}

/// The forward pass, optionally writing the unscaled gradient (fused).
template <class L, class I, class S, class G>
void logprob_forward_impl(const exec::host& ex, tensor_view<L, 3> logits, tensor_view<I, 2> labels,
                          tensor_view<S, 1> sequence_logp, tensor_view<std::int64_t, 1> token_count,
                          tensor_view<float, 2> lse, tensor_view<float, 2> token_logp,
                          tensor_view<G, 3> grad, const logprob_options& o) {
  static_assert(is_logit_type_v<L>, "logits are float, ktsa::f16 or ktsa::bf16");
  static_assert(is_label_type_v<I>, "labels are int32 or int64");
  static_assert(is_real_output_v<S>, "sequence_logp is a writable float or double view");
  using T = std::remove_cv_t<L>;
  check_logits(logits, "logits");
  const index_t B = logits.extent(0), Tn = logits.extent(1), V = logits.extent(2);
  require_shape(labels, {B, Tn}, "labels");
  check_logprob_outputs(B, Tn, sequence_logp, token_count, lse, token_logp);
  const bool in_place =
      grad.data() != nullptr && check_grad_output(grad, logits, "grad_logits", "logits");
  {
    const mem_range seq = range_of(sequence_logp, "sequence_logp"),
                    cnt = range_of(token_count, "token_count"), ls = range_of(lse, "lse"),
                    tl = range_of(token_logp, "token_logp"), gr = range_of(grad, "grad_logits"),
                    lab = range_of(labels, "labels"), lg = range_of(logits, "logits");
    require_disjoint({seq, cnt, ls, tl, gr}, {lab});
    require_disjoint({seq, cnt, ls, tl}, {lg});  // grad vs logits: check_grad_output
  }
  const bool stream = grad.data() != nullptr && use_streaming(grad.size(), sizeof(G), in_place);
  const targets tg = prepare_targets(labels, B, Tn, V, o, true);
  std::vector<double> token(static_cast<size_t>(B * Tn));
  const simd_level level = active_simd_level();

  // The fused pass keeps exp(x - block max) of one row in a per-thread buffer
  // (it stays in L2), so the gradient costs a multiply instead of a second exp.
  const bool keep_exp = grad.data() != nullptr && level != simd_level::scalar;

  ktsa::detail::parallel_chunks(
      ex, B * Tn, min_rows_per_thread(V), [&](index_t begin, index_t end) {
        std::vector<float> e(keep_exp ? static_cast<size_t>(V) : 0);
        std::vector<float> shifts(keep_exp ? static_cast<size_t>((V + kBlock - 1) / kBlock) : 0);
        for (index_t r = begin; r < end; ++r) {
          const index_t b = r / Tn, t = r % Tn;
          const T* x = logits.data() + b * logits.stride(0) + t * logits.stride(1);
          G* g = grad.data() == nullptr ? nullptr
                                        : grad.data() + b * grad.stride(0) + t * grad.stride(1);
          const std::int64_t y = tg.label[static_cast<size_t>(r)];
          if (y < 0) {
            token[static_cast<size_t>(r)] = 0;
            if (lse.data() != nullptr) lse(b, t) = 0.0f;
            if (token_logp.data() != nullptr) token_logp(b, t) = 0.0f;
            if (g != nullptr) row_zero(g, V);
            continue;
          }
          const float xy = to_float(x[y]);  // read before an in-place gradient overwrites it
          const lse_state st =
              keep_exp ? row_lse_keep(level, x, V, e.data(), shifts.data()) : row_lse(level, x, V);
          double row_lse_value, lp, log_sum = 0;
          const bool good = st.max != -kInf && st.sum > 0 && st.sum < HUGE_VAL;
          if (good) {
            log_sum = std::log(st.sum);
            row_lse_value = static_cast<double>(st.max) + log_sum;
            lp = (static_cast<double>(xy) - static_cast<double>(st.max)) - log_sum;
          } else {
            row_lse_value = lp = classify_bad_row(level, x, V, st, b, t, o, "logits");
          }
          token[static_cast<size_t>(r)] = lp;
          if (lse.data() != nullptr) lse(b, t) = static_cast<float>(row_lse_value);
          if (token_logp.data() != nullptr) token_logp(b, t) = static_cast<float>(lp);
          if (g != nullptr && !good) {
            // NaN / +inf in the row (no check_finite): the whole gradient row
            // is NaN on every SIMD level, as its log-prob is.
            const G nan = from_float<G>(std::numeric_limits<float>::quiet_NaN());
            for (index_t j = 0; j < V; ++j) g[j] = nan;
          } else if (g != nullptr) {
            // The gradient uses the row max and log-sum as the forward does
            // (not the rounded float lse), so it keeps the forward's accuracy
            // at huge logits.
            const float m = st.max, ls = static_cast<float>(log_sum);
            if (keep_exp)
              row_grad_from_e(level, e.data(), shifts.data(), V, static_cast<double>(st.max),
                              log_sum, 1.0f, g, stream);
            else
              row_grad(level, x, V, m, ls, 1.0f, g, stream);
            g[y] = from_float<G>(logprob_grad_element(xy, m, ls, true, 1.0f));
          }
        }
        if (stream) stream_fence();
      });

  for (index_t b = 0; b < B; ++b) {
    double sum = 0;
    for (index_t t = 0; t < Tn; ++t) sum += token[static_cast<size_t>(b * Tn + t)];
    const std::int64_t n = tg.count[static_cast<size_t>(b)];
    sequence_logp[b] = static_cast<S>(reduce_sequence(sum, n, o.reduce));
    if (token_count.data() != nullptr) token_count[b] = n;
  }
}

}  // namespace detail

/// Per-sequence log-probabilities [B] of the labels under softmax(logits).
/// Reads each unmasked logits row once (the minimum: every logit enters the
/// log-sum-exp) and writes only per-token and per-sequence numbers. Optional:
/// token_count [B], lse [B, T] (save it for sequence_logprob_backward),
/// token_logp [B, T]; pass {} to skip.
template <class L, class I, class S>
void sequence_logprob_forward(const exec::host& ex, tensor_view<L, 3> logits,
                              tensor_view<I, 2> labels, tensor_view<S, 1> sequence_logp,
                              tensor_view<std::int64_t, 1> token_count,
                              tensor_view<float, 2> lse = {}, tensor_view<float, 2> token_logp = {},
                              const logprob_options& opts = {}) {
  detail::logprob_forward_impl(ex, logits, labels, sequence_logp, token_count, lse, token_logp,
                               tensor_view<float, 3>{}, opts);
}

/// Forward and unscaled gradient in one pass: sequence_logp as the forward,
/// and grad_logits[b, t, j] = onehot(j == y) - softmax_j for unmasked rows, 0
/// for masked ones. Multiply by d loss / d sequence_logp[b] (divided by the
/// count for mean) with scale_rows, or fold that scale elsewhere. grad_logits
/// is float or the logits' dtype and may be exactly the logits view (in place).
/// Reads each unmasked row once from memory and writes it once (the second
/// read of the row comes from cache): the minimum for a gradient output.
template <class L, class I, class S, class G>
void sequence_logprob_forward_grad(const exec::host& ex, tensor_view<L, 3> logits,
                                   tensor_view<I, 2> labels, tensor_view<S, 1> sequence_logp,
                                   tensor_view<std::int64_t, 1> token_count,
                                   tensor_view<G, 3> grad_logits,
                                   const logprob_options& opts = {}) {
  detail::check_grad_type<G, L>();
  detail::require_view(grad_logits, "grad_logits");
  detail::logprob_forward_impl(ex, logits, labels, sequence_logp, token_count,
                               tensor_view<float, 2>{}, tensor_view<float, 2>{}, grad_logits, opts);
}

/// grad_logits[b, t, :] = g_b * (onehot(y) - exp(x - lse[b, t])) for unmasked
/// rows and 0 for masked ones, where g_b = upstream_grad[b] (divided by the
/// token count for reduction::mean; 0 for a sequence with no tokens). `lse` is
/// the one saved by sequence_logprob_forward with the same options.
/// token_count may be {}; when given it must equal the counts of the labels.
/// grad_logits is float or the logits' dtype and may be exactly the logits
/// view (in place). Reads each unmasked row once and writes each row once (the
/// saved lse makes a second read unnecessary); masked rows are only written.
template <class L, class I, class U, class G>
void sequence_logprob_backward(const exec::host& ex, tensor_view<L, 3> logits,
                               tensor_view<I, 2> labels, tensor_view<const float, 2> lse,
                               tensor_view<const std::int64_t, 1> token_count,
                               tensor_view<U, 1> upstream_grad, tensor_view<G, 3> grad_logits,
                               const logprob_options& opts = {}) {
  using namespace detail;
  static_assert(is_logit_type_v<L>, "logits are float, ktsa::f16 or ktsa::bf16");
  static_assert(is_label_type_v<I>, "labels are int32 or int64");
  static_assert(std::is_floating_point_v<std::remove_cv_t<U>>, "upstream_grad is float or double");
  check_grad_type<G, L>();
  using T = std::remove_cv_t<L>;
  check_logits(logits, "logits");
  const index_t B = logits.extent(0), Tn = logits.extent(1), V = logits.extent(2);
  require_shape(labels, {B, Tn}, "labels");
  require_shape(lse, {B, Tn}, "lse");
  require_shape(upstream_grad, {B}, "upstream_grad");
  require_view(grad_logits, "grad_logits");
  const bool in_place = check_grad_output(grad_logits, logits, "grad_logits", "logits");
  const bool stream = use_streaming(grad_logits.size(), sizeof(G), in_place);
  const targets tg = prepare_targets(labels, B, Tn, V, opts, true);
  if (token_count.data() != nullptr) {
    require_shape(token_count, {B}, "token_count");
    for (index_t b = 0; b < B; ++b)
      if (token_count[b] != tg.count[static_cast<size_t>(b)])
        throw invalid_argument(
            concat("ktsa: 'token_count' is ", token_count[b], " at batch ", b,
                   " but the labels have ", tg.count[static_cast<size_t>(b)],
                   " unmasked positions: pass the forward's counts and options"));
  }
  require_disjoint(
      {range_of(grad_logits, "grad_logits")},
      {range_of(labels, "labels"), range_of(lse, "lse"), range_of(token_count, "token_count"),
       range_of(upstream_grad, "upstream_grad")});
  check_finite_vector(upstream_grad, "upstream_grad");
  check_saved_finite(tg, B, Tn, {lse}, {"lse"}, "pass the lse saved by sequence_logprob_forward");
  const std::vector<float> scale = sequence_scales(upstream_grad, tg, opts.reduce);
  const simd_level level = active_simd_level();

  ktsa::detail::parallel_chunks(
      ex, B * Tn, min_rows_per_thread(V), [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {
          const index_t b = r / Tn, t = r % Tn;
          const T* x = logits.data() + b * logits.stride(0) + t * logits.stride(1);
          G* g = grad_logits.data() + b * grad_logits.stride(0) + t * grad_logits.stride(1);
          const std::int64_t y = tg.label[static_cast<size_t>(r)];
          if (y < 0) {
            row_zero(g, V);
            continue;
          }
          if (opts.check_finite) {
            const index_t j = first_nonfinite(level, x, V);
            if (j >= 0) fail_nonfinite_logit("logits", b, t, j, x[j]);
          }
          const float xy = to_float(x[y]), s = scale[static_cast<size_t>(b)];
          // A saved float lse is exact to ulp(lse) / 2: fine below kSavedLseLimit;
          // beyond it (huge logits) the row's lse is recomputed as max + log-sum.
          float m = lse(b, t), ls = 0.0f;
          recentre_lse(level, x, V, m, ls);
          row_grad(level, x, V, m, ls, s, g, stream);
          g[y] = from_float<G>(logprob_grad_element(xy, m, ls, true, s));
        }
        if (stream) stream_fence();
      });
}

/// grad_logits[b, t, :] *= row_scale[b]: applies the upstream gradient to the
/// output of sequence_logprob_forward_grad. Reads and writes every element once
/// (the minimum for an in-place scale). row_scale must be finite.
template <class G, class S>
void scale_rows(const exec::host& ex, tensor_view<G, 3> grad_logits, tensor_view<S, 1> row_scale) {
  using namespace detail;
  static_assert(!std::is_const_v<G> && is_logit_type_v<G>,
                "grad_logits is a writable float, f16 or bf16 view");
  static_assert(std::is_floating_point_v<std::remove_cv_t<S>>, "row_scale is float or double");
  check_logits(grad_logits, "grad_logits");
  const index_t B = grad_logits.extent(0), Tn = grad_logits.extent(1), V = grad_logits.extent(2);
  require_shape(row_scale, {B}, "row_scale");
  check_no_self_overlap(grad_logits, "grad_logits");
  require_disjoint({range_of(grad_logits, "grad_logits")}, {range_of(row_scale, "row_scale")});
  check_finite_vector(row_scale, "row_scale");
  std::vector<float> s(static_cast<size_t>(B));
  for (index_t b = 0; b < B; ++b)
    s[static_cast<size_t>(b)] = float_scale(row_scale[b], "row_scale", b);
  const simd_level level = active_simd_level();
  ktsa::detail::parallel_chunks(
      ex, B * Tn, min_rows_per_thread(V), [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {
          const index_t b = r / Tn, t = r % Tn;
          detail::row_scale(
              level, grad_logits.data() + b * grad_logits.stride(0) + t * grad_logits.stride(1), V,
              s[static_cast<size_t>(b)]);
        }
      });
}

}  // namespace ktsa::kernels
