// KTO-family losses and reference points: the fp64 reference vectors,
// an independent fp64 formula per variant written here, central finite
// differences of every variant's gradient, degenerate batches and bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "ktsa/loss/kto.hpp"
#include "ktsa/loss/reference_point.hpp"

using namespace ktsa;
using Catch::Matchers::Contains;

namespace {

const std::vector<double> kPolicy{-10.5, -20.25, -7, -15, -12};
const std::vector<double> kReference{-11, -19, -7.5, -14, -12.75};
const std::vector<unsigned char> kDesirable{1, 0, 1, 0, 1};
const std::vector<double> kKlPolicy{-12, -18, -9, -16, -11};
const std::vector<double> kKlReference{-12.5, -18.2, -8, -16.5, -11.3};

double sig(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

// The published per-example formulas, written independently of the library.
double reference_example(loss::variant v, double r, bool d, double z0, const loss::config& c,
                         double delta) {
  const double b = c.beta, wd = c.desirable_weight, wu = c.undesirable_weight;
  switch (v) {
    case loss::variant::kto:
      return d ? wd * (1 - sig(b * (r - z0))) : wu * (1 - sig(b * (z0 - r)));
    case loss::variant::kto_log_sigmoid:
      return d ? -wd * std::log(sig(b * (r - z0))) : -wu * std::log(sig(b * (z0 - r)));
    case loss::variant::ktsa:
      return (d ? wd * (1 - sig(b * (r - z0))) : wu * (1 - sig(b * (z0 - r)))) - c.gamma * r;
    case loss::variant::apo_zero_unpaired:
      return d ? wd * (1 - sig(b * r)) : wu * sig(b * r);
    case loss::variant::bco:
      return d ? -wd * std::log(sig(b * r - delta)) : -wu * std::log(sig(-(b * r - delta)));
  }
  return NAN;
}

double reference_batch_loss(loss::variant v, const std::vector<double>& p,
                            const std::vector<double>& q, const std::vector<unsigned char>& d,
                            double z0, const loss::config& c, double delta) {
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i) s += reference_example(v, p[i] - q[i], d[i], z0, c, delta);
  return s / static_cast<double>(p.size());
}

struct run_result {
  loss::loss_result result;
  std::vector<double> per_example, grad;
};

run_result run(loss::variant v, const std::vector<double>& p, const std::vector<double>& q,
               const std::vector<unsigned char>& d, double z0, loss::config c = {},
               double delta = 0) {
  c.kind = v;
  c.bco_order = loss::bco_update::after_loss;  // delta is the given mean (bco)
  run_result out;
  out.per_example.resize(p.size());
  out.grad.resize(p.size());
  loss::bco_running_mean state(delta);
  out.result = loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(d), z0, c,
                              make_view(out.per_example), make_view(out.grad), &state);
  return out;
}

const loss::variant kAllVariants[] = {loss::variant::kto, loss::variant::kto_log_sigmoid,
                                      loss::variant::ktsa, loss::variant::apo_zero_unpaired,
                                      loss::variant::bco};

}  // namespace

TEST_CASE("batch KL z0 of the reference vector is 0.1") {
  REQUIRE(loss::batch_kl_reference_point(make_view(kKlPolicy), make_view(kKlReference)) ==
          Approx(0.1).epsilon(1e-15));
}

TEST_CASE("reference vectors from the published formulas") {
  const double z0 = loss::batch_kl_reference_point(make_view(kKlPolicy), make_view(kKlReference));
  SECTION("kto") {
    const auto r = run(loss::variant::kto, kPolicy, kReference, kDesirable, z0);
    REQUIRE(r.result.loss == Approx(0.48051744908010041).epsilon(1e-14));
    const double g[] = {-0.0049980005332124705, 0.004977287769809326, -0.0049980005332124705,
                        0.004984905449879961, -0.0049947224666555285};
    for (int i = 0; i < 5; ++i) REQUIRE(r.grad[i] == Approx(g[i]).epsilon(1e-12));
  }
  SECTION("kto with desirable weight 1.33") {
    loss::config c;
    c.desirable_weight = 1.33;
    REQUIRE(run(loss::variant::kto, kPolicy, kReference, kDesirable, z0, c).result.loss ==
            Approx(0.57712550250184813).epsilon(1e-14));
  }
  SECTION("apo_zero_unpaired") {
    REQUIRE(
        run(loss::variant::apo_zero_unpaired, kPolicy, kReference, kDesirable, z0).result.loss ==
        Approx(0.4800150860600696).epsilon(1e-14));
  }
  SECTION("bco with delta 0.05") {
    REQUIRE(run(loss::variant::bco, kPolicy, kReference, kDesirable, z0, {}, 0.05).result.loss ==
            Approx(0.65948942861959892).epsilon(1e-14));
  }
  SECTION("ktsa with R_avg 0.84 and six key-feature KLs") {
    const std::vector<double> kls{0.4, 1.7, 0.9, 0.2, 1.1, 0.6};
    const double ktsa_z0 = loss::ktsa_reference_point(0.84, make_view(kls));
    REQUIRE(ktsa_z0 == 0.84);
    const auto r = run(loss::variant::ktsa, kPolicy, kReference, kDesirable, ktsa_z0);
    REQUIRE(r.result.loss == Approx(0.58426341160065021).epsilon(1e-14));
    REQUIRE(r.grad[0] == Approx(-0.20499855527835775).epsilon(1e-13));
  }
}

TEST_CASE("every variant matches the fp64 formula and central finite differences") {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> logp(-20, 6), shiftd(0, 1.5);
  for (size_t batch : {1u, 2u, 7u, 8u}) {
    for (int pattern = 0; pattern < 3; ++pattern) {  // mixed, all desirable, all undesirable
      std::vector<double> p(batch), q(batch);
      std::vector<unsigned char> d(batch);
      for (size_t i = 0; i < batch; ++i) {
        q[i] = logp(rng);
        p[i] = q[i] + shiftd(rng);
        d[i] = pattern == 0 ? static_cast<unsigned char>(i % 3 != 1) : pattern == 1;
      }
      loss::config c;
      c.beta = 0.3;
      c.desirable_weight = 1.2;
      c.undesirable_weight = 0.8;
      c.gamma = 0.5;
      const double z0 = 0.7, delta = 0.2;
      for (loss::variant v : kAllVariants) {
        INFO(loss::variant_name(v) << ", B = " << batch << ", pattern " << pattern);
        const auto r = run(v, p, q, d, z0, c, delta);
        REQUIRE(r.result.loss ==
                Approx(reference_batch_loss(v, p, q, d, z0, c, delta)).epsilon(1e-13));
        for (size_t i = 0; i < batch; ++i) {
          REQUIRE(r.per_example[i] ==
                  Approx(reference_example(v, p[i] - q[i], d[i], z0, c, delta)).epsilon(1e-13));
          const double h = 1e-5;
          auto plus = p, minus = p;
          plus[i] += h;
          minus[i] -= h;
          const double fd = (reference_batch_loss(v, plus, q, d, z0, c, delta) -
                             reference_batch_loss(v, minus, q, d, z0, c, delta)) /
                            (2 * h);
          REQUIRE(r.grad[i] == Approx(fd).epsilon(1e-6).margin(1e-10));
        }
      }
    }
  }
}

TEST_CASE("metrics: rewards, margins, log-probs and counts") {
  const auto r = run(loss::variant::kto, kPolicy, kReference, kDesirable, 0.1).result.metrics;
  REQUIRE(r.chosen_count == 3);
  REQUIRE(r.rejected_count == 2);
  REQUIRE(r.kl == 0.1);
  REQUIRE(r.rewards_chosen() == Approx(0.1 * (0.5 + 0.5 + 0.75) / 3).epsilon(1e-14));
  REQUIRE(r.rewards_rejected() == Approx(0.1 * (-1.25 - 1.0) / 2).epsilon(1e-14));
  REQUIRE(r.rewards_margins() == Approx(0.1 * (1.75 / 3 + 2.25 / 2)).epsilon(1e-14));
  REQUIRE(r.logps_chosen() == Approx((-10.5 - 7 - 12) / 3).epsilon(1e-14));
  REQUIRE(r.logps_rejected() == Approx((-20.25 - 15) / 2).epsilon(1e-14));
  // All desirable: the rejected means are NaN (no examples), counts say why.
  const std::vector<unsigned char> all(5, 1);
  const auto m = run(loss::variant::kto, kPolicy, kReference, all, 0.1).result.metrics;
  REQUIRE(m.rejected_count == 0);
  REQUIRE(std::isnan(m.rewards_rejected()));
  REQUIRE(std::isnan(m.rewards_margins()));
}

TEST_CASE("bco running mean starts at 0 and is updated after the step") {
  loss::config c;
  c.kind = loss::variant::bco;
  c.bco_order = loss::bco_update::after_loss;  // the default is before_loss (TRL)
  loss::bco_running_mean state;
  std::vector<double> grad(5), per(5);
  const auto first =
      loss::kto_loss(exec::host{}, make_view(kPolicy), make_view(kReference), make_view(kDesirable),
                     0.0, c, make_view(per), make_view(grad), &state);
  REQUIRE(first.metrics.kl == 0.0);
  REQUIRE(first.loss == Approx(reference_batch_loss(loss::variant::bco, kPolicy, kReference,
                                                    kDesirable, 0, c, 0.0))
                            .epsilon(1e-14));
  const double mean_reward = 0.1 * (0.5 - 1.25 + 0.5 - 1 + 0.75) / 5;
  REQUIRE(state.mean() == Approx(mean_reward).epsilon(1e-14));
  REQUIRE(state.count() == 5);
  const auto second =
      loss::kto_loss(exec::host{}, make_view(kPolicy), make_view(kReference), make_view(kDesirable),
                     0.0, c, make_view(per), make_view(grad), &state);
  REQUIRE(second.metrics.kl == Approx(mean_reward).epsilon(1e-14));
  REQUIRE(state.mean() == Approx(mean_reward).epsilon(1e-14));  // same rewards twice
  REQUIRE(state.count() == 10);
}

TEST_CASE("outputs can be skipped with empty views") {
  loss::config c;
  const auto r =
      loss::kto_loss(exec::host{}, make_view(kPolicy), make_view(kReference), make_view(kDesirable),
                     0.1, c, vector_view<double>{}, vector_view<double>{});
  REQUIRE(r.loss == Approx(0.48051744908010041).epsilon(1e-14));
}

TEST_CASE("batch KL reference point: clamp after averaging, pairs, rank reduction") {
  // Mean of +0.3 and -0.5 is -0.1: clamped to 0 after averaging.
  const std::vector<double> p{-1.0, -2.0}, q{-1.3, -1.5};
  REQUIRE(loss::batch_kl_reference_point(make_view(p), make_view(q)) == 0.0);
  // Rotation pairs prompt i with completion i+1; no fixed point for odd B.
  const auto idx = loss::mismatched_pair_indices(5, loss::pairing::next);
  REQUIRE(idx == std::vector<index_t>{1, 2, 3, 4, 0});
  for (index_t b = 2; b < 12; ++b) {
    const auto pairs = loss::mismatched_pair_indices(b, loss::pairing::next);
    for (index_t i = 0; i < b; ++i) REQUIRE(pairs[static_cast<size_t>(i)] != i);
  }
  // Two ranks: 3 pairs with sum 0.9, 1 pair with sum 0.5.
  const std::vector<loss::kl_partial> ranks{{0.9, 3}, {0.5, 1}};
  REQUIRE(loss::combine_kl_partials(ranks) == Approx(1.4 / 4).epsilon(1e-15));
  REQUIRE(loss::combine_kl_partials(ranks, loss::kl_reduction::mean_of_means) ==
          Approx((0.3 + 0.5) / 2).epsilon(1e-15));
  REQUIRE(loss::combine_kl_partials({{0.0, 0}, {0.4, 2}}, loss::kl_reduction::mean_of_means) ==
          Approx(0.2).epsilon(1e-15));
}

TEST_CASE("KTSA reference point and the key-feature KL estimator") {
  const std::vector<double> low{0.1, 0.2};
  REQUIRE(loss::ktsa_reference_point(0.5, make_view(low)) == 0.5);  // rating wins
  const std::vector<double> high{1.0, 2.0, 0.6};
  REQUIRE(loss::ktsa_reference_point(0.5, make_view(high)) == Approx(1.2).epsilon(1e-15));
  const std::vector<double> under_x{-3.0, -4.0, -5.5}, under_feature{-3.5, -4.1, -6.5};
  REQUIRE(loss::key_feature_kl_estimate(make_view(under_x), make_view(under_feature)) ==
          Approx((0.5 + 0.1 + 1.0) / 3).epsilon(1e-14));
}

TEST_CASE("bad input gets an error naming the argument and the value") {
  std::vector<double> grad(5), per(5), shorter(4);
  auto call = [&](const std::vector<double>& p, const std::vector<double>& q,
                  const std::vector<unsigned char>& d, const loss::config& c, double z0 = 0.1) {
    return loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(d), z0, c,
                          make_view(per), make_view(grad));
  };
  loss::config c;
  REQUIRE_THROWS_AS(call(kPolicy, shorter, kDesirable, c), shape_error);
  REQUIRE_THROWS_WITH(call(kPolicy, shorter, kDesirable, c),
                      Contains("'reference_logps' has length 4"));
  REQUIRE_THROWS_AS(call(kPolicy, kReference, std::vector<unsigned char>(3), c), shape_error);
  REQUIRE_THROWS_AS(
      loss::kto_loss(exec::host{}, make_view(kPolicy), make_view(kReference), make_view(kDesirable),
                     0.1, c, make_view(shorter), make_view(grad)),
      shape_error);
  c.beta = 0;
  REQUIRE_THROWS_WITH(call(kPolicy, kReference, kDesirable, c), Contains("'beta' = 0"));
  c.beta = -0.1;
  REQUIRE_THROWS_AS(call(kPolicy, kReference, kDesirable, c), invalid_argument);
  c = {};
  c.desirable_weight = -1;
  REQUIRE_THROWS_WITH(call(kPolicy, kReference, kDesirable, c),
                      Contains("'desirable_weight' = -1"));
  c = {};
  c.undesirable_weight = 0;
  REQUIRE_THROWS_WITH(call(kPolicy, kReference, kDesirable, c),
                      Contains("'undesirable_weight' = 0"));
  c = {};
  auto bad = kPolicy;
  bad[3] = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_AS(call(bad, kReference, kDesirable, c), data_error);
  REQUIRE_THROWS_WITH(call(bad, kReference, kDesirable, c),
                      Contains("'policy_logps'") && Contains("index 3"));
  auto inf_ref = kReference;
  inf_ref[0] = INFINITY;
  REQUIRE_THROWS_WITH(call(kPolicy, inf_ref, kDesirable, c),
                      Contains("'reference_logps'") && Contains("inf"));
  REQUIRE_THROWS_WITH(call(kPolicy, kReference, kDesirable, c, NAN), Contains("'z0'"));
  REQUIRE_THROWS_WITH(call({}, {}, {}, c), Contains("at least one example"));
  c.kind = loss::variant::bco;
  REQUIRE_THROWS_WITH(call(kPolicy, kReference, kDesirable, c), Contains("'bco_state'"));

  const std::vector<double> kls{0.4};
  REQUIRE_THROWS_WITH(loss::ktsa_reference_point(1.2, make_view(kls)),
                      Contains("'rating_average' = 1.2"));
  REQUIRE_THROWS_WITH(loss::ktsa_reference_point(-0.1, make_view(kls)),
                      Contains("'rating_average' = -0.1"));
  REQUIRE_THROWS_WITH(loss::ktsa_reference_point(0.5, make_view(std::vector<double>{})),
                      Contains("K >= 1"));
  REQUIRE_THROWS_WITH(loss::mismatched_pair_indices(1), Contains("'batch_size' = 1"));
  REQUIRE_THROWS_WITH(loss::combine_kl_partials({{0.0, 0}}), Contains("no KL pairs"));
  REQUIRE_THROWS_AS(loss::batch_kl_reference_point(make_view(kKlPolicy), make_view(shorter)),
                    shape_error);
  REQUIRE_THROWS_AS(loss::key_feature_kl_estimate(make_view(std::vector<double>{}),
                                                  make_view(std::vector<double>{})),
                    invalid_argument);
}

TEST_CASE("per-example reference points (KTSA's Eq. 2 per product)") {
  const std::vector<double> z0s{0.84, 0.1, 0.5, 0.0, 1.3};
  loss::config c;
  c.beta = 0.2;
  c.bco_order = loss::bco_update::after_loss;  // delta = the state's 0.05 (bco)
  for (loss::variant v : kAllVariants) {
    INFO(loss::variant_name(v));
    c.kind = v;
    std::vector<double> grad(5), per(5);
    loss::bco_running_mean state(0.05);
    const auto r = loss::kto_loss(exec::host{}, make_view(kPolicy), make_view(kReference),
                                  make_view(kDesirable), make_view(z0s), c, make_view(per),
                                  make_view(grad), &state);
    const bool uses_z0 =
        v == loss::variant::kto || v == loss::variant::kto_log_sigmoid || v == loss::variant::ktsa;
    double expected_loss = 0, z0_sum = 0;
    for (size_t i = 0; i < 5; ++i) {
      const double z0 = uses_z0 ? z0s[i] : 0.0;
      z0_sum += z0;
      const double e = reference_example(v, kPolicy[i] - kReference[i], kDesirable[i], z0, c, 0.05);
      REQUIRE(per[i] == Approx(e).epsilon(1e-13));
      expected_loss += e / 5;
      // Central difference of the batch loss with example i's z0 held fixed.
      const double h = 1e-5;
      const double fd =
          (reference_example(v, kPolicy[i] + h - kReference[i], kDesirable[i], z0, c, 0.05) -
           reference_example(v, kPolicy[i] - h - kReference[i], kDesirable[i], z0, c, 0.05)) /
          (2 * h * 5);
      REQUIRE(grad[i] == Approx(fd).epsilon(1e-6).margin(1e-10));
    }
    REQUIRE(r.loss == Approx(expected_loss).epsilon(1e-13));
    if (uses_z0) REQUIRE(r.metrics.kl == Approx(z0_sum / 5).epsilon(1e-14));
  }
  std::vector<double> grad(5), per(5);
  const std::vector<double> short_z0{0.1, 0.2};
  c.kind = loss::variant::ktsa;
  REQUIRE_THROWS_WITH(
      loss::kto_loss(exec::host{}, make_view(kPolicy), make_view(kReference), make_view(kDesirable),
                     make_view(short_z0), c, make_view(per), make_view(grad)),
      Contains("'z0_per_example' has length 2"));
  std::vector<double> nan_z0(z0s);
  nan_z0[2] = NAN;
  REQUIRE_THROWS_WITH(
      loss::kto_loss(exec::host{}, make_view(kPolicy), make_view(kReference), make_view(kDesirable),
                     make_view(nan_z0), c, make_view(per), make_view(grad)),
      Contains("'z0_per_example'") && Contains("index 2"));
}
