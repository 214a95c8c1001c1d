// ktsa/kernels/elementwise.hpp: per-element formulas of the log-prob and KL
// kernels, written once for host loops and CUDA kernels.
//
// Notation for one row (one token position) of V logits x_j:
//   lse = log sum_j exp(x_j), log p_j = x_j - lse, p_j = exp(log p_j).
#pragma once

#include "ktsa/config.hpp"
#include "ktsa/core/math.hpp"

namespace ktsa::kernels {

/// d log p_label / d x_j = onehot(j == label) - p_j, times the row's upstream scale.
/// The target entry is formed in fp32 before any rounding to the output dtype.
KTSA_HOST_DEVICE inline float logprob_grad_element(float x, float lse, bool is_label, float scale) {
  const float p = math::exp(x - lse);
  return scale * ((is_label ? 1.0f : 0.0f) - p);
}

/// The same with lse split as m + log_sum (m = the row maximum): p = exp((x - m)
/// - log_sum). x - m keeps the digits that x - lse loses when |lse| is large
/// (at lse = 1e6 one float ulp is 0.06), so the gradient is as accurate as the
/// forward's log-prob. With log_sum = 0 and m = lse it is logprob_grad_element.
KTSA_HOST_DEVICE inline float logprob_grad_element(float x, float m, float log_sum, bool is_label,
                                                   float scale) {
  const float p = math::exp((x - m) - log_sum);
  return scale * ((is_label ? 1.0f : 0.0f) - p);
}

/// One term of KL(p || q) = sum_j p_j (log p_j - log q_j), p = softmax(a), q = softmax(b).
/// A zero-probability p_j (a_j = -inf) contributes 0, never NaN.
KTSA_HOST_DEVICE inline float kl_term(float a, float b, float lse_a, float lse_b) {
  const float log_p = a - lse_a;
  if (log_p == -math::infinity<float>()) return 0.0f;
  return math::exp(log_p) * (log_p - (b - lse_b));
}

/// d KL(p || q) / d a_j = p_j (log p_j - log q_j - KL), times the row's upstream
/// scale, with lse_a = m_a + ls_a and lse_b = m_b + ls_b (see logprob_grad_element).
/// A p_j that is 0 (a_j = -inf, or a finite mask such as -FLT_MAX) or below
/// FLT_MIN contributes 0, never 0 * inf = NaN (the same on every host SIMD
/// level, see docs/kernels.md); a NaN p_j stays NaN.
KTSA_HOST_DEVICE inline float kl_grad_a_element(float a, float b, float m_a, float ls_a, float m_b,
                                                float ls_b, float row_kl, float scale) {
  const float log_p = (a - m_a) - ls_a;
  const float p = math::exp(log_p);
  if (p < 1.17549435e-38f) return 0.0f;  // FLT_MIN; false for NaN
  return scale * p * (log_p - ((b - m_b) - ls_b) - row_kl);
}
KTSA_HOST_DEVICE inline float kl_grad_a_element(float a, float b, float lse_a, float lse_b,
                                                float row_kl, float scale) {
  return kl_grad_a_element(a, b, lse_a, 0.0f, lse_b, 0.0f, row_kl, scale);
}

/// d KL(p || q) / d b_j = q_j - p_j, times the row's upstream scale.
KTSA_HOST_DEVICE inline float kl_grad_b_element(float a, float b, float m_a, float ls_a, float m_b,
                                                float ls_b, float scale) {
  return scale * (math::exp((b - m_b) - ls_b) - math::exp((a - m_a) - ls_a));
}
KTSA_HOST_DEVICE inline float kl_grad_b_element(float a, float b, float lse_a, float lse_b,
                                                float scale) {
  return kl_grad_b_element(a, b, lse_a, 0.0f, lse_b, 0.0f, scale);
}

/// One term of the entropy H(p) = -sum_j p_j log p_j.
KTSA_HOST_DEVICE inline float entropy_term(float x, float lse) {
  const float log_p = x - lse;
  if (log_p == -math::infinity<float>()) return 0.0f;
  return -math::exp(log_p) * log_p;
}

}  // namespace ktsa::kernels
