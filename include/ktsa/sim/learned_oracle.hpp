// ktsa/sim/learned_oracle.hpp: an Oracle learned from logged buyer actions,
// as the KTSA paper trains one (Tables 1-2): features of what the buyer sees
// (query, product, description, reviews), a multinomial logistic regression
// over the three actions, and a ktsa::sim::oracle that samples its action.
//
// Two feature sets: `listing` (category, rating, what the description claims
// against the query's needs and the spec sheet, attention costs) and
// `with_reviews`, which adds the review key features (need praised / criticised
// by reviews, claims that reviews contradict). Neither is the buyer's formula:
// the buyer's prospect-weighted, trust-scaled utility is non-linear in them,
// so the Oracle makes errors a generator trained against it can learn.
//
// Training is deterministic and machine-independent: standardised features,
// mini-batch Adam over a seeded shuffle, every sum in a fixed order in plain
// double loops (no BLAS, no blocking that depends on the cache).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/metrics/conversion.hpp"
#include "ktsa/sim/buyer.hpp"
#include "ktsa/sim/catalogue.hpp"
#include "ktsa/sim/random.hpp"

namespace ktsa::sim {

inline constexpr int num_actions = 3;  ///< purchase, add_to_cart, abandon (metrics::action order)

enum class oracle_features { prior_only, listing, with_reviews };

inline const char* oracle_features_name(oracle_features f) {
  switch (f) {
    case oracle_features::prior_only:
      return "prior only";
    case oracle_features::listing:
      return "logistic regression, listing features";
    case oracle_features::with_reviews:
      return "logistic regression, + review key features";
  }
  return "unknown";
}

/// Feature vectors have this many slots; a feature set uses a prefix.
inline constexpr int max_oracle_features = 32;

inline int oracle_feature_count(oracle_features f) {
  switch (f) {
    case oracle_features::prior_only:
      return 0;
    case oracle_features::listing:
      return 18;
    case oracle_features::with_reviews:
      return 27;
  }
  throw invalid_argument("ktsa: argument 'oracle_features' is not a feature set");
}

using oracle_feature_vector = std::array<double, max_oracle_features>;

/// The features of one impression (slots past the set's count are 0).
inline oracle_feature_vector make_oracle_features(oracle_features set, const query& q,
                                                  const product& p,
                                                  const std::vector<int>& description) {
  validate_description(description);
  ktsa::detail::require(q.category == p.category, "query.category", q.category,
                        "must equal the product's category");
  oracle_feature_vector x{};
  if (set == oracle_features::prior_only) return x;
  std::array<bool, attributes_per_category> claimed{}, needed{};
  std::array<double, attributes_per_category> weight{};
  for (const need& n : q.needs) {
    needed[static_cast<size_t>(n.attribute)] = true;
    weight[static_cast<size_t>(n.attribute)] = n.weight;
  }
  int claims = 0, fillers = 0, repeats = 0, off = 0, irrelevant = 0, contradicted = 0,
      praised_claims = 0;
  for (int t : description) {
    if (t == vocabulary::eos) break;
    if (vocabulary::is_filler(t)) {
      ++fillers;
    } else if (vocabulary::claim_category(t) != p.category) {
      ++off;
    } else {
      const int a = vocabulary::claim_attribute(t);
      if (claimed[static_cast<size_t>(a)]) {
        ++repeats;
        continue;
      }
      claimed[static_cast<size_t>(a)] = true;
      ++claims;
      if (!needed[static_cast<size_t>(a)]) ++irrelevant;
      if (p.is_concern(a)) ++contradicted;
      if (p.is_feature(a)) ++praised_claims;
    }
  }
  const double r = p.rating_normalised();
  double need_claimed = 0, spec = 0, spec_claimed = 0;
  double need_praised = 0, need_criticised = 0, praised_and_claimed = 0, criticised_and_claimed = 0;
  for (int a = 0; a < attributes_per_category; ++a) {
    const double w = weight[static_cast<size_t>(a)];
    if (w == 0) continue;
    const bool c = claimed[static_cast<size_t>(a)];
    need_claimed += w * c;
    spec += w * p.spec[static_cast<size_t>(a)];
    spec_claimed += w * p.spec[static_cast<size_t>(a)] * c;
    need_praised += w * p.is_feature(a);
    need_criticised += w * p.is_concern(a);
    praised_and_claimed += w * (p.is_feature(a) && c);
    criticised_and_claimed += w * (p.is_concern(a) && c);
  }
  int k = 0;
  x[k++] = 1;                                                         // bias
  for (int c = 1; c < num_categories; ++c) x[k++] = q.category == c;  // category 0 is the bias
  x[k++] = r;
  x[k++] = need_claimed;
  x[k++] = r * need_claimed;
  x[k++] = spec;
  x[k++] = spec_claimed;
  x[k++] = claims;
  x[k++] = fillers;
  x[k++] = repeats + off;
  x[k++] = irrelevant;
  x[k++] = static_cast<double>(q.needs.size());
  if (set == oracle_features::with_reviews) {
    x[k++] = need_praised;
    x[k++] = need_criticised;
    x[k++] = praised_and_claimed;
    x[k++] = criticised_and_claimed;
    x[k++] = contradicted;
    x[k++] = contradicted > 0;
    x[k++] = need_claimed * (contradicted == 0);
    x[k++] = praised_claims;
    x[k++] = r * need_praised;
  }
  return x;
}

/// One logged impression: the features of what was shown and the action.
struct logged_example {
  oracle_feature_vector x{};
  metrics::action act = metrics::action::abandon;
};

struct oracle_training {
  int epochs = 10;
  int batch = 256;
  double learning_rate = 0.003;  ///< Adam's; 0.05 left the category rates off by 2-4x
  double l2 = 1e-5;              ///< on the non-bias weights, per example
  std::uint64_t seed = 1;
};

/// A multinomial logistic regression p(action | x) = softmax(W x) over a
/// feature set; prior_only is softmax of a bias alone (the class frequencies).
class action_model {
 public:
  action_model() = default;

  /// Fits on `train` (non-empty). The bias starts at the log class frequencies
  /// (with one pseudo-count each), so prior_only is exactly the smoothed prior.
  static action_model fit(oracle_features set, const std::vector<logged_example>& train,
                          const oracle_training& t = {}) {
    ktsa::detail::require(!train.empty(), "train.size", 0, "must be > 0");
    ktsa::detail::require(t.epochs >= 0 && t.batch >= 1, "oracle_training", t.batch,
                          "epochs must be >= 0 and batch >= 1");
    action_model m;
    m.set_ = set;
    m.dim_ = oracle_feature_count(set);
    std::array<double, num_actions> count{1, 1, 1};
    for (const auto& e : train) count[static_cast<size_t>(e.act)] += 1;
    const double total = count[0] + count[1] + count[2];
    for (int c = 0; c < num_actions; ++c)
      m.bias_[static_cast<size_t>(c)] = std::log(count[static_cast<size_t>(c)] / total);
    if (m.dim_ == 0) return m;
    // Standardise every slot but the bias (slot 0) on the training data.
    const size_t n = train.size();
    for (int j = 1; j < m.dim_; ++j) {
      double mean = 0, sq = 0;
      for (const auto& e : train) mean += e.x[static_cast<size_t>(j)];
      mean /= static_cast<double>(n);
      for (const auto& e : train) {
        const double d = e.x[static_cast<size_t>(j)] - mean;
        sq += d * d;
      }
      const double sd = std::sqrt(sq / static_cast<double>(n));
      m.mean_[static_cast<size_t>(j)] = mean;
      m.scale_[static_cast<size_t>(j)] = sd > 1e-12 ? 1.0 / sd : 0.0;
    }
    // Adam on W (num_actions x dim; W[c][0] is folded into bias_).
    std::vector<double> w(static_cast<size_t>(num_actions * m.dim_), 0.0), g(w.size()),
        mom(w.size(), 0.0), vel(w.size(), 0.0);
    std::vector<size_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    rng gen(t.seed);
    long step = 0;
    for (size_t c = 0; c < num_actions; ++c) w[c * static_cast<size_t>(m.dim_)] = m.bias_[c];
    oracle_feature_vector z{};
    for (int epoch = 0; epoch < t.epochs; ++epoch) {
      for (size_t i = n - 1; i > 0; --i)  // Fisher-Yates with the seeded stream
        std::swap(order[i], order[static_cast<size_t>(gen.below(static_cast<int>(i + 1)))]);
      for (size_t start = 0; start < n; start += static_cast<size_t>(t.batch)) {
        const size_t end = std::min(n, start + static_cast<size_t>(t.batch));
        std::fill(g.begin(), g.end(), 0.0);
        for (size_t b = start; b < end; ++b) {
          const logged_example& e = train[order[b]];
          m.standardise(e.x, z);
          std::array<double, num_actions> p{};
          softmax_of(w, m.dim_, z, p);
          for (int c = 0; c < num_actions; ++c) {
            const double d = p[static_cast<size_t>(c)] - (static_cast<int>(e.act) == c ? 1.0 : 0.0);
            for (int j = 0; j < m.dim_; ++j)
              g[static_cast<size_t>(c * m.dim_ + j)] += d * z[static_cast<size_t>(j)];
          }
        }
        const double inv = 1.0 / static_cast<double>(end - start);
        ++step;
        const double c1 = 1 - std::pow(0.9, static_cast<double>(step));
        const double c2 = 1 - std::pow(0.999, static_cast<double>(step));
        for (size_t k = 0; k < w.size(); ++k) {
          const bool is_bias = k % static_cast<size_t>(m.dim_) == 0;
          const double gk = g[k] * inv + (is_bias ? 0.0 : t.l2 * w[k]);
          mom[k] = 0.9 * mom[k] + 0.1 * gk;
          vel[k] = 0.999 * vel[k] + 0.001 * gk * gk;
          w[k] -= t.learning_rate * (mom[k] / c1) / (std::sqrt(vel[k] / c2) + 1e-8);
        }
      }
    }
    m.weights_ = std::move(w);
    return m;
  }

  oracle_features features() const { return set_; }

  /// p(purchase), p(add to cart), p(abandon) for a feature vector of this set.
  std::array<double, num_actions> probabilities(const oracle_feature_vector& x) const {
    std::array<double, num_actions> p{};
    if (dim_ == 0) {
      const double total = std::exp(bias_[0]) + std::exp(bias_[1]) + std::exp(bias_[2]);
      for (int c = 0; c < num_actions; ++c)
        p[static_cast<size_t>(c)] = std::exp(bias_[static_cast<size_t>(c)]) / total;
      return p;
    }
    oracle_feature_vector z{};
    standardise(x, z);
    softmax_of(weights_, dim_, z, p);
    return p;
  }

  /// The most probable action (ties: the lower action id).
  metrics::action predict(const oracle_feature_vector& x) const {
    const auto p = probabilities(x);
    int best = 0;
    for (int c = 1; c < num_actions; ++c)
      if (p[static_cast<size_t>(c)] > p[static_cast<size_t>(best)]) best = c;
    return static_cast<metrics::action>(best);
  }

  /// Mean negative log-likelihood of the actions of `data` (natural log).
  double log_loss(const std::vector<logged_example>& data) const {
    ktsa::detail::require(!data.empty(), "data.size", 0, "must be > 0");
    double s = 0;
    for (const auto& e : data)
      s -= std::log(std::max(1e-300, probabilities(e.x)[static_cast<size_t>(e.act)]));
    return s / static_cast<double>(data.size());
  }

 private:
  void standardise(const oracle_feature_vector& x, oracle_feature_vector& z) const {
    z[0] = 1;
    for (int j = 1; j < dim_; ++j)
      z[static_cast<size_t>(j)] = (x[static_cast<size_t>(j)] - mean_[static_cast<size_t>(j)]) *
                                  scale_[static_cast<size_t>(j)];
  }
  static void softmax_of(const std::vector<double>& w, int dim, const oracle_feature_vector& z,
                         std::array<double, num_actions>& p) {
    double logit[num_actions], top = -INFINITY;
    for (int c = 0; c < num_actions; ++c) {
      double s = 0;
      for (int j = 0; j < dim; ++j)
        s += w[static_cast<size_t>(c * dim + j)] * z[static_cast<size_t>(j)];
      logit[c] = s;
      top = std::max(top, s);
    }
    double total = 0;
    for (int c = 0; c < num_actions; ++c) total += (logit[c] = std::exp(logit[c] - top));
    for (int c = 0; c < num_actions; ++c) p[static_cast<size_t>(c)] = logit[c] / total;
  }

  oracle_features set_ = oracle_features::prior_only;
  int dim_ = 0;
  std::array<double, num_actions> bias_{};
  oracle_feature_vector mean_{}, scale_{};
  std::vector<double> weights_;
};

/// A learned Oracle: the action sampled from an action_model's probabilities
/// with a uniform drawn from hash_key(seed, draw) (deterministic per draw).
class learned_oracle final : public oracle {
 public:
  learned_oracle(action_model model, std::uint64_t seed) : model_(std::move(model)), seed_(seed) {}

  const action_model& model() const { return model_; }
  std::string name() const override {
    return std::string("learned Oracle (") + oracle_features_name(model_.features()) + ")";
  }

  std::array<double, num_actions> probabilities(const query& q, const product& p,
                                                const std::vector<int>& description) const {
    return model_.probabilities(make_oracle_features(model_.features(), q, p, description));
  }

  action respond(const query& q, const product& p, const std::vector<int>& description,
                 std::uint64_t draw) const override {
    const auto prob = probabilities(q, p, description);
    const double u = to_open_unit(hash_key(seed_, draw));
    if (u < prob[0]) return action::purchase;
    if (u < prob[0] + prob[1]) return action::add_to_cart;
    return action::abandon;
  }

 private:
  action_model model_;
  std::uint64_t seed_;
};

}  // namespace ktsa::sim
