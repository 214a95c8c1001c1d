// ktsa/kernels/detail/fused_chunks.hpp: the chunk machinery of the host fused
// linear head (ktsa/kernels/fused_linear.hpp, fused_kto.hpp): argument checks,
// the gathered rows, workspace carving, GEMM 1 with the head transform, the
// backward's GEMMs 2 and 3. See fused_linear.hpp for the conventions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/half.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/kernels/detail/checks.hpp"
#include "ktsa/kernels/fused_linear_options.hpp"
#include "ktsa/kernels/gemm/default.hpp"
#include "ktsa/kernels/head_logit.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/options.hpp"
#include "ktsa/kernels/token_kl.hpp"

namespace ktsa::kernels {

namespace detail {

inline constexpr std::size_t kWsAlign = 64;
inline std::size_t ws_round(std::size_t n) {
  return (n + kWsAlign - 1) / kWsAlign * kWsAlign;
}

inline index_t fused_chunk_rows(const fused_linear_shape& s, const fused_linear_options& o) {
  const index_t n = std::max<index_t>(1, s.B * s.T);
  if (o.chunk_rows > 0) return std::min(o.chunk_rows, n);
  const std::size_t per_row = 4 * static_cast<std::size_t>(s.V + 2 * s.H) + 64;
  const index_t rows = static_cast<index_t>(std::max<std::size_t>(1, o.chunk_bytes / per_row));
  return std::min(rows, n);
}

/// The chunk rows of fused_kto_step: fused_chunk_rows, or T when a sequence
/// does not fit in that but T rows fit in one_pass_bytes.
inline index_t step_chunk_rows(const fused_linear_shape& s, const fused_linear_options& o) {
  const index_t base = fused_chunk_rows(s, o);
  if (o.chunk_rows > 0 || s.T <= base) return base;
  const std::size_t per_row = 4 * static_cast<std::size_t>(s.V + 2 * s.H) + 64;
  return per_row * static_cast<std::size_t>(s.T) <= o.one_pass_bytes ? s.T : base;
}

/// Scratch bytes: per-chunk buffers plus the fixed fp32 copies.
inline std::size_t fused_ws_bytes(const fused_linear_shape& s, const fused_linear_options& o,
                                  bool backward, bool step = false) {
  const auto rows = static_cast<std::size_t>(step ? step_chunk_rows(s, o) : fused_chunk_rows(s, o));
  const auto V = static_cast<std::size_t>(s.V), H = static_cast<std::size_t>(s.H);
  std::size_t b = ws_round(rows * V * 4) + 2 * ws_round(rows * H * 4) + ws_round(rows * 8) * 4;
  if (!s.weight_is_float) b += ws_round(V * H * 4);
  if (backward && !s.grad_weight_is_float) b += ws_round(V * H * 4);
  return b;
}

/// Hands out aligned pieces of a host_workspace.
struct ws_carver {
  unsigned char* p;
  std::size_t left;
  template <class T>
  T* take(std::size_t n) {
    const std::size_t bytes = ws_round(n * sizeof(T));
    if (bytes > left)
      throw invalid_argument(concat("ktsa: argument 'workspace' is too small (", left,
                                    " bytes left, ", bytes,
                                    " needed): query fused_linear_*_workspace_bytes"));
    T* out = reinterpret_cast<T*>(p);
    p += bytes;
    left -= bytes;
    return out;
  }
};

/// The validated inputs, the gathered rows and the fp32 weight of one call.
template <class HT, class WT, class I>
struct fused_problem {
  cube_view<const HT> hidden;
  matrix_view<const WT> weight;
  vector_view<const float> bias;
  matrix_view<const I> labels;
  fused_linear_options o;
  index_t B, T, H, V, rows_per_chunk;
  targets tg;                      ///< label per position (-1 masked), counts
  std::vector<index_t> row_pos;    ///< position b * T + t of each gathered row
  std::vector<index_t> seq_first;  ///< first gathered row of each sequence, [B + 1]
  const float* w = nullptr;        ///< fp32 weight, row stride ldw
  index_t ldw = 0;
};

template <class HT, class WT, class I>
fused_problem<HT, WT, I> make_problem(cube_view<const HT> hidden, matrix_view<const WT> weight,
                                      vector_view<const float> bias, matrix_view<const I> labels,
                                      const fused_linear_options& o) {
  static_assert(is_logit_type_v<HT>, "hidden is float, ktsa::f16 or ktsa::bf16");
  static_assert(is_logit_type_v<WT>, "weight is float, ktsa::f16 or ktsa::bf16");
  static_assert(is_label_type_v<I>, "labels are int32 or int64");
  fused_problem<HT, WT, I> p{hidden, weight, bias, labels, o, 0, 0, 0, 0, 0, {}, {}, {}};
  check_logits(hidden, "hidden");  // [B >= 1, T >= 0, H >= 1], H contiguous
  p.B = hidden.extent(0);
  p.T = hidden.extent(1);
  p.H = hidden.extent(2);
  p.V = weight.extent(0);
  if (weight.data() == nullptr)
    ktsa::detail::fail_argument("weight", "an empty view", "is required");
  if (p.V < 1) throw shape_error(concat("ktsa: 'weight' has V = ", p.V, " rows: must be >= 1"));
  ktsa::detail::require_extent(weight, 1, p.H, "weight");
  if (p.H > 1 && weight.stride(1) != 1)
    throw invalid_argument(concat("ktsa: 'weight' has hidden stride ", weight.stride(1),
                                  ": the hidden dimension must be contiguous (stride 1)"));
  if (p.V > 1 && weight.stride(0) < p.H)
    throw invalid_argument(
        concat("ktsa: 'weight' has row stride ", weight.stride(0), ": must be >= H = ", p.H));
  if (bias.data() != nullptr) require_shape(bias, {p.V}, "bias");
  require_shape(labels, {p.B, p.T}, "labels");
  ktsa::detail::require(std::isfinite(o.temperature) && o.temperature > 0, "temperature",
                        o.temperature, "must be finite and > 0");
  ktsa::detail::require(std::isfinite(o.softcap) && o.softcap >= 0, "softcap", o.softcap,
                        "must be finite and >= 0 (0: off)");
  ktsa::detail::require(o.chunk_rows >= 0, "chunk_rows", o.chunk_rows,
                        "must be >= 0 (0: from chunk_bytes)");
  ktsa::detail::require(o.chunk_bytes > 0 || o.chunk_rows > 0, "chunk_bytes", o.chunk_bytes,
                        "must be > 0");
  p.tg = prepare_targets(labels, p.B, p.T, p.V, o.logprob, true);
  p.seq_first.assign(static_cast<size_t>(p.B + 1), 0);
  for (index_t b = 0; b < p.B; ++b) {
    p.seq_first[static_cast<size_t>(b)] = static_cast<index_t>(p.row_pos.size());
    for (index_t t = 0; t < p.T; ++t)
      if (p.tg.label[static_cast<size_t>(b * p.T + t)] >= 0) p.row_pos.push_back(b * p.T + t);
  }
  p.seq_first[static_cast<size_t>(p.B)] = static_cast<index_t>(p.row_pos.size());
  return p;
}

template <class HT, class WT, class I>
fused_linear_shape shape_of(const fused_problem<HT, WT, I>& p, bool grad_weight_is_float) {
  return {p.B, p.T, p.H, p.V, std::is_same_v<WT, float>, grad_weight_is_float};
}

/// The fp32 weight: the caller's when it is float, else widened into `c`.
template <class HT, class WT, class I>
void bind_weight(fused_problem<HT, WT, I>& p, ws_carver& c) {
  if constexpr (std::is_same_v<WT, float>) {
    p.w = p.weight.data();
    p.ldw = p.V > 1 ? p.weight.stride(0) : p.H;
  } else {
    float* w = c.take<float>(static_cast<size_t>(p.V * p.H));
    for (index_t j = 0; j < p.V; ++j)
      for (index_t k = 0; k < p.H; ++k) w[j * p.H + k] = to_float(p.weight(j, k));
    p.w = w;
    p.ldw = p.H;
  }
}

/// Per-chunk buffers.
struct chunk_buffers {
  float* logits;      ///< [rows, V]
  float* x;           ///< [rows, H] gathered hidden
  float* gx;          ///< [rows, H] grad_hidden rows
  std::int64_t* lab;  ///< [rows] gathered labels
  double* row_logp;   ///< [rows]
  float* row_lse;     ///< [rows]
  float* row_scale;   ///< [rows]
};

inline chunk_buffers take_chunk_buffers(ws_carver& c, index_t rows, index_t V, index_t H) {
  chunk_buffers b{};
  b.logits = c.take<float>(static_cast<size_t>(rows * V));
  b.x = c.take<float>(static_cast<size_t>(rows * H));
  b.gx = c.take<float>(static_cast<size_t>(rows * H));
  b.lab = c.take<std::int64_t>(static_cast<size_t>(rows));
  b.row_logp = c.take<double>(static_cast<size_t>(rows));
  b.row_lse = c.take<float>(static_cast<size_t>(rows));
  b.row_scale = c.take<float>(static_cast<size_t>(rows));
  return b;
}

/// Gathers rows [r0, r0 + n) into buf.x / buf.lab and computes their logits z
/// into buf.logits (GEMM 1: X W^T, the bias and the head transform).
template <class HT, class WT, class I, class Gemm>
void chunk_logits(const exec::host& ex, const fused_problem<HT, WT, I>& p, index_t r0, index_t n,
                  const chunk_buffers& buf, const Gemm& gemm) {
  const index_t H = p.H, V = p.V;
  for (index_t i = 0; i < n; ++i) {
    const index_t pos = p.row_pos[static_cast<size_t>(r0 + i)], b = pos / p.T, t = pos % p.T;
    const HT* h = p.hidden.data() + b * p.hidden.stride(0) + t * p.hidden.stride(1);
    float* x = buf.x + i * H;
    for (index_t k = 0; k < H; ++k) x[k] = to_float(h[k]);
    buf.lab[i] = p.tg.label[static_cast<size_t>(pos)];
  }
  const float inv_tau = 1.0f / p.o.temperature, cap = p.o.softcap;
  const bool has_bias = p.bias.data() != nullptr;
  // Without softcap the transform is linear: fold 1/tau into alpha and the
  // bias into C (beta = 1), so z comes out of the GEMM with no extra pass.
  const bool linear = cap == 0.0f;
  if (has_bias && linear)
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < V; ++j) buf.logits[i * V + j] = p.bias[j] * inv_tau;
  gemm(gemm::gemm_op::none, gemm::gemm_op::trans, n, V, H, linear ? inv_tau : 1.0f, buf.x, H, p.w,
       p.ldw, has_bias && linear ? 1.0f : 0.0f, buf.logits, V);
  if (!linear)
    ktsa::detail::parallel_chunks(ex, n, 1, [&](index_t i0, index_t i1) {
      for (index_t i = i0; i < i1; ++i) {
        float* z = buf.logits + i * V;
        for (index_t j = 0; j < V; ++j)
          z[j] = head_logit(z[j] + (has_bias ? p.bias[j] : 0.0f), inv_tau, cap);
      }
    });
}

/// The chunk's logits as the [rows, 1, V] tensor the log-prob kernels take.
inline cube_view<float> rows_view(float* logits, index_t n, index_t V) {
  return cube_view<float>(logits, {n, 1, V}, {V, V, 1});
}

/// Options for the kernels on gathered rows: every row is unmasked, one per "sequence".
inline logprob_options row_options(const logprob_options& o) {
  logprob_options r;
  r.ignore_index = o.ignore_index;
  r.check_finite = o.check_finite;
  return r;
}

/// Per-sequence log-probs from the per-row ones, summed in row order (masked
/// positions contribute exact zeros in the materialised kernel, so the order
/// matches it), then reduced (sum / mean).
template <class HT, class WT, class I>
double sequence_value(const fused_problem<HT, WT, I>& p, index_t b, const double* row_logp) {
  double sum = 0;
  for (index_t r = p.seq_first[static_cast<size_t>(b)]; r < p.seq_first[static_cast<size_t>(b + 1)];
       ++r)
    sum += row_logp[r];
  return reduce_sequence(sum, p.tg.count[static_cast<size_t>(b)], p.o.logprob.reduce);
}

/// d z-gradient to raw-gradient scale of a row: g_b (/ count for mean) / tau
/// folded in when there is no softcap (the softcap slope is applied per element).
template <class HT, class WT, class I, class U>
float row_upstream_scale(const fused_problem<HT, WT, I>& p, index_t b, U upstream) {
  const double s = reduce_sequence(static_cast<double>(upstream),
                                   p.tg.count[static_cast<size_t>(b)], p.o.logprob.reduce);
  return static_cast<float>(p.o.softcap == 0.0f ? s / p.o.temperature : s);
}

/// GEMMs 2 and 3 of a chunk whose logits buffer holds D (grad of z, already
/// raw-scaled when `row_scaled`, else unscaled: then buf.row_scale multiplies
/// the rows of D W and of X, which is D's row scale moved onto the small side).
template <class HT, class WT, class I, class GH, class Gemm>
void chunk_backward_gemms(const fused_problem<HT, WT, I>& p, index_t r0, index_t n,
                          const chunk_buffers& buf, bool row_scaled, cube_view<GH> grad_hidden,
                          float* gw, index_t ldgw, bool first_chunk, vector_view<float> grad_bias,
                          const Gemm& gemm) {
  const index_t H = p.H, V = p.V;
  if (grad_hidden.data() != nullptr) {
    gemm(gemm::gemm_op::none, gemm::gemm_op::none, n, H, V, 1.0f, buf.logits, V, p.w, p.ldw, 0.0f,
         buf.gx, H);
    for (index_t i = 0; i < n; ++i) {
      const index_t pos = p.row_pos[static_cast<size_t>(r0 + i)], b = pos / p.T, t = pos % p.T;
      GH* g = grad_hidden.data() + b * grad_hidden.stride(0) + t * grad_hidden.stride(1);
      const float s = row_scaled ? 1.0f : buf.row_scale[i];
      for (index_t k = 0; k < H; ++k)
        g[k * grad_hidden.stride(2)] = from_float<GH>(s * buf.gx[i * H + k]);
    }
  }
  if (!row_scaled)
    for (index_t i = 0; i < n; ++i)
      for (index_t k = 0; k < H; ++k) buf.x[i * H + k] *= buf.row_scale[i];
  if (gw != nullptr)
    gemm(gemm::gemm_op::trans, gemm::gemm_op::none, V, H, n, 1.0f, buf.logits, V, buf.x, H,
         first_chunk ? 0.0f : 1.0f, gw, ldgw);
  if (grad_bias.data() != nullptr)
    for (index_t i = 0; i < n; ++i) {
      const float s = row_scaled ? 1.0f : buf.row_scale[i];
      const float* d = buf.logits + i * V;
      for (index_t j = 0; j < V; ++j) grad_bias[j] += s * d[j];
    }
}

/// Checks of the gradient outputs; zeroes grad_hidden's masked rows and grad_bias.
template <class HT, class WT, class I, class GH, class GW>
void prepare_grads(const fused_problem<HT, WT, I>& p, const fused_linear_grads<GH, GW>& g) {
  static_assert(!std::is_const_v<GH> && !std::is_const_v<GW>, "gradient outputs are writable");
  static_assert(std::is_same_v<GH, float> || std::is_same_v<GH, HT>,
                "grad_hidden is float or the hidden dtype");
  static_assert(std::is_same_v<GW, float> || std::is_same_v<GW, WT>,
                "grad_weight is float or the weight dtype");
  if (g.grad_hidden.data() != nullptr) {
    check_output(g.grad_hidden, {p.B, p.T, p.H}, "grad_hidden");
    for (index_t b = 0; b < p.B; ++b)
      for (index_t t = 0; t < p.T; ++t)
        if (p.tg.label[static_cast<size_t>(b * p.T + t)] < 0)
          for (index_t k = 0; k < p.H; ++k) g.grad_hidden(b, t, k) = from_float<GH>(0.0f);
  }
  if (g.grad_weight.data() != nullptr) {
    check_output(g.grad_weight, {p.V, p.H}, "grad_weight");
    if (p.H > 1 && g.grad_weight.stride(1) != 1)
      throw invalid_argument(
          concat("ktsa: 'grad_weight' has hidden stride ", g.grad_weight.stride(1), ": must be 1"));
  }
  if (g.grad_bias.data() != nullptr) {
    check_output(g.grad_bias, {p.V}, "grad_bias");
    for (index_t j = 0; j < p.V; ++j) g.grad_bias[j] = 0.0f;
  }
}

/// Where GEMM 3 accumulates: grad_weight itself when float, else an fp32 buffer.
template <class GW>
float* grad_weight_target(const matrix_view<GW>& gwv, index_t V, index_t H, ws_carver& c,
                          index_t& ld) {
  if (gwv.data() == nullptr) return nullptr;
  if constexpr (std::is_same_v<GW, float>) {
    ld = V > 1 ? gwv.stride(0) : H;
    return gwv.data();
  } else {
    ld = H;
    return c.take<float>(static_cast<size_t>(V * H));
  }
}

/// The end of a backward: zero grad_W if no chunk ran, round the fp32 buffer.
template <class GW>
void finish_grad_weight(const matrix_view<GW>& gwv, float* gw, index_t ld, index_t V, index_t H,
                        bool any_chunk) {
  if (gw == nullptr) return;
  if (!any_chunk)
    for (index_t j = 0; j < V; ++j) std::fill(gw + j * ld, gw + j * ld + H, 0.0f);
  if constexpr (!std::is_same_v<GW, float>)
    for (index_t j = 0; j < V; ++j)
      for (index_t k = 0; k < H; ++k) gwv(j, k) = from_float<GW>(gw[j * ld + k]);
}

/// Runs `body(c)` with the caller's workspace or, when it is empty, one of `bytes`.
template <class Body>
void with_workspace(host_workspace ws, std::size_t bytes, Body&& body) {
  std::vector<unsigned char> own;
  if (ws.data == nullptr) {
    own.resize(bytes + kWsAlign);
    ws.data = own.data();
    ws.bytes = own.size();
  }
  // Align the start (the carver keeps the rest aligned).
  auto addr = reinterpret_cast<std::uintptr_t>(ws.data);
  const std::size_t pad = (kWsAlign - addr % kWsAlign) % kWsAlign;
  if (pad > ws.bytes)
    throw invalid_argument("ktsa: argument 'workspace' is smaller than its alignment padding");
  ws_carver c{static_cast<unsigned char*>(ws.data) + pad, ws.bytes - pad};
  body(c);
}

/// The forward over all chunks; `per_chunk(r0, n, buf)` runs after the row
/// kernels (with row_logp / row_lse filled) and before the next chunk.
template <class HT, class WT, class I, class Gemm, class PerChunk>
void for_each_forward_chunk(const exec::host& ex, const fused_problem<HT, WT, I>& p,
                            const chunk_buffers& buf, matrix_view<float> entropy_rows,
                            const Gemm& gemm, PerChunk&& per_chunk) {
  const index_t R = static_cast<index_t>(p.row_pos.size());
  const logprob_options ro = row_options(p.o.logprob);
  for (index_t r0 = 0; r0 < R; r0 += p.rows_per_chunk) {
    const index_t n = std::min(p.rows_per_chunk, R - r0);
    chunk_logits(ex, p, r0, n, buf, gemm);
    const cube_view<const float> z = rows_view(buf.logits, n, p.V);
    const matrix_view<const std::int64_t> lab(buf.lab, {n, 1});
    sequence_logprob_forward(ex, z, lab, vector_view<double>(buf.row_logp, {n}),
                             vector_view<std::int64_t>{}, matrix_view<float>(buf.row_lse, {n, 1}),
                             matrix_view<float>{}, ro);
    if (entropy_rows.data() != nullptr) {
      // token_kl_forward(z, z) gives the entropy of softmax(z) (KL = 0 by construction).
      std::vector<double> kl(static_cast<size_t>(n));
      token_kl_forward(ex, z, z, lab, make_view(kl), matrix_view<float>{}, matrix_view<float>{},
                       matrix_view<float>{}, ro,
                       matrix_view<float>(entropy_rows.data() + r0, {n, 1}));
    }
    per_chunk(r0, n);
  }
}

}  // namespace detail

}  // namespace ktsa::kernels
