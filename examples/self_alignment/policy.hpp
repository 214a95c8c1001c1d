// A small description generator written with Eigen: a log-linear model over
// the description vocabulary, conditioned on the query, the product and the
// prefix written so far. It stands where a trainer's LLM would stand; the
// loop in main.cpp only needs its logits [B, T, V] and a way to turn
// d loss / d logits back into a parameter update.
//
//   logits(t)[y] = W[y] . phi(t) + u . psi(t, y)
//
// phi (sparse, about a dozen of ~290 entries non-zero): category one-hot |
// the query's need words (the buyer's phrasings) | position one-hot |
// previous token one-hot | tokens already written | bias. W [V, D] is where
// the language gap is bridged: which claim word answers which need phrase
// has to be learned pair by pair.
// psi (a handful of shared weights u, the same for every claim word, the
// small model's stand-in for what an LLM already knows about language):
// the claim belongs to another category | the spec sheet's evidence for the
// claimed attribute, split into its positive and negative part (a
// key-feature prompt x_k adds +1 for a praised, -1 for a criticised
// attribute) | the seller's listing claims it | the word was already written
// (claims, fillers).
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <bitset>
#include <cmath>
#include <cstdint>
#include <vector>

#include <ktsa/sim/buyer.hpp>
#include <ktsa/sim/catalogue.hpp>
#include <ktsa/sim/random.hpp>

namespace self_alignment {

namespace sim = ktsa::sim;

/// Longest description in tokens (at most max_len - 1 words, then <end>).
inline constexpr int max_len = 6;
inline constexpr int vocab = sim::vocabulary::size;
inline constexpr int need_words = sim::num_attributes * 2;

/// What the generator is told about a (query, product) pair.
struct prompt {
  int category = 0;
  std::vector<int> needs;  ///< need-word ids, (category*8 + a)*2 + phrasing
  std::array<float, sim::num_attributes> evidence{};  ///< by global attribute id, category*8 + a
  std::vector<int> listed;                            ///< global attribute ids the seller claims
  double rating = 0;                                  ///< normalised average rating R_avg
};

inline prompt make_prompt(const sim::query& q, const sim::product& p) {
  prompt x;
  x.category = q.category;
  const int base = q.category * sim::attributes_per_category;
  for (const sim::need& n : q.needs) x.needs.push_back((base + n.attribute) * 2 + n.phrasing);
  for (int a = 0; a < sim::attributes_per_category; ++a)
    x.evidence[static_cast<size_t>(base + a)] = static_cast<float>(p.spec[static_cast<size_t>(a)]);
  for (int t : p.seller_description)
    if (sim::vocabulary::is_claim(t)) x.listed.push_back(t - sim::vocabulary::first_claim);
  x.rating = p.rating_normalised();
  return x;
}

/// x_k of Eq. 2: the prompt extended with the product's k-th review key feature.
inline prompt with_key_feature(prompt x, const sim::product& p, int k) {
  const auto [attribute, sign] = p.key_feature(k);
  x.evidence[static_cast<size_t>(p.category * sim::attributes_per_category + attribute)] +=
      static_cast<float>(sign);
  return x;
}

class linear_policy {
 public:
  static constexpr int off_need = sim::num_categories;
  static constexpr int off_position = off_need + need_words;
  static constexpr int off_previous = off_position + max_len;
  static constexpr int off_written = off_previous + vocab;
  static constexpr int off_bias = off_written + vocab;
  static constexpr int dim = off_bias + 1;
  enum shared_feature {
    off_category,
    evidence_pos,
    evidence_neg,
    listed,
    repeat_claim,
    repeat_filler,
    shared_dim
  };

  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;

  linear_policy() : weights(matrix::Zero(vocab, dim)), shared(matrix::Zero(shared_dim, 1)) {}

  /// One position: the non-zero entries of phi and what psi needs.
  struct position_features {
    std::vector<int> index;
    std::vector<float> value;
    int category = 0;
    std::array<float, sim::attributes_per_category> evidence{};
    std::array<bool, sim::attributes_per_category> listed{};
    std::bitset<vocab> written;
    void add(int i, float v) {
      index.push_back(i);
      value.push_back(v);
    }
  };

  /// The features of position t after `prefix` (t tokens).
  static void features(const prompt& x, const int* prefix, int t, position_features& f) {
    f.index.clear();
    f.value.clear();
    f.written.reset();
    f.category = x.category;
    const int base = x.category * sim::attributes_per_category;
    for (int a = 0; a < sim::attributes_per_category; ++a) {
      f.evidence[static_cast<size_t>(a)] = x.evidence[static_cast<size_t>(base + a)];
      f.listed[static_cast<size_t>(a)] = false;
    }
    for (int a : x.listed)
      if (a >= base && a < base + sim::attributes_per_category)
        f.listed[static_cast<size_t>(a - base)] = true;
    f.add(x.category, 1);
    for (int n : x.needs) f.add(off_need + n, 1);
    f.add(off_position + t, 1);
    if (t > 0) f.add(off_previous + prefix[t - 1], 1);
    for (int i = 0; i < t; ++i) f.written.set(static_cast<size_t>(prefix[i]));
    for (int y = 0; y < vocab; ++y)
      if (f.written.test(static_cast<size_t>(y))) f.add(off_written + y, 1);
    f.add(off_bias, 1);
  }

  /// psi(t, y) into out (shared_dim entries); returns false when all zero.
  static bool shared_features(const position_features& f, int y, float* out) {
    std::fill(out, out + shared_dim, 0.0f);
    if (sim::vocabulary::is_filler(y)) {
      out[repeat_filler] = f.written.test(static_cast<size_t>(y)) ? 1.0f : 0.0f;
      return out[repeat_filler] != 0;
    }
    if (!sim::vocabulary::is_claim(y)) return false;
    if (sim::vocabulary::claim_category(y) != f.category) {
      out[off_category] = 1;
      return true;
    }
    const float e = f.evidence[static_cast<size_t>(sim::vocabulary::claim_attribute(y))];
    out[evidence_pos] = std::max(e, 0.0f);
    out[evidence_neg] = std::max(-e, 0.0f);
    out[listed] = f.listed[static_cast<size_t>(sim::vocabulary::claim_attribute(y))] ? 1.0f : 0.0f;
    out[repeat_claim] = f.written.test(static_cast<size_t>(y)) ? 1.0f : 0.0f;
    return true;
  }

  /// logits = W phi + u . psi for one position.
  template <class Out>
  void logits_of(const position_features& f, Out&& out) const {
    out.setZero();
    for (size_t k = 0; k < f.index.size(); ++k) out += f.value[k] * weights.col(f.index[k]);
    float psi[shared_dim];
    for (int y = 0; y < vocab; ++y)
      if (shared_features(f, y, psi))
        for (int j = 0; j < shared_dim; ++j) out[y] += shared(j, 0) * psi[j];
  }

  /// Teacher-forced logits of B sequences into logits, a V x (B*T) matrix
  /// whose column-major storage is exactly the [B, T, V] row-major tensor the
  /// kernels read. `design` keeps each position's features for backward().
  /// Positions after a sequence's end see the whole sequence as prefix; their
  /// labels are masked.
  void forward(const std::vector<const prompt*>& prompts, const std::vector<std::vector<int>>& seqs,
               std::vector<position_features>& design, matrix& logits) const {
    const size_t b = prompts.size();
    design.resize(b * max_len);
    logits.resize(vocab, static_cast<Eigen::Index>(b * max_len));
    for (size_t i = 0; i < b; ++i) {
      const auto& s = seqs[i];
      for (int t = 0; t < max_len; ++t) {
        const int upto = std::min<int>(t, static_cast<int>(s.size()));
        const size_t p = i * max_len + static_cast<size_t>(t);
        features(*prompts[i], s.data(), upto, design[p]);
        logits_of(design[p], logits.col(static_cast<Eigen::Index>(p)));
      }
    }
  }

  /// The features forward() keeps in `design`, without the logits (a
  /// data-parallel rank's backward over the whole batch, data_parallel.hpp).
  static void design_of(const std::vector<const prompt*>& prompts,
                        const std::vector<std::vector<int>>& seqs,
                        std::vector<position_features>& design) {
    design.resize(prompts.size() * max_len);
    for (size_t i = 0; i < prompts.size(); ++i)
      for (int t = 0; t < max_len; ++t)
        features(*prompts[i], seqs[i].data(), std::min<int>(t, static_cast<int>(seqs[i].size())),
                 design[i * max_len + static_cast<size_t>(t)]);
  }

  /// d loss / d (W, u) from d loss / d logits (V x (B*T), the layout of forward()).
  void backward(const std::vector<position_features>& design, const matrix& grad_logits,
                matrix& grad_weights, matrix& grad_shared) const {
    grad_weights.setZero(vocab, dim);
    grad_shared.setZero(shared_dim, 1);
    float psi[shared_dim];
    for (size_t p = 0; p < design.size(); ++p) {
      const auto g = grad_logits.col(static_cast<Eigen::Index>(p));
      for (size_t k = 0; k < design[p].index.size(); ++k)
        grad_weights.col(design[p].index[k]) += design[p].value[k] * g;
      for (int y = 0; y < vocab; ++y)
        if (g[y] != 0 && shared_features(design[p], y, psi))
          for (int j = 0; j < shared_dim; ++j) grad_shared(j, 0) += g[y] * psi[j];
    }
  }

  /// Samples a description (ends with <end> or at max_len tokens).
  std::vector<int> sample(const prompt& x, sim::rng& gen) const {
    std::vector<int> out;
    position_features f;
    Eigen::VectorXf logits(vocab);
    for (int t = 0; t < max_len; ++t) {
      features(x, out.data(), t, f);
      logits_of(f, logits);
      const float m = logits.maxCoeff();
      double total = 0;
      double weight[vocab];  // each exp once: sampling is the example's hot loop
      for (int v = 0; v < vocab; ++v)
        total += (weight[v] = std::exp(static_cast<double>(logits[v] - m)));
      double u = gen.uniform() * total;
      int token = vocab - 1;
      for (int v = 0; v < vocab; ++v) {
        u -= weight[v];
        if (u <= 0) {
          token = v;
          break;
        }
      }
      out.push_back(token);
      if (token == sim::vocabulary::eos) break;
    }
    return out;
  }

  matrix weights;  ///< W [V, D]
  matrix shared;   ///< u [shared_dim, 1]
};

/// Labels [B, T] for the kernels: the tokens, then ignore_index (-100).
inline std::vector<std::int32_t> make_labels(const std::vector<std::vector<int>>& seqs) {
  std::vector<std::int32_t> labels(seqs.size() * max_len, -100);
  for (size_t i = 0; i < seqs.size(); ++i)
    for (size_t t = 0; t < seqs[i].size() && t < static_cast<size_t>(max_len); ++t)
      labels[i * max_len + t] = seqs[i][t];
  return labels;
}

/// Adam (Kingma & Ba 2015) on one matrix; deterministic element-wise.
class adam_matrix {
 public:
  adam_matrix(Eigen::Index rows, Eigen::Index cols, float lr)
      : lr_(lr),
        m_(linear_policy::matrix::Zero(rows, cols)),
        v_(linear_policy::matrix::Zero(rows, cols)) {}
  void step(linear_policy::matrix& w, const linear_policy::matrix& grad) {
    ++t_;
    m_ = b1_ * m_ + (1 - b1_) * grad;
    v_ = b2_ * v_ + (1 - b2_) * grad.cwiseProduct(grad);
    const float c1 = 1 - std::pow(b1_, static_cast<float>(t_));
    const float c2 = 1 - std::pow(b2_, static_cast<float>(t_));
    w.array() -= lr_ * (m_.array() / c1) / ((v_.array() / c2).sqrt() + eps_);
  }

 private:
  float lr_, b1_ = 0.9f, b2_ = 0.999f, eps_ = 1e-8f;
  long t_ = 0;
  linear_policy::matrix m_, v_;
};

/// Adam on every parameter of a linear_policy.
class adam {
 public:
  adam(const linear_policy& p, float lr)
      : w_(p.weights.rows(), p.weights.cols(), lr), u_(p.shared.rows(), p.shared.cols(), lr) {}
  void step(linear_policy& p, const linear_policy::matrix& grad_w,
            const linear_policy::matrix& grad_u) {
    w_.step(p.weights, grad_w);
    u_.step(p.shared, grad_u);
  }

 private:
  adam_matrix w_, u_;
};

}  // namespace self_alignment
