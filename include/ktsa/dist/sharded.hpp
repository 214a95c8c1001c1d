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
#include "ktsa/dist/reducer.hpp"
#include "ktsa/dist/shard.hpp"
#include "ktsa/kernels/detail/checks.hpp"
#include "ktsa/kernels/detail/rows.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/options.hpp"
#include "ktsa/kernels/token_kl.hpp"

namespace ktsa::dist {

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

  const std::vector<double> token = detail::merge_logprob_rows(
      all, part.size(), order, tg, Tn, [&](index_t b, index_t t, double row_lse, double lp) {
        if (lse.data() != nullptr) lse(b, t) = static_cast<float>(row_lse);
        if (token_logp.data() != nullptr) token_logp(b, t) = static_cast<float>(lp);
      });
  for (index_t b = 0; b < B; ++b) {
    sequence_logp[b] = static_cast<S>(detail::sequence_value(token, tg, b, Tn, opts.reduce));
    if (token_count.data() != nullptr) token_count[b] = tg.count[static_cast<std::size_t>(b)];
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
          kd::row_grad(level, x, Vl, l, 0.0f, s, g, stream);  // m = global lse, log-sum 0
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

  const std::vector<double> token =
      detail::merge_kl_rows(all, part.size(), order, tg, Tn,
                            [&](index_t b, index_t t, double kl, double la, double lb, double h) {
                              if (token_kl.data() != nullptr)
                                token_kl(b, t) = static_cast<float>(kl);
                              if (lse_a.data() != nullptr) lse_a(b, t) = static_cast<float>(la);
                              if (lse_b.data() != nullptr) lse_b(b, t) = static_cast<float>(lb);
                              if (want_entropy) token_entropy(b, t) = static_cast<float>(h);
                            });
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
