// ktsa/kernels/gemm/onednn.hpp: oneDNN's dnnl_sgemm (Debian libdnnl-dev) as a
// fused-linear GEMM provider (see ktsa/kernels/gemm.hpp). Link oneDNN (CMake:
// DNNL::dnnl). oneDNN JIT-compiles its kernels for the CPU it finds; threads
// come from its OpenMP runtime (OMP_NUM_THREADS).
#pragma once

#include <oneapi/dnnl/dnnl.h>

#include "ktsa/core/errors.hpp"
#include "ktsa/kernels/gemm.hpp"

namespace ktsa::kernels::gemm {

struct onednn {
  void operator()(gemm_op op_a, gemm_op op_b, index_t M, index_t N, index_t K, float alpha,
                  const float* A, index_t lda, const float* B, index_t ldb, float beta, float* C,
                  index_t ldc) const {
    // dnnl_sgemm is row-major, like the provider concept.
    const dnnl_status_t s =
        dnnl_sgemm(op_a == gemm_op::none ? 'N' : 'T', op_b == gemm_op::none ? 'N' : 'T', M, N, K,
                   alpha, A, lda, B, ldb, beta, C, ldc);
    if (s != dnnl_success)
      throw invalid_argument(ktsa::detail::concat("ktsa: dnnl_sgemm failed with status ",
                                                  static_cast<int>(s), " (M = ", M, ", N = ", N,
                                                  ", K = ", K, ")"));
  }
};

}  // namespace ktsa::kernels::gemm
