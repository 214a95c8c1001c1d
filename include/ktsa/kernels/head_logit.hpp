// ktsa/kernels/head_logit.hpp: the per-element logit transform of the fused
// linear head (temperature and softcap), written once for host and CUDA.
//
//   z = softcap(raw) / tau,  softcap(x) = c tanh(x / c)  (c = 0: off, z = raw / tau)
//
// Softcap comes first, then the temperature: Gemma-2 caps inside the model and
// TRL divides the model's logits by its temperature.
#pragma once

#include <cmath>

#include "ktsa/config.hpp"

namespace ktsa::kernels {

/// z from the raw logit x . w + bias.
KTSA_HOST_DEVICE inline float head_logit(float raw, float inv_tau, float softcap) {
  return softcap > 0.0f ? softcap * tanhf(raw / softcap) * inv_tau : raw * inv_tau;
}

/// dz / draw, from z itself (so the raw logit need not be kept):
/// (1 - tanh^2) / tau with tanh = z tau / c, or 1 / tau without softcap.
KTSA_HOST_DEVICE inline float head_logit_slope(float z, float tau, float softcap) {
  if (softcap > 0.0f) {
    const float t = z * tau / softcap;
    return (1.0f - t * t) / tau;
  }
  return 1.0f / tau;
}

}  // namespace ktsa::kernels
