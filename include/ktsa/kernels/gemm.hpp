// ktsa/kernels/gemm.hpp: the host GEMM provider concept of the fused linear
// head (ktsa/kernels/fused_linear.hpp), and a plain-loop provider.
//
// A provider is any callable with the row-major single-precision GEMM signature
//
//   void operator()(gemm_op op_a, gemm_op op_b, index_t M, index_t N, index_t K,
//                   float alpha, const float* A, index_t lda, const float* B, index_t ldb,
//                   float beta, float* C, index_t ldc) const;
//
// computing C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C, every
// matrix row-major with the given leading dimension (elements between rows).
// beta = 0 must overwrite C without reading it (C may hold garbage). The
// fused head calls it three times per chunk (logits, grad_hidden, grad_W) and
// nothing else, so a trainer plugs in its own BLAS by passing such a callable.
//
// Ready-made providers: gemm::eigen (ktsa/kernels/gemm/eigen.hpp, header-only,
// needs Eigen 3.4), gemm::openblas (gemm/openblas.hpp, links CBLAS) and
// gemm::onednn (gemm/onednn.hpp, links oneDNN). docs/fused_linear.md compares
// them; ktsa/kernels/gemm/default.hpp picks the default.
#pragma once

#include "ktsa/core/view.hpp"

namespace ktsa::kernels::gemm {

enum class gemm_op { none, trans };

/// The loop every provider must agree with (tests, tiny shapes): i-k-j order,
/// fp32 accumulation in C. Not for speed.
struct naive {
  void operator()(gemm_op op_a, gemm_op op_b, index_t M, index_t N, index_t K, float alpha,
                  const float* A, index_t lda, const float* B, index_t ldb, float beta, float* C,
                  index_t ldc) const {
    for (index_t i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      for (index_t j = 0; j < N; ++j) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
      for (index_t k = 0; k < K; ++k) {
        const float a = alpha * (op_a == gemm_op::none ? A[i * lda + k] : A[k * lda + i]);
        if (op_b == gemm_op::none) {
          const float* b = B + k * ldb;
          for (index_t j = 0; j < N; ++j) c[j] += a * b[j];
        } else {
          for (index_t j = 0; j < N; ++j) c[j] += a * B[j * ldb + k];
        }
      }
    }
  }
};

}  // namespace ktsa::kernels::gemm
