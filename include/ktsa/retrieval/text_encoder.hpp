// ktsa/retrieval/text_encoder.hpp: a seeded text encoder for short texts
// (queries in buyer words, product texts in seller words).
//
// Features: the text is lower-cased and split at every character that is not
// a letter, digit or apostrophe; each word and (optionally) each pair of
// adjacent words is hashed (FNV-1a 64 of the n-gram, mixed with the seed) to
// one of `buckets` slots; counts are L2-normalised. So x(t) is a sparse vector.
//
// Item side (fixed, not learned): e_item(t) = x(t) P, where P [buckets x dim]
// has N(0, 1 / dim) entries drawn from a hash of (seed, bucket, column), a
// random projection that keeps the cosine between bags of words roughly (to
// about 1 / sqrt(dim)). Query side (learned): e_query(t) = x(t) W, where W is
// the ridge regression of the purchased items' embeddings on the queries'
// features over the training purchases (q_r, item_r):
//
//   W = argmin sum_r |x(q_r) W - e_item(item_r)|^2 + ridge |W|^2
//
// solved exactly (Cholesky, double) over the features that occur in training
// queries; an unseen feature has a zero row of W (the ridge solution). Words a
// buyer uses and a seller never does are thus connected only through what was
// bought. Everything is a function of the seed and the training pairs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/view.hpp"

namespace ktsa::retrieval {

struct text_encoder_config {
  std::uint64_t seed = 1;
  index_t buckets = index_t{1} << 18;
  index_t dim = 64;
  double ridge = 0.1;
  bool bigrams = true;
};

inline void validate(const text_encoder_config& c) {
  ktsa::detail::require(c.buckets >= 1, "buckets", c.buckets, "must be >= 1");
  ktsa::detail::require(c.dim >= 1, "dim", c.dim, "must be >= 1");
  ktsa::detail::require(std::isfinite(c.ridge) && c.ridge > 0, "ridge", c.ridge, "must be > 0");
}

namespace detail {
inline std::uint64_t mix64(std::uint64_t z) {  // splitmix64's finaliser
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline std::uint64_t fnv1a(std::string_view s, std::uint64_t seed) {
  std::uint64_t h = 0xcbf29ce484222325ull ^ mix64(seed);
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return mix64(h);
}
/// A standard normal from two hashed uniforms (Box-Muller, cosine branch).
inline double hashed_normal(std::uint64_t seed, std::uint64_t a, std::uint64_t b) {
  const std::uint64_t h1 = mix64(seed ^ mix64(a * 0xD1B54A32D192ED03ull ^ mix64(b)));
  const std::uint64_t h2 = mix64(h1 ^ 0x5851F42D4C957F2Dull);
  const double u1 = (static_cast<double>(h1 >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  const double u2 = (static_cast<double>(h2 >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}
}  // namespace detail

class text_encoder {
 public:
  using sparse = std::vector<std::pair<index_t, float>>;  ///< (bucket, value), by bucket

  explicit text_encoder(const text_encoder_config& cfg = {}) : cfg_(cfg) { validate(cfg_); }
  const text_encoder_config& config() const { return cfg_; }
  index_t dim() const { return cfg_.dim; }
  bool fitted() const { return fitted_; }

  /// The words of a text, as the features see them.
  static std::vector<std::string> words(std::string_view text) {
    std::vector<std::string> out;
    std::string cur;
    for (char ch : text) {
      const unsigned char c = static_cast<unsigned char>(ch);
      const bool word =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '\'';
      if (word) {
        cur += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      } else if (!cur.empty()) {
        out.push_back(cur);
        cur.clear();
      }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
  }

  /// x(text): hashed unigram (+ bigram) counts, L2-normalised; empty for a text with no words.
  sparse features(std::string_view text) const {
    const std::vector<std::string> w = words(text);
    std::vector<index_t> slots;
    const auto add = [&](const std::string& gram) {
      slots.push_back(static_cast<index_t>(detail::fnv1a(gram, cfg_.seed) %
                                           static_cast<std::uint64_t>(cfg_.buckets)));
    };
    for (size_t i = 0; i < w.size(); ++i) {
      add(w[i]);
      if (cfg_.bigrams && i + 1 < w.size()) add(w[i] + ' ' + w[i + 1]);
    }
    std::sort(slots.begin(), slots.end());
    sparse x;
    for (index_t s : slots) {
      if (!x.empty() && x.back().first == s)
        x.back().second += 1;
      else
        x.push_back({s, 1.0f});
    }
    double ss = 0;
    for (const auto& e : x) ss += static_cast<double>(e.second) * e.second;
    for (auto& e : x) e.second = static_cast<float>(e.second / std::sqrt(ss));
    return x;
  }

  /// Item embeddings out[N, dim] = x(text) P.
  void encode_items(const std::vector<std::string>& texts, matrix_view<float> out) const {
    ktsa::detail::require_extent(out, 0, static_cast<index_t>(texts.size()), "out");
    ktsa::detail::require_extent(out, 1, cfg_.dim, "out");
    const double scale = 1.0 / std::sqrt(static_cast<double>(cfg_.dim));
    for (size_t r = 0; r < texts.size(); ++r) {
      std::vector<double> e(static_cast<size_t>(cfg_.dim), 0.0);
      for (const auto& [slot, v] : features(texts[r]))
        for (index_t k = 0; k < cfg_.dim; ++k)
          e[static_cast<size_t>(k)] += v * scale * projection(slot, k);
      for (index_t k = 0; k < cfg_.dim; ++k)
        out(static_cast<index_t>(r), k) = static_cast<float>(e[static_cast<size_t>(k)]);
    }
  }

  /// Learns W from training purchases: queries[r] bought the item whose text is items[r].
  void fit(const std::vector<std::string>& queries, const std::vector<std::string>& items) {
    ktsa::detail::require_same_length("queries", static_cast<index_t>(queries.size()), "items",
                                      static_cast<index_t>(items.size()));
    ktsa::detail::require(!queries.empty(), "queries.size", queries.size(),
                          "must be > 0 (no purchases to learn from)");
    const index_t d = cfg_.dim, n = static_cast<index_t>(queries.size());
    std::vector<float> y(static_cast<size_t>(n * d));
    encode_items(items, make_view(y.data(), n, d));
    // Compact the features seen in training queries to 0..m-1.
    std::vector<sparse> x(static_cast<size_t>(n));
    column_.clear();
    for (index_t r = 0; r < n; ++r) {
      x[static_cast<size_t>(r)] = features(queries[static_cast<size_t>(r)]);
      for (auto& e : x[static_cast<size_t>(r)]) {
        const auto it = column_.emplace(e.first, static_cast<index_t>(column_.size())).first;
        e.first = it->second;
      }
    }
    const index_t m = static_cast<index_t>(column_.size());
    // Normal equations (X^T X + ridge I) W = X^T Y, in double.
    std::vector<double> g(static_cast<size_t>(m * m), 0.0), b(static_cast<size_t>(m * d), 0.0);
    for (index_t r = 0; r < n; ++r) {
      const sparse& xr = x[static_cast<size_t>(r)];
      for (const auto& [i, vi] : xr) {
        for (const auto& [j, vj] : xr) g[static_cast<size_t>(i * m + j)] += double(vi) * vj;
        for (index_t k = 0; k < d; ++k)
          b[static_cast<size_t>(i * d + k)] += double(vi) * y[static_cast<size_t>(r * d + k)];
      }
    }
    for (index_t i = 0; i < m; ++i) g[static_cast<size_t>(i * m + i)] += cfg_.ridge;
    cholesky_solve(g, b, m, d);
    w_.assign(b.begin(), b.end());
    fitted_ = true;
  }

  /// Query embeddings out[Q, dim] = x(text) W (zero for a text with no known feature).
  void encode_queries(const std::vector<std::string>& texts, matrix_view<float> out) const {
    if (!fitted_)
      throw invalid_argument("ktsa: text_encoder::encode_queries before fit(): W is not learned");
    ktsa::detail::require_extent(out, 0, static_cast<index_t>(texts.size()), "out");
    ktsa::detail::require_extent(out, 1, cfg_.dim, "out");
    const index_t d = cfg_.dim;
    for (size_t r = 0; r < texts.size(); ++r) {
      std::vector<double> e(static_cast<size_t>(d), 0.0);
      for (const auto& [slot, v] : features(texts[r])) {
        const auto it = column_.find(slot);
        if (it == column_.end()) continue;
        for (index_t k = 0; k < d; ++k)
          e[static_cast<size_t>(k)] += v * w_[static_cast<size_t>(it->second * d + k)];
      }
      for (index_t k = 0; k < d; ++k)
        out(static_cast<index_t>(r), k) = static_cast<float>(e[static_cast<size_t>(k)]);
    }
  }

  /// Entry (bucket, column) of the item projection P, before the 1 / sqrt(dim) scale.
  double projection(index_t bucket, index_t column) const {
    return detail::hashed_normal(cfg_.seed, static_cast<std::uint64_t>(bucket),
                                 static_cast<std::uint64_t>(column));
  }

 private:
  /// Solves G X = B in place (B becomes X); G [m x m] symmetric positive definite.
  static void cholesky_solve(std::vector<double>& g, std::vector<double>& b, index_t m, index_t d) {
    for (index_t j = 0; j < m; ++j) {  // G = L L^T, L in the lower triangle
      double diag = g[static_cast<size_t>(j * m + j)];
      for (index_t k = 0; k < j; ++k)
        diag -= g[static_cast<size_t>(j * m + k)] * g[static_cast<size_t>(j * m + k)];
      const double l = std::sqrt(diag);
      g[static_cast<size_t>(j * m + j)] = l;
      for (index_t i = j + 1; i < m; ++i) {
        double s = g[static_cast<size_t>(i * m + j)];
        const double* gi = &g[static_cast<size_t>(i * m)];
        const double* gj = &g[static_cast<size_t>(j * m)];
        for (index_t k = 0; k < j; ++k) s -= gi[k] * gj[k];
        g[static_cast<size_t>(i * m + j)] = s / l;
      }
    }
    for (index_t c = 0; c < d; ++c) {
      for (index_t i = 0; i < m; ++i) {  // L z = b
        double s = b[static_cast<size_t>(i * d + c)];
        for (index_t k = 0; k < i; ++k)
          s -= g[static_cast<size_t>(i * m + k)] * b[static_cast<size_t>(k * d + c)];
        b[static_cast<size_t>(i * d + c)] = s / g[static_cast<size_t>(i * m + i)];
      }
      for (index_t i = m - 1; i >= 0; --i) {  // L^T x = z
        double s = b[static_cast<size_t>(i * d + c)];
        for (index_t k = i + 1; k < m; ++k)
          s -= g[static_cast<size_t>(k * m + i)] * b[static_cast<size_t>(k * d + c)];
        b[static_cast<size_t>(i * d + c)] = s / g[static_cast<size_t>(i * m + i)];
      }
    }
  }

  text_encoder_config cfg_;
  std::unordered_map<index_t, index_t> column_;  ///< bucket -> row of W
  std::vector<double> w_;                        ///< [m x dim]
  bool fitted_ = false;
};

}  // namespace ktsa::retrieval
