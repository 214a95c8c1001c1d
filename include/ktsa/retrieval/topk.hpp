// ktsa/retrieval/topk.hpp: exact top-K by inner product, and top-K of rows of
// precomputed scores.
//
// exact_topk scores queries [Q, d] against items [N, d] block by block: a GEMM
// of query_block x item_block scores (detail::gemm_nt), then a bounded heap of
// K per query. Scratch memory is threads * query_block * item_block floats
// plus threads * query_block * K heap entries, never Q x N.
//
// Order: higher score first; equal scores (exact float equality) by lower
// item id, so results do not depend on the block or thread layout. Item
// blocks start at fixed multiples of item_block whatever the thread count, so
// each score, and hence the result, is the same for every thread count. Scores
// come from one f32 GEMM: two items equal in exact arithmetic can still differ
// by an ulp when their vectors differ (summation order is the provider's).
//
// Edge cases (documented results, tested):
//   Q = 0                 nothing to do;
//   K = 0                 nothing to do (outputs have 0 columns);
//   K > N (or N = 0)      the first N slots hold every item in order, the rest
//                         get id no_item (-1) and score -infinity (FAISS's -1);
//   a zero vector         scores 0 with everything (inner product); cosine
//                         callers normalise first (see cbf.hpp: zero rows throw);
//   a NaN score           data_error naming the query and the item.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/exec.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/retrieval/detail/gemm.hpp"

namespace ktsa::retrieval {

/// Id of an empty result slot (K > number of items).
inline constexpr index_t no_item = -1;

struct topk_options {
  index_t query_block = 64;   ///< queries per GEMM block
  index_t item_block = 2048;  ///< items per GEMM block (scratch = query_block * item_block floats)
};

/// One scored item.
struct hit {
  float score;
  index_t id;
};

/// The retrieval order: a before b when it scores higher, or equal and has the lower id.
inline bool ranks_before(const hit& a, const hit& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

namespace detail {

/// Keeps the k best hits seen (a heap whose top is the worst kept).
class bounded_heap {
 public:
  void reset(index_t k) {
    k_ = static_cast<size_t>(k);
    h_.clear();
    h_.reserve(k_);
  }
  bool full() const { return h_.size() == k_; }
  /// The worst kept score; only meaningful when full().
  float worst() const { return h_.front().score; }
  void push(const hit& x) {
    if (k_ == 0) return;
    if (!full()) {
      h_.push_back(x);
      std::push_heap(h_.begin(), h_.end(), ranks_before);
    } else if (ranks_before(x, h_.front())) {
      std::pop_heap(h_.begin(), h_.end(), ranks_before);
      h_.back() = x;
      std::push_heap(h_.begin(), h_.end(), ranks_before);
    }
  }
  void merge_from(const bounded_heap& o) {
    for (const hit& x : o.h_) push(x);
  }
  /// Writes the kept hits best first, padding with (no_item, -inf).
  void write(vector_view<index_t> ids, vector_view<float> scores) {
    std::sort(h_.begin(), h_.end(), ranks_before);
    const index_t k = ids.extent(0);
    for (index_t j = 0; j < k; ++j) {
      const bool have = j < static_cast<index_t>(h_.size());
      ids[j] = have ? h_[static_cast<size_t>(j)].id : no_item;
      scores[j] = have ? h_[static_cast<size_t>(j)].score : -std::numeric_limits<float>::infinity();
    }
  }

 private:
  size_t k_ = 0;
  std::vector<hit> h_;
};

/// Pushes one row of scores for items first_id .. first_id + n - 1.
inline void scan_row(bounded_heap& heap, const float* s, index_t n, index_t first_id,
                     index_t query) {
  for (index_t j = 0; j < n; ++j) {
    const float v = s[j];
    if (heap.full() && v < heap.worst()) continue;  // NaN falls through to the check
    if (std::isnan(v))
      throw data_error(ktsa::detail::concat("ktsa: retrieval score of query ", query, " and item ",
                                            first_id + j, " is NaN (non-finite embedding?)"));
    heap.push({v, first_id + j});
  }
}

/// Row r of a matrix view as a vector view.
template <class T>
vector_view<T> row_of(const matrix_view<T>& m, index_t r) {
  return vector_view<T>(m.data() + r * m.stride(0), {m.extent(1)}, {m.stride(1)});
}

inline void check_outputs(index_t q, index_t k, const matrix_view<index_t>& ids,
                          const matrix_view<float>& scores) {
  ktsa::detail::require(k >= 0, "k", k, "must be >= 0");
  ktsa::detail::require_extent(ids, 0, q, "ids");
  ktsa::detail::require_extent(ids, 1, k, "ids");
  ktsa::detail::require_extent(scores, 0, q, "scores");
  ktsa::detail::require_extent(scores, 1, k, "scores");
}

inline void require_rows_contiguous(const matrix_view<const float>& v, const char* name) {
  if (v.extent(0) > 0 && v.extent(1) > 1 && v.stride(1) != 1)
    ktsa::detail::fail_argument(name, v.stride(1),
                                "needs stride 1 in dimension 1 (contiguous rows)");
  if (v.extent(0) > 1 && v.stride(0) < v.extent(1))
    ktsa::detail::fail_argument(name, v.stride(0), "row stride must be >= the row length");
}

}  // namespace detail

/// The K items of largest inner product <query, item> for every query.
/// queries [Q, d], items [N, d] (rows contiguous, any row stride); ids and
/// scores [Q, K], best first.
inline void exact_topk(const exec::host& ex, matrix_view<const float> queries,
                       matrix_view<const float> items, index_t k, matrix_view<index_t> ids,
                       matrix_view<float> scores, const topk_options& opt = {}) {
  const index_t nq = queries.extent(0), n = items.extent(0), d = queries.extent(1);
  detail::check_outputs(nq, k, ids, scores);
  ktsa::detail::require_extent(items, 1, d, "items");
  ktsa::detail::require(opt.query_block >= 1, "query_block", opt.query_block, "must be >= 1");
  ktsa::detail::require(opt.item_block >= 1, "item_block", opt.item_block, "must be >= 1");
  detail::require_rows_contiguous(queries, "queries");
  detail::require_rows_contiguous(items, "items");
  if (nq == 0 || k == 0) return;

  const index_t item_blocks = (n + opt.item_block - 1) / opt.item_block;
  const index_t threads =
      std::max<index_t>(1, std::min<index_t>(ex.resolved_threads(), item_blocks));
  struct worker {
    std::vector<float> scratch;
    std::vector<detail::bounded_heap> heaps;
  };
  std::vector<worker> workers(static_cast<size_t>(threads));
  for (index_t q0 = 0; q0 < nq; q0 += opt.query_block) {
    const index_t qb = std::min(opt.query_block, nq - q0);
    // Thread t owns item blocks [item_blocks t / T, item_blocks (t+1) / T).
    ktsa::detail::parallel_chunks(ex, threads, 1, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
        worker& w = workers[static_cast<size_t>(t)];
        w.scratch.resize(static_cast<size_t>(qb * std::min(opt.item_block, n)));
        w.heaps.resize(static_cast<size_t>(qb));
        for (auto& h : w.heaps) h.reset(k);
        for (index_t b = item_blocks * t / threads; b < item_blocks * (t + 1) / threads; ++b) {
          const index_t i0 = b * opt.item_block, nb = std::min(opt.item_block, n - i0);
          detail::gemm_nt(qb, nb, d, queries.data() + q0 * queries.stride(0), queries.stride(0),
                          items.data() + i0 * items.stride(0), items.stride(0), w.scratch.data(),
                          nb);
          for (index_t r = 0; r < qb; ++r)
            detail::scan_row(w.heaps[static_cast<size_t>(r)], w.scratch.data() + r * nb, nb, i0,
                             q0 + r);
        }
      }
    });
    for (index_t r = 0; r < qb; ++r) {
      detail::bounded_heap& h = workers[0].heaps[static_cast<size_t>(r)];
      for (index_t t = 1; t < threads; ++t)
        h.merge_from(workers[static_cast<size_t>(t)].heaps[static_cast<size_t>(r)]);
      h.write(detail::row_of(ids, q0 + r), detail::row_of(scores, q0 + r));
    }
  }
}

/// The K largest entries of each row of a score matrix [Q, N] (column index =
/// item id), same order and edge cases as exact_topk. Rows in parallel.
inline void topk_rows(const exec::host& ex, matrix_view<const float> row_scores, index_t k,
                      matrix_view<index_t> ids, matrix_view<float> scores) {
  const index_t nq = row_scores.extent(0), n = row_scores.extent(1);
  detail::check_outputs(nq, k, ids, scores);
  detail::require_rows_contiguous(row_scores, "row_scores");
  if (nq == 0 || k == 0) return;
  ktsa::detail::parallel_chunks(ex, nq, 16, [&](index_t q0, index_t q1) {
    detail::bounded_heap heap;
    for (index_t q = q0; q < q1; ++q) {
      heap.reset(k);
      detail::scan_row(heap, row_scores.data() + q * row_scores.stride(0), n, 0, q);
      heap.write(detail::row_of(ids, q), detail::row_of(scores, q));
    }
  });
}

}  // namespace ktsa::retrieval
