// ktsa/cuda/fused_linear_kernels.cuh: the device kernels of the CUDA fused
// linear head (ktsa/cuda/fused_linear.cuh has the launchers and the
// conventions): cuBLAS GEMM mapping, the gather of unmasked rows, the head
// transform, per-row scales, scatters and fixed-order reductions.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_scan.cuh>
#include <type_traits>

#include "ktsa/cuda/common.cuh"
#include "ktsa/cuda/kto.cuh"
#include "ktsa/cuda/logprob.cuh"
#include "ktsa/cuda/token_kl.cuh"
#include "ktsa/kernels/elementwise.hpp"
#include "ktsa/kernels/fused_linear_options.hpp"
#include "ktsa/kernels/head_logit.hpp"

namespace ktsa::kernels {

namespace cuda_fused {

using namespace ::ktsa::cuda::detail;

inline void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw invalid_argument(ktsa::detail::concat("ktsa: cuBLAS call ", what, " failed with status ",
                                                static_cast<int>(s)));
}

template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else if constexpr (is_bf16_v<T>)
    return CUDA_R_16BF;
  else
    return CUDA_R_16F;
}

/// Row-major C[M, N] = alpha op(A) op(B) + beta C as cuBLAS's column-major
/// C^T = op(B)^T op(A)^T: the operands swap, the transposes stay.
template <class TA, class TB, class TC>
void gemm_rm(cublasHandle_t h, bool trans_a, bool trans_b, index_t M, index_t N, index_t K,
             float alpha, const TA* A, index_t lda, const TB* B, index_t ldb, float beta, TC* C,
             index_t ldc) {
  check_cublas(
      cublasGemmEx(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                   static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B,
                   cuda_type<TB>(), static_cast<int>(ldb), A, cuda_type<TA>(),
                   static_cast<int>(lda), &beta, C, cuda_type<TC>(), static_cast<int>(ldc),
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx");
}

inline constexpr int kGatherThreads = 1024;

/// One block: walks the B * T positions in order, 1024 at a time, and writes
/// for every unmasked one its row (an exclusive scan of the mask, so rows keep
/// the position order): row_pos[row], row_label[row], row_of_pos[pos] (-1 when
/// masked), seq_first[b] = rows before position b * T, and the row count.
template <class L>
__global__ void __launch_bounds__(kGatherThreads)
    gather_positions_kernel(matrix_view<const L> labels, logprob_options o, std::int64_t* row_pos,
                            std::int64_t* row_label, std::int64_t* row_of_pos,
                            std::int64_t* seq_first, std::int64_t* count) {
  using scan = cub::BlockScan<int, kGatherThreads>;
  __shared__ typename scan::TempStorage tmp;
  const index_t B = labels.extent(0), T = labels.extent(1), N = B * T;
  std::int64_t base = 0;
  for (index_t tile = 0; tile < N; tile += kGatherThreads) {
    const index_t pos = tile + threadIdx.x;
    std::int64_t y = o.ignore_index;
    if (pos < N) y = label_at(labels, pos / T, pos % T, T, o);
    const int flag = pos < N && y != o.ignore_index ? 1 : 0;
    int offset = 0, total = 0;
    scan(tmp).ExclusiveSum(flag, offset, total);
    if (pos < N) {
      const std::int64_t row = base + offset;
      row_of_pos[pos] = flag ? row : -1;
      if (flag) {
        row_pos[row] = pos;
        row_label[row] = y;
      }
      if (pos % T == 0) seq_first[pos / T] = row;
    }
    base += total;
    __syncthreads();  // tmp is reused by the next tile's scan
  }
  if (T == 0)
    for (index_t b = threadIdx.x; b < B; b += kGatherThreads) seq_first[b] = 0;
  if (threadIdx.x == 0) {
    seq_first[B] = base;
    *count = base;
  }
}

/// X[i, :] = hidden[b, t, :] for the chunk's rows i (pos = row_pos[i] = b T + t).
template <class T>
__global__ void gather_rows_kernel(cube_view<const T> hidden, const std::int64_t* row_pos,
                                   index_t n, T* x) {
  const index_t H = hidden.extent(2), Tn = hidden.extent(1);
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n * H;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t i = e / H, k = e % H, pos = row_pos[i];
    x[e] = hidden(pos / Tn, pos % Tn, k);
  }
}

/// z[i, j] = bias[j] / tau before a beta = 1 GEMM (no softcap).
template <class Z>
__global__ void bias_fill_kernel(Z* z, index_t n, index_t V, vector_view<const float> bias,
                                 float inv_tau) {
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n * V;
       e += static_cast<index_t>(gridDim.x) * blockDim.x)
    z[e] = st<Z>(bias[e % V] * inv_tau);
}

/// z = head_logit(raw + bias) in place (softcap on).
template <class Z>
__global__ void softcap_kernel(Z* z, index_t n, index_t V, vector_view<const float> bias,
                               float inv_tau, float cap) {
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n * V;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const float raw = ld(z[e]) + (bias.data() != nullptr ? bias[e % V] : 0.0f);
    z[e] = st<Z>(head_logit(raw, inv_tau, cap));
  }
}

/// One thread per sequence: its rows' log-probs summed in row order (fixed), reduced.
template <class S>
__global__ void sequence_kernel(const double* row_logp, const std::int64_t* seq_first, index_t B,
                                reduction red, vector_view<S> seq,
                                vector_view<std::int64_t> count) {
  for (index_t b = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; b < B;
       b += static_cast<index_t>(gridDim.x) * blockDim.x) {
    double s = 0;
    const std::int64_t r0 = seq_first[b], r1 = seq_first[b + 1];
    for (std::int64_t r = r0; r < r1; ++r) s += row_logp[r];
    const std::int64_t n = r1 - r0;
    seq[b] =
        static_cast<S>(red == reduction::mean ? (n > 0 ? s / static_cast<double>(n) : 0.0) : s);
    if (count.data() != nullptr) count[b] = n;
  }
}

/// out[b, t] = per-row value at the position's row, 0 where masked.
template <class Src>
__global__ void scatter_positions_kernel(const Src* rows, const std::int64_t* row_of_pos,
                                         matrix_view<float> out) {
  const index_t T = out.extent(1), N = out.extent(0) * T;
  for (index_t p = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; p < N;
       p += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = row_of_pos[p];
    out(p / T, p % T) = r >= 0 ? static_cast<float>(rows[r]) : 0.0f;
  }
}

/// Per row r < *count: its lse from the saved [B, T] one and its gradient
/// scale g_b (/ count for mean) (/ tau unless softcap, where the slope applies per element).
template <class U>
__global__ void row_scale_kernel(const std::int64_t* row_pos, const std::int64_t* seq_first,
                                 const std::int64_t* count, index_t T, matrix_view<const float> lse,
                                 vector_view<const U> upstream, reduction red, float inv_tau,
                                 float* row_lse, float* row_scale) {
  const std::int64_t R = *count;
  for (index_t r = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; r < R;
       r += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t pos = row_pos[r], b = pos / T;
    const std::int64_t n = seq_first[b + 1] - seq_first[b];
    double s = static_cast<double>(upstream[b]);
    if (red == reduction::mean) s /= static_cast<double>(n);  // n >= 1: row r belongs to b
    row_lse[r] = lse(b, pos % T);
    row_scale[r] = static_cast<float>(s * inv_tau);
  }
}

/// Softcap backward in place: s (onehot - p) dz/draw, from z before it is overwritten.
template <class Z>
__global__ void softcap_grad_kernel(Z* z, index_t n, index_t V, const std::int64_t* row_label,
                                    const float* row_lse, const float* row_scale, float tau,
                                    float cap) {
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n * V;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t i = e / V, j = e % V;
    const float x = ld(z[e]);
    z[e] = st<Z>(logprob_grad_element(x, row_lse[i], j == row_label[i], row_scale[i]) *
                 head_logit_slope(x, tau, cap));
  }
}

/// grad_hidden[b, t, :] = G[i, :] for the chunk's rows.
template <class GH>
__global__ void scatter_rows_kernel(const float* g, const std::int64_t* row_pos, index_t n,
                                    cube_view<GH> out) {
  const index_t H = out.extent(2), T = out.extent(1);
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n * H;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t i = e / H, k = e % H, pos = row_pos[i];
    out(pos / T, pos % T, k) = st<GH>(g[e]);
  }
}

/// Zeroes the grad_hidden rows of masked positions.
template <class GH>
__global__ void zero_masked_kernel(const std::int64_t* row_of_pos, cube_view<GH> out) {
  const index_t H = out.extent(2), T = out.extent(1), N = out.extent(0) * T;
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < N * H;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t p = e / H;
    if (row_of_pos[p] < 0) out(p / T, p % T, e % H) = st<GH>(0.0f);
  }
}

/// grad_bias[j] += sum_i D[i, j], rows in order (one thread per j: fixed order).
template <class Z>
__global__ void bias_grad_kernel(const Z* d, index_t n, index_t V, vector_view<float> gb,
                                 bool first) {
  for (index_t j = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; j < V;
       j += static_cast<index_t>(gridDim.x) * blockDim.x) {
    float s = first ? 0.0f : gb[j];
    for (index_t i = 0; i < n; ++i) s += ld(d[i * V + j]);
    gb[j] = s;
  }
}

/// dst[j, k] = src[j * ld + k] rounded to GW (or 0 when no chunk ran).
template <class GW>
__global__ void finish_weight_kernel(const float* src, index_t ld, matrix_view<GW> dst, bool zero) {
  const index_t V = dst.extent(0), H = dst.extent(1);
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < V * H;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t j = e / H, k = e % H;
    dst(j, k) = st<GW>(zero ? 0.0f : src[j * ld + k]);
  }
}

}  // namespace cuda_fused

}  // namespace ktsa::kernels
