// ktsa/kernels/gemm/openblas.hpp: cblas_sgemm (OpenBLAS through CBLAS, Debian
// libopenblas-dev) as a fused-linear GEMM provider (see ktsa/kernels/gemm.hpp).
// Link a CBLAS (CMake: the ktsa::openblas target, or BLAS::BLAS). OpenBLAS
// picks its kernels at run time for the CPU it finds and uses its own thread
// pool (openblas_set_num_threads / OPENBLAS_NUM_THREADS).
#pragma once

#include <cblas.h>

#include "ktsa/kernels/gemm.hpp"

namespace ktsa::kernels::gemm {

struct openblas {
  void operator()(gemm_op op_a, gemm_op op_b, index_t M, index_t N, index_t K, float alpha,
                  const float* A, index_t lda, const float* B, index_t ldb, float beta, float* C,
                  index_t ldc) const {
    cblas_sgemm(CblasRowMajor, op_a == gemm_op::none ? CblasNoTrans : CblasTrans,
                op_b == gemm_op::none ? CblasNoTrans : CblasTrans, static_cast<int>(M),
                static_cast<int>(N), static_cast<int>(K), alpha, A, static_cast<int>(lda), B,
                static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
  }
};

}  // namespace ktsa::kernels::gemm
