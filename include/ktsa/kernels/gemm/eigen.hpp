// ktsa/kernels/gemm/eigen.hpp: Eigen 3.4's GEMM as a fused-linear GEMM provider
// (see ktsa/kernels/gemm.hpp). Header-only; needs Eigen on the include path.
// Eigen picks its SIMD width at compile time (SSE2 unless the translation unit
// is built with -mavx2 / -mavx512f / -march=native) and runs on one thread
// unless built with OpenMP.
#pragma once

#include <Eigen/Core>

#include "ktsa/kernels/gemm.hpp"

namespace ktsa::kernels::gemm {

struct eigen {
  void operator()(gemm_op op_a, gemm_op op_b, index_t M, index_t N, index_t K, float alpha,
                  const float* A, index_t lda, const float* B, index_t ldb, float beta, float* C,
                  index_t ldc) const {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using CMap = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;
    using Map = Eigen::Map<Mat, 0, Eigen::OuterStride<>>;
    Map c(C, M, N, Eigen::OuterStride<>(ldc));
    // Stored shapes: op(A) is [M, K], so A is [M, K] or [K, M].
    const CMap a(A, op_a == gemm_op::none ? M : K, op_a == gemm_op::none ? K : M,
                 Eigen::OuterStride<>(lda));
    const CMap b(B, op_b == gemm_op::none ? K : N, op_b == gemm_op::none ? N : K,
                 Eigen::OuterStride<>(ldb));
    if (beta == 0.0f)
      c.setZero();
    else if (beta != 1.0f)
      c *= beta;
    if (op_a == gemm_op::none && op_b == gemm_op::none)
      c.noalias() += alpha * a * b;
    else if (op_a == gemm_op::none)
      c.noalias() += alpha * a * b.transpose();
    else if (op_b == gemm_op::none)
      c.noalias() += alpha * a.transpose() * b;
    else
      c.noalias() += alpha * a.transpose() * b.transpose();
  }
};

}  // namespace ktsa::kernels::gemm
