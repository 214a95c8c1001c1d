// ktsa_torch.hpp: torch tensors as ktsa views (no copies) and ktsa's kernels
// and KTO loss as torch::autograd::Functions. Shared by the libtorch trainer
// (examples/libtorch_kto) and the PyTorch extension (examples/torch_extension).
//
//   logps = SequenceLogprob::apply(logits, labels, opts);       // [B, T, V] -> [B] fp64
//   loss  = KtoLoss::apply(logps, ref_logps, desirable, z0, cfg, state, metrics);
//   loss.backward();                                            // ktsa's exact gradients
//
//   logps = FusedHeadLogprob::apply(hidden, W, bias, labels, fopts);  // [B, T, H], [V, H] -> [B]
//
// FusedHeadLogprob is the fused linear head (ktsa/kernels/fused_linear.hpp):
// the logits h . W_j + bias_j are made chunk by chunk and never held whole
// (no B x T x V tensor); it needs ktsa::fused_linear (oneDNN) at link time.
//
// The head (logits -> per-sequence log-probs) and the loss are separate
// Functions, so a fused head (hidden states and lm_head weight -> log-probs)
// replaces SequenceLogprob without touching the loss; the loss math stays in
// ktsa::loss (kto.hpp), nowhere here.
//
// Tensors are checked (device CPU, dtype, rank, the logits' vocabulary stride
// 1) and then read where they lie: data_ptr, sizes and strides become a view.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/half.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/kernels/fused_linear.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/token_kl.hpp"
#include "ktsa/loss/kto.hpp"

namespace ktsa_torch {

using ktsa::index_t;

template <class T>
constexpr c10::ScalarType scalar_type_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>) return torch::kFloat32;
  if constexpr (std::is_same_v<U, double>) return torch::kFloat64;
  if constexpr (std::is_same_v<U, ktsa::f16>) return torch::kFloat16;
  if constexpr (std::is_same_v<U, ktsa::bf16>) return torch::kBFloat16;
  if constexpr (std::is_same_v<U, std::int32_t>) return torch::kInt32;
  if constexpr (std::is_same_v<U, std::int64_t>) return torch::kInt64;
  if constexpr (std::is_same_v<U, std::uint8_t>) return torch::kUInt8;
  if constexpr (std::is_same_v<U, bool>) return torch::kBool;
}

/// Fails unless `t` is a defined CPU tensor of rank `rank`.
inline void check_tensor(const torch::Tensor& t, int rank, const char* name) {
  using ktsa::detail::concat;
  if (!t.defined())
    throw ktsa::invalid_argument(concat("ktsa: argument '", name, "' is undefined"));
  if (!t.device().is_cpu())
    throw ktsa::invalid_argument(concat("ktsa: argument '", name, "' is on device ",
                                        t.device().str(), ": this path takes CPU tensors"));
  if (t.dim() != rank)
    ktsa::detail::fail_shape(concat("'", name, "' has ", t.dim(), " dimensions, expected ", rank));
}

/// A view of `t` with element type T (const T to read); no copy. The dtype must be T's.
template <class T, int Rank>
ktsa::tensor_view<T, Rank> view_of(const torch::Tensor& t, const char* name) {
  check_tensor(t, Rank, name);
  if (t.scalar_type() != scalar_type_of<T>())
    throw ktsa::invalid_argument(ktsa::detail::concat("ktsa: argument '", name, "' has dtype ",
                                                      c10::toString(t.scalar_type()), ", expected ",
                                                      c10::toString(scalar_type_of<T>())));
  index_t shape[Rank], strides[Rank];
  for (int d = 0; d < Rank; ++d) {
    shape[d] = t.size(d);
    strides[d] = t.stride(d);
  }
  // data_ptr() includes the storage offset; f16/bf16 are the same 16 bits as at::Half/BFloat16.
  return ktsa::tensor_view<T, Rank>(static_cast<T*>(t.data_ptr()), shape, strides);
}

/// ktsa::kernels::logprob_options as the integers autograd's context can keep.
inline void save_options(torch::autograd::AutogradContext* ctx,
                         const ktsa::kernels::logprob_options& o) {
  ctx->saved_data["ignore_index"] = static_cast<int64_t>(o.ignore_index);
  ctx->saved_data["shift"] = o.shift;
  ctx->saved_data["mean"] = o.reduce == ktsa::kernels::reduction::mean;
  ctx->saved_data["check_finite"] = o.check_finite;
}
inline ktsa::kernels::logprob_options load_options(torch::autograd::AutogradContext* ctx) {
  ktsa::kernels::logprob_options o;
  o.ignore_index = ctx->saved_data["ignore_index"].toInt();
  o.shift = ctx->saved_data["shift"].toBool();
  o.reduce = ctx->saved_data["mean"].toBool() ? ktsa::kernels::reduction::mean
                                              : ktsa::kernels::reduction::sum;
  o.check_finite = ctx->saved_data["check_finite"].toBool();
  return o;
}

/// Calls f(tag) with a value of the ktsa type of the logits' dtype.
template <class F>
decltype(auto) with_logit_type(const torch::Tensor& t, const char* name, F&& f) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return f(float{});
    case torch::kFloat16:
      return f(ktsa::f16{});
    case torch::kBFloat16:
      return f(ktsa::bf16{});
    default:
      throw ktsa::invalid_argument(ktsa::detail::concat(
          "ktsa: argument '", name, "' has dtype ", c10::toString(t.scalar_type()),
          ": logits are float32, float16 or bfloat16 (the kernels accumulate in fp32 / fp64)"));
  }
}
template <class F>
decltype(auto) with_label_type(const torch::Tensor& t, const char* name, F&& f) {
  if (t.scalar_type() == torch::kInt64) return f(std::int64_t{});
  if (t.scalar_type() == torch::kInt32) return f(std::int32_t{});
  throw ktsa::invalid_argument(ktsa::detail::concat("ktsa: argument '", name, "' has dtype ",
                                                    c10::toString(t.scalar_type()),
                                                    ": labels are int64 or int32"));
}
template <class F>
decltype(auto) with_real_type(const torch::Tensor& t, const char* name, F&& f) {
  if (t.scalar_type() == torch::kFloat64) return f(double{});
  if (t.scalar_type() == torch::kFloat32) return f(float{});
  throw ktsa::invalid_argument(ktsa::detail::concat("ktsa: argument '", name, "' has dtype ",
                                                    c10::toString(t.scalar_type()),
                                                    ": expected float64 or float32"));
}

/// Per-sequence log-probabilities [B] (fp64) of labels [B, T] under
/// softmax(logits [B, T, V]); gradient with respect to the logits.
struct SequenceLogprob : torch::autograd::Function<SequenceLogprob> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& labels,
                               const ktsa::kernels::logprob_options& opts, int threads = 1) {
    const index_t B = logits.dim() == 3 ? logits.size(0) : 0;
    const index_t T = logits.dim() == 3 ? logits.size(1) : 0;
    auto out = torch::empty({B}, torch::kFloat64);
    auto count = torch::empty({B}, torch::kInt64);
    auto lse = torch::empty({B, T}, torch::kFloat32);
    with_logit_type(logits, "logits", [&](auto l) {
      using L = decltype(l);
      with_label_type(labels, "labels", [&](auto y) {
        using Y = decltype(y);
        ktsa::kernels::sequence_logprob_forward(
            ktsa::exec::host{threads}, view_of<const L, 3>(logits, "logits"),
            view_of<const Y, 2>(labels, "labels"), view_of<double, 1>(out, "out"),
            view_of<std::int64_t, 1>(count, "count"), view_of<float, 2>(lse, "lse"),
            ktsa::tensor_view<float, 2>{}, opts);
      });
    });
    ctx->save_for_backward({logits, labels, lse, count});
    save_options(ctx, opts);
    ctx->saved_data["threads"] = static_cast<int64_t>(threads);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &logits = saved[0], &labels = saved[1], &lse = saved[2], &count = saved[3];
    const auto opts = load_options(ctx);
    const int threads = static_cast<int>(ctx->saved_data["threads"].toInt());
    const torch::Tensor g = grad_out[0].to(torch::kFloat64).contiguous();
    auto grad = torch::empty(logits.sizes(),
                             logits.options().memory_format(torch::MemoryFormat::Contiguous));
    with_logit_type(logits, "logits", [&](auto l) {
      using L = decltype(l);
      with_label_type(labels, "labels", [&](auto y) {
        using Y = decltype(y);
        ktsa::kernels::sequence_logprob_backward(
            ktsa::exec::host{threads}, view_of<const L, 3>(logits, "logits"),
            view_of<const Y, 2>(labels, "labels"), view_of<const float, 2>(lse, "lse"),
            view_of<const std::int64_t, 1>(count, "count"),
            view_of<const double, 1>(g, "grad_output"), view_of<L, 3>(grad, "grad_logits"), opts);
      });
    });
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

/// The bias argument of FusedHeadLogprob for a head without one.
inline torch::Tensor no_bias() {
  return torch::empty({0}, torch::kFloat32);
}

/// Per-sequence log-probabilities [B] (fp64) of labels [B, T] under
/// softmax(hidden [B, T, H] . weight [V, H]^T + bias [V]) (optionally softcap /
/// temperature, fused_linear_options) through ktsa's fused linear head: the
/// B x T x V logits are never materialised, forward or backward (the backward
/// recomputes each chunk's logits from the saved lse). Gradients: hidden (its
/// dtype), weight (its dtype, accumulated in fp32), bias (float32). hidden and
/// weight are float32, float16 or bfloat16 of one dtype; bias is float32 [V]
/// or empty (no_bias(): autograd's apply rejects an undefined tensor in
/// libtorch 1.13); hidden and weight need a contiguous last dimension.
struct FusedHeadLogprob : torch::autograd::Function<FusedHeadLogprob> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               const torch::Tensor& labels,
                               const ktsa::kernels::fused_linear_options& opts, int threads = 1) {
    check_head(hidden, weight, bias);
    const index_t B = hidden.size(0), T = hidden.size(1);
    auto out = torch::empty({B}, torch::kFloat64);
    auto lse = torch::empty({B, T}, torch::kFloat32);
    with_logit_type(hidden, "hidden", [&](auto h) {
      using L = decltype(h);
      with_label_type(labels, "labels", [&](auto y) {
        using Y = decltype(y);
        ktsa::kernels::fused_linear_forward_outputs<double> o;
        o.sequence_logp = view_of<double, 1>(out, "out");
        o.lse = view_of<float, 2>(lse, "lse");
        ktsa::kernels::fused_linear_forward(ktsa::exec::host{threads},
                                            view_of<const L, 3>(hidden, "hidden"),
                                            view_of<const L, 2>(weight, "weight"), bias_view(bias),
                                            view_of<const Y, 2>(labels, "labels"), o, opts);
      });
    });
    ctx->save_for_backward({hidden, weight, bias, labels, lse});
    save_options(ctx, opts.logprob);
    ctx->saved_data["temperature"] = static_cast<double>(opts.temperature);
    ctx->saved_data["softcap"] = static_cast<double>(opts.softcap);
    ctx->saved_data["chunk_bytes"] = static_cast<int64_t>(opts.chunk_bytes);
    ctx->saved_data["chunk_rows"] = static_cast<int64_t>(opts.chunk_rows);
    ctx->saved_data["threads"] = static_cast<int64_t>(threads);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto s = ctx->get_saved_variables();
    const torch::Tensor &hidden = s[0], &weight = s[1], &bias = s[2], &labels = s[3], &lse = s[4];
    ktsa::kernels::fused_linear_options opts;
    opts.logprob = load_options(ctx);
    opts.temperature = static_cast<float>(ctx->saved_data["temperature"].toDouble());
    opts.softcap = static_cast<float>(ctx->saved_data["softcap"].toDouble());
    opts.chunk_bytes = static_cast<std::size_t>(ctx->saved_data["chunk_bytes"].toInt());
    opts.chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const int threads = static_cast<int>(ctx->saved_data["threads"].toInt());
    const torch::Tensor g = grad_out[0].to(torch::kFloat64).contiguous();
    // Only the gradients autograd asks for: each skipped one skips its GEMM.
    torch::Tensor gh, gw, gb;
    if (ctx->needs_input_grad(0)) gh = torch::empty(hidden.sizes(), hidden.options());
    if (ctx->needs_input_grad(1)) gw = torch::empty(weight.sizes(), weight.options());
    if (has_bias(bias) && ctx->needs_input_grad(2)) gb = torch::empty(bias.sizes(), bias.options());
    with_logit_type(hidden, "hidden", [&](auto h) {
      using L = decltype(h);
      with_label_type(labels, "labels", [&](auto y) {
        using Y = decltype(y);
        ktsa::kernels::fused_linear_grads<L, L> grads;
        if (gh.defined()) grads.grad_hidden = view_of<L, 3>(gh, "grad_hidden");
        if (gw.defined()) grads.grad_weight = view_of<L, 2>(gw, "grad_weight");
        if (gb.defined()) grads.grad_bias = view_of<float, 1>(gb, "grad_bias");
        ktsa::kernels::fused_linear_backward(
            ktsa::exec::host{threads}, view_of<const L, 3>(hidden, "hidden"),
            view_of<const L, 2>(weight, "weight"), bias_view(bias),
            view_of<const Y, 2>(labels, "labels"), view_of<const float, 2>(lse, "lse"),
            view_of<const double, 1>(g, "grad_output"), grads, opts);
      });
    });
    return {gh, gw, gb, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }

 private:
  static void check_head(const torch::Tensor& hidden, const torch::Tensor& weight,
                         const torch::Tensor& bias) {
    check_tensor(hidden, 3, "hidden");
    check_tensor(weight, 2, "weight");
    if (weight.scalar_type() != hidden.scalar_type())
      throw ktsa::invalid_argument(ktsa::detail::concat(
          "ktsa: argument 'weight' has dtype ", c10::toString(weight.scalar_type()),
          ", expected the dtype of 'hidden' (", c10::toString(hidden.scalar_type()), ")"));
    if (has_bias(bias)) check_tensor(bias, 1, "bias");
  }
  static bool has_bias(const torch::Tensor& bias) { return bias.defined() && bias.numel() > 0; }
  static ktsa::vector_view<const float> bias_view(const torch::Tensor& bias) {
    return has_bias(bias) ? view_of<const float, 1>(bias, "bias")
                          : ktsa::vector_view<const float>{};
  }
};

/// Per-sequence KL(softmax(a) || softmax(b)) [B] (fp64) over the positions
/// `labels` leaves unmasked; gradients for both logits.
struct TokenKL : torch::autograd::Function<TokenKL> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b, const torch::Tensor& labels,
                               const ktsa::kernels::logprob_options& opts, int threads = 1) {
    const index_t B = a.dim() == 3 ? a.size(0) : 0, T = a.dim() == 3 ? a.size(1) : 0;
    auto out = torch::empty({B}, torch::kFloat64);
    auto lse_a = torch::empty({B, T}, torch::kFloat32),
         lse_b = torch::empty({B, T}, torch::kFloat32);
    auto token = torch::empty({B, T}, torch::kFloat32);
    with_logit_type(a, "a_logits", [&](auto la) {
      with_logit_type(b, "b_logits", [&](auto lb) {
        with_label_type(labels, "labels", [&](auto y) {
          using A = decltype(la);
          using Bt = decltype(lb);
          using Y = decltype(y);
          ktsa::kernels::token_kl_forward(
              ktsa::exec::host{threads}, view_of<const A, 3>(a, "a_logits"),
              view_of<const Bt, 3>(b, "b_logits"), view_of<const Y, 2>(labels, "labels"),
              view_of<double, 1>(out, "out"), view_of<float, 2>(token, "token_kl"),
              view_of<float, 2>(lse_a, "lse_a"), view_of<float, 2>(lse_b, "lse_b"), opts);
        });
      });
    });
    ctx->save_for_backward({a, b, labels, lse_a, lse_b, token});
    save_options(ctx, opts);
    ctx->saved_data["threads"] = static_cast<int64_t>(threads);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto s = ctx->get_saved_variables();
    const auto opts = load_options(ctx);
    const int threads = static_cast<int>(ctx->saved_data["threads"].toInt());
    const torch::Tensor g = grad_out[0].to(torch::kFloat64).contiguous();
    auto ga = torch::empty(s[0].sizes(), s[0].options());
    auto gb = torch::empty(s[1].sizes(), s[1].options());
    with_logit_type(s[0], "a_logits", [&](auto la) {
      with_logit_type(s[1], "b_logits", [&](auto lb) {
        with_label_type(s[2], "labels", [&](auto y) {
          using A = decltype(la);
          using Bt = decltype(lb);
          using Y = decltype(y);
          ktsa::kernels::token_kl_backward(
              ktsa::exec::host{threads}, view_of<const A, 3>(s[0], "a_logits"),
              view_of<const Bt, 3>(s[1], "b_logits"), view_of<const Y, 2>(s[2], "labels"),
              view_of<const float, 2>(s[3], "lse_a"), view_of<const float, 2>(s[4], "lse_b"),
              view_of<const float, 2>(s[5], "token_kl"), view_of<const double, 1>(g, "grad_output"),
              view_of<A, 3>(ga, "grad_a"), view_of<Bt, 3>(gb, "grad_b"), opts);
        });
      });
    });
    return {ga, gb, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

/// The KTO-family batch loss (ktsa::loss::kto_loss, any variant of
/// loss::config) of per-sequence log-probs [B]; the gradient flows to
/// policy_logps only (the reference is frozen, z0 and delta are constants).
/// z0 is a 0-dim tensor (one reference point) or [B] (one per example).
/// `metrics`, when given, receives the step's logged metrics; `bco` is
/// variant bco's running mean (updated by the call, as kto_loss does).
struct KtoLoss : torch::autograd::Function<KtoLoss> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               const torch::Tensor& policy_logps,
                               const torch::Tensor& reference_logps, const torch::Tensor& desirable,
                               const torch::Tensor& z0, const ktsa::loss::config& cfg,
                               ktsa::loss::bco_running_mean* bco,
                               ktsa::loss::batch_metrics* metrics) {
    check_tensor(desirable, 1, "desirable");
    const torch::Tensor flags = desirable.to(torch::kUInt8).contiguous();
    auto grad = torch::empty_like(policy_logps, torch::MemoryFormat::Contiguous);
    ktsa::loss::loss_result r;
    with_real_type(policy_logps, "policy_logps", [&](auto p) {
      using P = decltype(p);
      with_real_type(reference_logps, "reference_logps", [&](auto q) {
        using R = decltype(q);
        const auto pv = view_of<const P, 1>(policy_logps, "policy_logps");
        const auto rv = view_of<const R, 1>(reference_logps, "reference_logps");
        const auto fv = view_of<const std::uint8_t, 1>(flags, "desirable");
        const auto gv = view_of<P, 1>(grad, "grad");
        if (!z0.defined() || z0.dim() == 0) {
          const double z = z0.defined() ? z0.item<double>() : 0.0;
          r = ktsa::loss::kto_loss(ktsa::exec::host{}, pv, rv, fv, z, cfg, ktsa::vector_view<P>{},
                                   gv, bco);
        } else {
          const torch::Tensor z = z0.to(torch::kFloat64).contiguous();
          r = ktsa::loss::kto_loss(ktsa::exec::host{}, pv, rv, fv,
                                   view_of<const double, 1>(z, "z0"), cfg, ktsa::vector_view<P>{},
                                   gv, bco);
        }
      });
    });
    if (metrics != nullptr) *metrics = r.metrics;
    ctx->save_for_backward({grad});
    return torch::tensor(r.loss, torch::kFloat64);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const torch::Tensor grad = ctx->get_saved_variables()[0];
    return {grad * grad_out[0].to(grad.scalar_type()),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace ktsa_torch
