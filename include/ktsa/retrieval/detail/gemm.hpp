// ktsa/retrieval/detail/gemm.hpp: the one matrix product retrieval needs,
// C[m x n] = A[m x k] * B[n x k]^T in f32 (rows of A and B contiguous).
//
// This is the single place where a GEMM provider is chosen, so switching to
// another (OpenBLAS's cblas_sgemm, the fused head's choice) touches gemm_nt()
// only. In order of preference:
//   avx512  a register-blocked kernel (4 rows of A x 32 columns of C, one
//           FMA chain per element over k in order), compiled with
//           __attribute__((target)) and chosen at run time when the CPU has
//           AVX-512F, as the host kernels do (no -march needed);
//   eigen   Eigen's product when <Eigen/Core> is on the include path (link
//           Eigen3::Eigen); without -march Eigen only uses SSE2;
//   loop    a portable loop.
// Everything runs single-threaded here (callers parallelise over blocks). For
// a given level, C(i, j) depends only on row i of A, row j of B, k and whether
// the call has fewer than 4 rows (avx512 then takes dot products along k, a
// different summation order): the same bits wherever the element sits in the
// block. Levels, and calls with m < 4 against m >= 4, differ by rounding.
#pragma once

#include <cstddef>
#include <vector>

#include "ktsa/core/view.hpp"
#include "ktsa/kernels/detail/simd.hpp"

#if defined(__has_include)
#if __has_include(<Eigen/Core>) && !defined(KTSA_RETRIEVAL_NO_EIGEN)
#define KTSA_RETRIEVAL_HAS_EIGEN 1
#include <Eigen/Core>
#endif
#endif

namespace ktsa::retrieval::detail {

inline void gemm_nt_loop(index_t m, index_t n, index_t k, const float* a, index_t lda,
                         const float* b, index_t ldb, float* c, index_t ldc) {
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
}

#if KTSA_KERNELS_X86
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
/// R rows of A against 32 columns of Bt (k-major, row stride ldt), masked at
/// the column tail: c(r, j) = sum_t a(r, t) bt(t, j), one FMA per t in order.
template <int R>
__attribute__((target("avx512f,fma"))) inline void avx512_tile(index_t k, const float* a,
                                                               index_t lda, const float* bt,
                                                               index_t ldt, float* c, index_t ldc,
                                                               __mmask16 m0, __mmask16 m1) {
  __m512 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (index_t t = 0; t < k; ++t) {
    const __m512 x0 = _mm512_maskz_loadu_ps(m0, bt + t * ldt);
    const __m512 x1 = _mm512_maskz_loadu_ps(m1, bt + t * ldt + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * lda + t]);
      acc0[r] = _mm512_fmadd_ps(ar, x0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(ar, x1, acc1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, m0, acc0[r]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, m1, acc1[r]);
  }
}
/// Few rows of A (m < 4, e.g. one query): dot products along k, four rows of
/// B at a time, no transpose (the transpose would cost as much as the product).
__attribute__((target("avx512f,fma"))) inline void avx512_dots(index_t m, index_t n, index_t k,
                                                               const float* a, index_t lda,
                                                               const float* b, index_t ldb,
                                                               float* c, index_t ldc) {
  for (index_t i = 0; i < m; ++i) {
    const float* ai = a + i * lda;
    index_t j = 0;
    for (; j + 4 <= n; j += 4) {
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      const float* bj = b + j * ldb;
      for (index_t t = 0; t < k; t += 16) {
        const __mmask16 mk = k - t >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (k - t)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(mk, ai + t);
        s0 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(mk, bj + t), s0);
        s1 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(mk, bj + ldb + t), s1);
        s2 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(mk, bj + 2 * ldb + t), s2);
        s3 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(mk, bj + 3 * ldb + t), s3);
      }
      c[i * ldc + j] = _mm512_reduce_add_ps(s0);
      c[i * ldc + j + 1] = _mm512_reduce_add_ps(s1);
      c[i * ldc + j + 2] = _mm512_reduce_add_ps(s2);
      c[i * ldc + j + 3] = _mm512_reduce_add_ps(s3);
    }
    for (; j < n; ++j) {
      __m512 s0 = _mm512_setzero_ps();
      for (index_t t = 0; t < k; t += 16) {
        const __mmask16 mk = k - t >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (k - t)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, ai + t),
                             _mm512_maskz_loadu_ps(mk, b + j * ldb + t), s0);
      }
      c[i * ldc + j] = _mm512_reduce_add_ps(s0);
    }
  }
}
/// bt[t * ldt + j] = b[j * ldb + t]: 16 rows of B per gather, so each store is
/// one contiguous vector (a scalar transpose cost as much as the product).
__attribute__((target("avx512f"))) inline void avx512_transpose(index_t n, index_t k,
                                                                const float* b, index_t ldb,
                                                                float* bt, index_t ldt) {
  index_t j = 0;
  if (ldb <= (index_t{1} << 26)) {  // 15 ldb must fit the 32-bit gather index
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                           _mm512_set1_epi32(static_cast<int>(ldb)));
    for (; j + 16 <= n; j += 16) {
      const float* bj = b + j * ldb;
      for (index_t t = 0; t < k; ++t)
        _mm512_storeu_ps(bt + t * ldt + j, _mm512_i32gather_ps(idx, bj + t, 4));
    }
  }
  for (; j < n; ++j)
    for (index_t t = 0; t < k; ++t) bt[t * ldt + j] = b[j * ldb + t];
}
#pragma GCC diagnostic pop

/// B's block transposed once into thread-local scratch (k x n), then tiles.
inline void gemm_nt_avx512(index_t m, index_t n, index_t k, const float* a, index_t lda,
                           const float* b, index_t ldb, float* c, index_t ldc) {
  if (m < 4) return avx512_dots(m, n, k, a, lda, b, ldb, c, ldc);
  thread_local std::vector<float> bt;
  const index_t ldt = n + 32;  // room for a masked tail load
  bt.resize(static_cast<size_t>(k * ldt));
  avx512_transpose(n, k, b, ldb, bt.data(), ldt);
  for (index_t j = 0; j < n; j += 32) {
    const index_t left = n - j;
    const __mmask16 m0 = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    const __mmask16 m1 = left >= 32
                             ? __mmask16(0xFFFF)
                             : (left <= 16 ? __mmask16(0) : __mmask16((1u << (left - 16)) - 1));
    const float* btj = bt.data() + j;
    index_t i = 0;
    for (; i + 4 <= m; i += 4)
      avx512_tile<4>(k, a + i * lda, lda, btj, ldt, c + i * ldc + j, ldc, m0, m1);
    for (; i < m; ++i) avx512_tile<1>(k, a + i * lda, lda, btj, ldt, c + i * ldc + j, ldc, m0, m1);
  }
}
#endif

/// Name of the provider gemm_nt() uses on this machine ("avx512", "eigen", "loop").
inline const char* gemm_provider() {
#if KTSA_KERNELS_X86
  if (kernels::detail::active_simd_level() == kernels::detail::simd_level::avx512) return "avx512";
#endif
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
#if KTSA_KERNELS_X86
  if (kernels::detail::active_simd_level() == kernels::detail::simd_level::avx512)
    return gemm_nt_avx512(m, n, k, a, lda, b, ldb, c, ldc);
#endif
#ifdef KTSA_RETRIEVAL_HAS_EIGEN
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using stride = Eigen::OuterStride<>;
  Eigen::Map<const row_major, 0, stride> A(a, m, k, stride(lda));
  Eigen::Map<const row_major, 0, stride> B(b, n, k, stride(ldb));
  Eigen::Map<row_major, 0, stride> C(c, m, n, stride(ldc));
  C.noalias() = A * B.transpose();
#else
  gemm_nt_loop(m, n, k, a, lda, b, ldb, c, ldc);
#endif
}

}  // namespace ktsa::retrieval::detail
