// ktsa/dist/ without MPI (host tests, run under the sanitizers too): the
// one-process reducer, a callable reducer over threads of this process (each
// thread a "rank"), and the shard merges against fp64 references.
// The MPI transport itself is tested by tests/dist/test_dist_mpi.cpp.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ktsa/dist/check.hpp"
#include "ktsa/dist/reducer.hpp"
#include "ktsa/dist/sharded.hpp"
#include "ktsa/dist/statistics.hpp"
#include "ktsa/ktsa.hpp"

using namespace ktsa;

namespace {

/// n threads of this process acting as ranks: every collective deposits each
/// rank's array, and every rank combines them in rank order.
class thread_group {
 public:
  explicit thread_group(int n) : n_(n), slots_(static_cast<std::size_t>(n)) {}
  int size() const { return n_; }
  template <class T>
  void all_reduce(int rank, T* data, std::size_t len, dist::reduce_op op) {
    slots_[static_cast<std::size_t>(rank)] = data;
    wait();
    std::vector<T> out(static_cast<const T*>(slots_[0]), static_cast<const T*>(slots_[0]) + len);
    for (int k = 1; k < n_; ++k) {
      const T* s = static_cast<const T*>(slots_[static_cast<std::size_t>(k)]);
      for (std::size_t i = 0; i < len; ++i)
        out[i] = op == dist::reduce_op::sum ? out[i] + s[i] : std::max(out[i], s[i]);
    }
    wait();  // every rank has read every array
    std::copy(out.begin(), out.end(), data);
  }

 private:
  void wait() {
    std::unique_lock<std::mutex> l(m_);
    const long g = generation_;
    if (++count_ == n_) {
      count_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(l, [&] { return generation_ != g; });
    }
  }
  int n_;
  std::vector<const void*> slots_;
  std::mutex m_;
  std::condition_variable cv_;
  int count_ = 0;
  long generation_ = 0;
};

/// Runs body(reducer, rank) on n threads; returns each rank's exception (or null).
template <class Body>
std::vector<std::exception_ptr> run_ranks(int n, Body body) {
  thread_group g(n);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int k = 0; k < n; ++k)
    threads.emplace_back([&, k] {
      auto f = [&g, k](auto* data, std::size_t len, dist::reduce_op op) {
        g.all_reduce(k, data, len, op);
      };
      auto r = dist::make_callable_reducer(k, n, f);
      try {
        body(r, k);
      } catch (...) {
        errors[static_cast<std::size_t>(k)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

std::vector<float> logits(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<float> columns(const std::vector<float>& x, index_t rows, index_t V, index_t b,
                           index_t e) {
  std::vector<float> out(static_cast<std::size_t>(rows * (e - b)));
  for (index_t r = 0; r < rows; ++r)
    for (index_t j = b; j < e; ++j)
      out[static_cast<std::size_t>(r * (e - b) + j - b)] = x[static_cast<std::size_t>(r * V + j)];
  return out;
}

}  // namespace

TEST_CASE("dist: the reducer concept") {
  STATIC_REQUIRE(dist::is_reducer_v<dist::local_reducer>);
  STATIC_REQUIRE(!dist::is_reducer_v<int>);
  auto f = [](auto*, std::size_t, dist::reduce_op) {};
  STATIC_REQUIRE(dist::is_reducer_v<dist::callable_reducer<decltype(f)>>);
  CHECK_THROWS_AS(dist::make_callable_reducer(2, 2, f), ktsa::invalid_argument);
  CHECK_THROWS_AS(dist::make_callable_reducer(0, 0, f), ktsa::invalid_argument);
}

TEST_CASE("dist: one process (local_reducer) gives the single-process values bitwise") {
  dist::local_reducer r;
  std::vector<double> p{-10.5, -20.25, -7.0, -15.0}, q{-11.0, -19.0, -7.5, -14.5};
  CHECK(dist::batch_kl_reference_point(r, make_view(p), make_view(q)) ==
        loss::batch_kl_reference_point(make_view(p), make_view(q)));
  // BCO, both orders: the delta kto_loss uses and the state it leaves.
  loss::config cfg;
  cfg.kind = loss::variant::bco;
  std::vector<unsigned char> des{1, 0, 1, 1};
  loss::loss_result one;
  for (loss::bco_update order : {loss::bco_update::before_loss, loss::bco_update::after_loss}) {
    cfg.bco_order = order;
    loss::bco_running_mean a(0.3, 4), b(0.3, 4);
    const double d = dist::bco_delta(r, a, make_view(p), make_view(q), cfg.beta, cfg.bco_order);
    one = loss::kto_loss(exec::host{}, make_view(p), make_view(q), make_view(des), 0.0, cfg,
                         vector_view<double>{}, vector_view<double>{}, &b);
    CHECK(d == one.metrics.kl);
    CHECK(a.mean() == b.mean());
    CHECK(a.count() == b.count());
  }
  loss::bco_running_mean c(0.3, 4);
  CHECK(dist::bco_delta(r, c, 1.0, 2, dist::bco_update::none) == 0.3);
  CHECK(c.count() == 4);
  const loss::batch_metrics m = dist::all_reduce_metrics(r, one.metrics);
  CHECK(m.chosen_reward_sum == one.metrics.chosen_reward_sum);
  CHECK(m.kl == one.metrics.kl);

  // The sharded kernels with one shard are the kernels.
  const index_t B = 2, T = 3, V = 2500;
  std::vector<float> x = logits(static_cast<std::size_t>(B * T * V), 1), y2 = logits(x.size(), 2);
  std::vector<std::int64_t> y{4, 2499, -100, 0, 1000, 7};
  std::vector<double> s1(B), s2(B);
  std::vector<float> l1(B * T), l2(B * T);
  const dist::vocab_shard all{V, 0, V};
  dist::sharded_sequence_logprob_forward(exec::host{2}, r, all, make_view(x.data(), B, T, V),
                                         make_view(y.data(), B, T), make_view(s1), {},
                                         make_view(l1.data(), B, T));
  kernels::sequence_logprob_forward(exec::host{2}, make_view(x.data(), B, T, V),
                                    make_view(y.data(), B, T), make_view(s2), {},
                                    make_view(l2.data(), B, T));
  CHECK(s1 == s2);
  CHECK(l1 == l2);
  dist::sharded_token_kl_forward(exec::host{2}, r, all, make_view(x.data(), B, T, V),
                                 make_view(y2.data(), B, T, V), make_view(y.data(), B, T),
                                 make_view(s1));
  kernels::token_kl_forward(exec::host{2}, make_view(x.data(), B, T, V),
                            make_view(y2.data(), B, T, V), make_view(y.data(), B, T),
                            make_view(s2));
  CHECK(s1 == s2);
  // Local argument errors as in one process.
  CHECK_THROWS_AS(dist::sharded_sequence_logprob_forward(
                      exec::host{1}, r, dist::vocab_shard{V, 0, V - 1},
                      make_view(x.data(), B, T, V), make_view(y.data(), B, T), make_view(s1)),
                  shape_error);
  CHECK_THROWS_AS(dist::even_shard(3, 0, 4), ktsa::invalid_argument);
}

TEST_CASE("dist: three thread-ranks through a callable reducer") {
  const int n = 3;
  const index_t B = 2, T = 4, V = 3000;
  const std::vector<float> x = logits(static_cast<std::size_t>(B * T * V), 3);
  std::vector<std::int32_t> y{0, 2999, 1500, -100, 17, 2048, 2047, 999};
  std::vector<double> ref(B);
  std::vector<float> ref_lse(B * T);
  kernels::sequence_logprob_forward(exec::host{1}, make_view(x.data(), B, T, V),
                                    make_view(y.data(), B, T), make_view(ref), {},
                                    make_view(ref_lse.data(), B, T));
  std::vector<std::vector<double>> seq(n, std::vector<double>(B));
  std::vector<double> z0(n);
  std::vector<loss::kl_partial> parts{{1.5, 3}, {0.0, 0}, {4.25, 2}};
  const auto errors = run_ranks(n, [&](auto& r, int k) {
    const dist::vocab_shard sh = dist::even_shard(V, (k + 1) % n, n);  // rotated rank order
    const std::vector<float> xl = columns(x, B * T, V, sh.begin, sh.end);
    dist::sharded_sequence_logprob_forward(exec::host{1}, r, sh,
                                           make_view(xl.data(), B, T, sh.size()),
                                           make_view(y.data(), B, T), make_view(seq[k]));
    z0[static_cast<std::size_t>(k)] = dist::reference_point(r, parts[static_cast<std::size_t>(k)]);
  });
  for (const auto& e : errors) CHECK(!e);
  for (int k = 0; k < n; ++k)
    for (index_t b = 0; b < B; ++b) {
      CHECK(seq[k][b] == seq[0][b]);  // bitwise the same on every rank
      CHECK(std::abs(seq[k][b] - ref[b]) <= 1e-6 * std::abs(ref[b]));
    }
  for (int k = 0; k < n; ++k) CHECK(z0[static_cast<std::size_t>(k)] == 5.75 / 5);

  // An error on one rank reaches every rank, with its type and message.
  const auto errs = run_ranks(n, [&](auto& r, int k) {
    dist::on_every_rank(r, [&] {
      if (k == 1) throw data_error("ktsa: bad thing on rank one");
    });
  });
  for (int k = 0; k < n; ++k) {
    REQUIRE(errs[static_cast<std::size_t>(k)]);
    try {
      std::rethrow_exception(errs[static_cast<std::size_t>(k)]);
    } catch (const data_error& e) {
      const std::string w = e.what();
      CHECK(w.find("bad thing on rank one") != std::string::npos);
      if (k != 1) CHECK(w.find("rank 1 of 3 failed") != std::string::npos);
    }
  }
  // A non-ktsa exception becomes remote_error elsewhere.
  const auto other = run_ranks(2, [&](auto& r, int k) {
    dist::on_every_rank(r, [&] {
      if (k == 0) throw std::runtime_error("out of memory");
    });
  });
  CHECK_THROWS_AS(std::rethrow_exception(other[1]), dist::remote_error);
  CHECK_THROWS_AS(std::rethrow_exception(other[0]), std::runtime_error);
}

TEST_CASE("dist: the KL shard merge against fp64, with -inf pieces") {
  // One row split at several cuts; each piece's state from the host kernel's
  // row loop, merged in order; fp64 KL and entropy computed here.
  const index_t V = 5000;
  std::vector<float> a = logits(static_cast<std::size_t>(V), 7), b = logits(a.size(), 8);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (index_t j = 100; j < 900; ++j) a[static_cast<std::size_t>(j)] = ninf;  // p = 0 there
  for (index_t j = 300; j < 600; ++j) b[static_cast<std::size_t>(j)] = ninf;  // q = 0 where p = 0
  double ma = -HUGE_VAL, mb = -HUGE_VAL, sa = 0, sb = 0;
  for (index_t j = 0; j < V; ++j) ma = std::max(ma, double(a[j])), mb = std::max(mb, double(b[j]));
  for (index_t j = 0; j < V; ++j) sa += std::exp(a[j] - ma), sb += std::exp(b[j] - mb);
  double kl = 0, h = 0;
  for (index_t j = 0; j < V; ++j) {
    if (a[j] == ninf) continue;
    const double lp = a[j] - ma - std::log(sa), lq = b[j] - mb - std::log(sb);
    kl += std::exp(lp) * (lp - lq);
    h -= std::exp(lp) * lp;
  }
  using namespace kernels::detail;
  const simd_level lvl = active_simd_level();
  for (const std::vector<index_t>& cuts : std::vector<std::vector<index_t>>{
           {0, V}, {0, 150, V}, {0, 100, 900, V}, {0, 350, 550, 2048, 4999, V}}) {
    dist::kl_partial_state acc = dist::kl_partial_state::empty();
    for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
      const kl_state st =
          row_kl<true>(lvl, a.data() + cuts[c], b.data() + cuts[c], cuts[c + 1] - cuts[c]);
      const bool no_p = st.max_a == -kInf;
      acc.merge({st.max_a, st.max_b, st.sum_a, st.sum_b, no_p ? 0.0 : st.w, no_p ? 0.0 : st.u});
    }
    const double got_kl = acc.w / acc.sum_a - std::log(acc.sum_a / acc.sum_b);
    const double got_h = std::log(acc.sum_a) - acc.u / acc.sum_a;
    CHECK(std::abs(got_kl - kl) <= 1e-6 * kl + 1e-7);
    CHECK(std::abs(got_h - h) <= 1e-6 * h);
    CHECK(std::abs(acc.max_a + std::log(acc.sum_a) - (ma + std::log(sa))) <= 1e-6);
  }
  // q = 0 where p > 0 in one piece: KL = +inf after the merge.
  std::vector<float> b2 = b;
  for (index_t j = 0; j < 50; ++j) b2[static_cast<std::size_t>(j)] = ninf;
  dist::kl_partial_state acc = dist::kl_partial_state::empty();
  for (auto [lo, hi] : {std::pair<index_t, index_t>{0, 50}, {50, V}}) {
    const kl_state st = row_kl<false>(lvl, a.data() + lo, b2.data() + lo, hi - lo);
    acc.merge({st.max_a, st.max_b, st.sum_a, st.sum_b, st.w, st.u});
  }
  CHECK(acc.w == HUGE_VAL);
}

TEST_CASE("dist: fingerprints") {
  loss::config a, b;
  CHECK(dist::config_fingerprint(a) == dist::config_fingerprint(b));
  b.beta = 0.2;
  CHECK(dist::config_fingerprint(a) != dist::config_fingerprint(b));
  b = a;
  b.kind = loss::variant::ktsa;
  CHECK(dist::config_fingerprint(a) != dist::config_fingerprint(b));
  CHECK(dist::fingerprint().add(0.0).value() == dist::fingerprint().add(-0.0).value());
  dist::local_reducer r;
  CHECK_NOTHROW(dist::require_same_config(r, a));
}
