// ktsa/sim/retrieval_eval.hpp: the retrieval table of document 002 for the
// simulated market: P@K, R@K, MRR@K and nDCG@K (K = 10 by default) for CF,
// CBF and the hybrid on held-out queries, with graded relevance from the
// market's true fit (sim/retrieval.hpp), scored by metrics:: ranking functions.
//
// Two splits:
//   all    each query ranks every product of the market; judged = every product;
//   cold   each query ranks only the cold products (no interactions), judged =
//          the cold products; CF scores them all 0, so its order is by id.
// A query with no relevant product (grade >= 1) in the pool is skipped (the
// table says how many were evaluated). A "random" row (scores from a hash of
// seed, query and product) is the floor; "CBF, no learned map" embeds the
// query with the item side's fixed projection (no training), which shows the
// language gap the learned map bridges.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "ktsa/core/exec.hpp"
#include "ktsa/metrics/ranking.hpp"
#include "ktsa/retrieval/topk.hpp"
#include "ktsa/sim/retrieval.hpp"

namespace ktsa::sim {

enum class retrieval_pool { all, cold };

struct retrieval_row {
  std::string method;
  double precision = 0, recall = 0, mrr = 0, ndcg = 0;
  int queries = 0;  ///< evaluated (with at least one relevant product in the pool)
};

/// Means over queries of P@k, R@k, RR@k, nDCG@k (linear gain) for one score matrix.
inline retrieval_row evaluate_scores(const std::string& method, const market& m,
                                     const market_retrieval& r, const std::vector<query>& qs,
                                     matrix_view<const float> scores, retrieval_pool pool,
                                     int k = 10, const exec::host& ex = exec::host{}) {
  detail::require(k >= 1, "k", k, "must be >= 1");
  detail::require_extent(scores, 0, static_cast<index_t>(qs.size()), "scores");
  detail::require_extent(scores, 1, static_cast<index_t>(m.products().size()), "scores");
  std::vector<index_t> cols;  // the pool's product ids
  for (const product& p : m.products())
    if (pool == retrieval_pool::all || r.is_cold(p.id)) cols.push_back(p.id);
  const index_t nq = static_cast<index_t>(qs.size()), n = static_cast<index_t>(cols.size());
  std::vector<float> sub(static_cast<size_t>(nq * n));
  for (index_t q = 0; q < nq; ++q)
    for (index_t j = 0; j < n; ++j)
      sub[static_cast<size_t>(q * n + j)] = scores(q, cols[static_cast<size_t>(j)]);
  std::vector<index_t> ids(static_cast<size_t>(nq * k));
  std::vector<float> top(static_cast<size_t>(nq * k));
  retrieval::topk_rows(ex, make_view(sub.data(), nq, n), k, make_view(ids.data(), nq, index_t{k}),
                       make_view(top.data(), nq, index_t{k}));
  retrieval_row row{method};
  for (index_t q = 0; q < nq; ++q) {
    const query& qu = qs[static_cast<size_t>(q)];
    metrics::ranked_query rq;
    for (index_t j : cols)
      rq.judged.push_back(relevance_grade(qu, m.products()[static_cast<size_t>(j)]));
    if (metrics::num_relevant(rq) == 0) continue;
    for (index_t t = 0; t < k; ++t) {
      const index_t j = ids[static_cast<size_t>(q * k + t)];
      if (j == retrieval::no_item) break;
      rq.ranked.push_back(rq.judged[static_cast<size_t>(j)]);
    }
    row.precision += metrics::precision_at(rq, k);
    row.recall += metrics::recall_at(rq, k);
    row.mrr += metrics::reciprocal_rank_at(rq, k);
    row.ndcg += metrics::ndcg_at(rq, k);
    ++row.queries;
  }
  if (row.queries > 0) {
    row.precision /= row.queries;
    row.recall /= row.queries;
    row.mrr /= row.queries;
    row.ndcg /= row.queries;
  }
  return row;
}

struct retrieval_table {
  int k = 10;
  std::vector<retrieval_row> all, cold;
};

/// CF, CBF, hybrid and random on both splits.
inline retrieval_table evaluate_retrieval(const market& m, const market_retrieval& r,
                                          const std::vector<query>& qs, int k = 10,
                                          const exec::host& ex = exec::host{}) {
  const market_retrieval::score_matrices s = r.score(ex, qs);
  std::vector<float> rnd(s.cbf.size());
  for (index_t q = 0; q < s.rows; ++q)
    for (index_t i = 0; i < s.cols; ++i)
      rnd[static_cast<size_t>(q * s.cols + i)] = static_cast<float>(to_open_unit(hash_keys(
          r.config().seed, 0x726e64ull, static_cast<std::uint64_t>(qs[static_cast<size_t>(q)].id),
          static_cast<std::uint64_t>(i))));
  // The language gap: queries through the item side's fixed projection, no learned map.
  std::vector<std::string> texts;
  for (const query& q : qs) texts.push_back(q.text);
  const index_t d = r.encoder().dim();
  std::vector<float> qe(static_cast<size_t>(s.rows * d)), raw(s.cbf.size());
  r.encoder().encode_items(texts, make_view(qe.data(), s.rows, d));
  retrieval::cbf_scores(ex, make_view(qe.data(), s.rows, d), r.item_embeddings(),
                        make_view(raw.data(), s.rows, s.cols), retrieval::zero_rows::keep_zero);
  retrieval_table t;
  t.k = k;
  for (auto pool : {retrieval_pool::all, retrieval_pool::cold}) {
    auto& rows = pool == retrieval_pool::all ? t.all : t.cold;
    rows.push_back(evaluate_scores("random", m, r, qs, s.view(rnd), pool, k, ex));
    rows.push_back(evaluate_scores("CF", m, r, qs, s.view(s.cf), pool, k, ex));
    rows.push_back(evaluate_scores("CBF, no learned map", m, r, qs, s.view(raw), pool, k, ex));
    rows.push_back(evaluate_scores("CBF", m, r, qs, s.view(s.cbf), pool, k, ex));
    rows.push_back(evaluate_scores("hybrid", m, r, qs, s.view(s.hybrid), pool, k, ex));
  }
  return t;
}

/// Markdown: one table per split.
inline std::string to_markdown(const retrieval_table& t) {
  std::string out;
  char line[256];
  for (int split = 0; split < 2; ++split) {
    const auto& rows = split == 0 ? t.all : t.cold;
    std::snprintf(line, sizeof line, "\n%s (%d queries with a relevant product)\n\n",
                  split == 0 ? "All products" : "Cold-start: cold products only",
                  rows.empty() ? 0 : rows.front().queries);
    out += line;
    std::snprintf(line, sizeof line,
                  "| Method | P@%d | R@%d | MRR@%d | nDCG@%d |\n|:---|---:|---:|---:|---:|\n", t.k,
                  t.k, t.k, t.k);
    out += line;
    for (const auto& r : rows) {
      std::snprintf(line, sizeof line, "| %s | %.4f | %.4f | %.4f | %.4f |\n", r.method.c_str(),
                    r.precision, r.recall, r.mrr, r.ndcg);
      out += line;
    }
  }
  return out;
}

}  // namespace ktsa::sim
