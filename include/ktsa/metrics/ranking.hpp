// ktsa/metrics/ranking.hpp: ranking metrics with trec_eval's conventions.
//
// A query's run is sorted by score descending; equal scores are broken by
// document id descending (byte-wise string order, as trec_eval's strcmp), so
// the rank column of a run file is ignored. A document is relevant when its
// judged grade is >= relevance_level (default 1); unjudged documents have grade 0.
// With R = number of relevant judged documents and rel_i the grade at rank i:
//
//   P@K          relevant in the top K / K (divided by K even if fewer were retrieved)
//   recall@K     relevant in the top K / R
//   RR           1 / rank of the first relevant document (0 if none); RR@K only
//                looks at the top K
//   success@K    1 if a relevant document is in the top K (HitRate@K)
//   AP@K         sum over relevant documents at rank i <= K of P@i, divided by R
//                (trec_eval's map_cut_K; MAP@K is its mean over queries)
//   nDCG@K       DCG@K / IDCG@K, DCG@K = sum_{i <= K} g(rel_i) / log2(i + 1),
//                g(r) = r (linear, trec_eval's) or 2^r - 1 (exponential), g = 0 for
//                r <= 0; IDCG over every judged document sorted by grade, cut at K
//
// A query with R = 0 scores 0 on every metric; K = 0 scores 0 (nothing is in
// the top 0); an empty run scores 0. evaluate_run() counts R = 0 queries by
// default; a policy may skip them or raise an error.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ktsa/core/errors.hpp"

namespace ktsa::metrics {

enum class gain { linear, exponential };

/// One retrieved document and its score.
struct scored_doc {
  std::string doc;
  double score;
};

/// A query ready to score: the grade of each retrieved document in rank
/// order (0 if unjudged) and the grades of every judged document.
struct ranked_query {
  std::vector<int> ranked;
  std::vector<int> judged;
};

/// Sorts `retrieved` by trec_eval's order (score descending, then document id
/// descending) and looks up each grade in `judgments`. Throws invalid_argument
/// on a non-finite score or a document retrieved twice.
inline ranked_query rank_query(const std::map<std::string, int>& judgments,
                               std::vector<scored_doc> retrieved) {
  std::set<std::string> seen;
  for (const auto& d : retrieved) {
    if (!std::isfinite(d.score))
      ktsa::detail::fail_argument("score", d.score,
                                  ("must be finite (document '" + d.doc + "')").c_str());
    if (!seen.insert(d.doc).second)
      ktsa::detail::fail_argument("doc", d.doc, "is retrieved twice for one query");
  }
  std::sort(retrieved.begin(), retrieved.end(), [](const scored_doc& a, const scored_doc& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.doc > b.doc;
  });
  ranked_query q;
  for (const auto& d : retrieved) {
    const auto it = judgments.find(d.doc);
    q.ranked.push_back(it == judgments.end() ? 0 : it->second);
  }
  for (const auto& j : judgments) q.judged.push_back(j.second);
  return q;
}

/// As rank_query, for documents already in rank order (best first).
inline ranked_query rank_query_in_order(const std::map<std::string, int>& judgments,
                                        const std::vector<std::string>& docs_in_rank_order) {
  std::vector<scored_doc> retrieved;
  for (std::size_t i = 0; i < docs_in_rank_order.size(); ++i)
    retrieved.push_back({docs_in_rank_order[i], -static_cast<double>(i)});
  return rank_query(judgments, std::move(retrieved));
}

namespace detail {
inline void require_cutoff(int k) {
  ktsa::detail::require(k >= 0, "k", k, "must be >= 0");
}
inline void require_level(int level) {
  ktsa::detail::require(level >= 1, "relevance_level", level, "must be >= 1");
}
inline std::size_t top(const ranked_query& q, int k) {
  return std::min(q.ranked.size(), static_cast<std::size_t>(k));
}
// The gain of a grade; exponential gains are scaled by 2^-top (top = the
// largest grade of the query), 2^(r - top) - 2^-top, so that grades >= 1024
// cannot overflow 2^r. nDCG is a ratio of two sums of gains, so one common
// scale leaves it unchanged.
inline double gain_of(int grade, gain g, int top = 0) {
  if (grade <= 0) return 0.0;
  if (g == gain::linear) return static_cast<double>(grade);
  return std::exp2(grade - top) - std::exp2(-top);
}
}  // namespace detail

/// R: judged documents with grade >= relevance_level.
inline std::int64_t num_relevant(const ranked_query& q, int relevance_level = 1) {
  detail::require_level(relevance_level);
  return std::count_if(q.judged.begin(), q.judged.end(),
                       [&](int g) { return g >= relevance_level; });
}

inline double precision_at(const ranked_query& q, int k, int relevance_level = 1) {
  detail::require_cutoff(k);
  detail::require_level(relevance_level);
  if (k == 0) return 0.0;
  const auto n = std::count_if(q.ranked.begin(), q.ranked.begin() + detail::top(q, k),
                               [&](int g) { return g >= relevance_level; });
  return static_cast<double>(n) / k;
}

inline double recall_at(const ranked_query& q, int k, int relevance_level = 1) {
  detail::require_cutoff(k);
  const auto r = num_relevant(q, relevance_level);
  if (r == 0) return 0.0;
  const auto n = std::count_if(q.ranked.begin(), q.ranked.begin() + detail::top(q, k),
                               [&](int g) { return g >= relevance_level; });
  return static_cast<double>(n) / static_cast<double>(r);
}

/// 1 / rank of the first relevant document within the top k (0 if none).
inline double reciprocal_rank_at(const ranked_query& q, int k, int relevance_level = 1) {
  detail::require_cutoff(k);
  detail::require_level(relevance_level);
  for (std::size_t i = 0; i < detail::top(q, k); ++i)
    if (q.ranked[i] >= relevance_level) return 1.0 / static_cast<double>(i + 1);
  return 0.0;
}

/// Reciprocal rank with no cutoff (trec_eval's recip_rank).
inline double reciprocal_rank(const ranked_query& q, int relevance_level = 1) {
  detail::require_level(relevance_level);
  for (std::size_t i = 0; i < q.ranked.size(); ++i)
    if (q.ranked[i] >= relevance_level) return 1.0 / static_cast<double>(i + 1);
  return 0.0;
}

/// 1 if a relevant document is in the top k (trec_eval's success_K).
inline double success_at(const ranked_query& q, int k, int relevance_level = 1) {
  return reciprocal_rank_at(q, k, relevance_level) > 0 ? 1.0 : 0.0;
}
inline double hit_rate_at(const ranked_query& q, int k, int relevance_level = 1) {
  return success_at(q, k, relevance_level);
}

/// Average precision over the top k, divided by R (trec_eval's map_cut_K).
inline double average_precision_at(const ranked_query& q, int k, int relevance_level = 1) {
  detail::require_cutoff(k);
  const auto r = num_relevant(q, relevance_level);
  if (r == 0) return 0.0;
  double sum = 0;
  std::int64_t hits = 0;
  for (std::size_t i = 0; i < detail::top(q, k); ++i) {
    if (q.ranked[i] >= relevance_level) {
      ++hits;
      sum += static_cast<double>(hits) / static_cast<double>(i + 1);
    }
  }
  return sum / static_cast<double>(r);
}

inline double ndcg_at(const ranked_query& q, int k, gain g = gain::linear) {
  detail::require_cutoff(k);
  int top = 0;  // the scale of the exponential gains (see gain_of)
  for (int r : q.judged) top = std::max(top, r);
  for (int r : q.ranked) top = std::max(top, r);
  double dcg = 0;
  for (std::size_t i = 0; i < detail::top(q, k); ++i)
    dcg += detail::gain_of(q.ranked[i], g, top) / std::log2(static_cast<double>(i) + 2.0);
  std::vector<int> ideal = q.judged;
  std::sort(ideal.begin(), ideal.end(), [](int a, int b) { return a > b; });
  double idcg = 0;
  for (std::size_t i = 0; i < std::min(ideal.size(), static_cast<std::size_t>(k)); ++i)
    idcg += detail::gain_of(ideal[i], g, top) / std::log2(static_cast<double>(i) + 2.0);
  return idcg > 0 ? dcg / idcg : 0.0;
}

// ---- whole runs ---------------------------------------------------------------

/// qid -> (docid -> grade)
using qrels = std::map<std::string, std::map<std::string, int>>;
/// qid -> retrieved documents (any order; rank_query sorts them)
using run_results = std::map<std::string, std::vector<scored_doc>>;

enum class no_relevant_policy { score_zero, skip, error };

struct ranking_options {
  std::vector<int> cutoffs{5, 10};
  gain gain_kind = gain::linear;
  int relevance_level = 1;
  no_relevant_policy no_relevant = no_relevant_policy::score_zero;
  /// trec_eval -c: judged queries missing from the run count, scoring 0.
  bool complete = false;
};

struct metric_value {
  std::string name;
  double value;
};

struct query_metrics {
  std::string qid;
  std::vector<metric_value> values;
};

struct ranking_report {
  std::vector<query_metrics> queries;  ///< evaluated queries, by qid (byte order)
  query_metrics all;                   ///< mean over `queries`, qid "all"
};

/// Scores every judged query of the run (queries the qrels do not judge are
/// ignored, as trec_eval does). Metrics, in this order: recip_rank, then for
/// each cutoff K: P_K, recall_K, ndcg_cut_K, map_cut_K, success_K.
/// Throws invalid_argument on a bad option or when no query can be evaluated,
/// data_error under no_relevant_policy::error for a query with R = 0.
inline ranking_report evaluate_run(const qrels& judgments, const run_results& run,
                                   const ranking_options& options = {}) {
  detail::require_level(options.relevance_level);
  ktsa::detail::require(!options.cutoffs.empty(), "cutoffs.size", options.cutoffs.size(),
                        "must be > 0");
  std::vector<int> cutoffs;
  for (int k : options.cutoffs) {
    ktsa::detail::require(k >= 1, "cutoff", k, "must be >= 1");
    if (std::find(cutoffs.begin(), cutoffs.end(), k) == cutoffs.end()) cutoffs.push_back(k);
  }
  ranking_report report;
  for (const auto& [qid, judged] : judgments) {
    const auto it = run.find(qid);
    if (it == run.end() && !options.complete) continue;
    const ranked_query q =
        rank_query(judged, it == run.end() ? std::vector<scored_doc>{} : it->second);
    if (num_relevant(q, options.relevance_level) == 0) {
      if (options.no_relevant == no_relevant_policy::skip) continue;
      if (options.no_relevant == no_relevant_policy::error)
        throw data_error("ktsa: query '" + qid + "' has no relevant judged document");
    }
    query_metrics m{qid, {}};
    const int level = options.relevance_level;
    m.values.push_back({"recip_rank", reciprocal_rank(q, level)});
    const auto add = [&](const char* prefix, double v, int k) {
      m.values.push_back({prefix + std::to_string(k), v});
    };
    for (int k : cutoffs) add("P_", precision_at(q, k, level), k);
    for (int k : cutoffs) add("recall_", recall_at(q, k, level), k);
    for (int k : cutoffs) add("ndcg_cut_", ndcg_at(q, k, options.gain_kind), k);
    for (int k : cutoffs) add("map_cut_", average_precision_at(q, k, level), k);
    for (int k : cutoffs) add("success_", success_at(q, k, level), k);
    report.queries.push_back(std::move(m));
  }
  if (report.queries.empty())
    throw ktsa::invalid_argument(
        "ktsa: no query to evaluate: no judged query is in the run (or all were skipped)");
  report.all.qid = "all";
  for (std::size_t j = 0; j < report.queries.front().values.size(); ++j) {
    double sum = 0;
    for (const auto& q : report.queries) sum += q.values[j].value;
    report.all.values.push_back(
        {report.queries.front().values[j].name, sum / static_cast<double>(report.queries.size())});
  }
  return report;
}

/// trec_eval's output: "%-22s\t%s\t%6.4f" per line; the per-query blocks first
/// when per_query is set, then the means under qid "all".
inline std::string to_trec_eval(const ranking_report& report, bool per_query = false) {
  std::string out;
  const auto emit = [&](const query_metrics& q) {
    for (const auto& v : q.values) {
      char value[64];
      std::snprintf(value, sizeof value, "%6.4f", v.value);
      out += v.name;
      if (v.name.size() < 22) out.append(22 - v.name.size(), ' ');
      out += '\t' + q.qid + '\t' + value + '\n';
    }
  };
  if (per_query)
    for (const auto& q : report.queries) emit(q);
  emit(report.all);
  return out;
}

}  // namespace ktsa::metrics
