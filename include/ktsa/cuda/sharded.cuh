// ktsa/cuda/sharded.cuh: the vocab-sharded log-prob and token KL of
// ktsa/dist/sharded.hpp for exec::cuda (nvcc only). Compiled in CI, not yet
// run on a GPU: docs/distributed.md says what awaits one.
//
// Same arguments, checks and results as the host overloads, with every view
// in device memory and a trailing cuda::workspace (sharded_*_workspace_bytes).
// Forward: one thread block per row computes this shard's state (log-prob:
// max, sum of exp, owned target logit; KL: the 6 numbers of
// dist::kl_partial_state) with a fixed-order block merge (math::online_lse,
// kl_partial_state::merge: the host's formulas), the states come to the host,
// go through the reducer (an exact all-gather, as on the host) and are merged
// and finished by the same host code as the host backend
// (dist::detail::merge_*_rows), and the outputs are copied back. The forward
// therefore synchronises its stream (the reducer's arrays are host arrays)
// and copies labels [B, T] to the host (for the checks and the fingerprint).
// The per-thread loops read the row with scalar loads: simple, not tuned.
// Backward: local to the shard, one block per row, no collective.
// Data errors throw on every rank, as on the host (not recorded in ex.status).
// Strides: labels, lse, token_logp, token_kl, ... need a unit last stride.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "ktsa/cuda/common.cuh"
#include "ktsa/cuda/exec.cuh"
#include "ktsa/cuda/status.cuh"
#include "ktsa/dist/merge.hpp"
#include "ktsa/dist/reducer.hpp"
#include "ktsa/dist/shard.hpp"
#include "ktsa/kernels/detail/checks.hpp"
#include "ktsa/kernels/elementwise.hpp"
#include "ktsa/kernels/options.hpp"

namespace ktsa::dist {

namespace cuda_detail {

using ::ktsa::cuda::detail::block_reduce;
using ::ktsa::cuda::detail::check;
using ::ktsa::cuda::detail::check_launch;
using ::ktsa::cuda::detail::grid_for_rows;
using ::ktsa::cuda::detail::ld;
using ::ktsa::cuda::detail::reduce_scratch;

constexpr int kThreads = 256;

struct lse_item {
  math::online_lse<double> l;
  __device__ void merge(const lse_item& o) { l.merge(o.l); }
  __device__ lse_item shfl_down(int offset) const {
    lse_item r;
    r.l.max = __shfl_down_sync(0xffffffffu, l.max, offset);
    r.l.sum = __shfl_down_sync(0xffffffffu, l.sum, offset);
    return r;
  }
};

struct kl_item {
  kl_partial_state s = kl_partial_state::empty();
  __device__ void merge(const kl_item& o) { s.merge(o.s); }
  __device__ kl_item shfl_down(int offset) const {
    kl_item r;
    r.s.max_a = __shfl_down_sync(0xffffffffu, s.max_a, offset);
    r.s.max_b = __shfl_down_sync(0xffffffffu, s.max_b, offset);
    r.s.sum_a = __shfl_down_sync(0xffffffffu, s.sum_a, offset);
    r.s.sum_b = __shfl_down_sync(0xffffffffu, s.sum_b, offset);
    r.s.w = __shfl_down_sync(0xffffffffu, s.w, offset);
    r.s.u = __shfl_down_sync(0xffffffffu, s.u, offset);
    return r;
  }
};

/// part[4 r .. 4 r + 3] = (max, sum, target or 0, first non-finite column or -1).
template <class T, class I>
__global__ void __launch_bounds__(kThreads)
    lse_partial_kernel(cube_view<const T> x, matrix_view<const I> labels,
                       kernels::logprob_options o, index_t begin, index_t end, double* part) {
  __shared__ reduce_scratch<lse_item> scratch;
  __shared__ unsigned long long first_bad;
  const index_t Tn = x.extent(1), N = x.extent(0) * Tn, V = x.extent(2);
  const float inf = math::infinity<float>();
  for (index_t r = blockIdx.x; r < N; r += gridDim.x) {
    const index_t b = r / Tn, t = r - b * Tn;
    const std::int64_t y = kernels::label_at(labels, b, t, Tn, o);
    if (y == o.ignore_index) continue;  // uniform across the block
    const T* row = x.data() + b * x.stride(0) + t * x.stride(1);
    math::online_lse<float> acc;
    index_t bad = -1;
    for (index_t j = threadIdx.x; j < V; j += blockDim.x) {
      const float v = ld(row[j]);
      if (!(v < inf) && bad < 0) bad = j;  // NaN or +inf: this thread's first
      acc.push(v);
    }
    lse_item it;
    it.l.max = acc.max;
    it.l.sum = acc.sum;
    it = block_reduce(it, scratch);
    if (o.check_finite) {
      // the row's lowest bad column (an integer min: order-independent)
      if (threadIdx.x == 0) first_bad = ~0ull;
      __syncthreads();
      if (bad >= 0) atomicMin(&first_bad, static_cast<unsigned long long>(bad));
      __syncthreads();
      if (threadIdx.x == 0)
        part[4 * r + 3] = first_bad == ~0ull ? -1.0 : static_cast<double>(first_bad);
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      part[4 * r] = it.l.max;
      // A +inf logit: NaN, as the host kernels give (exp(inf - inf)).
      part[4 * r + 1] = it.l.max == inf ? static_cast<double>(NAN) : it.l.sum;
      part[4 * r + 2] = (y >= begin && y < end) ? static_cast<double>(ld(row[y - begin])) : 0.0;
      if (!o.check_finite) part[4 * r + 3] = -1.0;
    }
  }
}

/// part[6 r ..] = the shard's kl_partial_state of row r.
template <class TA, class TB, class I>
__global__ void __launch_bounds__(kThreads)
    kl_partial_kernel(cube_view<const TA> a, cube_view<const TB> bq, matrix_view<const I> labels,
                      kernels::logprob_options o, double* part) {
  __shared__ reduce_scratch<kl_item> scratch;
  const index_t Tn = a.extent(1), N = a.extent(0) * Tn, V = a.extent(2);
  const double ninf = -math::infinity<double>(), inf = math::infinity<double>();
  for (index_t r = blockIdx.x; r < N; r += gridDim.x) {
    const index_t b = r / Tn, t = r - b * Tn;
    if (kernels::label_at(labels, b, t, Tn, o) == o.ignore_index) continue;
    const TA* ra = a.data() + b * a.stride(0) + t * a.stride(1);
    const TB* rb = bq.data() + b * bq.stride(0) + t * bq.stride(1);
    kl_item it;
    for (index_t j = threadIdx.x; j < V; j += blockDim.x) {
      const double av = ld(ra[j]), bv = ld(rb[j]);
      // One element as a state: c_a = c_b = 0 at its own maxima.
      kl_partial_state e{av,
                         bv,
                         av == ninf ? 0.0 : 1.0,
                         bv == ninf ? 0.0 : 1.0,
                         (av != ninf && bv == ninf) ? inf : 0.0,
                         0.0};
      it.s.merge(e);
    }
    it = block_reduce(it, scratch);
    if (threadIdx.x == 0) {
      double* p = part + 6 * r;
      p[0] = it.s.max_a, p[1] = it.s.max_b, p[2] = it.s.sum_a, p[3] = it.s.sum_b;
      p[4] = it.s.max_a == ninf ? 0.0 : it.s.w;
      p[5] = it.s.max_a == ninf ? 0.0 : it.s.u;
    }
  }
}

/// Per-sequence scale of the backward: upstream[b] (divided by the count for mean).
template <class I, class U>
__global__ void scale_kernel(matrix_view<const I> labels, kernels::logprob_options o,
                             vector_view<const U> up, float* scale) {
  const index_t B = labels.extent(0), Tn = labels.extent(1);
  for (index_t b = blockIdx.x * blockDim.x + threadIdx.x; b < B; b += gridDim.x * blockDim.x) {
    std::int64_t n = 0;
    for (index_t t = 0; t < Tn; ++t) n += kernels::label_at(labels, b, t, Tn, o) != o.ignore_index;
    const double g = static_cast<double>(up[b]);
    scale[b] = static_cast<float>(o.reduce == kernels::reduction::sum ? g
                                  : n > 0                             ? g / static_cast<double>(n)
                                                                      : 0.0);
  }
}

template <class T, class I, class G>
__global__ void __launch_bounds__(kThreads)
    grad_kernel(cube_view<const T> x, matrix_view<const I> labels, kernels::logprob_options o,
                matrix_view<const float> lse, const float* scale, index_t begin, cube_view<G> g) {
  const index_t Tn = x.extent(1), N = x.extent(0) * Tn, V = x.extent(2);
  for (index_t r = blockIdx.x; r < N; r += gridDim.x) {
    const index_t b = r / Tn, t = r - b * Tn;
    const std::int64_t y = kernels::label_at(labels, b, t, Tn, o);
    const T* row = x.data() + b * x.stride(0) + t * x.stride(1);
    G* out = g.data() + b * g.stride(0) + t * g.stride(1);
    const bool masked = y == o.ignore_index;
    const float l = masked ? 0.0f : lse(b, t), s = masked ? 0.0f : scale[b];
    for (index_t j = threadIdx.x; j < V; j += blockDim.x) {
      // Each element is read and written by the same thread: in place is safe.
      const float v =
          masked ? 0.0f : kernels::logprob_grad_element(ld(row[j]), l, begin + j == y, s);
      out[j] = ::ktsa::cuda::detail::st<G>(v);
    }
  }
}

template <class I>
kernels::detail::targets host_targets(const exec::cuda& ex, tensor_view<I, 2> labels, index_t V,
                                      const kernels::logprob_options& o, bool validate_range,
                                      std::vector<std::remove_cv_t<I>>& host) {
  const index_t B = labels.extent(0), Tn = labels.extent(1);
  host.assign(static_cast<std::size_t>(B * Tn), 0);
  if (B * Tn > 0) {
    if (Tn > 1 && labels.stride(1) != 1)
      throw ktsa::invalid_argument("ktsa: 'labels' needs a unit last stride on the CUDA backend");
    check(cudaMemcpy2DAsync(host.data(), static_cast<std::size_t>(Tn) * sizeof(I), labels.data(),
                            static_cast<std::size_t>(labels.stride(0)) * sizeof(I),
                            static_cast<std::size_t>(Tn) * sizeof(I), static_cast<std::size_t>(B),
                            cudaMemcpyDeviceToHost, ex.stream),
          "copying labels to the host");
    check(cudaStreamSynchronize(ex.stream), "cudaStreamSynchronize");
  }
  const matrix_view<const std::remove_cv_t<I>> hv(host.data(), {B, Tn}, {Tn, 1});
  return kernels::detail::prepare_targets(hv, B, Tn, V, o, validate_range);
}

/// Copies host values [B, T] (row-major) into a device view (unit last stride).
template <class D, class H>
void upload_2d(const exec::cuda& ex, tensor_view<D, 2> dst, const std::vector<H>& src,
               const char* name) {
  if (dst.data() == nullptr || dst.size() == 0) return;
  if (dst.extent(1) > 1 && dst.stride(1) != 1)
    throw ktsa::invalid_argument(
        ktsa::detail::concat("ktsa: '", name, "' needs a unit last stride on the CUDA backend"));
  std::vector<D> tmp(src.begin(), src.end());
  check(
      cudaMemcpy2DAsync(dst.data(), static_cast<std::size_t>(dst.stride(0)) * sizeof(D), tmp.data(),
                        static_cast<std::size_t>(dst.extent(1)) * sizeof(D),
                        static_cast<std::size_t>(dst.extent(1)) * sizeof(D),
                        static_cast<std::size_t>(dst.extent(0)), cudaMemcpyHostToDevice, ex.stream),
      name);
  check(cudaStreamSynchronize(ex.stream), "cudaStreamSynchronize");
}

template <class D, class H>
void upload_1d(const exec::cuda& ex, tensor_view<D, 1> dst, const std::vector<H>& src,
               const char* name) {
  if (dst.data() == nullptr || dst.size() == 0) return;
  std::vector<D> tmp(src.begin(), src.end());
  check(cudaMemcpy2DAsync(dst.data(), static_cast<std::size_t>(dst.stride(0)) * sizeof(D),
                          tmp.data(), sizeof(D), sizeof(D), static_cast<std::size_t>(dst.extent(0)),
                          cudaMemcpyHostToDevice, ex.stream),
        name);
  check(cudaStreamSynchronize(ex.stream), "cudaStreamSynchronize");
}

inline std::vector<double> download(const exec::cuda& ex, const double* p, std::size_t n) {
  std::vector<double> h(n);
  if (n == 0) return h;
  check(cudaMemcpyAsync(h.data(), p, n * sizeof(double), cudaMemcpyDeviceToHost, ex.stream),
        "copying shard states to the host");
  check(cudaStreamSynchronize(ex.stream), "cudaStreamSynchronize");
  return h;
}

inline double* carve(::ktsa::cuda::workspace ws, std::size_t bytes, const char* op) {
  if (bytes > 0 && (ws.data == nullptr || ws.bytes < bytes))
    throw ktsa::invalid_argument(ktsa::detail::concat("ktsa: argument 'workspace' = ", ws.bytes,
                                                      " bytes: ", op, " needs ", bytes, " (query ",
                                                      op, "_workspace_bytes)"));
  return static_cast<double*>(ws.data);
}

}  // namespace cuda_detail

/// Device scratch of the CUDA sharded log-prob forward: 4 doubles per row.
inline std::size_t sharded_sequence_logprob_forward_workspace_bytes(index_t B, index_t T) {
  return static_cast<std::size_t>(B * T) * 4 * sizeof(double);
}
/// Device scratch of the CUDA sharded token KL forward: 6 doubles per row.
inline std::size_t sharded_token_kl_forward_workspace_bytes(index_t B, index_t T) {
  return static_cast<std::size_t>(B * T) * 6 * sizeof(double);
}
/// Device scratch of the CUDA sharded log-prob backward: B scales.
inline std::size_t sharded_sequence_logprob_backward_workspace_bytes(index_t B) {
  return static_cast<std::size_t>(B) * sizeof(float);
}

/// CUDA sharded_sequence_logprob_forward: see the host overload and this file's comment.
template <class R, class L, class I, class S>
void sharded_sequence_logprob_forward(const exec::cuda& ex, R& r, const vocab_shard& shard,
                                      tensor_view<L, 3> logits, tensor_view<I, 2> labels,
                                      tensor_view<S, 1> sequence_logp,
                                      tensor_view<std::int64_t, 1> token_count,
                                      tensor_view<float, 2> lse, tensor_view<float, 2> token_logp,
                                      const kernels::logprob_options& opts,
                                      ::ktsa::cuda::workspace ws) {
  KTSA_REQUIRE_REDUCER(R);
  namespace kd = kernels::detail;
  using T = std::remove_cv_t<L>;
  using Lab = std::remove_cv_t<I>;
  index_t B = 0, Tn = 0;
  kd::targets tg;
  std::vector<Lab> host_labels;
  double* part = nullptr;
  on_every_rank(r, [&] {
    detail::check_local_logits(logits, shard, "logits");
    B = logits.extent(0), Tn = logits.extent(1);
    kd::require_shape(labels, {B, Tn}, "labels");
    kd::check_logprob_outputs(B, Tn, sequence_logp, token_count, lse, token_logp);
    part = cuda_detail::carve(ws, sharded_sequence_logprob_forward_workspace_bytes(B, Tn),
                              "sharded_sequence_logprob_forward");
    tg = cuda_detail::host_targets(ex, labels, shard.vocab_size, opts, true, host_labels);
  });
  const std::vector<detail::rank_shard> order = detail::check_shards(
      r, shard, B, Tn, detail::targets_fingerprint(tg, opts), "sharded log-prob");
  const index_t N = B * Tn;
  std::vector<double> dev_part;
  on_every_rank(r, [&] {
    if (N > 0) {
      cuda_detail::lse_partial_kernel<T, Lab>
          <<<cuda_detail::grid_for_rows(N), cuda_detail::kThreads, 0, ex.stream>>>(
              cube_view<const T>(logits), matrix_view<const Lab>(labels), opts, shard.begin,
              shard.end, part);
      cuda_detail::check_launch("lse_partial_kernel");
    }
    dev_part = cuda_detail::download(ex, part, static_cast<std::size_t>(4 * N));
    for (index_t row = 0; row < N; ++row)
      if (tg.label[static_cast<std::size_t>(row)] >= 0 && dev_part[4 * row + 3] >= 0)
        throw data_error(ktsa::detail::concat(
            "ktsa: 'logits' has a non-finite value (NaN or +inf) at batch ", row / Tn,
            ", position ", row % Tn, ", vocabulary index ",
            shard.begin + static_cast<index_t>(dev_part[4 * row + 3]), " (check_finite)"));
  });
  std::vector<double> mine(static_cast<std::size_t>(3 * N), 0.0);
  for (index_t row = 0; row < N; ++row)
    if (tg.label[static_cast<std::size_t>(row)] >= 0)
      for (int k = 0; k < 3; ++k) mine[3 * row + k] = dev_part[4 * row + k];
  const std::vector<double> all = all_gather(r, mine.data(), mine.size());
  std::vector<double> lse_h(static_cast<std::size_t>(N)), tok_h(static_cast<std::size_t>(N));
  const std::vector<double> token = detail::merge_logprob_rows(
      all, mine.size(), order, tg, Tn, [&](index_t b, index_t t, double l, double lp) {
        lse_h[static_cast<std::size_t>(b * Tn + t)] = l;
        tok_h[static_cast<std::size_t>(b * Tn + t)] = lp;
      });
  std::vector<double> seq(static_cast<std::size_t>(B));
  for (index_t b = 0; b < B; ++b)
    seq[static_cast<std::size_t>(b)] = detail::sequence_value(token, tg, b, Tn, opts.reduce);
  cuda_detail::upload_1d(ex, sequence_logp, seq, "sequence_logp");
  cuda_detail::upload_1d(ex, token_count, tg.count, "token_count");
  cuda_detail::upload_2d(ex, lse, lse_h, "lse");
  cuda_detail::upload_2d(ex, token_logp, tok_h, "token_logp");
}

/// CUDA sharded_sequence_logprob_backward (local, asynchronous): see the host overload.
template <class L, class I, class U, class G>
void sharded_sequence_logprob_backward(const exec::cuda& ex, const vocab_shard& shard,
                                       tensor_view<L, 3> logits, tensor_view<I, 2> labels,
                                       tensor_view<const float, 2> lse,
                                       tensor_view<U, 1> upstream_grad,
                                       tensor_view<G, 3> grad_logits,
                                       const kernels::logprob_options& opts,
                                       ::ktsa::cuda::workspace ws) {
  namespace kd = kernels::detail;
  using T = std::remove_cv_t<L>;
  using Lab = std::remove_cv_t<I>;
  detail::check_local_logits(logits, shard, "logits");
  const index_t B = logits.extent(0), Tn = logits.extent(1);
  kd::require_shape(labels, {B, Tn}, "labels");
  kd::require_shape(lse, {B, Tn}, "lse");
  kd::require_shape(upstream_grad, {B}, "upstream_grad");
  kd::require_shape(grad_logits, {B, Tn, shard.size()}, "grad_logits");
  float* scale = reinterpret_cast<float*>(
      cuda_detail::carve(ws, sharded_sequence_logprob_backward_workspace_bytes(B),
                         "sharded_sequence_logprob_backward"));
  if (B * Tn == 0) return;
  cuda_detail::scale_kernel<Lab, std::remove_cv_t<U>><<<(B + 255) / 256, 256, 0, ex.stream>>>(
      matrix_view<const Lab>(labels), opts, vector_view<const std::remove_cv_t<U>>(upstream_grad),
      scale);
  cuda_detail::check_launch("scale_kernel");
  cuda_detail::grad_kernel<T, Lab, G>
      <<<cuda_detail::grid_for_rows(B * Tn), cuda_detail::kThreads, 0, ex.stream>>>(
          cube_view<const T>(logits), matrix_view<const Lab>(labels), opts, lse, scale, shard.begin,
          grad_logits);
  cuda_detail::check_launch("grad_kernel");
}

/// CUDA sharded_token_kl_forward: see the host overload and this file's comment.
/// (The backward is kernels::token_kl_backward(exec::cuda, ...) on the local
/// slices with the saved global lse_a, lse_b and token_kl, as on the host.)
template <class R, class A, class Bv, class I, class S>
void sharded_token_kl_forward(const exec::cuda& ex, R& r, const vocab_shard& shard,
                              tensor_view<A, 3> a_logits, tensor_view<Bv, 3> b_logits,
                              tensor_view<I, 2> labels, tensor_view<S, 1> sequence_kl,
                              tensor_view<float, 2> token_kl, tensor_view<float, 2> lse_a,
                              tensor_view<float, 2> lse_b, const kernels::logprob_options& opts,
                              tensor_view<float, 2> token_entropy, ::ktsa::cuda::workspace ws) {
  KTSA_REQUIRE_REDUCER(R);
  namespace kd = kernels::detail;
  using TA = std::remove_cv_t<A>;
  using TB = std::remove_cv_t<Bv>;
  using Lab = std::remove_cv_t<I>;
  index_t B = 0, Tn = 0;
  kd::targets tg;
  std::vector<Lab> host_labels;
  double* part = nullptr;
  on_every_rank(r, [&] {
    detail::check_local_logits(a_logits, shard, "a_logits");
    kd::check_pair(a_logits, b_logits);
    B = a_logits.extent(0), Tn = a_logits.extent(1);
    kd::check_token_kl_forward_args(B, Tn, labels, sequence_kl, token_kl, lse_a, lse_b,
                                    token_entropy);
    part = cuda_detail::carve(ws, sharded_token_kl_forward_workspace_bytes(B, Tn),
                              "sharded_token_kl_forward");
    tg = cuda_detail::host_targets(ex, labels, shard.vocab_size, opts, false, host_labels);
  });
  const std::vector<detail::rank_shard> order = detail::check_shards(
      r, shard, B, Tn, detail::targets_fingerprint(tg, opts), "sharded token KL");
  const index_t N = B * Tn;
  std::vector<double> mine;
  on_every_rank(r, [&] {
    if (N > 0) {
      cuda_detail::kl_partial_kernel<TA, TB, Lab>
          <<<cuda_detail::grid_for_rows(N), cuda_detail::kThreads, 0, ex.stream>>>(
              cube_view<const TA>(a_logits), cube_view<const TB>(b_logits),
              matrix_view<const Lab>(labels), opts, part);
      cuda_detail::check_launch("kl_partial_kernel");
    }
    mine = cuda_detail::download(ex, part, static_cast<std::size_t>(6 * N));
    for (index_t row = 0; row < N; ++row)
      if (tg.label[static_cast<std::size_t>(row)] < 0)
        for (int k = 0; k < 6; ++k) mine[6 * row + k] = 0.0;  // never written: don't send garbage
  });
  const std::vector<double> all = all_gather(r, mine.data(), mine.size());
  std::vector<double> kl_h(static_cast<std::size_t>(N)), la_h(kl_h.size()), lb_h(kl_h.size()),
      h_h(kl_h.size());
  const std::vector<double> token =
      detail::merge_kl_rows(all, mine.size(), order, tg, Tn,
                            [&](index_t b, index_t t, double kl, double la, double lb, double h) {
                              const std::size_t i = static_cast<std::size_t>(b * Tn + t);
                              kl_h[i] = kl, la_h[i] = la, lb_h[i] = lb, h_h[i] = h;
                            });
  std::vector<double> seq(static_cast<std::size_t>(B));
  for (index_t b = 0; b < B; ++b)
    seq[static_cast<std::size_t>(b)] = detail::sequence_value(token, tg, b, Tn, opts.reduce);
  cuda_detail::upload_1d(ex, sequence_kl, seq, "sequence_kl");
  cuda_detail::upload_2d(ex, token_kl, kl_h, "token_kl");
  cuda_detail::upload_2d(ex, lse_a, la_h, "lse_a");
  cuda_detail::upload_2d(ex, lse_b, lb_h, "lse_b");
  cuda_detail::upload_2d(ex, token_entropy, h_h, "token_entropy");
}

}  // namespace ktsa::dist
