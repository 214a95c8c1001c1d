// ktsa/retrieval/detail/gemm.hpp: the one matrix product retrieval needs,
// C[m x n] = A[m x k] * B[n x k]^T in f32 (rows of A and B contiguous).
//
// This is the single place where a GEMM provider is chosen, so switching to
// another (OpenBLAS's cblas_sgemm, the fused head's choice) touches one
// function. Eigen's product is used when <Eigen/Core> is on the include path
// (link Eigen3::Eigen); otherwise a portable loop that the compiler vectorises.
// Eigen runs single-threaded here (callers parallelise over blocks), so the
// value of C(i, j) depends only on the inputs and on where the block starts,
// which callers fix independently of the thread count.
#pragma once

#include <cstddef>

#include "ktsa/core/view.hpp"

#if defined(__has_include)
#if __has_include(<Eigen/Core>) && !defined(KTSA_RETRIEVAL_NO_EIGEN)
#define KTSA_RETRIEVAL_HAS_EIGEN 1
#include <Eigen/Core>
#endif
#endif

namespace ktsa::retrieval::detail {

/// Name of the provider compiled in ("eigen" or "loop"), for benchmark labels.
inline const char* gemm_provider() {
#ifdef KTSA_RETRIEVAL_HAS_EIGEN
  return "eigen";
#else
  return "loop";
#endif
}

/// C = A * B^T. A: m rows of k floats, row stride lda; B: n rows, stride ldb;
/// C: m rows of n floats, stride ldc. No aliasing between C and A or B.
inline void gemm_nt(index_t m, index_t n, index_t k, const float* a, index_t lda, const float* b,
                    index_t ldb, float* c, index_t ldc) {
  if (m <= 0 || n <= 0) return;
#ifdef KTSA_RETRIEVAL_HAS_EIGEN
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using stride = Eigen::OuterStride<>;
  Eigen::Map<const row_major, 0, stride> A(a, m, k, stride(lda));
  Eigen::Map<const row_major, 0, stride> B(b, n, k, stride(ldb));
  Eigen::Map<row_major, 0, stride> C(c, m, n, stride(ldc));
  C.noalias() = A * B.transpose();
#else
  // Four rows of B at a time share each load of A's row.
  for (index_t i = 0; i < m; ++i) {
    const float* ai = a + i * lda;
    float* ci = c + i * ldc;
    index_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const float *b0 = b + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (index_t t = 0; t < k; ++t) {
        const float x = ai[t];
        s0 += x * b0[t];
        s1 += x * b1[t];
        s2 += x * b2[t];
        s3 += x * b3[t];
      }
      ci[j] = s0;
      ci[j + 1] = s1;
      ci[j + 2] = s2;
      ci[j + 3] = s3;
    }
    for (; j < n; ++j) {
      const float* bj = b + j * ldb;
      float s = 0;
      for (index_t t = 0; t < k; ++t) s += ai[t] * bj[t];
      ci[j] = s;
    }
  }
#endif
}

}  // namespace ktsa::retrieval::detail
