// The market's retrieval: shopper histories and cold products follow the
// documented rules; the evaluation table against an independent count on a
// tiny market; the candidate hook picks the best hybrid product of the
// query's category.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ktsa/sim/retrieval.hpp"
#include "ktsa/sim/retrieval_eval.hpp"

using namespace ktsa;

namespace {
sim::market tiny_market() {
  sim::market_config c;
  c.products_per_category = 12;
  c.train_queries_per_category = 40;
  c.test_queries_per_category = 8;
  c.categories = {2, 6};
  return sim::market(c);
}
}  // namespace

TEST_CASE("retrieval market: intents, histories and cold products", "[retrieval]") {
  const sim::market m = tiny_market();
  sim::retrieval_config rc;
  rc.cold_fraction = 0.25;
  const sim::market_retrieval r(m, rc);
  CHECK(r.interactions().rows == 8 * sim::intents::per_category);
  // Every mask with 1..3 bits has one id, and back.
  int masks = 0;
  for (int mask = 1; mask < 256; ++mask) {
    const int bits = __builtin_popcount(unsigned(mask));
    if (bits > 3) {
      CHECK_THROWS(sim::intents::id(0, mask));
      continue;
    }
    ++masks;
    CHECK(sim::intents::mask(sim::intents::id(3, mask)) == mask);
    CHECK(sim::intents::category_of(sim::intents::id(3, mask)) == 3);
  }
  CHECK(masks == sim::intents::per_category);
  // Purchases only of warm products of the shopper's category; cold products have no column mass.
  const auto& x = r.interactions();
  for (index_t s = 0; s < x.rows; ++s)
    for (index_t e = x.indptr[size_t(s)]; e < x.indptr[size_t(s) + 1]; ++e) {
      const int p = int(x.indices[size_t(e)]);
      CHECK_FALSE(r.is_cold(p));
      CHECK(m.products()[size_t(p)].category == sim::intents::category_of(int(s)));
    }
  int cold = 0;
  for (const auto& p : m.products()) {
    cold += r.is_cold(p.id);
    if (r.is_cold(p.id)) CHECK_FALSE(r.cf().has_interactions(p.id));
  }
  CHECK(cold > 0);
  CHECK(cold < int(m.products().size()));
  CHECK(r.training_purchases() > 0);
}

TEST_CASE("retrieval evaluation table matches an independent count on a tiny market",
          "[retrieval]") {
  const sim::market m = tiny_market();
  const sim::market_retrieval r(m);
  const auto& qs = m.test_queries();
  const auto s = r.score(exec::host{1}, qs);
  const int k = 10;
  const size_t n = m.products().size();
  for (auto pool : {sim::retrieval_pool::all, sim::retrieval_pool::cold}) {
    const std::vector<float>* mats[] = {&s.cf, &s.cbf, &s.hybrid};
    for (const auto* mat : mats) {
      const sim::retrieval_row got = sim::evaluate_scores("x", m, r, qs, s.view(*mat), pool, k);
      // Independent: sort the pool by (score desc, id asc), count by hand.
      double P = 0, R = 0, RR = 0, NDCG = 0;
      int evaluated = 0;
      for (size_t q = 0; q < qs.size(); ++q) {
        std::vector<size_t> pool_ids;
        for (size_t i = 0; i < n; ++i)
          if (pool == sim::retrieval_pool::all || r.is_cold(int(i))) pool_ids.push_back(i);
        std::vector<int> grade(n);
        int relevant = 0;
        for (size_t i : pool_ids) {
          const double fit = sim::true_fit(qs[q], m.products()[i]);
          grade[i] = fit >= 0.8 ? 3 : fit >= 0.7 ? 2 : fit >= 0.6 ? 1 : 0;
          relevant += grade[i] > 0;
        }
        if (relevant == 0) continue;
        ++evaluated;
        std::sort(pool_ids.begin(), pool_ids.end(), [&](size_t a, size_t b) {
          const float sa = (*mat)[q * n + a], sb = (*mat)[q * n + b];
          return sa > sb || (sa == sb && a < b);
        });
        int hits = 0;
        double rr = 0, dcg = 0;
        for (size_t t = 0; t < std::min<size_t>(k, pool_ids.size()); ++t) {
          const int g = grade[pool_ids[t]];
          if (g > 0) {
            ++hits;
            if (rr == 0) rr = 1.0 / double(t + 1);
          }
          dcg += g / std::log2(double(t) + 2);
        }
        std::vector<int> ideal;
        for (size_t i : pool_ids) ideal.push_back(grade[i]);
        std::sort(ideal.rbegin(), ideal.rend());
        double idcg = 0;
        for (size_t t = 0; t < std::min<size_t>(k, ideal.size()); ++t)
          idcg += ideal[t] / std::log2(double(t) + 2);
        P += hits / double(k);
        R += hits / double(relevant);
        RR += rr;
        NDCG += dcg / idcg;
      }
      REQUIRE(evaluated > 0);
      CHECK(got.queries == evaluated);
      CHECK(got.precision == Approx(P / evaluated).margin(1e-12));
      CHECK(got.recall == Approx(R / evaluated).margin(1e-12));
      CHECK(got.mrr == Approx(RR / evaluated).margin(1e-12));
      CHECK(got.ndcg == Approx(NDCG / evaluated).margin(1e-12));
    }
  }
  const auto table = sim::evaluate_retrieval(m, r, qs, k, exec::host{1});
  REQUIRE(table.all.size() == 5);
  CHECK(table.all[1].method == "CF");
  CHECK(sim::to_markdown(table).find("| hybrid |") != std::string::npos);
}

TEST_CASE("retrieval candidates: best hybrid product of the query's category", "[retrieval]") {
  sim::market m = tiny_market();
  const sim::market_retrieval r(m);
  const auto& qs = m.test_queries();
  const auto picks = r.candidates(exec::host{2}, qs);
  const auto s = r.score(exec::host{1}, qs);
  const size_t n = m.products().size();
  for (size_t q = 0; q < qs.size(); ++q) {
    int best = -1;
    for (size_t i = 0; i < n; ++i)
      if (m.products()[i].category == qs[q].category &&
          (best < 0 || s.hybrid[q * n + i] > s.hybrid[q * n + size_t(best)]))
        best = int(i);
    CHECK(picks[q] == best);
  }
  sim::use_retrieved_candidates(m);
  for (size_t q = 0; q < qs.size(); ++q) CHECK(m.test_queries()[q].product == picks[q]);
  CHECK_THROWS_WITH(m.set_query_products({}, {}), Catch::Contains("'train' has length 0"));
}
