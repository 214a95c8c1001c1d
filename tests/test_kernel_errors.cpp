// Bad input to the host kernels and to core (issue 16, docs/errors.md): outputs
// that alias inputs or each other, shape x stride x element-size overflow,
// stride-0 views with huge T, gradient scales beyond the float range, and a
// worker thread that cannot start (an injected failure, and a real one under
// RLIMIT_AS in a child process).
#include <catch2/catch.hpp>

#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "kernel_test_util.hpp"
#include "ktsa/core/parallel.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/token_kl.hpp"

using namespace ktsa;
using namespace ktest;
namespace kn = ktsa::kernels;
using Catch::Matchers::Contains;

#if defined(__SANITIZE_ADDRESS__)
#define KTSA_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KTSA_TEST_ASAN 1
#endif
#endif

namespace {

constexpr index_t B = 2, T = 3, V = 5;

/// One arena holding every tensor of a call, so views can be placed to overlap.
struct arena {
  std::vector<float> f = std::vector<float>(4096, 0.0f);
  std::vector<std::int64_t> y = std::vector<std::int64_t>(B * T, 1);
  std::vector<double> d = std::vector<double>(64, 0.5);
  arena() {
    for (size_t i = 0; i < 512; ++i) f[i] = static_cast<float>(std::sin(0.3 * double(i)));
  }
  float* at(index_t i) { return f.data() + i; }
};

void expect_overlap_error(const std::function<void()>& call, const std::string& what) {
  INFO(what);
  CHECK_THROWS_AS(call(), ktsa::invalid_argument);
  CHECK_THROWS_WITH(call(), Contains(what));
}

}  // namespace

TEST_CASE("aliased outputs: every output against every input and every other output",
          "[errors][alias]") {
  arena m;
  const exec::host ex{1};
  const auto logits = make_view(std::as_const(m).f.data(), B, T, V);  // floats [0, 30)
  const auto labels = make_view(std::as_const(m).y.data(), B, T);
  std::vector<double> seq(B);
  std::vector<std::int64_t> count(B);

  // The three: the forward's lse over the logits, lse and token_logp
  // in the same floats, and token_kl_backward's grad_a over the saved lse.
  expect_overlap_error(
      [&] {
        kn::sequence_logprob_forward(ex, logits, labels, make_view(seq), make_view(count),
                                     make_view(m.at(0), B, T), {});
      },
      "output 'lse' overlaps input 'logits'");
  expect_overlap_error(
      [&] {
        kn::sequence_logprob_forward(ex, logits, labels, make_view(seq), make_view(count),
                                     make_view(m.at(1000), B, T), make_view(m.at(1003), B, T));
      },
      "outputs 'lse' and 'token_logp' overlap");
  expect_overlap_error(
      [&] {
        kn::sequence_logprob_forward(ex, logits, labels,
                                     make_view(reinterpret_cast<double*>(count.data()), B),
                                     make_view(count), {}, {});
      },
      "outputs 'sequence_logp' and 'token_count' overlap");
  expect_overlap_error(
      [&] {
        kn::sequence_logprob_forward_grad(ex, logits, labels, make_view(seq), make_view(count),
                                          make_view(reinterpret_cast<float*>(m.y.data()), B, T, 1));
      },
      "grad_logits");  // a shape error first here: [B, T, 1] is not [B, T, V]
  {
    // A gradient over the labels (of the right shape: labels inside a float arena).
    std::vector<float> big(4096, 0.0f);
    auto lab = make_view(reinterpret_cast<const std::int32_t*>(big.data() + 200), B, T);
    expect_overlap_error(
        [&] {
          kn::sequence_logprob_forward_grad(ex, logits, lab, make_view(seq), make_view(count),
                                            make_view(big.data() + 190, B, T, V));
        },
        "output 'grad_logits' overlaps input 'labels'");
  }

  // Backward: the gradient over the saved lse, the counts, the upstream gradient.
  std::vector<float> lse(B * T), tlp(B * T);
  kn::sequence_logprob_forward(ex, logits, labels, make_view(seq), make_view(count),
                               make_view(lse.data(), B, T), make_view(tlp.data(), B, T));
  for (int i = 0; i < B * T; ++i) m.f[static_cast<size_t>(2000 + i)] = lse[static_cast<size_t>(i)];
  const auto saved = make_view(std::as_const(m).f.data() + 2000, B, T);
  const std::vector<double> up{1.0, -2.0};
  expect_overlap_error(
      [&] {
        kn::sequence_logprob_backward(ex, logits, labels, saved, {}, make_view(up),
                                      make_view(m.at(1995), B, T, V));
      },
      "output 'grad_logits' overlaps input 'lse'");
  expect_overlap_error(
      [&] {
        kn::sequence_logprob_backward(ex, logits, labels, saved, {},
                                      make_view(reinterpret_cast<const float*>(m.at(3000)), B),
                                      make_view(m.at(2990), B, T, V));
      },
      "output 'grad_logits' overlaps input 'upstream_grad'");
  // scale_rows: the scale inside the gradient it scales.
  expect_overlap_error(
      [&] {
        kn::scale_rows(ex, make_view(m.at(1000), B, T, V),
                       make_view(reinterpret_cast<const float*>(m.at(1010)), B));
      },
      "output 'grad_logits' overlaps input 'row_scale'");

  // Token KL forward and backward.
  const auto b_logits = make_view(std::as_const(m).f.data() + 100, B, T, V);
  std::vector<double> skl(B);
  std::vector<float> tkl(B * T), la(B * T), lb(B * T);
  expect_overlap_error(
      [&] {
        kn::token_kl_forward(ex, logits, b_logits, labels, make_view(skl),
                             make_view(m.at(110), B, T));
      },
      "output 'token_kl' overlaps input 'b_logits'");
  expect_overlap_error(
      [&] {
        kn::token_kl_forward(ex, logits, b_logits, labels, make_view(skl),
                             make_view(tkl.data(), B, T), make_view(la.data(), B, T),
                             make_view(lb.data(), B, T), {}, make_view(lb.data(), B, T));
      },
      "outputs 'lse_b' and 'token_entropy' overlap");
  kn::token_kl_forward(ex, logits, b_logits, labels, make_view(skl), make_view(tkl.data(), B, T),
                       make_view(la.data(), B, T), make_view(lb.data(), B, T));
  for (int i = 0; i < B * T; ++i) {
    m.f[static_cast<size_t>(2100 + i)] = la[static_cast<size_t>(i)];
    m.f[static_cast<size_t>(2200 + i)] = lb[static_cast<size_t>(i)];
    m.f[static_cast<size_t>(2300 + i)] = tkl[static_cast<size_t>(i)];
  }
  const auto sla = make_view(std::as_const(m).f.data() + 2100, B, T);
  const auto slb = make_view(std::as_const(m).f.data() + 2200, B, T);
  const auto stk = make_view(std::as_const(m).f.data() + 2300, B, T);
  expect_overlap_error(
      [&] {
        kn::token_kl_backward(ex, logits, b_logits, labels, sla, slb, stk, make_view(up),
                              make_view(m.at(2090), B, T, V));
      },
      "output 'grad_a' overlaps input 'lse_a'");
  expect_overlap_error(
      [&] {
        kn::token_kl_backward(ex, logits, b_logits, labels, sla, slb, stk, make_view(up),
                              make_view(m.at(3000), B, T, V), make_view(m.at(2290), B, T, V));
      },
      "output 'grad_b' overlaps input 'token_kl'");
  expect_overlap_error(
      [&] {
        kn::token_kl_backward(ex, logits, b_logits, labels, sla, slb, stk, make_view(up),
                              make_view(m.at(3000), B, T, V), make_view(m.at(3010), B, T, V));
      },
      "overlaps 'grad_a'");

  // The documented exception still works: a gradient that is exactly its logits view.
  {
    std::vector<float> x(m.f.begin(), m.f.begin() + B * T * V), ref(x.size());
    std::vector<double> s1(B), s2(B);
    kn::sequence_logprob_forward_grad(ex, make_view(std::as_const(x).data(), B, T, V), labels,
                                      make_view(s1), make_view(count),
                                      make_view(ref.data(), B, T, V));
    kn::sequence_logprob_forward_grad(ex, make_view(std::as_const(x).data(), B, T, V), labels,
                                      make_view(s2), make_view(count),
                                      make_view(x.data(), B, T, V));
    CHECK(same_bits(x, ref));
    CHECK(same_bits(s1, s2));
  }
}

TEST_CASE("sizes: shape x stride x element size is checked before memory is touched",
          "[errors][sizes]") {
  std::vector<float> row(V, 0.25f);
  row[1] = 2.0f;
  std::vector<std::int64_t> lab(1, 1);
  std::vector<double> seq(4);
  std::vector<std::int64_t> count(4);
  const exec::host ex{1};
  const auto forward = [&](index_t b, index_t t, index_t sb, index_t st) {
    const tensor_view<const float, 3> x(row.data(), {b, t, V}, {sb, st, 1});
    const tensor_view<const std::int64_t, 2> y(lab.data(), {b, t}, {0, 0});
    kn::sequence_logprob_forward(ex, x, y, make_view(seq.data(), b), make_view(count.data(), b));
  };
  // Huge T over one row (stride 0): refused as a shape_error before the
  // 16-byte-per-position scratch is allocated (was a multi-TiB allocation).
  CHECK_THROWS_AS(forward(1, index_t{1} << 40, 0, 0), shape_error);
  CHECK_THROWS_WITH(forward(1, index_t{1} << 40, 0, 0), Contains("limit of 2^31"));
  // B x T past int64: a shape_error, not a wrapped count.
  CHECK_THROWS_AS(forward(4, index_t{1} << 62, 0, 0), shape_error);
  // shape x stride overflows int64, and x element size overflows it.
  CHECK_THROWS_WITH(forward(4, 1, index_t{1} << 62, 0), Contains("shape x stride x element size"));
  CHECK_THROWS_WITH(forward(2, 1, index_t{1} << 61, 0), Contains("shape x stride x element size"));
  // A negative stride reaching below address 0.
  CHECK_THROWS_WITH(forward(2, 1, -(index_t{1} << 60), 0),
                    Contains("shape x stride x element size"));
  // A contiguous view whose element count does not fit (strides wrap in the view).
  {
    const auto x = make_view(row.data(), index_t{1} << 32, index_t{1} << 32, V);
    const auto y = make_view(lab.data(), index_t{1} << 32, index_t{1} << 32);
    CHECK_THROWS_AS(kn::sequence_logprob_forward(ex, x, y, make_view(seq.data(), 1),
                                                 make_view(count.data(), 1)),
                    shape_error);
  }
  // Stride-0 views within the limit are legal: every position is the same row.
  forward(1, 4, 0, 0);
  CHECK(count[0] == 4);
  const double lp1 = 2.0 - std::log(4 * std::exp(0.25) + std::exp(2.0));
  CHECK(std::fabs(seq[0] - 4 * lp1) < 1e-5);
  // The KL kernels take the same path.
  {
    const tensor_view<const float, 3> x(row.data(), {1, index_t{1} << 40, V}, {0, 0, 1});
    const tensor_view<const std::int64_t, 2> y(lab.data(), {1, index_t{1} << 40}, {0, 0});
    CHECK_THROWS_AS(kn::token_kl_forward(ex, x, x, y, make_view(seq.data(), 1)), shape_error);
  }
  // An output with a huge stride: its own range is checked too.
  {
    std::vector<float> lse(8);
    const tensor_view<float, 2> bad(lse.data(), {1, 2}, {0, index_t{1} << 62});
    const tensor_view<const float, 3> x(row.data(), {1, 2, V}, {0, 0, 1});
    const tensor_view<const std::int64_t, 2> y(lab.data(), {1, 2}, {0, 0});
    CHECK_THROWS_AS(kn::sequence_logprob_forward(ex, x, y, make_view(seq.data(), 1),
                                                 make_view(count.data(), 1), bad),
                    shape_error);
  }
}

TEST_CASE("gradient scales beyond the float range are refused, not inf x 0 = NaN",
          "[errors][scale]") {
  // Row [1, -inf, 0] label 0: p = [e/(e+1), 0, 1/(e+1)].
  const std::vector<float> x{1.0f, -std::numeric_limits<float>::infinity(), 0.0f};
  const std::vector<std::int64_t> y{0};
  const auto xv = make_view(x.data(), 1, 1, 3);
  const auto yv = make_view(y.data(), 1, 1);
  std::vector<double> seq(1);
  std::vector<std::int64_t> count(1);
  std::vector<float> lse(1), g(3);
  const exec::host ex{1};
  kn::sequence_logprob_forward(ex, xv, yv, make_view(seq), make_view(count),
                               make_view(lse.data(), 1, 1));
  const auto saved = make_view(std::as_const(lse).data(), 1, 1);
  const std::vector<double> huge{1e39};  // a finite double, inf as a float
  CHECK_THROWS_AS(kn::sequence_logprob_backward(ex, xv, yv, saved, {}, make_view(huge),
                                                make_view(g.data(), 1, 1, 3)),
                  data_error);
  CHECK_THROWS_WITH(kn::sequence_logprob_backward(ex, xv, yv, saved, {}, make_view(huge),
                                                  make_view(g.data(), 1, 1, 3)),
                    Contains("'upstream_grad' gives the row scale 9.99"));
  CHECK_THROWS_AS(kn::scale_rows(ex, make_view(g.data(), 1, 1, 3), make_view(huge)), data_error);
  CHECK_THROWS_AS(kn::token_kl_backward(ex, xv, xv, yv, saved, saved, saved, make_view(huge),
                                        make_view(g.data(), 1, 1, 3)),
                  data_error);
  // The largest float scale works and a zero probability stays exactly 0.
  const std::vector<double> fmax{static_cast<double>(FLT_MAX)};
  kn::sequence_logprob_backward(ex, xv, yv, saved, {}, make_view(fmax),
                                make_view(g.data(), 1, 1, 3));
  CHECK(g[1] == 0.0f);
  CHECK(std::isfinite(g[0]));
  CHECK(std::isfinite(g[2]));
  const double e = std::exp(1.0);
  CHECK(std::fabs(g[2] / FLT_MAX + 1 / (e + 1)) < 1e-6);
  // A mean reduction may bring a huge upstream value into range.
  kn::logprob_options mean;
  mean.reduce = kn::reduction::mean;
  kn::sequence_logprob_backward(ex, xv, yv, saved, {}, make_view(fmax),
                                make_view(g.data(), 1, 1, 3), mean);
  CHECK(g[1] == 0.0f);
}

namespace {
std::atomic<int> g_fail_from{1 << 30};
bool fail_hook(index_t chunk) {
  return chunk < g_fail_from.load();
}
struct hook_guard {
  explicit hook_guard(int from) {
    g_fail_from = from;
    ktsa::detail::thread_start_hook() = &fail_hook;
  }
  ~hook_guard() { ktsa::detail::thread_start_hook() = nullptr; }
};
}  // namespace

TEST_CASE("parallel loops: a thread that cannot start falls back to the caller, same results",
          "[errors][threads]") {
  const index_t n = 1000;
  const auto visit = [&](int threads) {
    std::vector<int> seen(static_cast<size_t>(n), 0);
    ktsa::detail::parallel_chunks(exec::host{threads}, n, 1, [&](index_t b, index_t e) {
      for (index_t i = b; i < e; ++i) ++seen[static_cast<size_t>(i)];
    });
    return seen;
  };
  for (const int from : {1, 2, 5}) {
    hook_guard guard(from);  // starts of chunk >= from fail
    const std::vector<int> seen = visit(8);
    for (int s : seen) CHECK(s == 1);
  }
  // The lowest-chunk error is still the one reported when starts fail.
  {
    hook_guard guard(3);
    CHECK_THROWS_WITH(ktsa::detail::parallel_chunks(exec::host{6}, 60, 1,
                                                    [&](index_t b, index_t) {
                                                      if (b >= 20)
                                                        throw data_error(std::to_string(b));
                                                    }),
                      "20");
  }
  // A kernel under failing starts gives the bits of a single-thread run.
  const std::vector<float> x = random_logits(64 * 300, 3);
  const std::vector<std::int64_t> y = random_labels(4, 16, 300, 4);
  const auto run = [&](int threads) {
    std::vector<double> seq(4);
    std::vector<std::int64_t> c(4);
    std::vector<float> g(x.size());
    kn::sequence_logprob_forward_grad(exec::host{threads}, make_view(x.data(), 4, 16, 300),
                                      make_view(y.data(), 4, 16), make_view(seq), make_view(c),
                                      make_view(g.data(), 4, 16, 300));
    return std::make_pair(seq, g);
  };
  const auto one = run(1);
  hook_guard guard(2);
  const auto some = run(4);
  CHECK(same_bits(one.first, some.first));
  CHECK(same_bits(one.second, some.second));
}

#if defined(__unix__) && !defined(KTSA_TEST_ASAN)
TEST_CASE("parallel loops: exec::host{2000} under a 3 GiB address-space limit (child process)",
          "[errors][threads][rlimit]") {
  // The reproducer: thread stacks exhaust RLIMIT_AS part-way through
  // starting 2000 workers. Before the fix std::terminate killed the process.
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max = rlim_t{3} << 30;
    if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(3);
    std::vector<float> row(65536);
    for (size_t j = 0; j < row.size(); ++j) row[j] = static_cast<float>(j % 7) * 0.5f;
    const std::vector<std::int64_t> lab{3};
    const index_t rows = 4000;  // stride 0: 4000 positions over one row
    const tensor_view<const float, 3> xv(row.data(), {1, rows, 65536}, {0, 0, 1});
    const tensor_view<const std::int64_t, 2> yv(lab.data(), {1, rows}, {0, 0});
    std::vector<double> seq(1);
    std::vector<std::int64_t> c(1);
    try {
      kn::sequence_logprob_forward(exec::host{2000}, xv, yv, make_view(seq), make_view(c));
      std::vector<double> seq1(1);
      kn::sequence_logprob_forward(exec::host{1}, xv, yv, make_view(seq1), make_view(c));
      _exit(seq[0] == seq1[0] && c[0] == rows ? 0 : 1);
    } catch (...) {
      _exit(2);
    }
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("child status " << status);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
#endif
