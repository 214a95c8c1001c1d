// Loss conventions shared with TRL / HALOs (issue 9) and the loss / reference
// point bad-input classes of issue 16 (items 4-7, 10).
// The BCO vectors are the issue's: TRL's BCOTrainer loss lines run in fp64
// (beta 0.1, weights 1, before_loss, one running state over three steps).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ktsa/loss/class_weights.hpp"
#include "ktsa/loss/kto.hpp"
#include "ktsa/loss/reference_point.hpp"

using namespace ktsa;
using Catch::Matchers::Contains;

namespace {

bool rel_close(double got, double want, double rel = 1e-14) {
  return std::abs(got - want) <= rel * std::abs(want);
}

struct step_result {
  loss::loss_result result;
  std::vector<double> grad;
};

step_result bco_step(const std::vector<double>& p, const std::vector<double>& q,
                     const std::vector<unsigned char>& d, loss::bco_running_mean& state,
                     loss::bco_update order = loss::bco_update::before_loss) {
  loss::config c;
  c.kind = loss::variant::bco;
  c.bco_order = order;
  step_result s;
  s.grad.resize(p.size());
  s.result = loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(d), 0.0, c,
                            vector_view<double>{}, make_view(s.grad), &state);
  return s;
}

void check_step(const step_result& s, double delta, double loss, const std::vector<double>& grad) {
  CHECK(rel_close(s.result.metrics.kl, delta));
  CHECK(rel_close(s.result.loss, loss));
  REQUIRE(s.grad.size() == grad.size());
  for (size_t i = 0; i < grad.size(); ++i) {
    INFO("grad " << i << ": " << s.grad[i] << " vs TRL " << grad[i]);
    CHECK(rel_close(s.grad[i], grad[i]));
  }
}

const std::vector<double> kP1{-10.5, -20.25, -7, -15, -12}, kR1{-11, -19, -7.5, -14, -12.75};
const std::vector<unsigned char> kD1{1, 0, 1, 0, 1};

}  // namespace

TEST_CASE("bco before_loss (default) matches TRL over three steps, none reads only",
          "[loss][conventions][bco]") {
  CHECK(loss::config{}.bco_order == loss::bco_update::before_loss);
  loss::bco_running_mean state;
  const step_result s1 = bco_step(kP1, kR1, kD1, state);
  check_step(s1, -0.0099999999999999985, 0.65304059888239918,
             {-0.009700089967611798, 0.009425632860971207, -0.009700089967611798,
              0.009550303504163998, -0.00957525570067452});
  CHECK(state.count() == 5);
  CHECK(rel_close(state.mean(), -0.0099999999999999985));

  const step_result s2 =
      bco_step({-9, -21, -6.5, -16.5}, {-10, -19.5, -7.5, -14}, {1, 0, 1, 0}, state);
  check_step(
      s2, -0.027777777777777773, 0.62117351031329149,
      {-0.011702473705374628, 0.011737060624369154, -0.011702473705374628, 0.011116798618440775});
  CHECK(state.count() == 9);

  const step_result s3 = bco_step({-8, -22.5, -6}, {-10.5, -19, -7}, {1, 0, 0}, state);
  check_step(s3, -0.020833333333333336, 0.62143542206059443,
             {-0.014423417478855505, 0.01394811332663625, 0.017672387723298245});
  CHECK(state.count() == 12);

  // Evaluation on step 1's batch: delta is the state's mean, the state is unchanged.
  const double mean_before = state.mean();
  const step_result e = bco_step(kP1, kR1, kD1, state, loss::bco_update::none);
  CHECK(rel_close(e.result.metrics.kl, -0.020833333333333336));
  CHECK(rel_close(e.result.loss, 0.65197196367630061));
  CHECK(state.mean() == mean_before);
  CHECK(state.count() == 12);
}

TEST_CASE("bco after_loss keeps ktsa's earlier order: step 1 uses delta 0",
          "[loss][conventions][bco]") {
  loss::bco_running_mean after, before;
  const step_result a = bco_step(kP1, kR1, kD1, after, loss::bco_update::after_loss);
  CHECK(a.result.metrics.kl == 0.0);
  bco_step(kP1, kR1, kD1, before);
  // Both orders fold the same batch: the states agree afterwards.
  CHECK(after.count() == 5);
  CHECK(after.mean() == before.mean());
  // -log s(+-b r) with delta 0: the loss written out here.
  double want = 0;
  for (size_t i = 0; i < kP1.size(); ++i) {
    const double x = (kD1[i] ? 1 : -1) * 0.1 * (kP1[i] - kR1[i]);
    want += std::log1p(std::exp(-x)) / 5;
  }
  CHECK(rel_close(a.result.loss, want));
}

TEST_CASE("bco needs a state for every order; a failing step leaves it unchanged",
          "[loss][conventions][bco]") {
  loss::config c;
  c.kind = loss::variant::bco;
  c.bco_order = loss::bco_update::none;
  CHECK_THROWS_WITH(loss::kto_loss(exec::host{}, make_view(kP1), make_view(kR1), make_view(kD1),
                                   0.0, c, vector_view<double>{}, vector_view<double>{}),
                    Contains("'bco_state'"));
  // A count about to overflow int64: clear error, state untouched.
  const index_t near_max = std::numeric_limits<index_t>::max() - 2;
  loss::bco_running_mean full(0.25, near_max);
  c.bco_order = loss::bco_update::before_loss;
  CHECK_THROWS_WITH(loss::kto_loss(exec::host{}, make_view(kP1), make_view(kR1), make_view(kD1),
                                   0.0, c, vector_view<double>{}, vector_view<double>{}, &full),
                    Contains("'reward_count' = 5") && Contains("overflow"));
  CHECK(full.count() == near_max);
  CHECK(full.mean() == 0.25);
  // A reward that is finite but whose loss overflows (weight 1e15 x reward 1e300).
  loss::bco_running_mean s(0.5, 3);
  c.undesirable_weight = 1e15;
  c.beta = 1;
  const std::vector<double> p{5e299}, q{-5e299};
  const std::vector<unsigned char> d{0};
  CHECK_THROWS_AS(loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(d), 0.0, c,
                                 vector_view<double>{}, vector_view<double>{}, &s),
                  ktsa::data_error);
  CHECK(s.count() == 3);
  CHECK(s.mean() == 0.5);
}

TEST_CASE("bco_running_mean::update: checked counts and sums (issue 16 item 4)",
          "[loss][conventions][bco]") {
  const index_t max = std::numeric_limits<index_t>::max();
  loss::bco_running_mean s(0.1, max - 2);
  CHECK_THROWS_AS(s.update(1.0, 3), ktsa::invalid_argument);
  CHECK_THROWS_WITH(s.update(1.0, 3), Contains("'reward_count' = 3") && Contains("overflow"));
  CHECK(s.count() == max - 2);
  s.update(0.2, 2);  // exactly INT64_MAX is fine
  CHECK(s.count() == max);
  CHECK_THROWS_WITH(s.update(NAN, 1), Contains("'reward_sum' = nan"));
  CHECK_THROWS_WITH(s.update(1.0, -1), Contains("'reward_count' = -1"));
  loss::bco_running_mean t;
  t.update(0.0, 0);  // nothing to fold
  CHECK(t.count() == 0);
  t.update(-3.0, 4);
  CHECK(t.mean() == -0.75);
  t.update(1.0, 4);  // (-3 + 1) / 8
  CHECK(t.mean() == -0.25);
}

TEST_CASE("pairing: previous (TRL, default) and next", "[loss][conventions][pairing]") {
  CHECK(loss::mismatched_pair_indices(5) == std::vector<index_t>{4, 0, 1, 2, 3});
  CHECK(loss::mismatched_pair_indices(5, loss::pairing::previous) ==
        std::vector<index_t>{4, 0, 1, 2, 3});
  CHECK(loss::mismatched_pair_indices(5, loss::pairing::next) ==
        std::vector<index_t>{1, 2, 3, 4, 0});
  CHECK(loss::mismatched_pair_indices(2) == std::vector<index_t>{1, 0});
  for (index_t b = 2; b < 40; ++b)
    for (const loss::pairing p : {loss::pairing::previous, loss::pairing::next}) {
      const auto idx = loss::mismatched_pair_indices(b, p);
      for (index_t i = 0; i < b; ++i) {
        const index_t want = p == loss::pairing::previous ? (i - 1 + b) % b : (i + 1) % b;
        REQUIRE(idx[static_cast<size_t>(i)] == want);
        REQUIRE(want != i);
        REQUIRE(loss::mismatched_pair_index(i, b, p) == want);
      }
    }
  // B < 2 stays an error for both (TRL pairs a batch of one with itself).
  CHECK_THROWS_WITH(loss::mismatched_pair_indices(1), Contains("'batch_size' = 1"));
  CHECK_THROWS_WITH(loss::mismatched_pair_indices(1, loss::pairing::next),
                    Contains("'batch_size' = 1"));
  CHECK_THROWS_WITH(loss::mismatched_pair_index(5, 5), Contains("'i' = 5"));
}

TEST_CASE("mismatched_pair_indices(2^40) is a ktsa error, not bad_alloc (issue 16 item 10)",
          "[loss][conventions][pairing]") {
  const index_t huge = index_t(1) << 40;
  CHECK_THROWS_AS(loss::mismatched_pair_indices(huge), ktsa::invalid_argument);
  CHECK_THROWS_WITH(loss::mismatched_pair_indices(huge),
                    Contains("'batch_size' = 1099511627776") && Contains("mismatched_pair_index"));
  CHECK(loss::mismatched_pair_index(0, huge) == huge - 1);
  CHECK(loss::mismatched_pair_index(huge - 1, huge, loss::pairing::next) == 0);
}

TEST_CASE("kto_zero is an alias of apo_zero_unpaired, bit for bit", "[loss][conventions]") {
  static_assert(loss::variant::kto_zero == loss::variant::apo_zero_unpaired, "one loss, one name");
  CHECK(std::string(loss::variant_name(loss::variant::kto_zero)) == "apo_zero_unpaired");
  // KTO with z0 = 0 is the same function: equal bit for bit on random batches.
  std::vector<double> p(9), q(9), la(9), ga(9), lk(9), gk(9);
  std::vector<unsigned char> d(9);
  for (int trial = 0; trial < 20; ++trial) {
    for (size_t i = 0; i < 9; ++i) {
      q[i] = -20.0 - 0.37 * static_cast<double>((trial * 7 + static_cast<int>(i) * 3) % 11);
      p[i] = q[i] + 0.9 * std::sin(1.7 * trial + static_cast<double>(i));
      d[i] = static_cast<unsigned char>((trial + i) % 3 != 0);
    }
    loss::config c;
    c.beta = 0.05 + 0.1 * trial;
    c.desirable_weight = 1.3;
    c.kind = loss::variant::kto_zero;
    const auto a = loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(d), 0.7, c,
                                  make_view(la), make_view(ga));
    c.kind = loss::variant::kto;
    const auto k = loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(d), 0.0, c,
                                  make_view(lk), make_view(gk));
    CHECK(a.loss == k.loss);
    CHECK(la == lk);
    CHECK(ga == gk);
    CHECK(a.metrics.kl == 0.0);  // the z0 argument (0.7) is ignored
  }
}

TEST_CASE("enum values outside the enum are rejected naming the value (issue 16 item 5)",
          "[loss][conventions][errors]") {
  std::vector<double> grad(5);
  auto call = [&](const loss::config& c) {
    loss::bco_running_mean s;
    return loss::kto_loss(exec::host{}, make_view(kP1), make_view(kR1), make_view(kD1), 0.1, c,
                          vector_view<double>{}, make_view(grad), &s);
  };
  for (const int bad : {2, 6, 9, -1}) {
    loss::config c;
    c.kind = static_cast<loss::variant>(bad);
    CHECK_THROWS_AS(call(c), ktsa::invalid_argument);
    CHECK_THROWS_WITH(call(c), Contains("'kind' = " + std::to_string(bad)));
  }
  loss::config c;
  c.kind = loss::variant::bco;
  c.bco_order = static_cast<loss::bco_update>(3);
  CHECK_THROWS_WITH(call(c), Contains("'bco_order' = 3"));
  c.kind = loss::variant::kto;  // checked whatever the variant
  CHECK_THROWS_WITH(call(c), Contains("'bco_order' = 3"));
  CHECK_THROWS_WITH(loss::combine_kl_partials({{0.3, 2}}, static_cast<loss::kl_reduction>(5)),
                    Contains("'kl_reduction' = 5"));
  CHECK_THROWS_WITH(loss::mismatched_pair_indices(4, static_cast<loss::pairing>(7)),
                    Contains("'pairing' = 7"));
  CHECK_THROWS_WITH(loss::mismatched_pair_index(0, 4, static_cast<loss::pairing>(-2)),
                    Contains("'pairing' = -2"));
  // The element-wise formula itself answers NaN for an unknown kind.
  CHECK(std::isnan(
      loss::example<double>(static_cast<loss::variant>(9), 0.5, true, 0, 0.1, 1, 1, 1).loss));
}

TEST_CASE("absurd configs are rejected (issue 16 item 7)", "[loss][conventions][errors]") {
  std::vector<double> grad(5);
  loss::bco_running_mean s;
  auto call = [&](const loss::config& c) {
    return loss::kto_loss(exec::host{}, make_view(kP1), make_view(kR1), make_view(kD1), 0.1, c,
                          vector_view<double>{}, make_view(grad), &s);
  };
  loss::config c;
  c.kind = loss::variant::bco;
  c.beta = 1e300;
  CHECK_THROWS_AS(call(c), ktsa::invalid_argument);
  CHECK_THROWS_WITH(call(c), Contains("'beta' = 1.0000000000000001e+300") && Contains("1e6"));
  CHECK(s.count() == 0);    // the running mean never saw the 1e300 rewards
  c.beta = loss::max_beta;  // the bound itself is accepted
  CHECK_NOTHROW(call(c));
  c = {};
  c.gamma = -2e6;
  CHECK_THROWS_WITH(call(c), Contains("'gamma' = -2000000"));
  c = {};
  c.desirable_weight = 1e16;
  CHECK_THROWS_WITH(call(c), Contains("'desirable_weight' = 10000000000000000"));
  c = {};
  c.undesirable_weight = INFINITY;
  CHECK_THROWS_WITH(call(c), Contains("'undesirable_weight' = inf"));
}

TEST_CASE("overflowing rewards and losses are data errors, never a silent inf",
          "[loss][conventions][errors]") {
  loss::config c;
  std::vector<double> grad(2);
  // Finite log-probs whose difference overflows: r = inf.
  const std::vector<double> p{1e308, -1.0}, q{-1e308, -2.0};
  const std::vector<unsigned char> d{1, 0};
  CHECK_THROWS_AS(loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(d), 0.0, c,
                                 vector_view<double>{}, make_view(grad)),
                  ktsa::data_error);
  CHECK_THROWS_WITH(loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(d), 0.0, c,
                                   vector_view<double>{}, make_view(grad)),
                    Contains("beta * r") && Contains("index 0"));
  // z0 = 1e308 with kto_log_sigmoid and beta 1e6: the loss of example 0 overflows.
  const std::vector<double> p2{-1.0, -2.0}, q2{-1.5, -2.0};
  c.kind = loss::variant::kto_log_sigmoid;
  c.beta = 1e6;
  CHECK_THROWS_WITH(loss::kto_loss(exec::host{}, make_view(p2), make_view(q2), make_view(d), 1e308,
                                   c, vector_view<double>{}, make_view(grad)),
                    Contains("per-example loss") && Contains("index 0"));
}

TEST_CASE("z0 = 1e308 gives metrics.kl = 1e308, not inf (issue 16 item 6)",
          "[loss][conventions][errors]") {
  loss::config c;
  std::vector<double> grad(5);
  const auto r = loss::kto_loss(exec::host{}, make_view(kP1), make_view(kR1), make_view(kD1), 1e308,
                                c, vector_view<double>{}, make_view(grad));
  CHECK(r.metrics.kl == 1e308);
  // 1 - s(b (r - z0)) = 1 for desirable, 0 for undesirable: the loss is 3/5.
  CHECK(rel_close(r.loss, 0.6, 1e-15));
  const std::vector<double> z0s(5, 1.5e308);
  const auto r2 = loss::kto_loss(exec::host{}, make_view(kP1), make_view(kR1), make_view(kD1),
                                 make_view(z0s), c, vector_view<double>{}, make_view(grad));
  CHECK(std::isfinite(r2.metrics.kl));
  CHECK(rel_close(r2.metrics.kl, 1.5e308, 1e-15));
}

TEST_CASE("cross-rank KL: count_weighted is HALOs', mean_of_means TRL's",
          "[loss][conventions][kl]") {
  // Rank 0: 3 pairs, sum 0.9 (mean 0.3); rank 1: 1 pair, sum 0.5; rank 2: none.
  const std::vector<loss::kl_partial> ranks{{0.9, 3}, {0.5, 1}, {0.0, 0}};
  // HALOs: all log-ratios over all pairs, 1.4 / 4.
  CHECK(rel_close(loss::combine_kl_partials(ranks), 0.35));
  CHECK(rel_close(loss::combine_kl_partials(ranks, loss::kl_reduction::count_weighted), 0.35));
  // TRL: the mean of the per-rank means, (0.3 + 0.5) / 2; ktsa skips the empty
  // rank where TRL's KL would be NaN.
  CHECK(rel_close(loss::combine_kl_partials(ranks, loss::kl_reduction::mean_of_means), 0.4));
}

TEST_CASE("combine_kl_partials: NaN / inf partials and overflowing counts are errors (issue 16)",
          "[loss][conventions][kl]") {
  for (const double bad : std::initializer_list<double>{std::nan(""), -INFINITY, INFINITY}) {
    const std::vector<loss::kl_partial> ranks{{0.3, 2}, {bad, 3}};
    INFO(bad);
    for (const auto how : {loss::kl_reduction::count_weighted, loss::kl_reduction::mean_of_means}) {
      CHECK_THROWS_AS(loss::combine_kl_partials(ranks, how), ktsa::data_error);
      CHECK_THROWS_WITH(loss::combine_kl_partials(ranks, how),
                        Contains("rank 1") && Contains("not finite"));
    }
  }
  const index_t max = std::numeric_limits<index_t>::max();
  CHECK_THROWS_AS(loss::combine_kl_partials({{1.0, max}, {1.0, 1}}), ktsa::invalid_argument);
  CHECK_THROWS_WITH(loss::combine_kl_partials({{1.0, max}, {1.0, 1}}),
                    Contains("'kl_partial.count' = 1") && Contains("overflow"));
  CHECK(loss::combine_kl_partials({{1.0, max - 1}, {1.0, 1}}) > 0);  // exactly INT64_MAX
  // Finite partials whose sum overflows double.
  CHECK_THROWS_AS(loss::combine_kl_partials({{1.5e308, 1}, {1.5e308, 1}}), ktsa::data_error);
  const std::vector<double> big{1.5e308, 1.5e308}, zero{0.0, 0.0};
  CHECK_THROWS_AS(loss::batch_kl_reference_point(make_view(big), make_view(zero)),
                  ktsa::data_error);
}

TEST_CASE("config weights against TRL's [1, 4/3] range", "[loss][conventions][class_weights]") {
  loss::config c;  // weights 1 / 1
  CHECK_FALSE(loss::weights_in_recommended_range(loss::class_weights_of(c), 2, 98));
  CHECK_THROWS_WITH(loss::require_weights_in_recommended_range(loss::class_weights_of(c), 2, 98),
                    Contains("[1, 4/3]"));
  const loss::class_weights w = loss::balanced_weights(2, 98);
  c.desirable_weight = w.desirable;
  c.undesirable_weight = w.undesirable;
  CHECK(loss::weights_in_recommended_range(loss::class_weights_of(c), 2, 98));
  CHECK_NOTHROW(loss::validate(c));
  // A braced {wD, wU} is not ambiguous with loss::config in this header set.
  CHECK(loss::weights_in_recommended_range({49, 1}, 2, 98));
}

TEST_CASE("key-feature KL and KTSA's z0 with finite inputs whose sums overflow (fuzz_loss finding)",
          "[loss][errors]") {
  using ktsa::make_view;
  // Sums overflow, means do not: the mean is returned (here exactly 1.5e308).
  const std::vector<double> big{1.5e308, 1.5e308}, zero{0.0, 0.0};
  CHECK(ktsa::loss::key_feature_kl_estimate(make_view(big), make_view(zero)) == 1.5e308);
  CHECK(ktsa::loss::key_feature_kl_estimate(make_view(zero), make_view(big)) == -1.5e308);
  CHECK(ktsa::loss::ktsa_reference_point(0.5, make_view(big)) == 1.5e308);
  // A log-ratio that itself overflows has no finite estimate: data_error naming the sample.
  const std::vector<double> x{-1.0, 1.7e308}, y{-2.0, -1.7e308};
  CHECK_THROWS_AS(ktsa::loss::key_feature_kl_estimate(make_view(x), make_view(y)),
                  ktsa::data_error);
  CHECK_THROWS_WITH(ktsa::loss::key_feature_kl_estimate(make_view(x), make_view(y)),
                    Catch::Matchers::Contains("sample 1"));
  // Ordinary inputs: the plain mean, bit for bit ((-1 - -2) + (-3 - -5)) / 2.
  const std::vector<double> a{-1.0, -3.0}, b{-2.0, -5.0};
  CHECK(ktsa::loss::key_feature_kl_estimate(make_view(a), make_view(b)) == 1.5);
}
