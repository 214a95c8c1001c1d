// ktsa/kernels/fused_linear.hpp: the fused linear head on the host: per-token
// and per-sequence log-probs (and lse, entropy) from hidden states and the
// lm_head weight, and their gradients, never holding the N x V logits.
//
// For hidden h[b, t, :] (H), weight W [V, H], optional bias [V]:
//   raw[b, t, j] = h[b, t] . W[j] + bias[j],  z = head_logit(raw) (temperature, softcap)
// and then exactly what ktsa/kernels/logprob.hpp computes from logits z
// (labels, ignore_index, shift, sum / mean, the all-ignored sequence = 0).
//
// How: the unmasked token rows (label != ignore_index, not the shifted-out
// last one) are gathered first, so prompt tokens and padding never enter a
// GEMM. They are processed `chunk_rows` at a time: the chunk's logits
// [rows, V] are one GEMM, the existing host log-prob kernels run on them as a
// [rows, 1, V] tensor (one "sequence" per row), and the backward's two GEMMs
// (grad_hidden = D W, grad_W += D^T X) consume them before the next chunk
// overwrites the buffer. chunk_rows comes from a byte budget
// (fused_linear_options::chunk_bytes); the workspace query says how much
// scratch a call needs. Nothing of size N x V is allocated.
//
// Conventions
//   - hidden [B, T, H] float / f16 / bf16, hidden stride 1, other strides free;
//     weight [V, H] float / f16 / bf16, H stride 1, row stride >= H; bias [V]
//     float or {}; labels [B, T] int32 / int64.
//   - GEMMs are fp32 (f16 / bf16 inputs are widened: a weight that is not float
//     is widened once per call into the workspace, V * H * 4 bytes).
//   - grad_W is accumulated in fp32, chunk after chunk in a fixed order; its
//     output is float (accumulated in place) or the weight's dtype (via an
//     fp32 V x H buffer in the workspace, rounded once at the end).
//   - grad_hidden is float or the hidden dtype; masked rows get 0.
//   - Determinism: fixed chunking and reduction order; bitwise run to run for
//     one machine and thread count, given a deterministic GEMM provider (oneDNN,
//     OpenBLAS and Eigen are for a fixed thread count). Across thread counts
//     only as far as the provider is.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/half.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/kernels/detail/checks.hpp"
#include "ktsa/kernels/detail/fused_chunks.hpp"
#include "ktsa/kernels/fused_linear_options.hpp"
#include "ktsa/kernels/gemm/default.hpp"
#include "ktsa/kernels/head_logit.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/options.hpp"
#include "ktsa/kernels/token_kl.hpp"

namespace ktsa::kernels {

/// Scratch bytes of fused_linear_forward for this shape (the worst case: every
/// position unmasked).
inline std::size_t fused_linear_forward_workspace_bytes(const fused_linear_shape& s,
                                                        const fused_linear_options& o = {}) {
  return detail::fused_ws_bytes(s, o, false);
}
/// Scratch bytes of fused_linear_backward.
inline std::size_t fused_linear_backward_workspace_bytes(const fused_linear_shape& s,
                                                         const fused_linear_options& o = {}) {
  return detail::fused_ws_bytes(s, o, true);
}
/// Scratch bytes of fused_kto_step (its chunks may grow to whole sequences:
/// fused_linear_options::one_pass_bytes).
inline std::size_t fused_kto_step_workspace_bytes(const fused_linear_shape& s,
                                                  const fused_linear_options& o = {}) {
  return detail::fused_ws_bytes(s, o, true, true);
}

/// Forward (no gradient): per-sequence log-probs [B] and optional token
/// counts, token log-probs, lse and entropy [B, T] of softmax(z) at the
/// labels, z the head's logits (see the file comment). Also what a frozen
/// reference model and the KL pairs use. entropy needs an extra pass over
/// each chunk and rows * 8 bytes beyond the workspace.
template <class Gemm = gemm::default_provider, class HT, class WT, class I, class S>
void fused_linear_forward(const exec::host& ex, tensor_view<HT, 3> hidden,
                          tensor_view<WT, 2> weight, vector_view<const float> bias,
                          tensor_view<I, 2> labels, const fused_linear_forward_outputs<S>& out,
                          const fused_linear_options& opts = {}, host_workspace ws = {},
                          const Gemm& gemm = {}) {
  using namespace detail;
  using H_ = std::remove_cv_t<HT>;
  using W_ = std::remove_cv_t<WT>;
  using I_ = std::remove_cv_t<I>;
  static_assert(is_real_output_v<S>, "sequence_logp is a writable float or double view");
  auto p = make_problem<H_, W_, I_>(hidden, weight, bias, labels, opts);
  check_logprob_outputs(p.B, p.T, out.sequence_logp, out.token_count, out.lse, out.token_logp);
  check_optional_output(out.entropy, {p.B, p.T}, "entropy");
  const fused_linear_shape shape = shape_of(p, true);
  p.rows_per_chunk = fused_chunk_rows(shape, opts);
  const index_t R = static_cast<index_t>(p.row_pos.size());
  std::vector<double> row_logp(static_cast<size_t>(R));
  std::vector<float> row_lse(out.lse.data() ? static_cast<size_t>(R) : 0);
  std::vector<float> row_entropy(out.entropy.data() ? static_cast<size_t>(R) : 0);
  with_workspace(ws, fused_ws_bytes(shape, opts, false), [&](ws_carver& c) {
    bind_weight(p, c);
    const chunk_buffers buf = take_chunk_buffers(c, p.rows_per_chunk, p.V, p.H);
    matrix_view<float> ent =
        out.entropy.data() ? matrix_view<float>(row_entropy.data(), {R, 1}) : matrix_view<float>{};
    for_each_forward_chunk(ex, p, buf, ent, gemm, [&](index_t r0, index_t n) {
      std::copy(buf.row_logp, buf.row_logp + n, row_logp.begin() + r0);
      if (!row_lse.empty()) std::copy(buf.row_lse, buf.row_lse + n, row_lse.begin() + r0);
    });
  });
  for (index_t b = 0; b < p.B; ++b) {
    out.sequence_logp[b] = static_cast<S>(sequence_value(p, b, row_logp.data()));
    if (out.token_count.data()) out.token_count[b] = p.tg.count[static_cast<size_t>(b)];
  }
  auto scatter = [&](const matrix_view<float>& dst, auto value_of) {
    if (dst.data() == nullptr) return;
    for (index_t b = 0; b < p.B; ++b)
      for (index_t t = 0; t < p.T; ++t) dst(b, t) = 0.0f;
    for (index_t r = 0; r < R; ++r) {
      const index_t pos = p.row_pos[static_cast<size_t>(r)];
      dst(pos / p.T, pos % p.T) = value_of(r);
    }
  };
  scatter(out.token_logp,
          [&](index_t r) { return static_cast<float>(row_logp[static_cast<size_t>(r)]); });
  scatter(out.lse, [&](index_t r) { return row_lse[static_cast<size_t>(r)]; });
  scatter(out.entropy, [&](index_t r) { return row_entropy[static_cast<size_t>(r)]; });
}

/// Backward: from upstream_grad [B] = d loss / d sequence_logp and the lse
/// saved by fused_linear_forward (same inputs and options), the gradients of
/// the loss with respect to hidden, weight and bias, recomputing each chunk's
/// logits (GEMM 1) and consuming them in GEMMs 2 (grad_hidden) and 3 (grad_W).
template <class Gemm = gemm::default_provider, class HT, class WT, class I, class U, class GH,
          class GW>
void fused_linear_backward(const exec::host& ex, tensor_view<HT, 3> hidden,
                           tensor_view<WT, 2> weight, vector_view<const float> bias,
                           tensor_view<I, 2> labels, matrix_view<const float> lse,
                           vector_view<U> upstream_grad, const fused_linear_grads<GH, GW>& grads,
                           const fused_linear_options& opts = {}, host_workspace ws = {},
                           const Gemm& gemm = {}) {
  using namespace detail;
  using H_ = std::remove_cv_t<HT>;
  using W_ = std::remove_cv_t<WT>;
  using I_ = std::remove_cv_t<I>;
  static_assert(std::is_floating_point_v<std::remove_cv_t<U>>, "upstream_grad is float or double");
  auto p = make_problem<H_, W_, I_>(hidden, weight, bias, labels, opts);
  require_shape(lse, {p.B, p.T}, "lse");
  require_shape(upstream_grad, {p.B}, "upstream_grad");
  check_finite_vector(upstream_grad, "upstream_grad");
  check_saved_finite(p.tg, p.B, p.T, {lse}, {"lse"}, "pass the lse saved by fused_linear_forward");
  prepare_grads(p, grads);
  const fused_linear_shape shape = shape_of(p, std::is_same_v<GW, float>);
  p.rows_per_chunk = fused_chunk_rows(shape, opts);
  const index_t R = static_cast<index_t>(p.row_pos.size());
  const logprob_options ro = row_options(p.o.logprob);
  std::vector<index_t> row_seq(static_cast<size_t>(R));
  for (index_t b = 0; b < p.B; ++b)
    for (index_t r = p.seq_first[static_cast<size_t>(b)];
         r < p.seq_first[static_cast<size_t>(b + 1)]; ++r)
      row_seq[static_cast<size_t>(r)] = b;
  with_workspace(ws, fused_ws_bytes(shape, opts, true), [&](ws_carver& c) {
    bind_weight(p, c);
    const chunk_buffers buf = take_chunk_buffers(c, p.rows_per_chunk, p.V, p.H);
    index_t ldgw = 0;
    float* gw = grad_weight_target(grads.grad_weight, p.V, p.H, c, ldgw);
    for (index_t r0 = 0; r0 < R; r0 += p.rows_per_chunk) {
      const index_t n = std::min(p.rows_per_chunk, R - r0);
      chunk_logits(ex, p, r0, n, buf, gemm);
      for (index_t i = 0; i < n; ++i) {
        const index_t pos = p.row_pos[static_cast<size_t>(r0 + i)];
        const index_t b = row_seq[static_cast<size_t>(r0 + i)];
        buf.row_lse[i] = lse(b, pos % p.T);
        buf.row_scale[i] = row_upstream_scale(p, b, upstream_grad[b]);
      }
      cube_view<float> z = rows_view(buf.logits, n, p.V);
      if (p.o.softcap == 0.0f) {
        // The existing backward, in place: D = s (onehot - exp(z - lse)).
        sequence_logprob_backward(
            ex, cube_view<const float>(z), matrix_view<const std::int64_t>(buf.lab, {n, 1}),
            matrix_view<const float>(buf.row_lse, {n, 1}), vector_view<const std::int64_t>{},
            vector_view<const float>(buf.row_scale, {n}), z, ro);
      } else {
        // Softcap: the softmax gradient times dz/draw, from z before it is overwritten.
        const float tau = p.o.temperature, cap = p.o.softcap;
        ktsa::detail::parallel_chunks(ex, n, 1, [&](index_t i0, index_t i1) {
          for (index_t i = i0; i < i1; ++i) {
            float* zr = buf.logits + i * p.V;
            const float l = buf.row_lse[i], s = buf.row_scale[i];
            const std::int64_t y = buf.lab[i];
            for (index_t j = 0; j < p.V; ++j)
              zr[j] = logprob_grad_element(zr[j], l, j == y, s) * head_logit_slope(zr[j], tau, cap);
          }
        });
      }
      chunk_backward_gemms(p, r0, n, buf, true, grads.grad_hidden, gw, ldgw, r0 == 0,
                           grads.grad_bias, gemm);
    }
    finish_grad_weight(grads.grad_weight, gw, ldgw, p.V, p.H, R > 0);
  });
}

}  // namespace ktsa::kernels
