// The learned Oracle (sim/learned_oracle.hpp) and the example's Tables 1-2
// path (examples/self_alignment/oracle_log.hpp): features against values
// worked out by hand, the prior-only model against an independent count, the
// regression against a known generating model, F1 from ktsa::metrics against
// an independent confusion count, and the Oracle's sampled actions against its
// probabilities.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "../examples/self_alignment/oracle_log.hpp"
#include "ktsa/sim/buyer.hpp"
#include "ktsa/sim/calibration.hpp"
#include "ktsa/sim/learned_oracle.hpp"

using namespace ktsa::sim;
using Catch::Matchers::Contains;

namespace {

struct tiny {
  market m;
  prospect_buyer buyer;
  static market_config config() {
    market_config c;
    c.seed = 3;
    c.products_per_category = 12;
    c.train_queries_per_category = 400;
    c.test_queries_per_category = 50;
    return c;
  }
  static buyer_params calibrated(const market& m) {
    std::vector<shown_impression> s;
    for (const auto& q : m.train_queries())
      s.push_back({&q, &m.product_of(q), &m.product_of(q).seller_description});
    // A higher-CVR target so that a small log holds every action.
    calibration_targets t;
    for (auto& r : t.purchase_rate) r = 0.15;
    for (auto& r : t.cart_rate) r = 0.2;
    return calibrate_thresholds(buyer_params{}, s, t);
  }
  tiny() : m(config()), buyer(calibrated(m)) {}
};

}  // namespace

TEST_CASE("oracle features: listing is the prefix of with_reviews, values by hand",
          "[sim][oracle]") {
  const tiny t;
  const query& q = t.m.train_queries()[0];
  const product& p = t.m.product_of(q);
  // Claim the first need, a concern of the product, a filler and a repeat.
  const int need0 = q.needs[0].attribute, concern = p.top_concerns[0];
  std::vector<int> d = {vocabulary::claim_token(q.category, need0),
                        vocabulary::claim_token(q.category, concern), vocabulary::filler_token(2),
                        vocabulary::claim_token(q.category, need0), vocabulary::eos};
  const auto a = make_oracle_features(oracle_features::listing, q, p, d);
  const auto b = make_oracle_features(oracle_features::with_reviews, q, p, d);
  const int k = oracle_feature_count(oracle_features::listing);
  for (int j = 0; j < k; ++j) CHECK(a[static_cast<size_t>(j)] == b[static_cast<size_t>(j)]);
  for (int j = k; j < max_oracle_features; ++j) CHECK(a[static_cast<size_t>(j)] == 0);
  CHECK(a[0] == 1);                      // bias
  CHECK(a[8] == p.rating_normalised());  // rating
  const bool concern_needed = [&] {
    for (const need& n : q.needs)
      if (n.attribute == concern) return true;
    return false;
  }();
  double claimed_weight = q.needs[0].weight;
  for (size_t i = 1; i < q.needs.size(); ++i)
    if (q.needs[i].attribute == concern) claimed_weight += q.needs[i].weight;
  CHECK(a[9] == Approx(claimed_weight));                         // need weight claimed
  CHECK(a[13] == (need0 == concern ? 1 : 2));                    // distinct in-category claims
  CHECK(a[14] == 1);                                             // fillers
  CHECK(a[15] == 1);                                             // repeats + off-category
  CHECK(a[16] == (concern_needed || need0 == concern ? 0 : 1));  // claimed, not needed
  CHECK(b[22] == 1);                                             // contradicted claims
  CHECK(b[23] == 1);
  CHECK(b[24] == 0);  // need claimed, no contradiction
  CHECK(make_oracle_features(oracle_features::prior_only, q, p, d) == oracle_feature_vector{});
  REQUIRE_THROWS_WITH(make_oracle_features(oracle_features::listing, q, p, {900}),
                      Contains("description"));
}

TEST_CASE("the prior-only model is the smoothed class frequency", "[sim][oracle]") {
  std::vector<logged_example> data(50);
  for (size_t i = 0; i < data.size(); ++i)
    data[i].act =
        i < 3 ? ktsa::metrics::action::purchase
              : (i < 10 ? ktsa::metrics::action::add_to_cart : ktsa::metrics::action::abandon);
  const auto m = action_model::fit(oracle_features::prior_only, data);
  const auto p = m.probabilities(oracle_feature_vector{});
  CHECK(p[0] == Approx(4.0 / 53));
  CHECK(p[1] == Approx(8.0 / 53));
  CHECK(p[2] == Approx(41.0 / 53));
  CHECK(m.predict(oracle_feature_vector{}) == ktsa::metrics::action::abandon);
  CHECK(m.log_loss(data) ==
        Approx(-(3 * std::log(4.0 / 53) + 7 * std::log(8.0 / 53) + 40 * std::log(41.0 / 53)) / 50));
  REQUIRE_THROWS_WITH(action_model::fit(oracle_features::listing, {}), Contains("train.size"));
}

TEST_CASE("the regression recovers a known softmax model", "[sim][oracle]") {
  // Data drawn from softmax(W x) with two informative slots (12 and 13 of the
  // listing set); the fit's log-loss must come within 1% of the true model's.
  const double w[3][2] = {{1.5, -0.5}, {0.5, 0.8}, {0, 0}};
  const double bias[3] = {-2.0, -1.0, 0.0};
  rng gen(5);
  std::vector<logged_example> data(20000);
  double true_loss = 0;
  for (auto& e : data) {
    e.x[0] = 1;
    e.x[12] = gen.uniform(-1, 1);
    e.x[13] = gen.uniform(-1, 1);
    double logit[3], total = 0;
    for (int c = 0; c < 3; ++c)
      total += (logit[c] = std::exp(bias[c] + w[c][0] * e.x[12] + w[c][1] * e.x[13]));
    const double u = gen.uniform();
    const int a = u < logit[0] / total ? 0 : (u < (logit[0] + logit[1]) / total ? 1 : 2);
    e.act = static_cast<ktsa::metrics::action>(a);
    true_loss -= std::log(logit[a] / total) / static_cast<double>(data.size());
  }
  const auto m = action_model::fit(oracle_features::listing, data);
  CHECK(m.log_loss(data) <= 1.01 * true_loss);
  CHECK(m.log_loss(data) < action_model::fit(oracle_features::prior_only, data).log_loss(data));
  // Deterministic: the same data and seed give the same model.
  const auto again = action_model::fit(oracle_features::listing, data);
  CHECK(again.probabilities(data[7].x) == m.probabilities(data[7].x));
}

TEST_CASE("Table 2's F1 equals an independent confusion count", "[sim][oracle]") {
  const tiny t;
  const auto shown = [&](const query& q) -> const product& { return t.m.product_of(q); };
  const auto log = self_alignment::log_actions(t.m.train_queries(), shown, t.buyer, 9);
  // 80/10/10 exactly (Table 1).
  const size_t n = t.m.train_queries().size();
  CHECK(log.split[0].size() == n * 8 / 10);
  CHECK(log.split[1].size() == n * 9 / 10 - n * 8 / 10);
  CHECK(log.split[0].size() + log.split[1].size() + log.split[2].size() == n);
  for (int a = 0; a < 3; ++a) CHECK(log.counts[0][a] > 0);
  int chosen = -1;
  const auto cands = self_alignment::fit_oracles(log, 9, chosen);
  REQUIRE(cands.size() == 3);
  CHECK(chosen >= 0);
  for (const auto& c : cands)
    CHECK(c.dev_log_loss >= cands[static_cast<size_t>(chosen)].dev_log_loss);
  const auto& test = log.split[2];
  for (const auto& c : cands) {
    // Count true / predicted pairs here and compute F1 from the counts.
    long tp[3] = {}, fp[3] = {}, fn[3] = {}, support[3] = {};
    for (const auto& e : test) {
      const auto probs = c.model.probabilities(e.x);
      int pred = 0;
      for (int k = 1; k < 3; ++k)
        if (probs[static_cast<size_t>(k)] > probs[static_cast<size_t>(pred)]) pred = k;
      const int truth = static_cast<int>(e.act);
      ++support[truth];
      if (pred == truth) {
        ++tp[truth];
      } else {
        ++fp[pred];
        ++fn[truth];
      }
    }
    double macro = 0, weighted = 0;
    for (int k = 0; k < 3; ++k) {
      const double f1 =
          tp[k] + fp[k] + fn[k] == 0 ? 0.0 : 2.0 * tp[k] / (2.0 * tp[k] + fp[k] + fn[k]);
      macro += f1 / 3;
      weighted += f1 * static_cast<double>(support[k]) / static_cast<double>(test.size());
    }
    CHECK(c.test.macro.f1 == Approx(macro).epsilon(1e-12));
    CHECK(c.test.weighted.f1 == Approx(weighted).epsilon(1e-12));
  }
  // With this much signal the review features beat the prior.
  CHECK(cands[2].dev_log_loss < cands[0].dev_log_loss);
}

TEST_CASE("the Oracle's sampled actions follow its probabilities, per draw", "[sim][oracle]") {
  const tiny t;
  const auto shown = [&](const query& q) -> const product& { return t.m.product_of(q); };
  const auto log = self_alignment::log_actions(t.m.train_queries(), shown, t.buyer, 9);
  const learned_oracle oracle(action_model::fit(oracle_features::with_reviews, log.split[0]), 77);
  CHECK_THAT(oracle.name(), Contains("review key features"));
  // Oracle vs buyer on the tiny market's held-out listings: each view's CVR
  // from sampled actions matches the mean of its own probabilities.
  const int draws = 400;
  double o_expected = 0, o_seen = 0, b_expected = 0, b_seen = 0, impressions = 0;
  int unstable = 0;
  for (const query& q : t.m.test_queries()) {
    const product& p = t.m.product_of(q);
    const auto& d = p.seller_description;
    const auto po = oracle.probabilities(q, p, d);
    const auto pb = t.buyer.action_probabilities(t.buyer.utility_total(q, p, d), q.category);
    for (int k = 0; k < draws; ++k) {
      const auto key = static_cast<std::uint64_t>(q.id * 1000 + k);
      unstable += oracle.respond(q, p, d, key) != oracle.respond(q, p, d, key + 0);
      o_seen += oracle.respond(q, p, d, key) == action::purchase;
      b_seen += t.buyer.respond(q, p, d, key) == action::purchase;
      o_expected += po[0];
      b_expected += pb[0];
      impressions += 1;
    }
  }
  CHECK(unstable == 0);
  const auto se = [&](double expected) {
    const double r = expected / impressions;
    return std::sqrt(r * (1 - r) / impressions);
  };
  CHECK(std::abs(o_seen - o_expected) / impressions <= 5 * se(o_expected));
  CHECK(std::abs(b_seen - b_expected) / impressions <= 5 * se(b_expected));
}
