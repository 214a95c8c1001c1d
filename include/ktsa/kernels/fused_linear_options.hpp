// ktsa/kernels/fused_linear_options.hpp: options, shapes and output bundles
// of the fused linear head, shared by the host (ktsa/kernels/fused_linear.hpp)
// and CUDA (ktsa/cuda/fused_linear.cuh) backends. Plain structs, no kernels.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ktsa/core/view.hpp"
#include "ktsa/kernels/options.hpp"

namespace ktsa::kernels {

struct fused_linear_options {
  /// ignore_index, shift, sum / mean, check_finite: as for the log-prob kernels.
  logprob_options logprob{};
  /// Logits are divided by this (> 0) after the softcap.
  float temperature = 1.0f;
  /// c > 0: z = c tanh(raw / c) before the temperature; 0: off.
  float softcap = 0.0f;
  /// Byte budget of the per-chunk scratch (logits, gathered hidden, grad rows):
  /// chunk_rows = chunk_bytes / (4 (V + 2 H) + 64). 16 MiB: 126 rows at
  /// V = 32000, H = 512 (docs/fused_linear.md has the measurement behind it).
  std::size_t chunk_bytes = std::size_t{16} << 20;
  /// Rows per chunk when > 0 (overrides chunk_bytes and one_pass_bytes; tests
  /// use odd values).
  index_t chunk_rows = 0;
  /// fused_kto_step only: when a whole sequence (T rows) does not fit in
  /// chunk_bytes but fits in this many bytes, the step's chunks grow to T rows
  /// so it can take the one-pass path (3 GEMMs per chunk instead of 4). 0: never.
  std::size_t one_pass_bytes = std::size_t{64} << 20;
  /// CUDA backend: the byte budget of its chunks (logits, gathered hidden,
  /// grad rows), in place of chunk_bytes. 256 MiB: 862 bf16 rows at
  /// V = 152064, H = 3584, enough rows per GEMM to keep an H100/H200 busy.
  std::size_t device_chunk_bytes = std::size_t{256} << 20;
};

/// Caller-provided scratch; an empty one ({}) makes the call allocate its own.
struct host_workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

/// The sizes a workspace query needs. `weight_is_float` / `grad_weight_is_float`
/// say whether those tensors are fp32 (a narrower dtype needs a V x H fp32 copy).
struct fused_linear_shape {
  index_t B = 0, T = 0, H = 0, V = 0;
  bool weight_is_float = true;
  bool grad_weight_is_float = true;
};

/// Outputs of fused_linear_forward: sequence_logp [B] is required; the rest
/// ([B], [B, T]) are optional ({} skips them). Masked positions get 0.
template <class S>
struct fused_linear_forward_outputs {
  vector_view<S> sequence_logp;
  vector_view<std::int64_t> token_count{};
  matrix_view<float> token_logp{};
  matrix_view<float> lse{};  ///< of z; pass it to fused_linear_backward
  matrix_view<float> entropy{};
};

/// Gradient outputs: grad_hidden [B, T, H] and grad_weight [V, H] are
/// optional ({} skips their GEMM); grad_bias [V] is float, optional.
template <class GH, class GW>
struct fused_linear_grads {
  cube_view<GH> grad_hidden{};
  matrix_view<GW> grad_weight{};
  vector_view<float> grad_bias{};
};

}  // namespace ktsa::kernels
