// ktsa/retrieval/cf.hpp: item-item collaborative filtering from a sparse
// interaction matrix (document 001, Eq. 2).
//
// R is users x items in CSR (r_vj >= 0 or any finite weight: purchases,
// counts, ratings). Two items are similar when the same users interacted with
// both: the cosine of their columns,
//
//   sim(i, j) = sum_v r_vi r_vj / (|R_:i| |R_:j|)      (0 if either column is empty)
//
// and a user with interactions r_uj (a profile row, which need not be a row of
// R) scores item i by
//
//   cf(u, i) = sum_{j in I(u)} r_uj sim(i, j).
//
// sim(i, i) = 1 for an item with interactions, so items already in the
// profile score at least their own weight. An item nobody interacted with (a
// cold-start item) has sim 0 with every item and scores 0.
//
// The item-item matrix is never formed: cf(u, i) = (1 / |R_:i|) sum_v R_vi w_v
// with w_v = sum_j r_uj R_vj / |R_:j|, two passes over R (by column, then by
// row), O(profile x column length + touched users x row length) per profile.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"

namespace ktsa::retrieval {

/// A non-owning CSR matrix: row r holds indices[indptr[r] .. indptr[r+1]) with values.
struct csr_view {
  index_t rows = 0, cols = 0;
  const index_t* indptr = nullptr;   ///< rows + 1 offsets, indptr[0] = 0
  const index_t* indices = nullptr;  ///< column of each stored entry
  const float* values = nullptr;     ///< value of each stored entry
  index_t nnz() const { return rows > 0 ? indptr[rows] : 0; }
};

/// An owning CSR matrix built row by row.
struct csr_matrix {
  index_t rows = 0, cols = 0;
  std::vector<index_t> indptr{0};
  std::vector<index_t> indices;
  std::vector<float> values;

  explicit csr_matrix(index_t columns = 0) : cols(columns) {}
  /// Appends a row from (column, value) pairs.
  void add_row(const std::vector<std::pair<index_t, float>>& entries) {
    for (const auto& [c, v] : entries) {
      indices.push_back(c);
      values.push_back(v);
    }
    indptr.push_back(static_cast<index_t>(indices.size()));
    ++rows;
  }
  csr_view view() const { return {rows, cols, indptr.data(), indices.data(), values.data()}; }
};

/// Checks offsets, column range and finiteness; names `name` in the error.
inline void validate(const csr_view& m, const char* name) {
  ktsa::detail::require(m.rows >= 0, name, m.rows, "rows must be >= 0");
  ktsa::detail::require(m.cols >= 0, name, m.cols, "cols must be >= 0");
  if (m.rows == 0) return;
  if (m.indptr == nullptr) ktsa::detail::fail_argument(name, "null", "indptr must not be null");
  if (m.indptr[0] != 0) ktsa::detail::fail_argument(name, m.indptr[0], "indptr[0] must be 0");
  for (index_t r = 0; r < m.rows; ++r)
    if (m.indptr[r + 1] < m.indptr[r])
      throw invalid_argument(ktsa::detail::concat("ktsa: argument '", name, "': indptr[", r + 1,
                                                  "] = ", m.indptr[r + 1], " < indptr[", r,
                                                  "] = ", m.indptr[r]));
  for (index_t e = 0; e < m.nnz(); ++e) {
    if (m.indices[e] < 0 || m.indices[e] >= m.cols)
      throw invalid_argument(ktsa::detail::concat("ktsa: argument '", name, "': column index ",
                                                  m.indices[e], " at entry ", e, " is outside [0, ",
                                                  m.cols, ")"));
    if (!std::isfinite(m.values[e]))
      throw data_error(ktsa::detail::concat("ktsa: '", name, "' value at entry ", e, " is ",
                                            m.values[e], " (must be finite)"));
  }
}

/// Item-item CF over a fixed interaction matrix (copied into CSR + CSC form).
class item_item_cf {
 public:
  explicit item_item_cf(const csr_view& interactions) {
    validate(interactions, "interactions");
    users_ = interactions.rows;
    items_ = interactions.cols;
    const index_t nnz = interactions.nnz();
    row_ptr_.assign(interactions.indptr, interactions.indptr + users_ + 1);
    row_idx_.assign(interactions.indices, interactions.indices + nnz);
    row_val_.assign(interactions.values, interactions.values + nnz);
    if (users_ == 0) row_ptr_.assign(1, 0);
    // A (user, item) pair stored twice would count twice in sim; reject it.
    std::vector<index_t> last_user(static_cast<size_t>(items_), -1);
    for (index_t v = 0; v < users_; ++v)
      for (index_t e = row_ptr_[v]; e < row_ptr_[v + 1]; ++e) {
        index_t& seen = last_user[static_cast<size_t>(row_idx_[e])];
        if (seen == v)
          throw invalid_argument(ktsa::detail::concat("ktsa: argument 'interactions': row ", v,
                                                      " stores column ", row_idx_[e], " twice"));
        seen = v;
      }
    // Column form (CSC) by counting sort; users stay in increasing order.
    col_ptr_.assign(static_cast<size_t>(items_ + 1), 0);
    for (index_t e = 0; e < nnz; ++e) ++col_ptr_[static_cast<size_t>(row_idx_[e] + 1)];
    for (index_t i = 0; i < items_; ++i) col_ptr_[i + 1] += col_ptr_[i];
    col_user_.resize(static_cast<size_t>(nnz));
    col_val_.resize(static_cast<size_t>(nnz));
    std::vector<index_t> fill(col_ptr_.begin(), col_ptr_.end() - 1);
    for (index_t v = 0; v < users_; ++v)
      for (index_t e = row_ptr_[v]; e < row_ptr_[v + 1]; ++e) {
        const index_t slot = fill[static_cast<size_t>(row_idx_[e])]++;
        col_user_[slot] = v;
        col_val_[slot] = row_val_[e];
      }
    inv_norm_.assign(static_cast<size_t>(items_), 0.0);
    for (index_t i = 0; i < items_; ++i) {
      double ss = 0;
      for (index_t e = col_ptr_[i]; e < col_ptr_[i + 1]; ++e)
        ss += static_cast<double>(col_val_[e]) * col_val_[e];
      inv_norm_[static_cast<size_t>(i)] = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
    }
  }

  index_t users() const { return users_; }
  index_t items() const { return items_; }
  /// True when item i has at least one non-zero interaction (not cold).
  bool has_interactions(index_t i) const { return inv_norm_[static_cast<size_t>(i)] > 0; }

  /// sim(i, j) by the definition (for tests and inspection; O(column lengths)).
  double similarity(index_t i, index_t j) const {
    ktsa::detail::require(i >= 0 && i < items_, "i", i, "must be an item index");
    ktsa::detail::require(j >= 0 && j < items_, "j", j, "must be an item index");
    double dot = 0;
    index_t a = col_ptr_[i], b = col_ptr_[j];
    while (a < col_ptr_[i + 1] && b < col_ptr_[j + 1]) {
      if (col_user_[a] < col_user_[b]) {
        ++a;
      } else if (col_user_[b] < col_user_[a]) {
        ++b;
      } else {
        dot += static_cast<double>(col_val_[a++]) * col_val_[b++];
      }
    }
    return dot * inv_norm_[static_cast<size_t>(i)] * inv_norm_[static_cast<size_t>(j)];
  }

  /// out[B, items] = cf(profile row b, item i) for every profile row.
  /// Accumulates in double; rows in parallel.
  void scores(const exec::host& ex, const csr_view& profiles, matrix_view<float> out) const {
    validate(profiles, "profiles");
    ktsa::detail::require(profiles.cols == items_, "profiles.cols", profiles.cols,
                          "must equal the number of items of the interaction matrix");
    ktsa::detail::require_extent(out, 0, profiles.rows, "out");
    ktsa::detail::require_extent(out, 1, items_, "out");
    ktsa::detail::parallel_chunks(ex, profiles.rows, 4, [&](index_t b0, index_t b1) {
      std::vector<double> w(static_cast<size_t>(users_), 0.0), s(static_cast<size_t>(items_));
      std::vector<index_t> touched;
      for (index_t b = b0; b < b1; ++b) {
        for (index_t e = profiles.indptr[b]; e < profiles.indptr[b + 1]; ++e) {
          const index_t j = profiles.indices[e];
          const double rj = profiles.values[e] * inv_norm_[static_cast<size_t>(j)];
          for (index_t c = col_ptr_[j]; c < col_ptr_[j + 1]; ++c) {
            double& wv = w[static_cast<size_t>(col_user_[c])];
            if (wv == 0) touched.push_back(col_user_[c]);
            wv += rj * col_val_[c];
          }
        }
        std::sort(touched.begin(), touched.end());  // fixed summation order
        touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
        std::fill(s.begin(), s.end(), 0.0);
        for (index_t v : touched) {
          const double wv = w[static_cast<size_t>(v)];
          for (index_t e = row_ptr_[v]; e < row_ptr_[v + 1]; ++e)
            s[static_cast<size_t>(row_idx_[e])] += wv * row_val_[e];
          w[static_cast<size_t>(v)] = 0;
        }
        touched.clear();
        for (index_t i = 0; i < items_; ++i)
          out(b, i) =
              static_cast<float>(s[static_cast<size_t>(i)] * inv_norm_[static_cast<size_t>(i)]);
      }
    });
  }

 private:
  index_t users_ = 0, items_ = 0;
  std::vector<index_t> row_ptr_, row_idx_, col_ptr_, col_user_;
  std::vector<float> row_val_, col_val_;
  std::vector<double> inv_norm_;
};

}  // namespace ktsa::retrieval
