// ktsa/kernels/detail/rows.hpp: the per-row loops of the log-prob and KL
// kernels: portable scalar code and AVX2 / AVX-512 (x86-64, chosen at run time).
//
// A "row" is the V logits of one token position (vocabulary stride 1). Every
// kernel reads a row in blocks of kBlock elements: one pass finds the block's
// maximum, a second pass over the same block (now in L1) sums exp(x - max).
// The running maximum and the sums are rescaled per block, so each row is read
// from memory exactly once and needs one exp per element. Block partial sums
// are formed in fp32 lanes and added into fp64 row sums in a fixed order, so a
// row's result depends only on the row (never on the thread count).
//
// Non-finite data: the block maximum ignores NaN, but exp(NaN) propagates into
// the row sum; a -inf running maximum is replaced by +inf as the shift, so
// exp(x - shift) is (about) 0 for -inf and NaN for NaN. The caller classifies
// a row whose maximum is -inf or whose sums are not finite by rescanning it
// (a rare path).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "ktsa/core/half.hpp"
#include "ktsa/core/math.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/kernels/detail/simd.hpp"
#include "ktsa/kernels/elementwise.hpp"

namespace ktsa::kernels::detail {

/// Elements per block: 8 KiB of f32, so a block stays in L1 between its two passes.
inline constexpr index_t kBlock = 2048;

inline constexpr float kInf = std::numeric_limits<float>::infinity();
/// FLT_MIN: in the KL sums and gradient a probability below it counts as 0.
inline constexpr float kMinNormal = std::numeric_limits<float>::min();

/// log sum exp = max + log(sum); sum is relative to max.
struct lse_state {
  float max = -kInf;
  double sum = 0;
};

/// One row of KL(softmax(a) || softmax(b)) with c_a = a - max_a, c_b = b - max_b:
/// w = sum e^c_a (c_a - c_b), u = sum e^c_a c_a (for the entropy), so that
/// KL = w / sum_a - log(sum_a / sum_b) and H = log(sum_a) - u / sum_a. The
/// centred differences make KL exactly 0 when b is a shifted copy of a.
struct kl_state {
  float max_a = -kInf, max_b = -kInf;
  double sum_a = 0, sum_b = 0, w = 0, u = 0;
};

/// The shift used for exp(x - shift): +inf while every element seen is -inf.
inline float exp_shift(float running_max) {
  return running_max == -kInf ? kInf : running_max;
}

// ---------------------------------------------------------------- scalar

template <class T>
float block_max_scalar(const T* x, index_t n) {
  float m = -kInf;
  for (index_t i = 0; i < n; ++i) {
    const float v = to_float(x[i]);
    m = v > m ? v : m;  // NaN never wins
  }
  return m;
}

template <class T>
lse_state row_lse_scalar(const T* x, index_t n) {
  lse_state st;
  for (index_t b0 = 0; b0 < n; b0 += kBlock) {
    const index_t len = std::min(kBlock, n - b0);
    const float bm = block_max_scalar(x + b0, len);
    if (bm > st.max) {
      st.sum *= std::exp(static_cast<double>(st.max) - static_cast<double>(bm));
      st.max = bm;
    }
    const float shift = exp_shift(st.max);
    double s = 0;
    for (index_t i = 0; i < len; ++i) s += math::exp(to_float(x[b0 + i]) - shift);
    st.sum += s;
  }
  return st;
}

/// out[j] = scale * (0 - exp((x[j] - m) - ls)) for every j, lse = m + ls (the
/// label entry is fixed by the caller). m = lse, ls = 0 uses a saved lse as is.
template <class T, class G>
void row_grad_scalar(const T* x, index_t n, float m, float ls, float scale, G* out) {
  for (index_t i = 0; i < n; ++i)
    out[i] = from_float<G>(logprob_grad_element(to_float(x[i]), m, ls, false, scale));
}

/// Moves the running maxima to include a block's maxima, rescaling the sums.
inline void rescale_kl(kl_state& st, float bma, float bmb) {
  const float ma = bma > st.max_a ? bma : st.max_a, mb = bmb > st.max_b ? bmb : st.max_b;
  if (st.max_a != -kInf) {
    // c_a and c_b shift by da and db: w gains sum_a (da - db), u gains sum_a da.
    // With a finite max_a and max_b still -inf, db = -inf makes w +inf: q_j = 0
    // where p_j > 0, so KL is +inf.
    const double da = static_cast<double>(st.max_a) - static_cast<double>(ma);
    const double db =
        mb == st.max_b ? 0.0 : static_cast<double>(st.max_b) - static_cast<double>(mb);
    const double r = std::exp(da);
    if (ma != st.max_a || mb != st.max_b) st.w = r * (st.w + st.sum_a * (da - db));
    st.u = r * (st.u + st.sum_a * da);
    st.sum_a *= r;
  }
  if (mb != st.max_b) st.sum_b *= std::exp(static_cast<double>(st.max_b) - static_cast<double>(mb));
  st.max_a = ma;
  st.max_b = mb;
}

template <class TA, class TB, bool Entropy>
kl_state row_kl_scalar(const TA* a, const TB* b, index_t n) {
  kl_state st;
  for (index_t b0 = 0; b0 < n; b0 += kBlock) {
    const index_t len = std::min(kBlock, n - b0);
    const float bma = block_max_scalar(a + b0, len), bmb = block_max_scalar(b + b0, len);
    rescale_kl(st, bma, bmb);
    const float sha = exp_shift(st.max_a), shb = exp_shift(st.max_b);
    double sa = 0, sb = 0, w = 0, u = 0;
    for (index_t i = b0; i < b0 + len; ++i) {
      const float av = to_float(a[i]), bv = to_float(b[i]);
      const float da = av - sha, db = bv - shb;
      const float ea = math::exp(da);
      sa += ea;
      sb += math::exp(db);
      // p_j = 0 contributes nothing (0 * inf would be NaN): a_j = -inf, or a
      // finite mask like -FLT_MAX whose da - db can overflow. Below FLT_MIN
      // counts as 0 on every level (AVX2's exp flushes there, and a denormal
      // times log q = -inf would make KL +inf on one level only). NaN is kept.
      if (!(ea < kMinNormal)) {
        // The differences in fp64: a logit gap beyond FLT_MAX (b_j = -3e38
        // under max_b = 3e38) is finite there. The vector levels come here
        // for a row whose fp32 sums overflow (finish_kl_row).
        const double dda = static_cast<double>(av) - static_cast<double>(sha);
        const double ddb = static_cast<double>(bv) - static_cast<double>(shb);
        w += static_cast<double>(ea) * (dda - ddb);
        if (Entropy) u += static_cast<double>(ea) * dda;
      }
    }
    st.sum_a += sa;
    st.sum_b += sb;
    st.w += w;
    st.u += u;
  }
  return st;
}

/// lse_a = m_a + ls_a, lse_b = m_b + ls_b (see row_grad_scalar).
template <class TA, class TB, class GA, class GB>
void row_kl_grad_scalar(const TA* a, const TB* b, index_t n, float m_a, float ls_a, float m_b,
                        float ls_b, float kl, float scale, GA* ga, GB* gb) {
  for (index_t i = 0; i < n; ++i) {
    const float av = to_float(a[i]), bv = to_float(b[i]);
    // Both outputs from values read before either is written (in-place safe).
    const float g_a = kl_grad_a_element(av, bv, m_a, ls_a, m_b, ls_b, kl, scale);
    if (gb != nullptr)
      gb[i] = from_float<GB>(kl_grad_b_element(av, bv, m_a, ls_a, m_b, ls_b, scale));
    ga[i] = from_float<GA>(g_a);
  }
}

template <class G>
void row_scale_scalar(G* g, index_t n, float s) {
  for (index_t i = 0; i < n; ++i) g[i] = from_float<G>(to_float(g[i]) * s);
}

/// Index of the first NaN or +inf, or -1.
template <class T>
index_t first_nonfinite_scalar(const T* x, index_t n, index_t from = 0) {
  for (index_t i = from; i < n; ++i) {
    const float v = to_float(x[i]);
    if (v != v || v == kInf) return i;
  }
  return -1;
}

// ---------------------------------------------------------------- vector ISAs
//
// exp: 2^t with t = x log2(e), t = n + f (n = round(t), |f| <= 1/2), 2^f from a
// degree-5 polynomial with constant term exactly 1, so exp(0) = 1 (relative
// error below 2e-7 in fp32; coefficients fitted for this library) and 2^n added into the exponent
// bits. Both AVX2 exps return exactly 0 below ln(FLT_MIN) (t < -126, so -inf and finite masks
// such as -FLT_MAX give 0: a ~1e-38 left there, times a ~3e38 logit difference in the KL sum,
// was not small); results that would be denormal are flushed to 0, where the scalar and
// AVX-512 paths keep them (an absolute difference below 2^-126 per probability). NaN propagates.

#if KTSA_KERNELS_X86

inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kExpC0 = 1.0f, kExpC1 = 0.6931470036506653f, kExpC2 = 0.24022242426872253f,
                       kExpC3 = 0.05550733581185341f, kExpC4 = 0.009671512991189957f,
                       kExpC5 = 0.001326472731307149f;

namespace avx2 {
#define KTSA_SIMD_TARGET __attribute__((target("avx2,fma,f16c")))
using vf = __m256;
inline constexpr int kW = 8;

KTSA_SIMD_TARGET inline vf vset1(float v) {
  return _mm256_set1_ps(v);
}
KTSA_SIMD_TARGET inline vf vzero() {
  return _mm256_setzero_ps();
}
KTSA_SIMD_TARGET inline vf vadd(vf a, vf b) {
  return _mm256_add_ps(a, b);
}
KTSA_SIMD_TARGET inline vf vsub(vf a, vf b) {
  return _mm256_sub_ps(a, b);
}
KTSA_SIMD_TARGET inline vf vmul(vf a, vf b) {
  return _mm256_mul_ps(a, b);
}
/// max(x, m); m when x is NaN (maxps returns its second operand then).
KTSA_SIMD_TARGET inline vf vmax_keep(vf x, vf m) {
  return _mm256_max_ps(x, m);
}

KTSA_SIMD_TARGET inline vf vload(const float* p) {
  return _mm256_loadu_ps(p);
}
KTSA_SIMD_TARGET inline vf vload(const bf16* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
KTSA_SIMD_TARGET inline vf vload(const f16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
KTSA_SIMD_TARGET inline void vstore(float* p, vf v) {
  _mm256_storeu_ps(p, v);
}
/// Round to nearest even, NaN stays a quiet NaN: the bits of bf16_from_float.
KTSA_SIMD_TARGET inline void vstore(bf16* p, vf v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  __m256i r =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i nan_bits = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, nan_bits, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}
/// F16C rounds to nearest even like f16_from_float.
KTSA_SIMD_TARGET inline void vstore(f16* p, vf v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, 0));
}
/// Non-temporal stores; p is aligned to the store's width.
KTSA_SIMD_TARGET inline void vstream(float* p, vf v) {
  _mm256_stream_ps(p, v);
}
KTSA_SIMD_TARGET inline void vstream(bf16* p, vf v) {
  alignas(16) bf16 tmp[8];
  vstore(tmp, v);
  _mm_stream_si128(reinterpret_cast<__m128i*>(p),
                   _mm_load_si128(reinterpret_cast<const __m128i*>(tmp)));
}
KTSA_SIMD_TARGET inline void vstream(f16* p, vf v) {
  _mm_stream_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, 0));
}

KTSA_SIMD_TARGET inline vf exp2_core(vf t) {
  const vf n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const vf f = _mm256_sub_ps(t, n);
  vf p = _mm256_fmadd_ps(_mm256_set1_ps(kExpC5), f, _mm256_set1_ps(kExpC4));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExpC3));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExpC2));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExpC1));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExpC0));
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}
/// Arguments are <= 0 here (x - running max): no upper clamp needed.
KTSA_SIMD_TARGET inline vf vexp_fast(vf x) {
  // max(-126, t) keeps a NaN t (second operand); the mask zeroes t < -126 and keeps NaN.
  const vf t = _mm256_mul_ps(x, _mm256_set1_ps(kLog2e));
  return _mm256_and_ps(exp2_core(_mm256_max_ps(_mm256_set1_ps(-126.0f), t)),
                       _mm256_cmp_ps(t, _mm256_set1_ps(-126.0f), _CMP_NLT_UQ));
}
KTSA_SIMD_TARGET inline vf vexp_exact(vf x) {
  const vf t = _mm256_mul_ps(x, _mm256_set1_ps(kLog2e));
  const vf tc = _mm256_max_ps(_mm256_set1_ps(-126.0f), _mm256_min_ps(_mm256_set1_ps(127.0f), t));
  return _mm256_and_ps(exp2_core(tc), _mm256_cmp_ps(t, _mm256_set1_ps(-126.0f), _CMP_NLT_UQ));
}
/// v where p >= FLT_MIN (NaN kept), else 0: a zero (or denormal) probability
/// contributes nothing, the same on every level.
KTSA_SIMD_TARGET inline vf vkeep_nz(vf p, vf v) {
  return _mm256_and_ps(_mm256_cmp_ps(p, _mm256_set1_ps(kMinNormal), _CMP_NLT_UQ), v);
}
KTSA_SIMD_TARGET inline float vhmax(vf v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
/// Sum of the lanes in fp64, in a fixed order.
KTSA_SIMD_TARGET inline double vhsum(vf v) {
  const __m256d d = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                  _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
  return _mm_cvtsd_f64(s) + _mm_cvtsd_f64(_mm_unpackhi_pd(s, s));
}
/// Any lane NaN or +inf.
KTSA_SIMD_TARGET inline bool vany_bad(vf v) {
  const vf bad = _mm256_or_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q),
                              _mm256_cmp_ps(v, _mm256_set1_ps(kInf), _CMP_EQ_OQ));
  return _mm256_movemask_ps(bad) != 0;
}

#include "ktsa/kernels/detail/rows_simd.inc"
#undef KTSA_SIMD_TARGET
}  // namespace avx2

namespace avx512 {
#define KTSA_SIMD_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))
using vf = __m512;
inline constexpr int kW = 16;

KTSA_SIMD_TARGET inline vf vset1(float v) {
  return _mm512_set1_ps(v);
}
KTSA_SIMD_TARGET inline vf vzero() {
  return _mm512_setzero_ps();
}
KTSA_SIMD_TARGET inline vf vadd(vf a, vf b) {
  return _mm512_add_ps(a, b);
}
KTSA_SIMD_TARGET inline vf vsub(vf a, vf b) {
  return _mm512_sub_ps(a, b);
}
KTSA_SIMD_TARGET inline vf vmul(vf a, vf b) {
  return _mm512_mul_ps(a, b);
}
/// max(x, m); m when x is NaN (vmaxps returns its second operand then).
KTSA_SIMD_TARGET inline vf vmax_keep(vf x, vf m) {
  return _mm512_max_ps(x, m);
}

KTSA_SIMD_TARGET inline vf vload(const float* p) {
  return _mm512_loadu_ps(p);
}
KTSA_SIMD_TARGET inline vf vload(const bf16* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
KTSA_SIMD_TARGET inline vf vload(const f16* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
KTSA_SIMD_TARGET inline void vstore(float* p, vf v) {
  _mm512_storeu_ps(p, v);
}
KTSA_SIMD_TARGET inline void vstore(bf16* p, vf v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __m512i nan_bits = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), nan_bits);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
}
KTSA_SIMD_TARGET inline void vstore(f16* p, vf v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, 0));
}
KTSA_SIMD_TARGET inline void vstream(float* p, vf v) {
  _mm512_stream_ps(p, v);
}
KTSA_SIMD_TARGET inline void vstream(bf16* p, vf v) {
  alignas(32) bf16 tmp[16];
  vstore(tmp, v);
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p),
                      _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp)));
}
KTSA_SIMD_TARGET inline void vstream(f16* p, vf v) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, 0));
}

/// AVX-512: 2^n via vscalefps, which also underflows gracefully: with t
/// clamped at -150, exp(-inf) rounds to exactly 0 and no mask is needed.
KTSA_SIMD_TARGET inline vf vexp_exact(vf x) {
  const vf t = _mm512_max_ps(
      _mm512_set1_ps(-150.0f),
      _mm512_min_ps(_mm512_set1_ps(127.0f), _mm512_mul_ps(x, _mm512_set1_ps(kLog2e))));
  const vf n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const vf f = _mm512_sub_ps(t, n);
  vf p = _mm512_fmadd_ps(_mm512_set1_ps(kExpC5), f, _mm512_set1_ps(kExpC4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExpC3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExpC2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExpC1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExpC0));
  return _mm512_scalef_ps(p, n);
}
/// Arguments are <= 0 here (x - running max): no upper clamp needed.
KTSA_SIMD_TARGET inline vf vexp_fast(vf x) {
  const vf t = _mm512_max_ps(_mm512_set1_ps(-150.0f), _mm512_mul_ps(x, _mm512_set1_ps(kLog2e)));
  const vf n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const vf f = _mm512_sub_ps(t, n);
  vf p = _mm512_fmadd_ps(_mm512_set1_ps(kExpC5), f, _mm512_set1_ps(kExpC4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExpC3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExpC2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExpC1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExpC0));
  return _mm512_scalef_ps(p, n);
}
KTSA_SIMD_TARGET inline vf vkeep_nz(vf p, vf v) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, _mm512_set1_ps(kMinNormal), _CMP_NLT_UQ), v);
}
KTSA_SIMD_TARGET inline float vhmax(vf v) {
  const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  return avx2::vhmax(h);
}
KTSA_SIMD_TARGET inline double vhsum(vf v) {
  const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  const __m512d hi =
      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  const __m512d d = _mm512_add_pd(lo, hi);
  const __m256d q = _mm256_add_pd(_mm512_castpd512_pd256(d), _mm512_extractf64x4_pd(d, 1));
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd(q, 1));
  return _mm_cvtsd_f64(s) + _mm_cvtsd_f64(_mm_unpackhi_pd(s, s));
}
KTSA_SIMD_TARGET inline bool vany_bad(vf v) {
  return (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) |
          _mm512_cmp_ps_mask(v, _mm512_set1_ps(kInf), _CMP_EQ_OQ)) != 0;
}

#include "ktsa/kernels/detail/rows_simd.inc"
#undef KTSA_SIMD_TARGET
}  // namespace avx512

#endif  // KTSA_KERNELS_X86

// ---------------------------------------------------------------- dispatch

#if KTSA_KERNELS_X86
#define KTSA_DISPATCH(...)                                       \
  do {                                                           \
    if (level == simd_level::avx512) return avx512::__VA_ARGS__; \
    if (level == simd_level::avx2) return avx2::__VA_ARGS__;     \
  } while (0)
#else
#define KTSA_DISPATCH(...) (void)level
#endif

template <class T>
lse_state row_lse(simd_level level, const T* x, index_t n) {
  KTSA_DISPATCH(row_lse(x, n));
  return row_lse_scalar(x, n);
}

/// Orders the non-temporal stores of a row before anything that follows.
inline void stream_fence() {
#if KTSA_KERNELS_X86
  _mm_sfence();
#endif
}

/// out = scale * (0 - exp((x - m) - ls)): lse = m + ls (m = lse, ls = 0 for a saved lse).
template <class T, class G>
void row_grad(simd_level level, const T* x, index_t n, float m, float ls, float scale, G* out,
              bool stream = false) {
  if (stream) {
    KTSA_DISPATCH(template row_grad<true>(x, n, m, ls, scale, out));
  } else {
    KTSA_DISPATCH(template row_grad<false>(x, n, m, ls, scale, out));
  }
  row_grad_scalar(x, n, m, ls, scale, out);
}

/// Vector levels only: row_lse keeping exp values for row_grad_from_e.
template <class T>
lse_state row_lse_keep(simd_level level, const T* x, index_t n, float* e, float* shifts) {
  KTSA_DISPATCH(row_lse_keep(x, n, e, shifts));
  (void)e;
  (void)shifts;
  return row_lse_scalar(x, n);
}

/// lse = row_max + log_sum, both in fp64 (the forward's own numbers).
template <class G>
void row_grad_from_e(simd_level level, const float* e, const float* shifts, index_t n,
                     double row_max, double log_sum, float scale, G* out, bool stream = false) {
  if (stream) {
    KTSA_DISPATCH(template row_grad_from_e<true>(e, shifts, n, row_max, log_sum, scale, out));
  } else {
    KTSA_DISPATCH(template row_grad_from_e<false>(e, shifts, n, row_max, log_sum, scale, out));
  }
  (void)e, (void)shifts, (void)n, (void)row_max, (void)log_sum, (void)scale, (void)out;
}

template <bool Entropy, class TA, class TB>
kl_state row_kl(simd_level level, const TA* a, const TB* b, index_t n) {
  KTSA_DISPATCH(template row_kl<TA, TB, Entropy>(a, b, n));
  return row_kl_scalar<TA, TB, Entropy>(a, b, n);
}

template <class TA, class TB, class GA, class GB>
void row_kl_grad(simd_level level, const TA* a, const TB* b, index_t n, float m_a, float ls_a,
                 float m_b, float ls_b, float kl, float scale, GA* ga, GB* gb) {
  KTSA_DISPATCH(row_kl_grad(a, b, n, m_a, ls_a, m_b, ls_b, kl, scale, ga, gb));
  row_kl_grad_scalar(a, b, n, m_a, ls_a, m_b, ls_b, kl, scale, ga, gb);
}

template <class G>
void row_scale(simd_level level, G* g, index_t n, float s) {
  KTSA_DISPATCH(row_scale(g, n, s));
  row_scale_scalar(g, n, s);
}

template <class T>
index_t first_nonfinite(simd_level level, const T* x, index_t n) {
  KTSA_DISPATCH(first_nonfinite(x, n));
  return first_nonfinite_scalar(x, n);
}

#undef KTSA_DISPATCH

/// Zero bits are +0 in f32, f16 and bf16 alike.
template <class G>
void row_zero(G* out, index_t n) {
  std::memset(static_cast<void*>(out), 0, static_cast<size_t>(n) * sizeof(G));
}

}  // namespace ktsa::kernels::detail
