// ktsa/kernels/fused_kto.hpp: one KTO-family training step through the fused
// linear head: policy hidden states + lm_head weight -> loss, metrics,
// per-example losses, grad_hidden, grad_W (and grad_bias), never holding the
// N x V logits. The loss math is loss::kto_loss and nothing else: this file
// only moves data between ktsa/kernels/fused_linear.hpp and it.
//
// Two paths, chosen per call (the result says which ran):
//   one pass   (3 GEMMs per chunk) for kto, kto_log_sigmoid, kto_zero, ktsa and
//              apo_zero_unpaired with z0 known before the step (the KL pairs
//              are scored first with fused_linear_forward, as Liger does):
//              chunks hold whole sequences, so a chunk's logits give its
//              sequences' log-probs, loss::kto_loss on those examples gives
//              their gradient (each example's gradient depends only on its own
//              r and z0; the sub-batch mean is rescaled to the batch mean),
//              and the same logits serve the backward.
//   two passes (4 GEMMs per chunk) otherwise: bco (its delta folds in the whole
//              batch's rewards), softcap on (the gradient needs z, which the
//              in-place fused gradient overwrites), or a sequence whose
//              unmasked tokens exceed one chunk: fused_linear_forward for all
//              sequences, loss::kto_loss on the batch, fused_linear_backward.
#pragma once

#include <algorithm>
#include <vector>

#include "ktsa/kernels/fused_linear.hpp"
#include "ktsa/loss/kto.hpp"
#include "ktsa/loss/reference_point.hpp"

namespace ktsa::kernels {

/// The inputs of a step besides the policy's hidden states and head.
template <class R, class F>
struct kto_step_inputs {
  vector_view<R> reference_logps;  ///< [B] log pi_ref(y|x), from the frozen model
  vector_view<F> desirable;        ///< [B] desirable flags
  double z0 = 0;                   ///< reference point (ignored where the variant has none)
  loss::config cfg{};
  loss::bco_running_mean* bco_state = nullptr;  ///< required for variant::bco
  /// Optional: the policy's and the reference's log-probs of the KL pairs
  /// (scored first, e.g. with fused_linear_forward on the mismatched pairs).
  /// When given, z0 = loss::batch_kl_reference_point of them replaces `z0`.
  vector_view<const double> kl_policy_logps{};
  vector_view<const double> kl_reference_logps{};
};

/// Optional per-example outputs ([B] each, {} skips).
struct kto_step_outputs {
  vector_view<double> policy_logps{};
  vector_view<double> per_example_loss{};
};

struct fused_kto_result {
  loss::loss_result loss;  ///< batch loss (mean over examples) and metrics
  bool one_pass = false;   ///< true: 3 GEMMs per chunk; false: forward then backward
  index_t chunks = 0;      ///< chunks of the pass that computed the gradient
};

/// The KTO step. grads as for fused_linear_backward; the workspace is
/// fused_kto_step_workspace_bytes(shape, opts).
template <class Gemm = gemm::default_provider, class HT, class WT, class I, class R, class F,
          class GH, class GW>
fused_kto_result fused_kto_step(const exec::host& ex, tensor_view<HT, 3> hidden,
                                tensor_view<WT, 2> weight, vector_view<const float> bias,
                                tensor_view<I, 2> labels, const kto_step_inputs<R, F>& in,
                                const fused_linear_grads<GH, GW>& grads,
                                const kto_step_outputs& out = {},
                                const fused_linear_options& opts = {}, host_workspace ws = {},
                                const Gemm& gemm = {}) {
  using namespace detail;
  using H_ = std::remove_cv_t<HT>;
  using W_ = std::remove_cv_t<WT>;
  using I_ = std::remove_cv_t<I>;
  auto p = make_problem<H_, W_, I_>(hidden, weight, bias, labels, opts);
  const index_t B = p.B;
  // The loss's argument checks that a chunked call could not see (the batch
  // lengths) and its config, before any output is written.
  loss::validate(in.cfg);
  ktsa::detail::require_same_length("hidden.B", B, "reference_logps", in.reference_logps.extent(0));
  ktsa::detail::require_same_length("hidden.B", B, "desirable", in.desirable.extent(0));
  if (out.per_example_loss.data())
    ktsa::detail::require_same_length("hidden.B", B, "per_example_loss",
                                      out.per_example_loss.extent(0));
  if (out.policy_logps.data())
    ktsa::detail::require_same_length("hidden.B", B, "policy_logps", out.policy_logps.extent(0));
  const fused_linear_shape shape = shape_of(p, std::is_same_v<GW, float>);
  p.rows_per_chunk = step_chunk_rows(shape, opts);
  index_t longest = 0;
  for (index_t b = 0; b < B; ++b) longest = std::max(longest, p.tg.count[static_cast<size_t>(b)]);
  const bool one_pass =
      in.cfg.kind != loss::variant::bco && opts.softcap == 0.0f && longest <= p.rows_per_chunk;

  const double z0 = in.kl_policy_logps.data() != nullptr || in.kl_reference_logps.data() != nullptr
                        ? loss::batch_kl_reference_point(in.kl_policy_logps, in.kl_reference_logps)
                        : in.z0;

  fused_kto_result res;
  res.one_pass = one_pass;
  std::vector<double> policy(static_cast<size_t>(B)), per_loss(static_cast<size_t>(B)),
      grad(static_cast<size_t>(B));

  if (!one_pass) {
    std::vector<float> lse(static_cast<size_t>(B * p.T));
    fused_linear_forward_outputs<double> fo{make_view(policy)};
    fo.lse = make_view(lse.data(), B, p.T);
    fused_linear_forward(ex, hidden, weight, bias, labels, fo, opts, ws, gemm);
    res.loss = loss::kto_loss(ex, vector_view<const double>(make_view(policy)), in.reference_logps,
                              in.desirable, z0, in.cfg, make_view(per_loss), make_view(grad),
                              in.bco_state);
    fused_linear_backward(ex, hidden, weight, bias, labels, make_view(lse.data(), B, p.T),
                          vector_view<const double>(make_view(grad)), grads, opts, ws, gemm);
    const index_t rows = static_cast<index_t>(p.row_pos.size());
    const index_t base = fused_chunk_rows(shape, opts);  // what forward / backward use
    res.chunks = (rows + base - 1) / base;
  } else {
    prepare_grads(p, grads);
    const logprob_options ro = row_options(p.o.logprob);
    double loss_sum = 0;
    with_workspace(ws, fused_ws_bytes(shape, opts, true, true), [&](ws_carver& c) {
      bind_weight(p, c);
      const chunk_buffers buf = take_chunk_buffers(c, p.rows_per_chunk, p.V, p.H);
      index_t ldgw = 0;
      float* gw = grad_weight_target(grads.grad_weight, p.V, p.H, c, ldgw);
      bool first = true;
      for (index_t b0 = 0; b0 < B;) {
        // Whole sequences while their rows fit (at least one sequence).
        index_t b1 = b0 + 1;
        while (b1 < B &&
               p.seq_first[static_cast<size_t>(b1 + 1)] - p.seq_first[static_cast<size_t>(b0)] <=
                   p.rows_per_chunk)
          ++b1;
        const index_t r0 = p.seq_first[static_cast<size_t>(b0)];
        const index_t n = p.seq_first[static_cast<size_t>(b1)] - r0, nb = b1 - b0;
        if (n > 0) {
          chunk_logits(ex, p, r0, n, buf, gemm);
          cube_view<float> z = rows_view(buf.logits, n, p.V);
          // Unscaled gradient onehot - softmax in place, and each row's log-prob.
          sequence_logprob_forward_grad(
              ex, cube_view<const float>(z), matrix_view<const std::int64_t>(buf.lab, {n, 1}),
              vector_view<double>(buf.row_logp, {n}), vector_view<std::int64_t>{}, z, ro);
        }
        for (index_t b = b0; b < b1; ++b) {
          double sum = 0;  // the chunk's rows in order, as sequence_value sums them
          for (index_t r = p.seq_first[static_cast<size_t>(b)];
               r < p.seq_first[static_cast<size_t>(b + 1)]; ++r)
            sum += buf.row_logp[r - r0];
          policy[static_cast<size_t>(b)] =
              reduce_sequence(sum, p.tg.count[static_cast<size_t>(b)], p.o.logprob.reduce);
        }
        auto sub = [&](auto v) {
          using E = typename decltype(v)::element_type;
          return vector_view<E>(v.data() + b0 * v.stride(0), {nb}, {v.stride(0)});
        };
        const loss::loss_result part = loss::kto_loss(
            ex, vector_view<const double>(policy.data() + b0, {nb}), sub(in.reference_logps),
            sub(in.desirable), z0, in.cfg, vector_view<double>(per_loss.data() + b0, {nb}),
            vector_view<double>(grad.data() + b0, {nb}), in.bco_state);
        // The sub-batch mean's gradient is d(loss_c)/d r = e'/nb; the batch's is e'/B.
        const double rescale = static_cast<double>(nb) / static_cast<double>(B);
        for (index_t b = b0; b < b1; ++b) grad[static_cast<size_t>(b)] *= rescale;
        loss_sum += part.loss * static_cast<double>(nb);
        auto& m = res.loss.metrics;
        m.kl = part.metrics.kl;
        m.chosen_reward_sum += part.metrics.chosen_reward_sum;
        m.rejected_reward_sum += part.metrics.rejected_reward_sum;
        m.chosen_logp_sum += part.metrics.chosen_logp_sum;
        m.rejected_logp_sum += part.metrics.rejected_logp_sum;
        m.chosen_count += part.metrics.chosen_count;
        m.rejected_count += part.metrics.rejected_count;
        if (n > 0) {
          for (index_t b = b0; b < b1; ++b)
            for (index_t r = p.seq_first[static_cast<size_t>(b)];
                 r < p.seq_first[static_cast<size_t>(b + 1)]; ++r)
              buf.row_scale[r - r0] = row_upstream_scale(p, b, grad[static_cast<size_t>(b)]);
          // D = diag(row_scale) U: the scale goes onto the [n, H] side of GEMMs 2 and 3.
          chunk_backward_gemms(p, r0, n, buf, false, grads.grad_hidden, gw, ldgw, first,
                               grads.grad_bias, gemm);
          first = false;
          ++res.chunks;
        }
        b0 = b1;
      }
      finish_grad_weight(grads.grad_weight, gw, ldgw, p.V, p.H, !first);
    });
    res.loss.loss = loss_sum / static_cast<double>(B);
  }
  for (index_t b = 0; b < B; ++b) {
    if (out.policy_logps.data()) out.policy_logps[b] = policy[static_cast<size_t>(b)];
    if (out.per_example_loss.data()) out.per_example_loss[b] = per_loss[static_cast<size_t>(b)];
  }
  return res;
}

}  // namespace ktsa::kernels
