// ktsa/metrics/classification.hpp: confusion matrix and precision / recall /
// F1 over k classes, as scikit-learn defines them (precision_recall_fscore_support
// with labels = 0..k-1).
//
//   precision_c = TP / (TP + FP)     recall_c = TP / (TP + FN)
//   f1_c        = 2 TP / (2 TP + FP + FN)   (scikit-learn >= 1.3: defined by the
//                 counts, so F1 is 0 whenever TP = 0 and anything was predicted or true)
// A 0 / 0 takes the zero_division value: 0, 1, or NaN. Averages:
//   macro     unweighted mean over the k classes
//   weighted  mean weighted by support (the true count of each class)
//   micro     from the summed counts; for single-label data P = R = F1 = accuracy
// NaN entries (zero_division::nan) are left out of the macro and weighted means;
// if every entry is NaN the mean is NaN.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "ktsa/core/errors.hpp"

namespace ktsa::metrics {

enum class zero_division { zero, one, nan };

/// counts[t * k + p] = number of examples of true class t predicted as p.
/// Counts are >= 0 and their total fits in int64 (add() checks both), so every
/// row, column and total sum is exact.
class confusion_matrix {
 public:
  /// The k x k counts are allocated up front; k is bounded so that a stray
  /// label (2e9) is an error rather than a multi-GB allocation (4096^2 x 8
  /// bytes = 128 MiB).
  static constexpr int max_classes = 4096;

  confusion_matrix() = default;
  explicit confusion_matrix(int num_classes) : k_(checked_classes(num_classes)) {
    counts_.assign(static_cast<std::size_t>(k_) * static_cast<std::size_t>(k_), 0);
  }

  int num_classes() const { return k_; }
  std::int64_t operator()(int true_class, int predicted_class) const {
    return counts_[index(true_class, predicted_class)];
  }
  /// Adds `count` (>= 0) examples; throws invalid_argument on a negative
  /// count and data_error when the total would exceed INT64_MAX.
  void add(int true_class, int predicted_class, std::int64_t count = 1) {
    ktsa::detail::require(count >= 0, "count", count, "must be >= 0 (a count of examples)");
    const std::size_t i = index(true_class, predicted_class);
    if (count > std::numeric_limits<std::int64_t>::max() - total_)
      throw data_error(ktsa::detail::concat("ktsa: confusion_matrix total ", total_, " + count ",
                                            count, " overflows int64"));
    counts_[i] += count;
    total_ += count;
  }
  std::int64_t true_positives(int c) const { return (*this)(c, c); }
  /// Examples whose true class is c (the support).
  std::int64_t support(int c) const {
    std::int64_t s = 0;
    for (int p = 0; p < k_; ++p) s += (*this)(c, p);
    return s;
  }
  /// Examples predicted as c.
  std::int64_t predicted(int c) const {
    std::int64_t s = 0;
    for (int t = 0; t < k_; ++t) s += (*this)(t, c);
    return s;
  }
  std::int64_t total() const { return total_; }

 private:
  static int checked_classes(int k) {
    ktsa::detail::require(k >= 1 && k <= max_classes, "num_classes", k,
                          "must be in [1, 4096] (confusion_matrix::max_classes)");
    return k;
  }
  std::size_t index(int t, int p) const {
    ktsa::detail::require(t >= 0 && t < k_, "true_class", t, "must be in [0, num_classes)");
    ktsa::detail::require(p >= 0 && p < k_, "predicted_class", p, "must be in [0, num_classes)");
    return static_cast<std::size_t>(t) * static_cast<std::size_t>(k_) + static_cast<std::size_t>(p);
  }
  int k_ = 0;
  std::int64_t total_ = 0;
  std::vector<std::int64_t> counts_;
};

/// Builds the confusion matrix of y_true against y_pred. num_classes = 0 takes
/// k = 1 + the largest label seen. Throws shape_error on different lengths,
/// invalid_argument on an empty input, data_error on a label outside [0, k).
inline confusion_matrix make_confusion_matrix(const std::vector<int>& y_true,
                                              const std::vector<int>& y_pred, int num_classes = 0) {
  ktsa::detail::require_same_length("y_true", static_cast<std::int64_t>(y_true.size()), "y_pred",
                                    static_cast<std::int64_t>(y_pred.size()));
  ktsa::detail::require(!y_true.empty(), "y_true.size", y_true.size(), "must be > 0");
  ktsa::detail::require(num_classes >= 0, "num_classes", num_classes, "must be >= 0");
  int k = num_classes;
  if (k == 0) {  // 1 + the largest label, checked before the +1 (a label may be INT_MAX)
    int top = 0;
    for (std::size_t i = 0; i < y_true.size(); ++i) top = std::max({top, y_true[i], y_pred[i]});
    if (top >= confusion_matrix::max_classes)
      throw data_error(ktsa::detail::concat(
          "ktsa: the largest label is ", top, ": with num_classes = 0 the labels must be < ",
          confusion_matrix::max_classes, " (confusion_matrix::max_classes)"));
    k = top + 1;
  }
  confusion_matrix cm(k);
  for (std::size_t i = 0; i < y_true.size(); ++i) {
    for (const auto& [name, v] : {std::pair<const char*, int>{"y_true", y_true[i]},
                                  std::pair<const char*, int>{"y_pred", y_pred[i]}}) {
      if (v < 0 || v >= cm.num_classes())
        throw data_error(ktsa::detail::concat("ktsa: argument '", name, "' has label ", v,
                                              " at index ", i, ": must be in [0, ",
                                              cm.num_classes(), ")"));
    }
    cm.add(y_true[i], y_pred[i]);
  }
  return cm;
}

struct prf {
  double precision;
  double recall;
  double f1;
};

struct classification_scores {
  std::vector<double> precision, recall, f1;  ///< per class
  std::vector<std::int64_t> support;          ///< true count per class
  prf macro, micro, weighted;
  double accuracy;
};

namespace detail {

inline double zero_division_value(zero_division policy) {
  switch (policy) {
    case zero_division::zero:
      return 0.0;
    case zero_division::one:
      return 1.0;
    case zero_division::nan:
      return std::numeric_limits<double>::quiet_NaN();
  }
  return 0.0;
}

// num / den in double: the callers' 2 TP and TP + FP + FN sums could overflow int64.
inline double ratio_or(double num, double den, double if_zero) {
  return den == 0 ? if_zero : num / den;
}
inline double d(std::int64_t v) {
  return static_cast<double>(v);
}

// Mean of the non-NaN values, weighted when weights are given; if the kept
// weights sum to 0 they are ignored (scikit-learn's _nanaverage).
inline double nan_average(const std::vector<double>& v, const std::vector<std::int64_t>* w) {
  double sum = 0, wsum = 0, plain = 0;
  std::int64_t kept = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) continue;
    const double wi = w ? static_cast<double>((*w)[i]) : 1.0;
    sum += wi * v[i];
    wsum += wi;
    plain += v[i];
    ++kept;
  }
  if (kept == 0) return std::numeric_limits<double>::quiet_NaN();
  return wsum > 0 ? sum / wsum : plain / static_cast<double>(kept);
}

}  // namespace detail

/// Per-class, macro, micro and weighted precision, recall and F1.
inline classification_scores classification_report(const confusion_matrix& cm,
                                                   zero_division policy = zero_division::zero) {
  const int k = cm.num_classes();
  ktsa::detail::require(k >= 1, "cm.num_classes", k, "must be >= 1");
  const double zd = detail::zero_division_value(policy);
  classification_scores s;
  std::int64_t tp_sum = 0, true_sum = 0, pred_sum = 0;
  for (int c = 0; c < k; ++c) {
    const std::int64_t tp = cm.true_positives(c), t = cm.support(c), p = cm.predicted(c);
    s.precision.push_back(detail::ratio_or(detail::d(tp), detail::d(p), zd));
    s.recall.push_back(detail::ratio_or(detail::d(tp), detail::d(t), zd));
    s.f1.push_back(detail::ratio_or(2 * detail::d(tp), detail::d(t) + detail::d(p), zd));
    s.support.push_back(t);
    tp_sum += tp;
    true_sum += t;
    pred_sum += p;
  }
  s.macro = {detail::nan_average(s.precision, nullptr), detail::nan_average(s.recall, nullptr),
             detail::nan_average(s.f1, nullptr)};
  s.weighted = {detail::nan_average(s.precision, &s.support),
                detail::nan_average(s.recall, &s.support), detail::nan_average(s.f1, &s.support)};
  using detail::d;
  s.micro = {detail::ratio_or(d(tp_sum), d(pred_sum), zd),
             detail::ratio_or(d(tp_sum), d(true_sum), zd),
             detail::ratio_or(2 * d(tp_sum), d(true_sum) + d(pred_sum), zd)};
  s.accuracy = detail::ratio_or(d(tp_sum), d(true_sum), zd);
  return s;
}

/// Convenience: the report straight from label vectors.
inline classification_scores classification_report(const std::vector<int>& y_true,
                                                   const std::vector<int>& y_pred,
                                                   int num_classes = 0,
                                                   zero_division policy = zero_division::zero) {
  return classification_report(make_confusion_matrix(y_true, y_pred, num_classes), policy);
}

}  // namespace ktsa::metrics
