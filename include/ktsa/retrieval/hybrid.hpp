// ktsa/retrieval/hybrid.hpp: the hybrid score, a convex blend of CBF and CF.
//
//   hybrid(q, i) = w cbf(q, i) + (1 - w) cf(q, i) / max_j |cf(q, j)|
//
// CBF is a cosine in [-1, 1]; CF is unbounded (it grows with the profile), so
// each query's CF row is scaled by its largest magnitude to [-1, 1] first
// (a row of zeros, a user with no history, stays zero and the blend is w cbf).
// w = cbf_weight in [0, 1]: 1 is pure CBF, 0 pure CF; default 0.5. A cold item
// has cf = 0 and keeps only its content score, which is what rescues it.
#pragma once

#include <algorithm>
#include <cmath>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"

namespace ktsa::retrieval {

struct hybrid_options {
  double cbf_weight = 0.5;
};

inline void validate(const hybrid_options& o) {
  ktsa::detail::require(std::isfinite(o.cbf_weight) && o.cbf_weight >= 0 && o.cbf_weight <= 1,
                        "cbf_weight", o.cbf_weight, "must be in [0, 1]");
}

/// out[Q, N] = the blend of cbf[Q, N] and cf[Q, N] (out may alias either input).
inline void hybrid_scores(const exec::host& ex, matrix_view<const float> cbf,
                          matrix_view<const float> cf, matrix_view<float> out,
                          const hybrid_options& opt = {}) {
  validate(opt);
  const index_t nq = cbf.extent(0), n = cbf.extent(1);
  ktsa::detail::require_extent(cf, 0, nq, "cf");
  ktsa::detail::require_extent(cf, 1, n, "cf");
  ktsa::detail::require_extent(out, 0, nq, "out");
  ktsa::detail::require_extent(out, 1, n, "out");
  const double w = opt.cbf_weight;
  ktsa::detail::parallel_chunks(ex, nq, 16, [&](index_t q0, index_t q1) {
    for (index_t q = q0; q < q1; ++q) {
      double peak = 0;
      for (index_t i = 0; i < n; ++i) {
        if (!std::isfinite(cf(q, i)) || !std::isfinite(cbf(q, i)))
          throw data_error(ktsa::detail::concat("ktsa: hybrid input of query ", q, " item ", i,
                                                " is not finite"));
        peak = std::max(peak, std::fabs(static_cast<double>(cf(q, i))));
      }
      const double scale = peak > 0 ? (1 - w) / peak : 0.0;
      for (index_t i = 0; i < n; ++i)
        out(q, i) = static_cast<float>(w * cbf(q, i) + scale * cf(q, i));
    }
  });
}

}  // namespace ktsa::retrieval
