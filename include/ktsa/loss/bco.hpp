// ktsa/loss/bco.hpp: BCO's reward baseline delta, the running mean of the
// rewards b r, and when a step folds its batch into it.
//
// TRL's BCOTrainer folds the current batch (the mean of b r over all B
// examples, chosen and rejected together) into the running mean BEFORE it
// computes the loss, so step 1 uses the batch's own mean reward, and does not
// update it on evaluation steps. That is ktsa's default (bco_update::before_loss);
// after_loss (the previous mean is delta, the batch is folded in after the
// step; step 1 uses 0) is ktsa's earlier convention, and none is for
// evaluation: the state is read, never changed. TRL casts delta to float32;
// ktsa keeps it in fp64.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "ktsa/config.hpp"
#include "ktsa/core/errors.hpp"
#include "ktsa/core/view.hpp"

namespace ktsa::loss {

/// When a bco step folds its rewards into the running mean (loss::config::bco_order).
enum class bco_update : int {
  before_loss = 0,  ///< TRL's order (default): delta includes this batch
  after_loss = 1,   ///< delta is the previous mean; the batch is folded in after the step
  none = 2,         ///< evaluation: delta is the current mean, the state is not changed
};

inline const char* bco_update_name(bco_update u) {
  switch (u) {
    case bco_update::before_loss:
      return "before_loss";
    case bco_update::after_loss:
      return "after_loss";
    case bco_update::none:
      return "none";
  }
  return "unknown";
}

namespace detail {
/// Throws invalid_argument for a value outside the enum (an int cast by a binding).
inline void require_valid(bco_update u) {
  const int v = static_cast<int>(u);
  if (v < 0 || v > 2)
    ktsa::detail::fail_argument("bco_order", v,
                                "is not a bco_update (before_loss 0, after_loss 1, none 2)");
}
}  // namespace detail

/// BCO's reward baseline delta: the mean of every reward b r folded in so far.
class bco_running_mean {
 public:
  bco_running_mean() = default;
  /// Starts from a given mean as if `count` rewards had produced it.
  explicit bco_running_mean(double mean, index_t count = 0) : mean_(mean), count_(count) {
    ktsa::detail::require(std::isfinite(mean), "mean", mean, "must be finite");
    ktsa::detail::require(count >= 0, "count", count, "must be >= 0");
  }
  double mean() const { return mean_; }
  index_t count() const { return count_; }

  /// The mean after folding reward_sum over reward_count > 0 rewards into
  /// (mean, count). Shared by update() and the CUDA kernel, which computes
  /// before_loss's delta on the device. Counts are exact in double up to 2^53.
  KTSA_HOST_DEVICE static double folded(double mean, index_t count, double reward_sum,
                                        index_t reward_count) {
    const double total = static_cast<double>(count) + static_cast<double>(reward_count);
    return mean * (static_cast<double>(count) / total) + reward_sum / total;
  }

  /// Folds a step's reward sum and count into the mean (count-weighted).
  /// A reward_count of 0 changes nothing. Throws invalid_argument for a
  /// negative reward_count, a non-finite reward_sum, or a total count that
  /// would overflow int64 (the state is then unchanged).
  void update(double reward_sum, index_t reward_count) {
    ktsa::detail::require(reward_count >= 0, "reward_count", reward_count, "must be >= 0");
    if (reward_count == 0) return;
    ktsa::detail::require(std::isfinite(reward_sum), "reward_sum", reward_sum,
                          "must be finite (a reward overflowed or was NaN)");
    ktsa::detail::require(reward_count <= std::numeric_limits<index_t>::max() - count_,
                          "reward_count", reward_count,
                          "would overflow the running mean's int64 count");
    const double m = folded(mean_, count_, reward_sum, reward_count);
    ktsa::detail::require(std::isfinite(m), "reward_sum", reward_sum,
                          "makes the running mean overflow");
    mean_ = m;
    count_ += reward_count;
  }

 private:
  double mean_ = 0.0;
  index_t count_ = 0;
};

}  // namespace ktsa::loss
