// ktsa/sim/retrieval.hpp: candidate retrieval for the simulated market
// (CBF, CF and the hybrid of ktsa/retrieval/ over the market's products).
//
// The market's queries come without a shopper history, so this adds one:
//
// - Shoppers are intents: a category and a set of one to three needed
//   attributes (92 per category, every set), whatever the phrasing. Each was
//   shown `history_length` warm products of its category, drawn from a hash
//   of (seed, category, set), and bought those whose true fit (the mean
//   quality of its attributes) plus logistic noise of scale purchase_noise
//   reaches purchase_threshold: one row of the interaction matrix (CSR,
//   shoppers x products, 1 per purchase). A query's shopper is its intent.
// - Cold products: each product is cold with probability cold_fraction (a hash
//   of seed and id); a cold product is never in a history nor in a training
//   purchase, so CF cannot score it.
// - The text encoder (retrieval/text_encoder.hpp) embeds "Category: seller
//   description" for products and the buyer's query text, its query map
//   learned from the training queries whose retrieved product (the market's
//   own pick) was warm and bought by the same rule.
// - Relevance of a product to a query (graded, from the hidden truth): the
//   query's weighted fit sum_a w_a quality_a for a product of the query's
//   category, grade 3 at >= 0.8, 2 at >= 0.7, 1 at >= 0.6, else 0 (0 for
//   another category).
//
// market_retrieval::candidates() is the market's pick when the example runs
// with --candidates retrieval: the best hybrid score among the products of the
// query's category (top-1, ties by product id).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "ktsa/core/exec.hpp"
#include "ktsa/retrieval/cbf.hpp"
#include "ktsa/retrieval/cf.hpp"
#include "ktsa/retrieval/hybrid.hpp"
#include "ktsa/retrieval/text_encoder.hpp"
#include "ktsa/retrieval/topk.hpp"
#include "ktsa/sim/catalogue.hpp"
#include "ktsa/sim/random.hpp"

namespace ktsa::sim {

struct retrieval_config {
  std::uint64_t seed = 11;
  int history_length = 12;
  double purchase_threshold = 0.6;
  double purchase_noise = 0.08;
  double cold_fraction = 0.2;
  int embedding_dim = 64;
  double ridge = 0.1;
  double cbf_weight = 0.5;  ///< hybrid blend (retrieval/hybrid.hpp)
};

inline void validate(const retrieval_config& c) {
  detail::require(c.history_length >= 0, "history_length", c.history_length, "must be >= 0");
  detail::require(std::isfinite(c.purchase_noise) && c.purchase_noise >= 0, "purchase_noise",
                  c.purchase_noise, "must be >= 0");
  detail::require(std::isfinite(c.purchase_threshold), "purchase_threshold", c.purchase_threshold,
                  "must be finite");
  detail::require(c.cold_fraction >= 0 && c.cold_fraction <= 1, "cold_fraction", c.cold_fraction,
                  "must be in [0, 1]");
  detail::require(c.embedding_dim >= 1, "embedding_dim", c.embedding_dim, "must be >= 1");
}

/// The query's weighted true fit of a product (0 for another category).
inline double true_fit(const query& q, const product& p) {
  if (p.category != q.category) return 0.0;
  double fit = 0;
  for (const need& x : q.needs) fit += x.weight * p.quality[static_cast<size_t>(x.attribute)];
  return fit;
}

/// Graded relevance 0..3 from the true fit (thresholds 0.6, 0.7, 0.8).
inline int relevance_grade(const query& q, const product& p) {
  const double f = true_fit(q, p);
  return f >= 0.8 ? 3 : (f >= 0.7 ? 2 : (f >= 0.6 ? 1 : 0));
}

/// The text a product is indexed by: "Category: seller description".
inline std::string product_text(const product& p) {
  return std::string(category(p.category).name) + ": " + vocabulary::text(p.seller_description);
}

/// Shopper intents: attribute sets of size 1..3 within a category.
class intents {
 public:
  static constexpr int per_category = 92;  // 8 + 28 + 56
  static int mask_of(const query& q) {
    int mask = 0;
    for (const need& x : q.needs) mask |= 1 << x.attribute;
    return mask;
  }
  /// The shopper id of (category, attribute mask); masks with 1..3 bits.
  static int id(int category_id, int mask) {
    const int slot = table().slot[static_cast<size_t>(mask & 255)];
    detail::require(slot >= 0, "intent mask", mask, "must have 1 to 3 of 8 bits set");
    return category_id * per_category + slot;
  }
  static int mask(int shopper) { return table().mask[static_cast<size_t>(shopper % per_category)]; }
  static int category_of(int shopper) { return shopper / per_category; }

 private:
  struct lookup {
    std::array<int, 256> slot{};
    std::array<int, per_category> mask{};
  };
  static const lookup& table() {
    static const lookup t = [] {
      lookup l;
      int next = 0;
      for (int m = 0; m < 256; ++m) {
        int bits = 0;
        for (int b = 0; b < 8; ++b) bits += (m >> b) & 1;
        l.slot[static_cast<size_t>(m)] = bits >= 1 && bits <= 3 ? next : -1;
        if (bits >= 1 && bits <= 3) l.mask[static_cast<size_t>(next++)] = m;
      }
      return l;
    }();
    return t;
  }
};

class market_retrieval {
 public:
  explicit market_retrieval(const market& m, const retrieval_config& cfg = {})
      : cfg_(cfg), products_(&m.products()), interactions_(0), encoder_(encoder_config(cfg)) {
    validate(cfg_);
    const auto& ps = *products_;
    const index_t n = static_cast<index_t>(ps.size());
    cold_.resize(ps.size());
    for (const product& p : ps)
      cold_[static_cast<size_t>(p.id)] =
          to_open_unit(hash_keys(cfg_.seed, 0x636f6c64ull /*cold*/,
                                 static_cast<std::uint64_t>(p.id))) < cfg_.cold_fraction;
    // Histories of every shopper intent.
    interactions_ = retrieval::csr_matrix(n);
    for (int s = 0; s < num_categories * intents::per_category; ++s) {
      const int c = intents::category_of(s), mask = intents::mask(s);
      std::vector<int> warm;
      for (const product& p : ps)
        if (p.category == c && !cold_[static_cast<size_t>(p.id)]) warm.push_back(p.id);
      std::vector<std::pair<index_t, float>> row;
      rng gen(hash_keys(cfg_.seed, 0x68697374ull /*hist*/, static_cast<std::uint64_t>(c),
                        static_cast<std::uint64_t>(mask)));
      std::vector<bool> shown(ps.size(), false);
      for (int k = 0; k < cfg_.history_length && !warm.empty(); ++k) {
        const int id = warm[static_cast<size_t>(gen.below(static_cast<int>(warm.size())))];
        if (shown[static_cast<size_t>(id)]) continue;
        shown[static_cast<size_t>(id)] = true;
        double fit = 0;
        int bits = 0;
        for (int a = 0; a < attributes_per_category; ++a)
          if (mask & (1 << a)) {
            fit += ps[static_cast<size_t>(id)].quality[static_cast<size_t>(a)];
            ++bits;
          }
        if (buys(fit / bits, hash_keys(cfg_.seed, 0x62757931ull, static_cast<std::uint64_t>(s),
                                       static_cast<std::uint64_t>(id))))
          row.push_back({id, 1.0f});
      }
      std::sort(row.begin(), row.end());
      interactions_.add_row(row);
    }
    cf_ = std::make_unique<retrieval::item_item_cf>(interactions_.view());
    // Encoder: products by their text, the query map from training purchases.
    std::vector<std::string> texts;
    for (const product& p : ps) texts.push_back(product_text(p));
    item_emb_.resize(static_cast<size_t>(n * cfg_.embedding_dim));
    encoder_.encode_items(texts, make_view(item_emb_.data(), n, index_t{cfg_.embedding_dim}));
    std::vector<std::string> bought_q, bought_p;
    for (const query& q : m.train_queries()) {
      const product& p = m.product_of(q);
      if (cold_[static_cast<size_t>(p.id)]) continue;
      if (buys(true_fit(q, p),
               hash_keys(cfg_.seed, 0x62757932ull, static_cast<std::uint64_t>(q.id)))) {
        bought_q.push_back(q.text);
        bought_p.push_back(texts[static_cast<size_t>(p.id)]);
      }
    }
    training_purchases_ = static_cast<index_t>(bought_q.size());
    if (!bought_q.empty()) encoder_.fit(bought_q, bought_p);
  }

  const retrieval_config& config() const { return cfg_; }
  bool is_cold(int product_id) const { return cold_[static_cast<size_t>(product_id)]; }
  const retrieval::csr_matrix& interactions() const { return interactions_; }
  const retrieval::item_item_cf& cf() const { return *cf_; }
  const retrieval::text_encoder& encoder() const { return encoder_; }
  index_t training_purchases() const { return training_purchases_; }
  matrix_view<const float> item_embeddings() const {
    return make_view(item_emb_.data(), static_cast<index_t>(products_->size()),
                     index_t{cfg_.embedding_dim});
  }
  static int shopper_of(const query& q) { return intents::id(q.category, intents::mask_of(q)); }

  /// Scores [Q, N], row-major, for each method.
  struct score_matrices {
    index_t rows = 0, cols = 0;
    std::vector<float> cbf, cf, hybrid;
    matrix_view<const float> view(const std::vector<float>& s) const {
      return make_view(s.data(), rows, cols);
    }
  };

  score_matrices score(const exec::host& ex, const std::vector<query>& qs) const {
    score_matrices out;
    out.rows = static_cast<index_t>(qs.size());
    out.cols = static_cast<index_t>(products_->size());
    const index_t d = cfg_.embedding_dim, sz = out.rows * out.cols;
    out.cbf.assign(static_cast<size_t>(sz), 0.0f);
    out.cf.assign(static_cast<size_t>(sz), 0.0f);
    out.hybrid.assign(static_cast<size_t>(sz), 0.0f);
    if (encoder_.fitted()) {
      std::vector<std::string> texts;
      for (const query& q : qs) texts.push_back(q.text);
      std::vector<float> qe(static_cast<size_t>(out.rows * d));
      encoder_.encode_queries(texts, make_view(qe.data(), out.rows, d));
      // A query with no known word has a zero embedding: it scores 0 (keep_zero).
      retrieval::cbf_scores(ex, make_view(qe.data(), out.rows, d), item_embeddings(),
                            make_view(out.cbf.data(), out.rows, out.cols),
                            retrieval::zero_rows::keep_zero);
    }
    retrieval::csr_matrix profiles(out.cols);
    const auto& r = interactions_;
    for (const query& q : qs) {
      const int s = shopper_of(q);
      std::vector<std::pair<index_t, float>> row;
      for (index_t e = r.indptr[static_cast<size_t>(s)]; e < r.indptr[static_cast<size_t>(s) + 1];
           ++e)
        row.push_back({r.indices[static_cast<size_t>(e)], r.values[static_cast<size_t>(e)]});
      profiles.add_row(row);
    }
    cf_->scores(ex, profiles.view(), make_view(out.cf.data(), out.rows, out.cols));
    retrieval::hybrid_scores(ex, out.view(out.cbf), out.view(out.cf),
                             make_view(out.hybrid.data(), out.rows, out.cols), {cfg_.cbf_weight});
    return out;
  }

  /// The product retrieved for each query: top-1 hybrid within its category.
  std::vector<int> candidates(const exec::host& ex, const std::vector<query>& qs) const {
    score_matrices s = score(ex, qs);
    const float off = -std::numeric_limits<float>::infinity();
    for (index_t q = 0; q < s.rows; ++q)
      for (index_t i = 0; i < s.cols; ++i)
        if ((*products_)[static_cast<size_t>(i)].category != qs[static_cast<size_t>(q)].category)
          s.hybrid[static_cast<size_t>(q * s.cols + i)] = off;
    std::vector<index_t> ids(qs.size());
    std::vector<float> top(qs.size());
    retrieval::topk_rows(ex, s.view(s.hybrid), 1, make_view(ids.data(), s.rows, index_t{1}),
                         make_view(top.data(), s.rows, index_t{1}));
    return std::vector<int>(ids.begin(), ids.end());
  }

 private:
  static retrieval::text_encoder_config encoder_config(const retrieval_config& c) {
    retrieval::text_encoder_config e;
    e.seed = hash_key(c.seed, 0x656e63ull /*enc*/);
    e.dim = c.embedding_dim;
    e.ridge = c.ridge;
    return e;
  }
  bool buys(double fit, std::uint64_t key) const {
    const double u = to_open_unit(key);
    return fit + cfg_.purchase_noise * std::log(u / (1.0 - u)) >= cfg_.purchase_threshold;
  }

  retrieval_config cfg_;
  const std::vector<product>* products_;
  std::vector<bool> cold_;
  retrieval::csr_matrix interactions_;
  std::unique_ptr<retrieval::item_item_cf> cf_;
  retrieval::text_encoder encoder_;
  std::vector<float> item_emb_;
  index_t training_purchases_ = 0;
};

/// Replaces every query's product by the retrieved candidate (see
/// market_retrieval::candidates); the hook behind --candidates retrieval.
inline void use_retrieved_candidates(market& m, const retrieval_config& cfg = {},
                                     const exec::host& ex = exec::host{}) {
  const market_retrieval r(m, cfg);
  m.set_query_products(r.candidates(ex, m.train_queries()), r.candidates(ex, m.test_queries()));
}

}  // namespace ktsa::sim
