// MPI tests of ktsa/dist/ (ctest label mpi): run under
//   mpirun --oversubscribe --allow-run-as-root -np 2 (and -np 3).
// Every rank runs every case in the same order. References are computed on
// every rank from the whole batch in one process (the single-process ktsa
// functions, and fp64 formulas written here); value checks use CHECK so a
// failing rank keeps making the same collective calls as the others.
#define CATCH_CONFIG_RUNNER
#include <mpi.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ktsa/dist/check.hpp"
#include "ktsa/dist/mpi.hpp"
#include "ktsa/dist/reducer.hpp"
#include "ktsa/dist/sharded.hpp"
#include "ktsa/dist/statistics.hpp"
#include "ktsa/ktsa.hpp"

using namespace ktsa;
using dist::mpi_reducer;

namespace {

mpi_reducer world() {
  return mpi_reducer(MPI_COMM_WORLD);
}

/// True when x has the same bits on every rank.
bool same_bits_everywhere(mpi_reducer& r, double x) {
  std::int64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const std::vector<std::int64_t> all = dist::all_gather(r, &bits, 1);
  for (std::int64_t b : all)
    if (b != all[0]) return false;
  return true;
}

/// The ranks are still in step after an error: one more collective agrees.
void expect_in_step(mpi_reducer& r) {
  std::int64_t v = 1;
  r.all_reduce(&v, 1, dist::reduce_op::sum);
  CHECK(v == r.size());
}

bool close(double a, double b, double rel, double abs = 0) {
  return std::abs(a - b) <= abs + rel * std::max(std::abs(a), std::abs(b));
}

std::vector<double> normal(std::size_t n, std::uint64_t seed, double mean, double sd) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(mean, sd);
  std::vector<double> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

/// Example counts per rank: odd ranks hold none (a rank with no examples).
std::vector<index_t> slice_sizes(int ranks) {
  std::vector<index_t> n(static_cast<std::size_t>(ranks));
  for (int k = 0; k < ranks; ++k) n[static_cast<std::size_t>(k)] = k % 2 == 1 ? 0 : 5 + k;
  return n;
}
index_t offset_of(const std::vector<index_t>& sizes, int rank) {
  index_t o = 0;
  for (int k = 0; k < rank; ++k) o += sizes[static_cast<std::size_t>(k)];
  return o;
}

}  // namespace

TEST_CASE("mpi_reducer: all_reduce sum/max, broadcast, all_gather") {
  mpi_reducer r = world();
  const int n = r.size(), me = r.rank();
  double d[2] = {0.5 * (me + 1), 0.25 * me};
  r.all_reduce(d, 2, dist::reduce_op::sum);
  CHECK(d[0] == 0.25 * n * (n + 1));
  CHECK(d[1] == 0.125 * n * (n - 1));
  std::int64_t i[2] = {me + 1, -me};
  r.all_reduce(i, 2, dist::reduce_op::max);
  CHECK(i[0] == n);
  CHECK(i[1] == 0);
  double b[3] = {me * 1.0, me * 2.0, -1.0 * me};
  dist::broadcast(r, b, 3, n - 1);
  CHECK(b[0] == n - 1);
  CHECK(b[2] == -(n - 1));
  const double mine[2] = {me + 0.1, -0.0};
  const std::vector<double> all = dist::all_gather(r, mine, 2);
  REQUIRE(all.size() == static_cast<std::size_t>(2 * n));
  for (int k = 0; k < n; ++k) CHECK(all[static_cast<std::size_t>(2 * k)] == k + 0.1);

  // Any callable: a generic lambda over MPI_Allreduce, without a broadcast
  // (ktsa derives it from a sum of zeros).
  auto f = [](auto* data, std::size_t len, dist::reduce_op op) {
    using T = std::remove_pointer_t<decltype(data)>;
    const MPI_Datatype type = std::is_same_v<T, double> ? MPI_DOUBLE : MPI_INT64_T;
    MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(len), type,
                  op == dist::reduce_op::sum ? MPI_SUM : MPI_MAX, MPI_COMM_WORLD);
  };
  auto c = dist::make_callable_reducer(me, n, f);
  static_assert(dist::is_reducer_v<decltype(c)>);
  static_assert(!dist::is_reducer_v<int>);
  std::int64_t w[2] = {7 * me, 3};
  dist::broadcast(c, w, 2, 1 % n);
  CHECK(w[0] == 7 * (1 % n));
  CHECK(w[1] == 3);
}

TEST_CASE("z0 across ranks: count_weighted, mean_of_means, empty ranks, errors") {
  mpi_reducer r = world();
  const int n = r.size(), me = r.rank();
  const std::vector<index_t> sizes = slice_sizes(n);
  const index_t total = offset_of(sizes, n);
  const std::vector<double> ref = normal(static_cast<std::size_t>(total), 11, -20, 3);
  std::vector<double> pol = normal(static_cast<std::size_t>(total), 12, 0.4, 1.0);
  for (std::size_t i = 0; i < pol.size(); ++i) pol[i] += ref[i];
  const index_t off = offset_of(sizes, me), cnt = sizes[static_cast<std::size_t>(me)];
  auto local_p = make_view(pol.data() + off, cnt);
  auto local_q = make_view(ref.data() + off, cnt);

  // References: the per-rank partials combined in one process (bitwise), the
  // whole batch in one process (up to addition order), fp64 formulas.
  std::vector<loss::kl_partial> parts;
  double fp64_sum = 0, means = 0;
  int with_pairs = 0;
  for (int k = 0; k < n; ++k) {
    const index_t o = offset_of(sizes, k), c = sizes[static_cast<std::size_t>(k)];
    parts.push_back(
        loss::kl_partial_sum(make_view(pol.data() + o, c), make_view(ref.data() + o, c)));
    double s = 0;
    for (index_t i = o; i < o + c; ++i)
      s += pol[static_cast<std::size_t>(i)] - ref[static_cast<std::size_t>(i)];
    fp64_sum += s;
    if (c > 0) means += s / static_cast<double>(c), ++with_pairs;
  }
  const double z_cw = dist::batch_kl_reference_point(r, local_p, local_q);
  CHECK(z_cw == loss::combine_kl_partials(parts));  // bitwise
  CHECK(close(z_cw, loss::batch_kl_reference_point(make_view(pol), make_view(ref)), 1e-13));
  CHECK(close(z_cw, std::max(0.0, fp64_sum / static_cast<double>(total)), 1e-13));
  CHECK(z_cw > 0.1);  // the clamp does not hide the mean
  CHECK(same_bits_everywhere(r, z_cw));

  const double z_mm =
      dist::batch_kl_reference_point(r, local_p, local_q, loss::kl_reduction::mean_of_means);
  CHECK(std::isfinite(z_mm));
  CHECK(close(z_mm, std::max(0.0, means / with_pairs), 1e-13));
  CHECK(same_bits_everywhere(r, z_mm));
  if (n >= 3) CHECK(z_mm != z_cw);  // uneven ranks: the two reductions differ

  // No rank with a pair: the same error on every rank, no hang.
  CHECK_THROWS_AS(dist::reference_point(r, loss::kl_partial{}), ktsa::invalid_argument);
  expect_in_step(r);

  // A NaN on one rank only: every rank throws data_error.
  std::vector<double> bad(local_p.data(), local_p.data() + cnt);
  if (me == 0) bad[0] = std::nan("");
  try {
    (void)dist::batch_kl_reference_point(r, make_view(bad), local_q);
    CHECK(false);
  } catch (const data_error& e) {
    const std::string what = e.what();
    if (me != 0) CHECK(what.find("rank 0 of") != std::string::npos);
    CHECK(what.find("kl_policy_logps") != std::string::npos);
  }
  expect_in_step(r);
}

TEST_CASE("BCO delta pooled over ranks, both update orders; order mismatch is an error") {
  mpi_reducer r = world();
  const int n = r.size(), me = r.rank();
  const std::vector<index_t> sizes = slice_sizes(n);
  const index_t total = offset_of(sizes, n);
  const index_t off = offset_of(sizes, me), cnt = sizes[static_cast<std::size_t>(me)];
  loss::config cfg;
  cfg.kind = loss::variant::bco;
  cfg.beta = 0.2;
  for (dist::bco_update order : {dist::bco_update::before_loss, dist::bco_update::after_loss}) {
    loss::bco_running_mean state, single;  // dist state; one process over the whole batch
    for (int step = 0; step < 3; ++step) {
      const std::vector<double> q = normal(static_cast<std::size_t>(total), 40 + step, -30, 2);
      std::vector<double> p = normal(static_cast<std::size_t>(total), 50 + step, 1.0, 2.0);
      for (std::size_t i = 0; i < p.size(); ++i) p[i] += q[i];
      std::vector<unsigned char> des(static_cast<std::size_t>(total));
      for (std::size_t i = 0; i < des.size(); ++i) des[i] = (i + step) % 3 != 0;

      const double delta = dist::bco_delta(r, state, make_view(p.data() + off, cnt),
                                           make_view(q.data() + off, cnt), cfg.beta, order);
      // One process: the rewards of the whole batch, fp64.
      double reward_sum = 0;
      for (std::size_t i = 0; i < p.size(); ++i) reward_sum += cfg.beta * (p[i] - q[i]);
      const double before = single.mean();
      single.update(reward_sum, total);
      const double expect = order == dist::bco_update::before_loss ? single.mean() : before;
      CHECK(close(delta, expect, 1e-13, 1e-15));
      CHECK(close(state.mean(), single.mean(), 1e-13, 1e-15));
      CHECK(state.count() == single.count());
      CHECK(same_bits_everywhere(r, delta));
      CHECK(same_bits_everywhere(r, state.mean()));

      // The local loss with the pooled delta equals the whole batch's loss rows.
      if (cnt > 0) {
        // bco_order none: kto_loss reads delta and folds nothing in again.
        loss::config use = cfg;
        use.bco_order = loss::bco_update::none;
        loss::bco_running_mean scratch(delta), whole(delta);
        std::vector<double> le(static_cast<std::size_t>(cnt)), lw(static_cast<std::size_t>(total));
        (void)loss::kto_loss(exec::host{}, make_view(p.data() + off, cnt),
                             make_view(q.data() + off, cnt), make_view(des.data() + off, cnt), 0.0,
                             use, make_view(le), vector_view<double>{}, &scratch);
        (void)loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(des), 0.0, use,
                             make_view(lw), vector_view<double>{}, &whole);
        for (index_t i = 0; i < cnt; ++i)
          CHECK(le[static_cast<std::size_t>(i)] == lw[static_cast<std::size_t>(off + i)]);
      }
    }
  }
  loss::bco_running_mean s;
  const auto order = me == 0 ? dist::bco_update::before_loss : dist::bco_update::after_loss;
  if (n >= 2) CHECK_THROWS_AS(dist::bco_delta(r, s, 1.0, 1, order), ktsa::invalid_argument);
  expect_in_step(r);
}

TEST_CASE("batch metrics and the conversion report summed over ranks") {
  mpi_reducer r = world();
  const int n = r.size(), me = r.rank();
  const std::vector<index_t> sizes = slice_sizes(n);
  const index_t total = offset_of(sizes, n);
  const index_t off = offset_of(sizes, me), cnt = sizes[static_cast<std::size_t>(me)];
  const std::vector<double> q = normal(static_cast<std::size_t>(total), 61, -25, 2);
  std::vector<double> p = normal(static_cast<std::size_t>(total), 62, 0.5, 2.0);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] += q[i];
  std::vector<unsigned char> des(static_cast<std::size_t>(total));
  for (std::size_t i = 0; i < des.size(); ++i) des[i] = i % 3 != 1;
  const double z0 = 0.125;
  loss::config cfg;
  dist::require_same_config(r, cfg);

  loss::batch_metrics local;
  if (cnt > 0)
    local = loss::kto_loss(exec::host{}, make_view(p.data() + off, cnt),
                           make_view(q.data() + off, cnt), make_view(des.data() + off, cnt), z0,
                           cfg, vector_view<double>{}, vector_view<double>{})
                .metrics;
  const loss::batch_metrics g = dist::all_reduce_metrics(r, local);
  const loss::batch_metrics whole =
      loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(des), z0, cfg,
                     vector_view<double>{}, vector_view<double>{})
          .metrics;
  CHECK(g.chosen_count == whole.chosen_count);
  CHECK(g.rejected_count == whole.rejected_count);
  CHECK(close(g.chosen_reward_sum, whole.chosen_reward_sum, 1e-13));
  CHECK(close(g.rejected_reward_sum, whole.rejected_reward_sum, 1e-13));
  CHECK(close(g.chosen_logp_sum, whole.chosen_logp_sum, 1e-13));
  CHECK(close(g.rejected_logp_sum, whole.rejected_logp_sum, 1e-13));
  CHECK(close(g.rewards_margins(), whole.rewards_margins(), 1e-12));
  CHECK(g.kl == z0);
  CHECK(same_bits_everywhere(r, g.rewards_chosen()));

  // The global loss and gradient: local grads scaled by grad_scale, then
  // placed and summed, equal the whole batch's.
  std::vector<double> lg(static_cast<std::size_t>(cnt)), wg(static_cast<std::size_t>(total));
  double local_loss = 0;
  if (cnt > 0)
    local_loss = loss::kto_loss(exec::host{}, make_view(p.data() + off, cnt),
                                make_view(q.data() + off, cnt), make_view(des.data() + off, cnt),
                                z0, cfg, vector_view<double>{}, make_view(lg))
                     .loss;
  const double whole_loss = loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(des),
                                           z0, cfg, vector_view<double>{}, make_view(wg))
                                .loss;
  const dist::global_loss_result gl = dist::global_loss(r, local_loss, cnt);
  CHECK(gl.count == total);
  CHECK(close(gl.loss, whole_loss, 1e-13));
  std::vector<double> placed(static_cast<std::size_t>(total), 0.0);
  for (index_t i = 0; i < cnt; ++i)
    placed[static_cast<std::size_t>(off + i)] = lg[static_cast<std::size_t>(i)] * gl.grad_scale;
  r.all_reduce(placed.data(), placed.size(), dist::reduce_op::sum);
  for (index_t i = 0; i < total; ++i)
    CHECK(close(placed[static_cast<std::size_t>(i)], wg[static_cast<std::size_t>(i)], 1e-13));

  // Impressions: rank k holds records k, k + n, ...; the report equals the
  // one process report of all records, table and all.
  std::vector<metrics::impression> all_records, mine;
  std::mt19937_64 gen(77);
  for (int i = 0; i < 500; ++i) {
    const int c = static_cast<int>(gen() % 4), a = static_cast<int>(gen() % 3);
    const auto act = static_cast<metrics::action>(gen() % (a == 2 ? 2 : 3));
    all_records.push_back({c, a, act});
    if (i % n == me && !(n >= 2 && me == 1)) mine.push_back(all_records.back());
  }
  if (n >= 2) {  // rank 1 holds nothing: its share goes to rank 0
    for (int i = 0; i < 500; ++i)
      if (i % n == 1 && me == 0) mine.push_back(all_records[static_cast<std::size_t>(i)]);
  }
  metrics::report_options o;
  o.arm_names = {"base", "kto", "ktsa"};
  const metrics::conversion_report rep = dist::build_conversion_report(r, mine, o);
  const metrics::conversion_report one = metrics::build_conversion_report(all_records, o);
  CHECK(metrics::to_csv(rep) == metrics::to_csv(one));
  CHECK(rep.pooled.arms[1].purchases == one.pooled.arms[1].purchases);
  CHECK(rep.pooled.impressions == 500);
  // An unknown arm on one rank: data_error everywhere.
  std::vector<metrics::impression> badrec = mine;
  if (me == n - 1) badrec.push_back({0, 5, metrics::action::purchase});
  CHECK_THROWS_AS(dist::build_conversion_report(r, badrec, o), data_error);
  expect_in_step(r);
  // Different configs: invalid_argument everywhere.
  loss::config other = cfg;
  if (me == n - 1) other.beta = 0.2;
  if (n >= 2) CHECK_THROWS_AS(dist::require_same_config(r, other), ktsa::invalid_argument);
  expect_in_step(r);
}

namespace {

/// Shard boundaries of V over n ranks, uneven, and in reverse rank order for
/// three ranks (rank 0 holds the last columns): shards may come in any order.
dist::vocab_shard test_shard(index_t V, int n, int me) {
  if (n == 1) return {V, 0, V};
  if (n == 2) return me == 0 ? dist::vocab_shard{V, 0, 1000} : dist::vocab_shard{V, 1000, V};
  std::vector<index_t> cut{0, 2100, 2150, V};  // shards of 2100, 50 and V - 2150 columns
  const int slot = n - 1 - me;
  if (n > 3) return dist::even_shard(V, me, n);
  return {V, cut[static_cast<std::size_t>(slot)], cut[static_cast<std::size_t>(slot + 1)]};
}

template <class T>
std::vector<T> columns(const std::vector<T>& x, index_t rows, index_t V, index_t b, index_t e) {
  std::vector<T> out(static_cast<std::size_t>(rows * (e - b)));
  for (index_t r = 0; r < rows; ++r)
    for (index_t j = b; j < e; ++j)
      out[static_cast<std::size_t>(r * (e - b) + j - b)] = x[static_cast<std::size_t>(r * V + j)];
  return out;
}

template <class T>
std::vector<T> random_logits(std::size_t n, std::uint64_t seed) {
  const std::vector<double> v = normal(n, seed, 0.0, 3.0);
  std::vector<T> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = from_float<T>(static_cast<float>(v[i]));
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("sharded sequence log-prob equals the single-process kernel", "", float, bf16) {
  mpi_reducer r = world();
  const int n = r.size(), me = r.rank();
  const index_t B = 3, T = 5, V = 4099;
  const dist::vocab_shard sh = test_shard(V, n, me);
  std::vector<TestType> x = random_logits<TestType>(static_cast<std::size_t>(B * T * V), 5);
  std::vector<std::int64_t> y(static_cast<std::size_t>(B * T));
  std::mt19937_64 g(9);
  for (auto& v : y) v = static_cast<std::int64_t>(g() % static_cast<std::uint64_t>(V));
  y[0] = 5, y[1] = 2120, y[2] = V - 1, y[3] = -100, y[4] = 2149;  // every shard owns some
  for (kernels::reduction red : {kernels::reduction::sum, kernels::reduction::mean})
    for (bool shift : {false, true}) {
      kernels::logprob_options o;
      o.reduce = red;
      o.shift = shift;
      const std::vector<TestType> xl = columns(x, B * T, V, sh.begin, sh.end);
      std::vector<double> seq(B), seq1(B);
      std::vector<std::int64_t> cnt(B), cnt1(B);
      std::vector<float> lse(B * T), lse1(B * T), tok(B * T), tok1(B * T);
      dist::sharded_sequence_logprob_forward(
          exec::host{2}, r, sh, make_view(xl.data(), B, T, sh.size()), make_view(y.data(), B, T),
          make_view(seq), make_view(cnt), make_view(lse.data(), B, T), make_view(tok.data(), B, T),
          o);
      kernels::sequence_logprob_forward(
          exec::host{1}, make_view(x.data(), B, T, V), make_view(y.data(), B, T), make_view(seq1),
          make_view(cnt1), make_view(lse1.data(), B, T), make_view(tok1.data(), B, T), o);
      for (index_t b = 0; b < B; ++b) {
        CHECK(cnt[b] == cnt1[b]);
        CHECK(close(seq[b], seq1[b], 1e-6, 1e-6));
        CHECK(same_bits_everywhere(r, seq[b]));
      }
      // fp64 reference of every token's log-prob.
      for (index_t i = 0; i < B * T; ++i) {
        const index_t b = i / T, t = i % T;
        const std::int64_t lab = shift ? (t + 1 < T ? y[b * T + t + 1] : -100) : y[i];
        if (lab == -100) {
          CHECK(tok[i] == 0.0f);
          continue;
        }
        double m = -HUGE_VAL, s = 0;
        for (index_t j = 0; j < V; ++j) m = std::max(m, double(to_float(x[i * V + j])));
        for (index_t j = 0; j < V; ++j) s += std::exp(double(to_float(x[i * V + j])) - m);
        CHECK(close(lse[i], m + std::log(s), 1e-6));
        CHECK(close(tok[i], double(to_float(x[i * V + lab])) - m - std::log(s), 1e-6, 1e-6));
      }
      // Backward, local: this shard's columns of the single-process gradient.
      std::vector<double> up{0.5, -1.25, 2.0};
      std::vector<float> gl(static_cast<std::size_t>(B * T * sh.size())), g1(B * T * V);
      dist::sharded_sequence_logprob_backward(
          exec::host{2}, sh, make_view(xl.data(), B, T, sh.size()), make_view(y.data(), B, T),
          tensor_view<const float, 2>(make_view(lse.data(), B, T)), make_view(up),
          make_view(gl.data(), B, T, sh.size()), o);
      kernels::sequence_logprob_backward(
          exec::host{1}, make_view(x.data(), B, T, V), make_view(y.data(), B, T),
          tensor_view<const float, 2>(make_view(lse1.data(), B, T)),
          tensor_view<const std::int64_t, 1>{}, make_view(up), make_view(g1.data(), B, T, V), o);
      const std::vector<float> g1l = columns(g1, B * T, V, sh.begin, sh.end);
      double worst = 0;
      for (std::size_t i = 0; i < gl.size(); ++i)
        worst = std::max(worst, std::abs(double(gl[i]) - double(g1l[i])));
      CHECK(worst < 1e-6);
    }
}

TEST_CASE("sharded token KL equals the single-process kernel, -inf shards included") {
  mpi_reducer r = world();
  const int n = r.size(), me = r.rank();
  const index_t B = 2, T = 3, V = 3001;
  const dist::vocab_shard sh = test_shard(V, n, me);
  std::vector<float> a = random_logits<float>(static_cast<std::size_t>(B * T * V), 21);
  std::vector<float> bq = random_logits<float>(static_cast<std::size_t>(B * T * V), 22);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (index_t j = 0; j < 1000; ++j)
    a[static_cast<std::size_t>(1 * V + j)] = ninf;  // row 1: no p mass in [0, 1000)
  for (index_t j = 0; j < 1000; ++j) {              // row 2: a and b both -inf in [0, 1000)
    a[static_cast<std::size_t>(2 * V + j)] = ninf;
    bq[static_cast<std::size_t>(2 * V + j)] = ninf;
  }
  std::vector<std::int32_t> y(static_cast<std::size_t>(B * T), 1);
  y[4] = -100;
  const std::vector<float> al = columns(a, B * T, V, sh.begin, sh.end);
  const std::vector<float> bl = columns(bq, B * T, V, sh.begin, sh.end);
  std::vector<double> seq(B), seq1(B);
  std::vector<float> kl(B * T), kl1(B * T), la(B * T), la1(B * T), lb(B * T), lb1(B * T), h(B * T),
      h1(B * T);
  auto v3 = [&](std::vector<float>& v, index_t cols) { return make_view(v.data(), B, T, cols); };
  auto v2 = [&](std::vector<float>& v) { return make_view(v.data(), B, T); };
  const std::vector<float>& ac = al;
  dist::sharded_token_kl_forward(exec::host{2}, r, sh, make_view(ac.data(), B, T, sh.size()),
                                 make_view(bl.data(), B, T, sh.size()), make_view(y.data(), B, T),
                                 make_view(seq), v2(kl), v2(la), v2(lb), {}, v2(h));
  kernels::token_kl_forward(exec::host{1}, make_view(a.data(), B, T, V),
                            make_view(bq.data(), B, T, V), make_view(y.data(), B, T),
                            make_view(seq1), v2(kl1), v2(la1), v2(lb1), {}, v2(h1));
  for (index_t b = 0; b < B; ++b) {
    CHECK(close(seq[b], seq1[b], 1e-5, 1e-6));
    CHECK(same_bits_everywhere(r, seq[b]));
  }
  for (index_t i = 0; i < B * T; ++i) {
    CHECK(close(kl[i], kl1[i], 1e-5, 1e-6));
    CHECK(close(la[i], la1[i], 1e-6));
    CHECK(close(lb[i], lb1[i], 1e-6));
    CHECK(close(h[i], h1[i], 1e-5, 1e-6));
  }
  // fp64 reference KL of row 1.
  {
    double ma = -HUGE_VAL, mb = -HUGE_VAL, sa = 0, sb = 0, w = 0;
    for (index_t j = 0; j < V; ++j)
      ma = std::max(ma, double(a[V + j])), mb = std::max(mb, double(bq[V + j]));
    for (index_t j = 0; j < V; ++j) sa += std::exp(a[V + j] - ma), sb += std::exp(bq[V + j] - mb);
    for (index_t j = 0; j < V; ++j)
      if (a[V + j] != ninf)
        w += std::exp(a[V + j] - ma) / sa *
             ((a[V + j] - ma - std::log(sa)) - (bq[V + j] - mb - std::log(sb)));
    CHECK(close(kl[1], w, 1e-5, 1e-6));
  }
  // Backward, local: the shard's columns of the single-process gradients.
  std::vector<double> up{1.5, -0.75};
  std::vector<float> ga(static_cast<std::size_t>(B * T * sh.size())), gb(ga.size()), ga1(B * T * V),
      gb1(B * T * V);
  auto c2 = [&](std::vector<float>& v) {
    return tensor_view<const float, 2>(make_view(v.data(), B, T));
  };
  dist::sharded_token_kl_backward(exec::host{2}, sh, make_view(ac.data(), B, T, sh.size()),
                                  make_view(bl.data(), B, T, sh.size()), make_view(y.data(), B, T),
                                  c2(la), c2(lb), c2(kl), make_view(up), v3(ga, sh.size()),
                                  v3(gb, sh.size()));
  kernels::token_kl_backward(exec::host{1}, make_view(a.data(), B, T, V),
                             make_view(bq.data(), B, T, V), make_view(y.data(), B, T), c2(la1),
                             c2(lb1), c2(kl1), make_view(up), v3(ga1, V), v3(gb1, V));
  const std::vector<float> ga1l = columns(ga1, B * T, V, sh.begin, sh.end);
  const std::vector<float> gb1l = columns(gb1, B * T, V, sh.begin, sh.end);
  double worst = 0;
  for (std::size_t i = 0; i < ga.size(); ++i)
    worst = std::max({worst, std::abs(double(ga[i]) - ga1l[i]), std::abs(double(gb[i]) - gb1l[i])});
  CHECK(worst < 1e-6);
}

TEST_CASE("sharded kernels: bad shards, labels, shapes and data fail on every rank") {
  mpi_reducer r = world();
  const int n = r.size(), me = r.rank();
  const index_t B = 2, T = 2, V = 64;
  std::vector<float> x = random_logits<float>(static_cast<std::size_t>(B * T * V), 3);
  std::vector<std::int64_t> y{1, 2, 40, 63};
  std::vector<double> seq(B);
  auto run = [&](dist::vocab_shard sh, std::vector<std::int64_t> lab, index_t b_local,
                 kernels::logprob_options o = {}) {
    const std::vector<float> xl = columns(x, B * T, V, sh.begin, sh.end);
    dist::sharded_sequence_logprob_forward(
        exec::host{1}, r, sh, make_view(xl.data(), b_local, T, sh.size()),
        make_view(lab.data(), b_local, T), make_view(seq.data(), b_local));
    (void)o;
  };
  auto run_o = [&](dist::vocab_shard sh, std::vector<float> xs, kernels::logprob_options o) {
    const std::vector<float> xl = columns(xs, B * T, V, sh.begin, sh.end);
    dist::sharded_sequence_logprob_forward(
        exec::host{1}, r, sh, make_view(xl.data(), B, T, sh.size()), make_view(y.data(), B, T),
        make_view(seq), tensor_view<std::int64_t, 1>{}, tensor_view<float, 2>{},
        tensor_view<float, 2>{}, o);
  };
  const dist::vocab_shard good = dist::even_shard(V, me, n);
  REQUIRE_NOTHROW(run(good, y, B));
  if (n < 2) return;  // the mismatches below need two ranks

  // A gap: the last rank stops one column short.
  dist::vocab_shard gap = good;
  if (me == n - 1) gap.end -= 1;
  CHECK_THROWS_AS(run(gap, y, B), shape_error);
  expect_in_step(r);
  // An overlap: rank 1 starts one column early.
  dist::vocab_shard overlap = good;
  if (me == 1) overlap.begin -= 1;
  try {
    run(overlap, y, B);
    CHECK(false);
  } catch (const shape_error& e) {
    CHECK(std::string(e.what()).find("do not tile") != std::string::npos);
  }
  expect_in_step(r);
  // Labels that differ on one rank.
  std::vector<std::int64_t> y2 = y;
  if (me == n - 1) y2[3] = 0;
  CHECK_THROWS_AS(run(good, y2, B), ktsa::invalid_argument);
  expect_in_step(r);
  // A batch size that differs on one rank.
  CHECK_THROWS_AS(run(good, y, me == 0 ? 1 : B), shape_error);
  expect_in_step(r);
  // A label outside [0, V) (seen by every rank: the same error everywhere).
  std::vector<std::int64_t> y3 = y;
  y3[2] = V;
  CHECK_THROWS_AS(run(good, y3, B), data_error);
  expect_in_step(r);
  // A NaN in the last rank's shard with check_finite: data_error on every
  // rank, naming the global vocabulary index.
  std::vector<float> xn = x;
  xn[static_cast<std::size_t>(V + V - 1)] = std::nanf("");
  kernels::logprob_options o;
  o.check_finite = true;
  try {
    run_o(good, xn, o);
    CHECK(false);
  } catch (const data_error& e) {
    CHECK(std::string(e.what()).find("vocabulary index 63") != std::string::npos);
    if (me != n - 1) CHECK(std::string(e.what()).find("rank ") != std::string::npos);
  }
  expect_in_step(r);
  // A row that is -inf in every shard: data_error everywhere.
  std::vector<float> xi = x;
  for (index_t j = 0; j < V; ++j) xi[static_cast<std::size_t>(j)] = -HUGE_VALF;
  CHECK_THROWS_AS(run_o(good, xi, {}), data_error);
  expect_in_step(r);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  Catch::Session session;
  int rc = session.applyCommandLine(argc, argv);
  if (rc == 0) rc = session.run();
  // Every rank must agree on the verdict (mpirun reports the first non-zero exit).
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst != 0 ? 1 : 0;
}
