// ktsa/retrieval/cbf.hpp: content-based scores, the cosine between query and
// product embeddings (document 001, Eq. 1):
//
//   cbf(q, p) = <e_q, e_p> / (|e_q| |e_p|)
//
// normalize_rows() makes rows unit length (norms accumulated in double), so
// cosine top-K is exact_topk over normalised rows. A zero row has no
// direction: by default it is an error (data_error naming the row);
// zero_rows::keep_zero leaves it zero, so it scores 0 with everything.
// Non-finite entries are always an error.
#pragma once

#include <cmath>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/retrieval/detail/gemm.hpp"
#include "ktsa/retrieval/topk.hpp"

namespace ktsa::retrieval {

enum class zero_rows { error, keep_zero };

/// out = in with every row scaled to unit L2 norm; `in` and `out` may be the
/// same view. Shapes [R, d].
inline void normalize_rows(const exec::host& ex, matrix_view<const float> in,
                           matrix_view<float> out, zero_rows policy = zero_rows::error,
                           const char* name = "embeddings") {
  const index_t rows = in.extent(0), d = in.extent(1);
  ktsa::detail::require_extent(out, 0, rows, "out");
  ktsa::detail::require_extent(out, 1, d, "out");
  ktsa::detail::parallel_chunks(ex, rows, 1024, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      double ss = 0;
      for (index_t j = 0; j < d; ++j) ss += static_cast<double>(in(r, j)) * in(r, j);
      if (!std::isfinite(ss))
        throw data_error(
            ktsa::detail::concat("ktsa: '", name, "' row ", r, " has a non-finite entry"));
      if (ss == 0 && policy == zero_rows::error)
        throw data_error(ktsa::detail::concat(
            "ktsa: '", name, "' row ", r,
            " is a zero vector: cosine is undefined (pass zero_rows::keep_zero to score it 0)"));
      const double inv = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
      for (index_t j = 0; j < d; ++j) out(r, j) = static_cast<float>(in(r, j) * inv);
    }
  });
}

/// An owning row-normalised copy (rows contiguous).
inline std::vector<float> normalized_copy(const exec::host& ex, matrix_view<const float> in,
                                          zero_rows policy = zero_rows::error,
                                          const char* name = "embeddings") {
  std::vector<float> out(static_cast<size_t>(in.size()));
  normalize_rows(ex, in, make_view(out.data(), in.extent(0), in.extent(1)), policy, name);
  return out;
}

/// Dense CBF scores out[Q, N] = cosine(queries[q], items[i]). For a
/// catalogue small enough to hold Q x N scores; otherwise cbf_topk.
inline void cbf_scores(const exec::host& ex, matrix_view<const float> queries,
                       matrix_view<const float> items, matrix_view<float> out,
                       zero_rows policy = zero_rows::error) {
  const index_t nq = queries.extent(0), n = items.extent(0), d = queries.extent(1);
  ktsa::detail::require_extent(items, 1, d, "items");
  ktsa::detail::require_extent(out, 0, nq, "out");
  ktsa::detail::require_extent(out, 1, n, "out");
  if (out.extent(1) > 1 && out.stride(1) != 1)
    ktsa::detail::fail_argument("out", out.stride(1), "needs stride 1 in dimension 1");
  const std::vector<float> qn = normalized_copy(ex, queries, policy, "queries");
  const std::vector<float> in = normalized_copy(ex, items, policy, "items");
  ktsa::detail::parallel_chunks(ex, nq, 8, [&](index_t q0, index_t q1) {
    detail::gemm_nt(q1 - q0, n, d, qn.data() + q0 * d, d, in.data(), d,
                    out.data() + q0 * out.stride(0), out.stride(0));
  });
}

/// Cosine top-K: normalises copies of both sides, then exact_topk.
inline void cbf_topk(const exec::host& ex, matrix_view<const float> queries,
                     matrix_view<const float> items, index_t k, matrix_view<index_t> ids,
                     matrix_view<float> scores, zero_rows policy = zero_rows::error,
                     const topk_options& opt = {}) {
  ktsa::detail::require_extent(items, 1, queries.extent(1), "items");
  const std::vector<float> qn = normalized_copy(ex, queries, policy, "queries");
  const std::vector<float> in = normalized_copy(ex, items, policy, "items");
  exact_topk(ex, make_view(qn.data(), queries.extent(0), queries.extent(1)),
             make_view(in.data(), items.extent(0), items.extent(1)), k, ids, scores, opt);
}

}  // namespace ktsa::retrieval
