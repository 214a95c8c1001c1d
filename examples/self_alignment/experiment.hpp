// The experiment of the self-alignment example: the market and the product
// each query is shown (select_candidates), the buyer (calibrated on the paper
// market), MLE / KTO / KTSA training against a feedback Oracle, and the
// held-out evaluation of every arm under the true buyer and the learned Oracle.
#pragma once

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <ktsa/core/parallel.hpp>
#include <ktsa/kernels/logprob.hpp>
#include <ktsa/kernels/token_kl.hpp>
#include <ktsa/loss/kto.hpp>
#include <ktsa/loss/reference_point.hpp>
// After kto.hpp: issue 9's class_weights.hpp opens ktsa::loss::detail, which
// hides ktsa::detail from kto.hpp's unqualified detail:: calls if it comes first.
#include <ktsa/loss/class_weights.hpp>
#include <ktsa/sim/buyer.hpp>
#include <ktsa/sim/calibration.hpp>
#include <ktsa/sim/learned_oracle.hpp>
#include <ktsa/sim/retrieval.hpp>

#include "data_parallel.hpp"
#include "options.hpp"
#include "policy.hpp"

namespace self_alignment {

using ktsa::index_t;
using ktsa::make_view;

enum arm_id { arm_base = 0, arm_mle = 1, arm_kto = 2, arm_ktsa = 3, num_arms = 4 };
inline const char* const arm_names[num_arms] = {"Base", "MLE", "KTO", "KTSA"};

// Keys for the seeded draws (arbitrary distinct constants).
inline constexpr std::uint64_t key_eval_sample = 0xE5A1, key_eval_buyer = 0xE5B2,
                               key_eval_oracle = 0xE5C3, key_train = 0x7A11,
                               key_train_buyer = 0x7B22, key_batch = 0xBA7C;

/// Candidate selection: the product each query is shown, by query id. By
/// default the market's own pick (best of three by true fit,
/// sim/catalogue.hpp); --candidates retrieval takes the top-1 hybrid CBF + CF
/// candidate of sim/retrieval.hpp (docs/retrieval.md) instead.
inline std::vector<int> select_candidates(const sim::market& m, const options& o) {
  std::vector<int> shown(m.train_queries().size() + m.test_queries().size());
  if (o.candidates == "retrieval") {
    const sim::market_retrieval r(m);
    for (const auto* qs : {&m.train_queries(), &m.test_queries()}) {
      const std::vector<int> picked = r.candidates(ktsa::exec::host{}, *qs);
      for (size_t i = 0; i < qs->size(); ++i) shown[static_cast<size_t>((*qs)[i].id)] = picked[i];
    }
    return shown;
  }
  for (const auto* qs : {&m.train_queries(), &m.test_queries()})
    for (const sim::query& q : *qs) shown[static_cast<size_t>(q.id)] = q.product;
  return shown;
}

/// Everything a step needs from one forward pass of a model over a batch.
struct scored_batch {
  std::vector<linear_policy::position_features> design;
  linear_policy::matrix logits;  // V x (B*T) = [B, T, V]
  std::vector<double> logp;
  std::vector<std::int64_t> count;
  std::vector<float> lse;  // [B, T]
};

inline ktsa::cube_view<const float> logits_view(const linear_policy::matrix& m, index_t b) {
  return make_view(static_cast<const float*>(m.data()), b, index_t{max_len}, index_t{vocab});
}

/// log pi(y_i | x_i) for every i, through the host kernel.
inline void score(const ktsa::exec::host& ex, const linear_policy& model,
                  const std::vector<const prompt*>& prompts,
                  const std::vector<std::vector<int>>& seqs,
                  const std::vector<std::int32_t>& labels, scored_batch& out) {
  const index_t b = static_cast<index_t>(prompts.size());
  model.forward(prompts, seqs, out.design, out.logits);
  out.logp.assign(static_cast<size_t>(b), 0.0);
  out.count.assign(static_cast<size_t>(b), 0);
  out.lse.assign(static_cast<size_t>(b) * max_len, 0.0f);
  if (b == 0) return;  // a data-parallel rank with an empty slice of a small batch
  ktsa::kernels::sequence_logprob_forward(
      ex, logits_view(out.logits, b), make_view(labels.data(), b, index_t{max_len}),
      make_view(out.logp), make_view(out.count), make_view(out.lse.data(), b, index_t{max_len}),
      ktsa::matrix_view<float>{});
}

/// A batch and this rank's slice [begin, end) of it (the whole batch in one process).
struct batch_slice {
  index_t begin = 0, end = 0;
  std::vector<const prompt*> prompts;
  std::vector<std::vector<int>> seqs;
  std::vector<std::int32_t> labels;
  index_t size() const { return end - begin; }
};

/// A point of the chart: the held-out CVR the buyer and the Oracle expect.
struct curve_point {
  int step;
  double buyer, oracle;
};

/// The actions of the held-out impressions of one arm, in (query, draw) order.
struct arm_evaluation {
  std::vector<sim::action> buyer, oracle;
};

inline std::string printf_string(const char* spec, ...) __attribute__((format(printf, 1, 2)));
inline std::string printf_string(const char* spec, ...) {
  char buf[512];
  va_list args;
  va_start(args, spec);
  std::vsnprintf(buf, sizeof buf, spec, args);
  va_end(args);
  return buf;
}

class experiment {
 public:
  explicit experiment(const options& o)
      : o_(o), market_(market_config(o)), shown_(select_candidates(market_, o)) {
    row_of_category_.assign(sim::num_categories, -1);
    for (size_t r = 0; r < market_.categories().size(); ++r)
      row_of_category_[static_cast<size_t>(market_.categories()[r])] = static_cast<int>(r);
    sim::buyer_params b;
    b.seed = sim::hash_key(o.seed, 0xB0B);
    if (o.market == "paper") {
      // Calibration sample: the training queries' own listings (the Base
      // descriptions), disjoint from the held-out queries of the table.
      std::vector<sim::shown_impression> sample;
      for (const sim::query& q : market_.train_queries())
        sample.push_back({&q, &shown(q), &shown(q).seller_description});
      b = sim::calibrate_thresholds(b, sample);
    }
    buyer_ = std::make_unique<sim::prospect_buyer>(b);
    // Query ids index the chart subset: every k-th held-out query.
    const auto& test = market_.test_queries();
    const size_t step = std::max<size_t>(1, test.size() / static_cast<size_t>(o.chart_queries));
    for (size_t i = 0; i < test.size(); i += step) chart_.push_back(&test[i]);
  }

  const sim::market& market() const { return market_; }
  const sim::prospect_buyer& buyer() const { return *buyer_; }
  const sim::product& shown(const sim::query& q) const {
    return market_.products()[static_cast<size_t>(shown_[static_cast<size_t>(q.id)])];
  }
  prompt prompt_of(const sim::query& q) const { return make_prompt(q, shown(q)); }
  int row_of(int category) const { return row_of_category_[static_cast<size_t>(category)]; }

  /// The Oracle whose actions train KTO / KTSA, and the one that evaluates.
  void set_oracles(const sim::oracle* feedback, const sim::learned_oracle* learned) {
    feedback_ = feedback;
    learned_ = learned;
  }
  void set_class_weights(ktsa::loss::class_weights w) { weights_ = w; }
  /// Data-parallel ranks (data_parallel.hpp); one process by default.
  void set_ranks(ranks r) { ranks_ = std::move(r); }
  const ranks& dp() const { return ranks_; }

  /// This rank's slice of a batch (prompts, sequences, labels [B, T]).
  batch_slice slice(const std::vector<const prompt*>& prompts,
                    const std::vector<std::vector<int>>& seqs,
                    const std::vector<std::int32_t>& labels) const {
    const index_t n = static_cast<index_t>(prompts.size());
    batch_slice s;
    s.begin = ranks_.begin(n);
    s.end = ranks_.end(n);
    s.prompts.assign(prompts.begin() + s.begin, prompts.begin() + s.end);
    s.seqs.assign(seqs.begin() + s.begin, seqs.begin() + s.end);
    s.labels.assign(labels.begin() + s.begin * max_len, labels.begin() + s.end * max_len);
    return s;
  }

  /// Backpropagates d loss / d log pi(y_i | x_i) (the whole batch's, dlogp)
  /// into a gradient step on the model; s was scored on this rank's slice sl
  /// of the batch (prompts, seqs). With several ranks the slices' d loss /
  /// d logits are gathered and every rank runs the backward over the whole
  /// batch: the single-process summation order, so the same Adam step.
  void apply_gradient(const ktsa::exec::host& ex, linear_policy& model, adam& opt,
                      const batch_slice& sl, const scored_batch& s,
                      const std::vector<double>& dlogp, const std::vector<const prompt*>& prompts,
                      const std::vector<std::vector<int>>& seqs) const {
    const index_t m = sl.size(), n = static_cast<index_t>(dlogp.size());
    linear_policy::matrix grad_logits(vocab, m * max_len), grad_w, grad_u;
    if (m > 0)  // an empty slice of a small batch has nothing to backpropagate
      ktsa::kernels::sequence_logprob_backward(
          ex, logits_view(s.logits, m), make_view(sl.labels.data(), m, index_t{max_len}),
          make_view(s.lse.data(), m, index_t{max_len}), make_view(s.count),
          make_view(dlogp.data() + sl.begin, m),
          make_view(grad_logits.data(), m, index_t{max_len}, index_t{vocab}));
    if (ranks_.single()) {
      model.backward(s.design, grad_logits, grad_w, grad_u);
    } else {
      const std::vector<float> all = ranks_.gather(grad_logits.data(), n, index_t{max_len} * vocab);
      const linear_policy::matrix whole =
          Eigen::Map<const linear_policy::matrix>(all.data(), vocab, n * max_len);
      std::vector<linear_policy::position_features> design;
      linear_policy::design_of(prompts, seqs, design);
      model.backward(design, whole, grad_w, grad_u);
    }
    opt.step(model, grad_w, grad_u);
  }

  /// The description an arm shows for held-out query q, draw d.
  std::vector<int> description(const linear_policy* model, const sim::query& q, int d) const {
    if (model == nullptr) return shown(q).seller_description;
    sim::rng gen(sim::hash_keys(o_.seed, key_eval_sample, static_cast<std::uint64_t>(q.id),
                                static_cast<std::uint64_t>(d)));
    return model->sample(prompt_of(q), gen);
  }

  /// Every held-out query x draw: the buyer's and the learned Oracle's action
  /// on the same description. Sampling and noise depend only on (seed, query,
  /// draw): every arm gets the same random numbers, a paired comparison, and
  /// the result does not depend on the thread count.
  arm_evaluation evaluate(const linear_policy* model, int draws) const {
    const auto& test = market_.test_queries();
    arm_evaluation out;
    // This rank's held-out queries [first, first + count) (all in one process).
    const index_t nq = static_cast<index_t>(test.size()), first = ranks_.begin(nq),
                  count = ranks_.end(nq) - first;
    out.buyer.resize(static_cast<size_t>(count) * static_cast<size_t>(draws));
    out.oracle.resize(out.buyer.size());
    ktsa::detail::parallel_chunks(
        ktsa::exec::host{o_.threads}, count, 256, [&](index_t begin, index_t end) {
          for (index_t i = begin; i < end; ++i) {
            const sim::query& q = test[static_cast<size_t>(first + i)];
            const sim::product& p = shown(q);
            for (int d = 0; d < draws; ++d) {
              const std::vector<int> text = description(model, q, d);
              const size_t slot =
                  static_cast<size_t>(i) * static_cast<size_t>(draws) + static_cast<size_t>(d);
              const auto key = [&](std::uint64_t k) {
                return sim::hash_keys(o_.seed, k, static_cast<std::uint64_t>(q.id),
                                      static_cast<std::uint64_t>(d));
              };
              out.buyer[slot] = buyer_->respond(q, p, text, key(key_eval_buyer));
              out.oracle[slot] = learned_->respond(q, p, text, key(key_eval_oracle));
            }
          }
        });
    if (!ranks_.single()) {
      // The actions' codes travel as doubles (exact), gathered in query order.
      const auto whole = [&](const std::vector<sim::action>& mine) {
        std::vector<double> codes;
        for (sim::action a : mine) codes.push_back(static_cast<double>(static_cast<int>(a)));
        const std::vector<double> all = ranks_.gather(codes, nq, index_t{draws});
        std::vector<sim::action> actions;
        for (double c : all) actions.push_back(static_cast<sim::action>(static_cast<int>(c)));
        return actions;
      };
      out.buyer = whole(out.buyer);
      out.oracle = whole(out.oracle);
    }
    return out;
  }

  /// The chart's point: P(purchase) the buyer and the Oracle expect, averaged
  /// over the chart subset of held-out queries, one description each.
  curve_point chart_point(int step, const linear_policy* model) const {
    // This rank's chart queries [first, first + count) (all in one process).
    const index_t nq = static_cast<index_t>(chart_.size()), first = ranks_.begin(nq),
                  count = ranks_.end(nq) - first;
    std::vector<double> buy(static_cast<size_t>(count)), ora(static_cast<size_t>(count));
    ktsa::detail::parallel_chunks(
        ktsa::exec::host{o_.threads}, count, 256, [&](index_t begin, index_t end) {
          for (index_t i = begin; i < end; ++i) {
            const sim::query& q = *chart_[static_cast<size_t>(first + i)];
            const std::vector<int> text = description(model, q, 0);
            buy[static_cast<size_t>(i)] = buyer_->action_probabilities(
                buyer_->utility_total(q, shown(q), text), q.category)[0];
            ora[static_cast<size_t>(i)] = learned_->probabilities(q, shown(q), text)[0];
          }
        });
    if (!ranks_.single()) {
      buy = ranks_.gather(buy, nq);
      ora = ranks_.gather(ora, nq);
    }
    curve_point c{step, 0, 0};
    for (size_t i = 0; i < buy.size(); ++i) {
      c.buyer += buy[i] / static_cast<double>(buy.size());
      c.oracle += ora[i] / static_cast<double>(ora.size());
    }
    return c;
  }

  /// A batch of training queries for a step.
  std::vector<const sim::query*> batch(int arm, int step) const {
    sim::rng gen(sim::hash_keys(o_.seed, key_batch, static_cast<std::uint64_t>(arm),
                                static_cast<std::uint64_t>(step)));
    std::vector<const sim::query*> qs;
    const auto& train = market_.train_queries();
    for (int i = 0; i < o_.batch; ++i)
      qs.push_back(&train[static_cast<size_t>(gen.below(static_cast<int>(train.size())))]);
    return qs;
  }

  /// Chart and log cadence of a phase of `steps` steps.
  int every(int steps) const { return o_.eval_every > 0 ? o_.eval_every : std::max(1, steps / 10); }

  /// Supervised fine-tuning on the seller's descriptions (the MLE arm).
  linear_policy train_mle(std::vector<curve_point>& curve, std::string& log) const;
  /// KTO or KTSA from the MLE model against the feedback Oracle; the
  /// reference is the MLE model, frozen.
  linear_policy align(int arm, const linear_policy& init, std::vector<curve_point>& curve,
                      std::string& log) const;

 private:
  static sim::market_config market_config(const options& o) {
    sim::market_config c;
    c.seed = o.seed;
    c.categories = o.categories;
    c.products_per_category = o.products_per_category;
    c.train_queries_per_category = o.train_queries;
    c.test_queries_per_category = o.test_queries;
    return c;
  }

  options o_;
  sim::market market_;
  std::vector<int> shown_;  // product index by query id
  std::unique_ptr<sim::prospect_buyer> buyer_;
  const sim::oracle* feedback_ = nullptr;
  const sim::learned_oracle* learned_ = nullptr;
  ktsa::loss::class_weights weights_{};
  ranks ranks_;
  std::vector<int> row_of_category_;      // category id -> report row
  std::vector<const sim::query*> chart_;  // held-out queries of the chart
};

}  // namespace self_alignment

#include "training.hpp"
