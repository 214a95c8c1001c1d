// ktsa/cuda/fused_linear.cuh: the fused linear head on a CUDA stream: forward
// (sequence / token log-probs, lse, entropy), backward (grad_hidden, grad_W,
// grad_bias) and the KTO step, never holding the N x V logits.
//
// The same maths, options and outputs as the host backend
// (ktsa/kernels/fused_linear.hpp; read its comment). The CUDA specifics:
//   - hidden and weight have the same dtype (float, f16 or bf16): cuBLAS
//     cublasGemmEx multiplies them with fp32 accumulation (CUBLAS_COMPUTE_32F);
//     the chunk's logits are stored in that dtype (bf16 logits, as PyTorch
//     and Liger keep them), the log-prob kernels of ktsa/cuda/logprob.cuh run
//     on them in place, and grad_hidden rows come out of the GEMM in fp32;
//   - grad_W is accumulated in fp32 chunk after chunk (GEMM beta = 1, a fixed
//     order, no atomics): in place when grad_weight is float, else in a V x H
//     fp32 buffer of the workspace rounded once at the end;
//   - every buffer comes from the caller's workspace (query
//     fused_linear_*_workspace_bytes(exec::cuda{}, shape, opts)); nothing is
//     allocated. Chunks hold opts.device_chunk_bytes (default 256 MiB);
//   - `handle` is the caller's cuBLAS handle; its stream is set to ex.stream
//     for the call and restored afterwards;
//   - the unmasked rows are gathered on the device; their number is copied to
//     the host (one cudaStreamSynchronize per call) to size the GEMMs;
//   - data errors (labels out of range, non-finite logits with check_finite)
//     go to ex.status as in logprob.cuh, with chunk row numbers in place of
//     (batch, position);
//   - deterministic run to run on one device: fixed chunks, fixed-order
//     reductions, cuBLAS without split-K atomics (cuBLAS is deterministic on
//     one stream with its default workspace; do not enable atomics mode).
// fused_kto_step here always takes the two-pass route (forward, the device
// kto_loss of ktsa/cuda/kto.cuh, backward: 4 GEMMs per chunk); the host's
// one-pass route needs the loss on each chunk's sequences and is host-only
// for now. Read the loss with loss::read_result(ex, result, bco_state).
#pragma once

#include "ktsa/cuda/fused_linear_kernels.cuh"

namespace ktsa::kernels {

namespace cuda_fused {

using namespace ::ktsa::cuda::detail;

inline unsigned grid_for(index_t n) {
  const index_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

/// Chunk rows from device_chunk_bytes (or chunk_rows).
template <class T>
index_t chunk_rows(const fused_linear_shape& s, const fused_linear_options& o) {
  const index_t n = s.B * s.T > 0 ? s.B * s.T : 1;
  if (o.chunk_rows > 0) return o.chunk_rows < n ? o.chunk_rows : n;
  const std::size_t per_row = sizeof(T) * static_cast<std::size_t>(s.V + s.H) + 4 * s.H + 64;
  const std::size_t rows = o.device_chunk_bytes / per_row;
  return rows < 1 ? 1 : (static_cast<index_t>(rows) < n ? static_cast<index_t>(rows) : n);
}

/// Every device buffer of a call, carved in one fixed order from a carver
/// (common.cuh) or from a byte counter (the workspace query): same layout.
template <class T>
struct buffers {
  std::int64_t *row_pos, *row_label, *row_of_pos, *seq_first, *count;
  double *row_logp, *kl_scratch;
  float *row_lse, *row_scale, *row_entropy;
  T *x, *z;
  float *gx, *gw;
  double *policy, *grad;  ///< the step's [B] vectors
  float* step_lse;        ///< the step's [B, T] lse
  ::ktsa::cuda::workspace sub;
};

struct byte_counter {
  std::size_t used = 0;
  template <class U>
  U* take(std::size_t n) {
    used += round_up((n > 0 ? n : 1) * sizeof(U));
    return nullptr;
  }
};

enum class call { forward, backward, step };

template <class T, class C>
buffers<T> carve(C& c, const fused_linear_shape& s, const fused_linear_options& o, call k,
                 bool entropy) {
  const index_t N = s.B * s.T > 0 ? s.B * s.T : 1, rows = chunk_rows<T>(s, o);
  const auto n = static_cast<std::size_t>(N), r = static_cast<std::size_t>(rows);
  buffers<T> b{};
  b.row_pos = c.template take<std::int64_t>(n);
  b.row_label = c.template take<std::int64_t>(n);
  b.row_of_pos = c.template take<std::int64_t>(n);
  b.seq_first = c.template take<std::int64_t>(static_cast<std::size_t>(s.B + 1));
  b.count = c.template take<std::int64_t>(1);
  b.row_logp = c.template take<double>(n);
  b.row_lse = c.template take<float>(n);
  b.row_scale = c.template take<float>(n);
  b.row_entropy = entropy ? c.template take<float>(n) : nullptr;
  b.kl_scratch = entropy ? c.template take<double>(r) : nullptr;
  b.x = c.template take<T>(r * static_cast<std::size_t>(s.H));
  b.z = c.template take<T>(r * static_cast<std::size_t>(s.V));
  b.gx = k == call::forward ? nullptr : c.template take<float>(r * static_cast<std::size_t>(s.H));
  b.gw = k != call::forward && !s.grad_weight_is_float
             ? c.template take<float>(static_cast<std::size_t>(s.V * s.H))
             : nullptr;
  if (k == call::step) {
    b.policy = c.template take<double>(static_cast<std::size_t>(s.B));
    b.grad = c.template take<double>(static_cast<std::size_t>(s.B));
    b.step_lse = c.template take<float>(n);
  }
  std::size_t sub = sequence_logprob_forward_workspace_bytes(rows, 1);
  const std::size_t bw = sequence_logprob_backward_workspace_bytes(rows),
                    kl = token_kl_forward_workspace_bytes(rows, 1);
  sub = sub > bw ? sub : bw;
  sub = sub > kl ? sub : kl;
  b.sub.data = c.template take<unsigned char>(sub);
  b.sub.bytes = sub;
  return b;
}

/// Sets the handle's stream for the call; restores the caller's on exit.
struct stream_guard {
  cublasHandle_t h;
  cudaStream_t old = nullptr;
  stream_guard(cublasHandle_t handle, cudaStream_t s) : h(handle) {
    if (h == nullptr) ktsa::detail::fail_argument("handle", "null", "needs a cuBLAS handle");
    check_cublas(cublasGetStream(h, &old), "cublasGetStream");
    check_cublas(cublasSetStream(h, s), "cublasSetStream");
  }
  ~stream_guard() { cublasSetStream(h, old); }
};

/// The shared checks and the device gather; returns the unmasked row count (synchronizes).
template <class T, class L>
index_t prepare(const exec::cuda& ex, const cube_view<const T>& hidden,
                const matrix_view<const T>& weight, const vector_view<const float>& bias,
                const matrix_view<const L>& labels, const fused_linear_options& o,
                const buffers<T>& b) {
  static_assert(is_logit_type_v<T>, "hidden and weight are float, f16 or bf16");
  static_assert(detail::is_label_type_v<L>, "labels are int32 or int64");
  detail::check_logits(hidden, "hidden");
  check_device_view(hidden, "hidden");
  const index_t B = hidden.extent(0), Tn = hidden.extent(1), H = hidden.extent(2);
  if (weight.data() == nullptr)
    ktsa::detail::fail_argument("weight", "an empty view", "is required");
  if (weight.extent(0) < 1) throw shape_error("ktsa: 'weight' has V < 1 rows");
  ktsa::detail::require_extent(weight, 1, H, "weight");
  ktsa::detail::require(weight.extent(0) == 1 || weight.stride(0) >= H, "weight.stride(0)",
                        weight.stride(0), "must be >= H");
  ktsa::detail::require(H == 1 || weight.stride(1) == 1, "weight.stride(1)", weight.stride(1),
                        "must be 1");
  if (bias.data() != nullptr) detail::require_shape(bias, {weight.extent(0)}, "bias");
  detail::require_shape(labels, {B, Tn}, "labels");
  ktsa::detail::require(std::isfinite(o.temperature) && o.temperature > 0, "temperature",
                        o.temperature, "must be finite and > 0");
  ktsa::detail::require(std::isfinite(o.softcap) && o.softcap >= 0, "softcap", o.softcap,
                        "must be finite and >= 0 (0: off)");
  gather_positions_kernel<L><<<1, kGatherThreads, 0, ex.stream>>>(
      labels, o.logprob, b.row_pos, b.row_label, b.row_of_pos, b.seq_first, b.count);
  check_launch("gather_positions_kernel");
  std::int64_t R = 0;
  check(cudaMemcpyAsync(&R, b.count, sizeof(R), cudaMemcpyDeviceToHost, ex.stream),
        "fused_linear (cudaMemcpyAsync of the row count)");
  check(cudaStreamSynchronize(ex.stream), "fused_linear (cudaStreamSynchronize)");
  return R;
}

/// A chunk's logits z [n, V] (GEMM 1 and the head transform) from rows [r0, r0 + n).
template <class T>
void chunk_logits(const exec::cuda& ex, cublasHandle_t h, const cube_view<const T>& hidden,
                  const matrix_view<const T>& weight, const vector_view<const float>& bias,
                  const fused_linear_options& o, const buffers<T>& b, index_t r0, index_t n) {
  const index_t H = hidden.extent(2), V = weight.extent(0);
  const index_t ldw = V > 1 ? weight.stride(0) : H;
  gather_rows_kernel<T><<<grid_for(n * H), 256, 0, ex.stream>>>(hidden, b.row_pos + r0, n, b.x);
  check_launch("gather_rows_kernel");
  const float inv_tau = 1.0f / o.temperature;
  const bool linear = o.softcap == 0.0f, has_bias = bias.data() != nullptr;
  if (linear && has_bias) {
    bias_fill_kernel<T><<<grid_for(n * V), 256, 0, ex.stream>>>(b.z, n, V, bias, inv_tau);
    check_launch("bias_fill_kernel");
  }
  // z[n, V] = X[n, H] W[V, H]^T
  gemm_rm(h, false, true, n, V, H, linear ? inv_tau : 1.0f, b.x, H, weight.data(), ldw,
          linear && has_bias ? 1.0f : 0.0f, b.z, V);
  if (!linear) {
    softcap_kernel<T><<<grid_for(n * V), 256, 0, ex.stream>>>(b.z, n, V, bias, inv_tau, o.softcap);
    check_launch("softcap_kernel");
  }
}

inline logprob_options row_options(const logprob_options& o) {
  logprob_options r;
  r.ignore_index = o.ignore_index;
  r.check_finite = o.check_finite;
  return r;
}

template <class T, class L, class S>
void forward_impl(const exec::cuda& ex, cublasHandle_t h, cube_view<const T> hidden,
                  matrix_view<const T> weight, vector_view<const float> bias,
                  matrix_view<const L> labels, const fused_linear_forward_outputs<S>& out,
                  const fused_linear_options& o, const buffers<T>& b) {
  const index_t B = hidden.extent(0), Tn = hidden.extent(1), V = weight.extent(0);
  detail::check_logprob_outputs(B, Tn, out.sequence_logp, out.token_count, out.lse, out.token_logp);
  detail::check_optional_output(out.entropy, {B, Tn}, "entropy");
  const index_t R = prepare(ex, hidden, weight, bias, labels, o, b);
  const fused_linear_shape s{B, Tn, hidden.extent(2), V};
  const index_t rows = chunk_rows<T>(s, o);
  const logprob_options ro = row_options(o.logprob);
  stream_guard g(h, ex.stream);
  for (index_t r0 = 0; r0 < R; r0 += rows) {
    const index_t n = R - r0 < rows ? R - r0 : rows;
    chunk_logits(ex, h, hidden, weight, bias, o, b, r0, n);
    const cube_view<const T> z(b.z, {n, 1, V}, {V, V, 1});
    const matrix_view<const std::int64_t> lab(b.row_label + r0, {n, 1});
    sequence_logprob_forward(
        ex, z, lab, vector_view<double>(b.row_logp + r0, {n}), vector_view<std::int64_t>{},
        matrix_view<float>(b.row_lse + r0, {n, 1}), matrix_view<float>{}, ro, b.sub);
    if (out.entropy.data() != nullptr)
      token_kl_forward(ex, z, z, lab, vector_view<double>(b.kl_scratch, {n}), matrix_view<float>{},
                       matrix_view<float>{}, matrix_view<float>{}, ro,
                       matrix_view<float>(b.row_entropy + r0, {n, 1}), b.sub);
  }
  sequence_kernel<S><<<grid_for(B), 256, 0, ex.stream>>>(
      b.row_logp, b.seq_first, B, o.logprob.reduce, out.sequence_logp, out.token_count);
  check_launch("sequence_kernel");
  if (out.token_logp.data())
    scatter_positions_kernel<double>
        <<<grid_for(B * Tn), 256, 0, ex.stream>>>(b.row_logp, b.row_of_pos, out.token_logp);
  if (out.lse.data())
    scatter_positions_kernel<float>
        <<<grid_for(B * Tn), 256, 0, ex.stream>>>(b.row_lse, b.row_of_pos, out.lse);
  if (out.entropy.data())
    scatter_positions_kernel<float>
        <<<grid_for(B * Tn), 256, 0, ex.stream>>>(b.row_entropy, b.row_of_pos, out.entropy);
  check_launch("scatter_positions_kernel");
}

template <class T, class L, class U, class GH, class GW>
void backward_impl(const exec::cuda& ex, cublasHandle_t h, cube_view<const T> hidden,
                   matrix_view<const T> weight, vector_view<const float> bias,
                   matrix_view<const L> labels, matrix_view<const float> lse,
                   vector_view<const U> upstream, const fused_linear_grads<GH, GW>& grads,
                   const fused_linear_options& o, const buffers<T>& b) {
  static_assert(std::is_same_v<GH, float> || std::is_same_v<GH, T>,
                "grad_hidden is float or the hidden dtype");
  static_assert(std::is_same_v<GW, float> || std::is_same_v<GW, T>,
                "grad_weight is float or the weight dtype");
  const index_t B = hidden.extent(0), Tn = hidden.extent(1), H = hidden.extent(2),
                V = weight.extent(0);
  detail::require_shape(lse, {B, Tn}, "lse");
  detail::require_shape(upstream, {B}, "upstream_grad");
  if (grads.grad_hidden.data()) detail::check_output(grads.grad_hidden, {B, Tn, H}, "grad_hidden");
  if (grads.grad_weight.data()) {
    detail::check_output(grads.grad_weight, {V, H}, "grad_weight");
    ktsa::detail::require(H == 1 || grads.grad_weight.stride(1) == 1, "grad_weight.stride(1)",
                          grads.grad_weight.stride(1), "must be 1");
  }
  if (grads.grad_bias.data()) detail::check_output(grads.grad_bias, {V}, "grad_bias");
  const index_t R = prepare(ex, hidden, weight, bias, labels, o, b);
  const fused_linear_shape s{B, Tn, H, V};
  const index_t rows = chunk_rows<T>(s, o);
  const logprob_options ro = row_options(o.logprob);
  stream_guard g(h, ex.stream);
  const float inv_tau = o.softcap == 0.0f ? 1.0f / o.temperature : 1.0f;
  row_scale_kernel<U><<<grid_for(B * Tn), 256, 0, ex.stream>>>(b.row_pos, b.seq_first, b.count, Tn,
                                                               lse, upstream, o.logprob.reduce,
                                                               inv_tau, b.row_lse, b.row_scale);
  check_launch("row_scale_kernel");
  if (grads.grad_hidden.data()) {
    zero_masked_kernel<GH>
        <<<grid_for(B * Tn * H), 256, 0, ex.stream>>>(b.row_of_pos, grads.grad_hidden);
    check_launch("zero_masked_kernel");
  }
  float* gw = nullptr;
  index_t ldgw = H;
  if (grads.grad_weight.data()) {
    if constexpr (std::is_same_v<GW, float>) {
      gw = grads.grad_weight.data();
      ldgw = V > 1 ? grads.grad_weight.stride(0) : H;
    } else {
      gw = b.gw;
    }
  }
  for (index_t r0 = 0; r0 < R; r0 += rows) {
    const index_t n = R - r0 < rows ? R - r0 : rows;
    chunk_logits(ex, h, hidden, weight, bias, o, b, r0, n);
    const cube_view<T> z(b.z, {n, 1, V}, {V, V, 1});
    if (o.softcap == 0.0f) {
      sequence_logprob_backward(
          ex, cube_view<const T>(z), matrix_view<const std::int64_t>(b.row_label + r0, {n, 1}),
          matrix_view<const float>(b.row_lse + r0, {n, 1}), vector_view<const std::int64_t>{},
          vector_view<const float>(b.row_scale + r0, {n}), z, ro, b.sub);
    } else {
      softcap_grad_kernel<T><<<grid_for(n * V), 256, 0, ex.stream>>>(
          b.z, n, V, b.row_label + r0, b.row_lse + r0, b.row_scale + r0, o.temperature, o.softcap);
      check_launch("softcap_grad_kernel");
    }
    const index_t ldw = V > 1 ? weight.stride(0) : H;
    if (grads.grad_hidden.data()) {
      // G[n, H] = D[n, V] W[V, H], fp32 out
      gemm_rm(h, false, false, n, H, V, 1.0f, b.z, V, weight.data(), ldw, 0.0f, b.gx, H);
      scatter_rows_kernel<GH>
          <<<grid_for(n * H), 256, 0, ex.stream>>>(b.gx, b.row_pos + r0, n, grads.grad_hidden);
      check_launch("scatter_rows_kernel");
    }
    // grad_W[V, H] (+)= D[n, V]^T X[n, H], fp32, chunk after chunk
    if (gw != nullptr)
      gemm_rm(h, true, false, V, H, n, 1.0f, b.z, V, b.x, H, r0 == 0 ? 0.0f : 1.0f, gw, ldgw);
    if (grads.grad_bias.data()) {
      bias_grad_kernel<T><<<grid_for(V), 256, 0, ex.stream>>>(b.z, n, V, grads.grad_bias, r0 == 0);
      check_launch("bias_grad_kernel");
    }
  }
  if (grads.grad_weight.data() && (R == 0 || !std::is_same_v<GW, float>)) {
    finish_weight_kernel<GW>
        <<<grid_for(V * H), 256, 0, ex.stream>>>(gw, ldgw, grads.grad_weight, R == 0);
    check_launch("finish_weight_kernel");
  }
  if (grads.grad_bias.data() && R == 0) {
    bias_grad_kernel<T><<<grid_for(V), 256, 0, ex.stream>>>(b.z, 0, V, grads.grad_bias, true);
    check_launch("bias_grad_kernel");
  }
}

}  // namespace cuda_fused

/// Device scratch of the CUDA fused_linear_forward (entropy: pass true when
/// the entropy output is wanted).
template <class T>
std::size_t fused_linear_forward_workspace_bytes(const exec::cuda&, const fused_linear_shape& s,
                                                 const fused_linear_options& o = {},
                                                 bool entropy = false) {
  cuda_fused::byte_counter c;
  cuda_fused::carve<T>(c, s, o, cuda_fused::call::forward, entropy);
  return c.used;
}
template <class T>
std::size_t fused_linear_backward_workspace_bytes(const exec::cuda&, const fused_linear_shape& s,
                                                  const fused_linear_options& o = {}) {
  cuda_fused::byte_counter c;
  cuda_fused::carve<T>(c, s, o, cuda_fused::call::backward, false);
  return c.used;
}
template <class T>
std::size_t fused_kto_step_workspace_bytes(const exec::cuda&, const fused_linear_shape& s,
                                           const fused_linear_options& o = {}) {
  cuda_fused::byte_counter c;
  cuda_fused::carve<T>(c, s, o, cuda_fused::call::step, false);
  return c.used;
}

/// CUDA fused_linear_forward: see the host overload and this file's comment.
template <class T, class L, class S>
void fused_linear_forward(const exec::cuda& ex, cublasHandle_t handle, cube_view<const T> hidden,
                          matrix_view<const T> weight, vector_view<const float> bias,
                          matrix_view<const L> labels, const fused_linear_forward_outputs<S>& out,
                          const fused_linear_options& opts, ::ktsa::cuda::workspace ws) {
  const fused_linear_shape s{hidden.extent(0), hidden.extent(1), hidden.extent(2),
                             weight.extent(0)};
  ::ktsa::cuda::detail::carver c{ws, 0, "fused_linear_forward"};
  const auto b =
      cuda_fused::carve<T>(c, s, opts, cuda_fused::call::forward, out.entropy.data() != nullptr);
  cuda_fused::forward_impl(ex, handle, hidden, weight, bias, labels, out, opts, b);
}

/// CUDA fused_linear_backward: see the host overload and this file's comment.
template <class T, class L, class U, class GH, class GW>
void fused_linear_backward(const exec::cuda& ex, cublasHandle_t handle, cube_view<const T> hidden,
                           matrix_view<const T> weight, vector_view<const float> bias,
                           matrix_view<const L> labels, matrix_view<const float> lse,
                           vector_view<const U> upstream_grad,
                           const fused_linear_grads<GH, GW>& grads,
                           const fused_linear_options& opts, ::ktsa::cuda::workspace ws) {
  const fused_linear_shape s{hidden.extent(0), hidden.extent(1),         hidden.extent(2),
                             weight.extent(0), std::is_same_v<T, float>, std::is_same_v<GW, float>};
  ::ktsa::cuda::detail::carver c{ws, 0, "fused_linear_backward"};
  const auto b = cuda_fused::carve<T>(c, s, opts, cuda_fused::call::backward, false);
  cuda_fused::backward_impl(ex, handle, hidden, weight, bias, labels, lse, upstream_grad, grads,
                            opts, b);
}

/// CUDA KTO step (two passes): forward, loss::kto_loss on the device, backward.
/// reference_logps, desirable and per_example_loss are device vectors; the loss
/// and metrics go to `result` (device): read them with loss::read_result.
template <class T, class L, class R, class F, class GH, class GW>
void fused_kto_step(const exec::cuda& ex, cublasHandle_t handle, cube_view<const T> hidden,
                    matrix_view<const T> weight, vector_view<const float> bias,
                    matrix_view<const L> labels, vector_view<const R> reference_logps,
                    vector_view<const F> desirable, double z0, const loss::config& cfg,
                    const fused_linear_grads<GH, GW>& grads, vector_view<double> per_example_loss,
                    loss::device_loss_result* result, const loss::bco_running_mean* bco_state,
                    const fused_linear_options& opts, ::ktsa::cuda::workspace ws) {
  const index_t B = hidden.extent(0), Tn = hidden.extent(1);
  const fused_linear_shape s{B,
                             Tn,
                             hidden.extent(2),
                             weight.extent(0),
                             std::is_same_v<T, float>,
                             std::is_same_v<GW, float>};
  ::ktsa::cuda::detail::carver c{ws, 0, "fused_kto_step"};
  const auto b = cuda_fused::carve<T>(c, s, opts, cuda_fused::call::step, false);
  fused_linear_forward_outputs<double> fo{vector_view<double>(b.policy, {B})};
  fo.lse = matrix_view<float>(b.step_lse, {B, Tn});
  cuda_fused::forward_impl(ex, handle, hidden, weight, bias, labels, fo, opts, b);
  loss::kto_loss(ex, vector_view<const double>(b.policy, {B}), reference_logps, desirable, z0, cfg,
                 per_example_loss, vector_view<double>(b.grad, {B}), result, bco_state);
  cuda_fused::backward_impl(ex, handle, hidden, weight, bias, labels,
                            matrix_view<const float>(b.step_lse, {B, Tn}),
                            vector_view<const double>(b.grad, {B}), grads, opts, b);
}

}  // namespace ktsa::kernels
