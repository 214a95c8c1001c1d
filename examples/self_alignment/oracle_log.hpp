// The learned Oracle of the KTSA paper (Tables 1 and 2): log the buyer's
// actions on impressions of (query, product, description, reviews), split the
// log 80/10/10, fit candidate Oracle models, choose one on dev.
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <ktsa/metrics/classification.hpp>
#include <ktsa/sim/buyer.hpp>
#include <ktsa/sim/learned_oracle.hpp>

namespace self_alignment {

namespace sim = ktsa::sim;

/// The logging policy: half the impressions show the seller's listing, the
/// other half a random description (one to four distinct claims of the
/// category, now and then a filler, a repeat or a word of another category),
/// so the log covers the descriptions a generator may write.
inline std::vector<int> logging_description(const sim::product& p, sim::rng& gen) {
  if (gen.uniform() < 0.5) return p.seller_description;
  std::vector<int> out;
  const int claims = 1 + gen.below(4);
  bool used[sim::attributes_per_category] = {};
  while (static_cast<int>(out.size()) < claims) {
    const int a = gen.below(sim::attributes_per_category);
    if (used[a]) continue;
    used[a] = true;
    out.push_back(sim::vocabulary::claim_token(p.category, a));
  }
  if (gen.uniform() < 0.3) out.push_back(sim::vocabulary::filler_token(gen.below(6)));
  if (gen.uniform() < 0.1) out.push_back(out.front());
  if (gen.uniform() < 0.05)
    out.push_back(sim::vocabulary::claim_token((p.category + 1 + gen.below(7)) % 8, gen.below(8)));
  out.push_back(sim::vocabulary::eos);
  return out;
}

struct oracle_log {
  std::vector<sim::logged_example> split[3];  // train, dev, test
  std::int64_t counts[3][sim::num_actions] = {};
};

inline const char* const split_names[3] = {"train", "dev", "test"};

/// One logged impression per query of `queries`, split 80/10/10 into train /
/// dev / test by a seeded shuffle (exact counts, as Table 1 reports them).
template <class ShownProduct>
oracle_log log_actions(const std::vector<sim::query>& queries, ShownProduct&& shown,
                       const sim::oracle& buyer, std::uint64_t seed) {
  const size_t n = queries.size();
  ktsa::detail::require(n >= 10, "training queries", n, "the Oracle log needs at least 10 rows");
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  sim::rng shuffle(sim::hash_key(seed, 0x5911));
  for (size_t i = n - 1; i > 0; --i)
    std::swap(order[i], order[static_cast<size_t>(shuffle.below(static_cast<int>(i + 1)))]);
  oracle_log log;
  for (size_t rank = 0; rank < n; ++rank) {
    const sim::query& q = queries[order[rank]];
    const sim::product& p = shown(q);
    sim::rng gen(sim::hash_keys(seed, 0x106, static_cast<std::uint64_t>(q.id)));
    const std::vector<int> text = logging_description(p, gen);
    sim::logged_example e;
    e.x = sim::make_oracle_features(sim::oracle_features::with_reviews, q, p, text);
    e.act =
        buyer.respond(q, p, text, sim::hash_keys(seed, 0x107, static_cast<std::uint64_t>(q.id)));
    const int s = rank < n * 8 / 10 ? 0 : (rank < n * 9 / 10 ? 1 : 2);
    ++log.counts[s][static_cast<int>(e.act)];
    log.split[s].push_back(e);
  }
  return log;
}

struct oracle_candidate {
  sim::oracle_features set;
  sim::action_model model;
  double dev_log_loss = 0;
  ktsa::metrics::classification_scores dev, test, test_balanced;
};

inline std::vector<int> labels_of(const std::vector<sim::logged_example>& d) {
  std::vector<int> y;
  for (const auto& e : d) y.push_back(static_cast<int>(e.act));
  return y;
}
inline std::vector<int> predictions_of(const sim::action_model& m,
                                       const std::vector<sim::logged_example>& d) {
  std::vector<int> y;
  for (const auto& e : d) y.push_back(static_cast<int>(m.predict(e.x)));
  return y;
}
/// The balanced rule for rare classes: argmax_c p(c | x) / prior(c), the
/// prior being the train split's frequencies; ties go to the commoner class
/// (so the prior-only model still predicts the majority).
inline std::vector<int> balanced_predictions_of(const sim::action_model& m,
                                                const std::vector<sim::logged_example>& d,
                                                const std::int64_t* train_counts) {
  std::vector<int> y;
  for (const auto& e : d) {
    const auto p = m.probabilities(e.x);
    int best = -1;
    double best_score = 0;
    for (int c = 0; c < sim::num_actions; ++c) {
      const double score = p[static_cast<size_t>(c)] / static_cast<double>(train_counts[c] + 1);
      const bool better =
          best < 0 || score > best_score * (1 + 1e-12) ||
          (score >= best_score * (1 - 1e-12) && train_counts[c] > train_counts[best]);
      if (better) {
        best = c;
        best_score = score;
      }
    }
    y.push_back(best);
  }
  return y;
}

/// Fits the three candidates on train, scores them on dev and test; `chosen`
/// is the lowest dev log-loss (the Oracle is used as a sampler, so its
/// probabilities matter more than its argmax).
inline std::vector<oracle_candidate> fit_oracles(const oracle_log& log, std::uint64_t seed,
                                                 int& chosen) {
  std::vector<oracle_candidate> out;
  for (auto set : {sim::oracle_features::prior_only, sim::oracle_features::listing,
                   sim::oracle_features::with_reviews}) {
    oracle_candidate c{set, {}, 0, {}, {}, {}};
    sim::oracle_training t;
    t.seed = sim::hash_key(seed, 0x0AC1E);
    // Rows hold the with_reviews features; a model reads its set's prefix.
    c.model = sim::action_model::fit(set, log.split[0], t);
    const auto &dev = log.split[1], &test = log.split[2];
    c.dev_log_loss = c.model.log_loss(dev);
    c.dev = ktsa::metrics::classification_report(labels_of(dev), predictions_of(c.model, dev),
                                                 sim::num_actions);
    c.test = ktsa::metrics::classification_report(labels_of(test), predictions_of(c.model, test),
                                                  sim::num_actions);
    c.test_balanced = ktsa::metrics::classification_report(
        labels_of(test), balanced_predictions_of(c.model, test, log.counts[0]), sim::num_actions);
    out.push_back(std::move(c));
  }
  chosen = 0;
  for (int i = 1; i < static_cast<int>(out.size()); ++i)
    if (out[static_cast<size_t>(i)].dev_log_loss < out[static_cast<size_t>(chosen)].dev_log_loss)
      chosen = i;
  return out;
}

inline std::string fmt(const char* spec, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

/// Table 1: rows per split and the share of each action.
inline void table1(const oracle_log& log, std::string& md, std::string& csv) {
  md = "| Split | Rows | Purchase | Add to cart | Abandon |\n|:---|---:|---:|---:|---:|\n";
  csv = "split,rows,purchase,add_to_cart,abandon\n";
  std::int64_t total[4] = {};
  for (int s = 0; s <= 3; ++s) {
    const std::int64_t* c = s < 3 ? log.counts[s] : total;
    const std::int64_t n = c[0] + c[1] + c[2];
    if (s < 3)
      for (int a = 0; a < 3; ++a) total[a] += c[a];
    const std::string name = s < 3 ? split_names[s] : "**total**";
    md += "| " + name + " | " + std::to_string(n) + " |";
    csv += (s < 3 ? split_names[s] : "total") + std::string(",") + std::to_string(n);
    for (int a = 0; a < 3; ++a) {
      md += " " + std::to_string(c[a]) + " (" +
            fmt("%.2f", n ? 100.0 * static_cast<double>(c[a]) / static_cast<double>(n) : 0.0) +
            "%) |";
      csv += "," + std::to_string(c[a]);
    }
    md += "\n";
    csv += "\n";
  }
}

/// Table 2: each candidate's macro / weighted F1 on test (and dev), the dev
/// log-loss that chose the Oracle.
inline void table2(const std::vector<oracle_candidate>& cands, int chosen, std::string& md,
                   std::string& csv) {
  md = "| Oracle model | Features | Dev log-loss | Dev macro F1 | Test macro F1 | Test weighted F1 "
       "| Test accuracy | Test macro F1, balanced rule | Test weighted F1, balanced rule |\n"
       "|:---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  csv =
      "model,features,dev_log_loss,dev_macro_f1,test_macro_f1,test_weighted_f1,test_accuracy,"
      "test_macro_f1_balanced,test_weighted_f1_balanced,chosen\n";
  for (int i = 0; i < static_cast<int>(cands.size()); ++i) {
    const auto& c = cands[static_cast<size_t>(i)];
    md += "| " + std::string(sim::oracle_features_name(c.set)) + (i == chosen ? " (chosen)" : "") +
          " | " + std::to_string(sim::oracle_feature_count(c.set)) + " | " +
          fmt("%.4f", c.dev_log_loss) + " | " + fmt("%.4f", c.dev.macro.f1) + " | " +
          fmt("%.4f", c.test.macro.f1) + " | " + fmt("%.4f", c.test.weighted.f1) + " | " +
          fmt("%.4f", c.test.accuracy) + " | " + fmt("%.4f", c.test_balanced.macro.f1) + " | " +
          fmt("%.4f", c.test_balanced.weighted.f1) + " |\n";
    csv += std::string("\"") + sim::oracle_features_name(c.set) + "\"," +
           std::to_string(sim::oracle_feature_count(c.set)) + "," + fmt("%.10g", c.dev_log_loss) +
           "," + fmt("%.10g", c.dev.macro.f1) + "," + fmt("%.10g", c.test.macro.f1) + "," +
           fmt("%.10g", c.test.weighted.f1) + "," + fmt("%.10g", c.test.accuracy) + "," +
           fmt("%.10g", c.test_balanced.macro.f1) + "," +
           fmt("%.10g", c.test_balanced.weighted.f1) + "," + (i == chosen ? "1" : "0") + "\n";
  }
  md +=
      "\nF1 against the logged action (ktsa::metrics::classification_report) of the most probable "
      "action, and of the balanced rule argmax p(action | x) / prior(action) that rare purchases "
      "call for; the Oracle is the lowest dev log-loss (it is used as a sampler).\n";
}

}  // namespace self_alignment
