// ktsa/dist/merge.hpp: merging the per-shard partial states of one logits row
// (vocab-sharded tensor parallelism), written once for host and CUDA code.
//
// Log-prob: each shard sends (max, sum of exp(x - max), target logit or 0);
// the states merge with math::online_lse, the same merge the kernels use for
// blocks of a row. KL(softmax(a) || softmax(b)): each shard sends the
// kernels' kl_state (max_a, max_b, sum_a, sum_b, w, u) with
//   w = sum_j e^{c_a} (c_a - c_b),  u = sum_j e^{c_a} c_a,  c = x - max,
// and kl_partial::merge moves both to the joint maxima (the same rescaling
// the host kernels apply between blocks), so KL, H and both lse follow as in
// one process: KL = w / sum_a - log(sum_a / sum_b), H = log sum_a - u / sum_a.
#pragma once

#include "ktsa/config.hpp"
#include "ktsa/core/math.hpp"

namespace ktsa::dist {

/// One shard's log-prob state of a row.
struct logprob_partial {
  double max;     ///< max of the shard's logits (-inf if all -inf)
  double sum;     ///< sum exp(x - max) over the shard
  double target;  ///< the label's logit if the shard owns it, else 0
};

/// One shard's KL state of a row (a shard with all a = -inf has max_a = -inf
/// and sum_a = w = u = 0).
struct kl_partial_state {
  double max_a, max_b, sum_a, sum_b, w, u;

  KTSA_HOST_DEVICE static kl_partial_state empty() {
    const double ninf = -math::infinity<double>();
    return {ninf, ninf, 0.0, 0.0, 0.0, 0.0};
  }

  /// Adds shard o (merge in a fixed shard order for bitwise-stable results).
  KTSA_HOST_DEVICE inline void merge(const kl_partial_state& o) {
    const double ma = o.max_a > max_a ? o.max_a : max_a;
    const double mb = o.max_b > max_b ? o.max_b : max_b;
    move_to(ma, mb);
    kl_partial_state t = o;
    t.move_to(ma, mb);
    sum_a += t.sum_a;
    sum_b += t.sum_b;
    w += t.w;
    u += t.u;
  }

 private:
  /// Re-expresses the sums relative to maxima (ma, mb) >= the current ones.
  KTSA_HOST_DEVICE inline void move_to(double ma, double mb) {
    const double ninf = -math::infinity<double>();
    if (max_a != ninf && ma != max_a) {
      // c_a shifts by da = max_a - ma (< 0), c_b by db = max_b - mb (<= 0).
      const double da = max_a - ma;
      const double db = mb == max_b ? 0.0 : max_b - mb;  // -inf when this shard's b is all -inf
      const double r = math::exp(da);
      w = r * (w + sum_a * (da - db));
      u = r * (u + sum_a * da);
      sum_a *= r;
    } else if (max_a != ninf && mb != max_b) {
      const double db = max_b - mb;
      w = w - sum_a * db;  // +inf when this shard's b is all -inf: q_j = 0 where p_j > 0
    }
    if (mb != max_b) sum_b = max_b == ninf ? 0.0 : sum_b * math::exp(max_b - mb);
    max_a = ma;
    max_b = mb;
  }
};

}  // namespace ktsa::dist
