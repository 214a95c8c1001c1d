// Simulated-market benchmarks: buyer decisions per second on one core.
//
//   sim/buyer_decisions            prospect_buyer::respond() (utility + noise +
//                                  per-category thresholds), the example's hot path
//   sim/buyer_decisions_breakdown  the same decision through utility() and its
//                                  allocating breakdown (the pre-issue-14 path)
//   sim/noise_only                 the decision's noise draw alone (hash + log),
//                                  the floor of a decision
// Impressions: the calibrated paper market's held-out queries with the sellers'
// listings (2,000 per category), cycled.
//
//   ktsa_bench_sim --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include <ktsa/sim/buyer.hpp>
#include <ktsa/sim/calibration.hpp>
#include <ktsa/sim/catalogue.hpp>

namespace {

namespace sim = ktsa::sim;

struct fixture {
  sim::market market;
  sim::prospect_buyer buyer;
  std::vector<sim::shown_impression> shown;

  static sim::market_config config() {
    sim::market_config c;
    c.train_queries_per_category = 2000;
    c.test_queries_per_category = 2000;
    return c;
  }
  static sim::buyer_params calibrated(const sim::market& m) {
    std::vector<sim::shown_impression> sample;
    for (const auto& q : m.train_queries())
      sample.push_back({&q, &m.product_of(q), &m.product_of(q).seller_description});
    return sim::calibrate_thresholds(sim::buyer_params{}, sample);
  }
  fixture() : market(config()), buyer(calibrated(market)) {
    for (const auto& q : market.test_queries())
      shown.push_back({&q, &market.product_of(q), &market.product_of(q).seller_description});
  }
};

const fixture& data() {
  static const fixture f;
  return f;
}

void buyer_decisions(benchmark::State& state) {
  const fixture& f = data();
  std::uint64_t draw = 0;
  std::int64_t buys = 0;
  for (auto _ : state) {
    const auto& s = f.shown[draw % f.shown.size()];
    buys += f.buyer.respond(*s.q, *s.p, *s.description, draw++) == sim::action::purchase;
  }
  benchmark::DoNotOptimize(buys);
  state.SetItemsProcessed(state.iterations());
  state.counters["cvr"] = static_cast<double>(buys) / static_cast<double>(state.iterations());
}

void buyer_decisions_breakdown(benchmark::State& state) {
  const fixture& f = data();
  std::uint64_t draw = 0;
  std::int64_t buys = 0;
  for (auto _ : state) {
    const auto& s = f.shown[draw % f.shown.size()];
    const double u = f.buyer.utility(*s.q, *s.p, *s.description).total;
    buys += f.buyer.decide(u, f.buyer.noise(draw++), s.p->category) == sim::action::purchase;
  }
  benchmark::DoNotOptimize(buys);
  state.SetItemsProcessed(state.iterations());
}

void noise_only(benchmark::State& state) {
  const fixture& f = data();
  std::uint64_t draw = 0;
  double sum = 0;
  for (auto _ : state) sum += f.buyer.noise(draw++);
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(buyer_decisions)->Name("sim/buyer_decisions");
BENCHMARK(buyer_decisions_breakdown)->Name("sim/buyer_decisions_breakdown");
BENCHMARK(noise_only)->Name("sim/noise_only");

BENCHMARK_MAIN();
