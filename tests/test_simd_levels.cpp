// One answer on every SIMD level (issue 16): every host kernel (log-prob
// forward, fused forward + gradient, backward, scale_rows, token-KL forward and
// backward) runs on every level this CPU has, on the input classes that broke
// before: finite masks (-FLT_MAX, what masked_fill(finfo.min) writes), -inf
// masks, NaN with and without check_finite, denormal probabilities and huge
// logits (1e6, 3e38, spreads beyond FLT_MAX). Each level is compared with a
// long-double reference written here (bounds in docs/kernels.md, "Levels");
// what is exact (masked gradient entries, NaN positions, errors, thread
// counts) is asserted bitwise.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernel_test_util.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/token_kl.hpp"

using namespace ktsa;
using namespace ktest;
namespace kn = ktsa::kernels;
namespace kd = ktsa::kernels::detail;

namespace {

constexpr float kFmax = FLT_MAX;
constexpr float kNinf = -std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

/// Tolerances of every level against the reference (docs/kernels.md, "Levels").
constexpr double kTolLogp = 2e-6;  // absolute, plus 2^-23 relative for the float output
constexpr double kTolGrad = 2e-6;  // absolute on p, q and their products (|p| <= 1)

bool near(double got, double want, double abs_tol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= abs_tol + std::ldexp(std::fabs(want), -23);
}

/// One batch: rows of a and b (B = 1, T = rows), labels in range.
struct input {
  index_t T = 0, V = 0;
  std::vector<float> a, b;
  std::vector<std::int64_t> y;
};

/// long-double reference of one row: lse, log p_y, KL(p||q), H(p), gradients.
struct ref_row {
  long double lse_a, lse_b, lp, kl, h;
  std::vector<long double> lpa, lqb, p, q;
};
ref_row reference(const float* a, const float* b, index_t V, std::int64_t y) {
  ref_row r;
  // log p_j = (x_j - m) - log s keeps the digits that x_j - lse loses at huge logits.
  const auto logp = [&](const float* x, long double& lse) {
    long double m = -INFINITY;
    for (index_t j = 0; j < V; ++j) m = std::max<long double>(m, x[j]);
    long double s = 0;
    for (index_t j = 0; j < V; ++j) s += std::exp(static_cast<long double>(x[j]) - m);
    lse = m + std::log(s);
    std::vector<long double> out(static_cast<size_t>(V));
    for (index_t j = 0; j < V; ++j)
      out[static_cast<size_t>(j)] = (static_cast<long double>(x[j]) - m) - std::log(s);
    return out;
  };
  r.lpa = logp(a, r.lse_a);
  r.lqb = logp(b, r.lse_b);
  r.lp = r.lpa[static_cast<size_t>(y)];
  r.kl = r.h = 0;
  r.p.resize(static_cast<size_t>(V));
  r.q.resize(static_cast<size_t>(V));
  for (size_t j = 0; j < static_cast<size_t>(V); ++j) {
    r.p[j] = std::exp(r.lpa[j]);
    r.q[j] = std::exp(r.lqb[j]);
    if (r.p[j] == 0) continue;
    r.kl += r.p[j] * (r.lpa[j] - r.lqb[j]);
    r.h -= r.p[j] * r.lpa[j];
  }
  return r;
}

/// Every output of every kernel at the active level.
struct outputs {
  std::vector<float> lse, tlp, grad_fused, grad_bwd, grad_scaled, kl, lse_a, lse_b, ent, ga, gb;
  std::vector<double> seq, seq_fused, seq_kl;
};

outputs run_all(const input& in, int threads, bool check_finite, bool backward) {
  const index_t T = in.T, V = in.V, n = T * V;
  const kn::logprob_options o = opts(false, kn::reduction::sum, check_finite);
  const exec::host ex{threads};
  outputs r;
  r.seq.assign(1, -1);
  r.seq_kl.assign(1, -1);
  std::vector<std::int64_t> count(1, -1);
  r.lse.assign(static_cast<size_t>(T), -1);
  r.tlp.assign(static_cast<size_t>(T), -1);
  const auto x = make_view(in.a.data(), 1, T, V);
  const auto xb = make_view(in.b.data(), 1, T, V);
  const auto y = make_view(in.y.data(), 1, T);
  kn::sequence_logprob_forward(ex, x, y, make_view(r.seq), make_view(count),
                               make_view(r.lse.data(), 1, T), make_view(r.tlp.data(), 1, T), o);
  r.grad_fused.assign(static_cast<size_t>(n), -1);
  r.seq_fused.assign(1, -1);
  kn::sequence_logprob_forward_grad(ex, x, y, make_view(r.seq_fused), make_view(count),
                                    make_view(r.grad_fused.data(), 1, T, V), o);
  r.grad_scaled = r.grad_fused;
  const std::vector<double> scale{-0.75};
  r.kl.assign(static_cast<size_t>(T), -1);
  r.lse_a = r.lse_b = r.ent = r.kl;
  kn::token_kl_forward(ex, x, xb, y, make_view(r.seq_kl), make_view(r.kl.data(), 1, T),
                       make_view(r.lse_a.data(), 1, T), make_view(r.lse_b.data(), 1, T), o,
                       make_view(r.ent.data(), 1, T));
  if (backward) {  // needs the finite saved values of a finite forward
    kn::scale_rows(ex, make_view(r.grad_scaled.data(), 1, T, V), make_view(scale));
    const std::vector<std::int64_t> cnt = count;
    r.grad_bwd.assign(static_cast<size_t>(n), -1);
    kn::sequence_logprob_backward(ex, x, y, make_view(std::as_const(r.lse).data(), 1, T),
                                  make_view(cnt), make_view(scale),
                                  make_view(r.grad_bwd.data(), 1, T, V), o);
    r.ga.assign(static_cast<size_t>(n), -1);
    r.gb = r.ga;
    kn::token_kl_backward(ex, x, xb, y, make_view(std::as_const(r.lse_a).data(), 1, T),
                          make_view(std::as_const(r.lse_b).data(), 1, T),
                          make_view(std::as_const(r.kl).data(), 1, T), make_view(scale),
                          make_view(r.ga.data(), 1, T, V), make_view(r.gb.data(), 1, T, V), o);
  }
  return r;
}

/// Compares one level's outputs with the reference (finite input rows).
void check_against_reference(const input& in, const outputs& r, const char* level) {
  INFO("level " << level);
  const double s = -0.75;
  long double seq = 0, seq_kl = 0;
  for (index_t t = 0; t < in.T; ++t) {
    INFO("row " << t);
    const float* a = in.a.data() + t * in.V;
    const float* b = in.b.data() + t * in.V;
    const std::int64_t y = in.y[static_cast<size_t>(t)];
    const ref_row f = reference(a, b, in.V, y);
    seq += f.lp;
    seq_kl += f.kl;
    CHECK(near(r.tlp[static_cast<size_t>(t)], static_cast<double>(f.lp), kTolLogp));
    CHECK(near(r.lse[static_cast<size_t>(t)], static_cast<double>(f.lse_a), kTolLogp));
    CHECK(near(r.lse_a[static_cast<size_t>(t)], static_cast<double>(f.lse_a), kTolLogp));
    CHECK(near(r.lse_b[static_cast<size_t>(t)], static_cast<double>(f.lse_b), kTolLogp));
    CHECK(near(r.kl[static_cast<size_t>(t)], static_cast<double>(f.kl), kTolLogp));
    CHECK(near(r.ent[static_cast<size_t>(t)], static_cast<double>(f.h), kTolLogp));
    for (index_t j = 0; j < in.V; ++j) {
      const size_t k = static_cast<size_t>(t * in.V + j);
      const long double p = f.p[static_cast<size_t>(j)], q = f.q[static_cast<size_t>(j)];
      const double g = static_cast<double>((j == y ? 1.0L : 0.0L) - p);
      INFO("j " << j << " p " << static_cast<double>(p));
      CHECK(near(r.grad_fused[k], g, kTolGrad));
      CHECK(near(r.grad_scaled[k], s * g, kTolGrad));
      CHECK(near(r.grad_bwd[k], s * g, kTolGrad));
      const long double lp = f.lpa[static_cast<size_t>(j)], lq = f.lqb[static_cast<size_t>(j)];
      const double ga = p == 0 ? 0.0 : static_cast<double>(s * p * (lp - lq - f.kl));
      // p (log p - log q - KL) of logits beyond 1e38 is itself huge: a few
      // float ulps relative (the float KL it subtracts) on top of kTolGrad.
      CHECK(near(r.ga[k], ga, kTolGrad + std::ldexp(std::fabs(ga), -21)));
      CHECK(near(r.gb[k], static_cast<double>(s * (q - p)), kTolGrad));
      if (p == 0 && j != y) {  // masked: exactly 0 on every level
        CHECK(r.grad_fused[k] == 0.0f);
        CHECK(r.ga[k] == 0.0f);
      }
    }
  }
  CHECK(near(r.seq[0], static_cast<double>(seq), kTolLogp * static_cast<double>(in.T)));
  CHECK(near(r.seq_kl[0], static_cast<double>(seq_kl), kTolLogp * static_cast<double>(in.T)));
}

/// Runs every level and thread count 1 / 3; threads must agree bitwise.
std::vector<outputs> run_levels(const input& in, bool check_finite, bool backward) {
  std::vector<outputs> out;
  for (level l : levels()) {
    kd::scoped_simd_cap cap(l);
    outputs one = run_all(in, 1, check_finite, backward);
    const outputs three = run_all(in, 3, check_finite, backward);
    INFO("level " << level_name(l));
    CHECK(same_bits(one.grad_fused, three.grad_fused));
    CHECK(same_bits(one.grad_bwd, three.grad_bwd));
    CHECK(same_bits(one.ga, three.ga));
    CHECK(same_bits(one.kl, three.kl));
    CHECK(same_bits(one.seq, three.seq));
    // The fused forward gives the plain forward's bits (NaN rows aside).
    if (!std::isnan(one.seq[0])) CHECK(same_bits(one.seq, one.seq_fused));
    out.push_back(std::move(one));
  }
  return out;
}

input rows_input(index_t V, const std::vector<std::vector<float>>& a_rows,
                 const std::vector<std::vector<float>>& b_rows,
                 const std::vector<std::int64_t>& y) {
  input in;
  in.T = static_cast<index_t>(a_rows.size());
  in.V = V;
  for (const auto& r : a_rows) in.a.insert(in.a.end(), r.begin(), r.end());
  for (const auto& r : b_rows) in.b.insert(in.b.end(), r.begin(), r.end());
  in.y = y;
  return in;
}

/// Random rows with a fraction of the vocabulary masked by `mask`.
input masked_input(index_t T, index_t V, float mask, std::uint64_t seed) {
  input in;
  in.T = T;
  in.V = V;
  in.a = random_logits(static_cast<size_t>(T * V), seed);
  in.b = random_logits(static_cast<size_t>(T * V), seed + 1);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  for (index_t t = 0; t < T; ++t)
    for (index_t j = 0; j < V; ++j) {
      const size_t k = static_cast<size_t>(t * V + j);
      const bool keep = j < 3 || u(rng) < 0.3;  // every row keeps some support
      if (!keep) in.a[k] = mask;
      if (!keep && (u(rng) < 0.8 || j % 7 == 0)) in.b[k] = mask;
    }
  for (index_t t = 0; t < T; ++t) in.y.push_back(t % 3);
  return in;
}

}  // namespace

TEST_CASE("issue 16 reproducer: -FLT_MAX masks give the scalar answer on every level",
          "[simd][mask]") {
  // a = [1, 2, -FLT_MAX x 6], b = [2, 1, -FLT_MAX x 3, 0, -FLT_MAX x 2]: the
  // issue's numbers (entropy 0.582203, KL 0.556461), which the AVX2 path got
  // as 18.13 and -2.37 before its exp reached 0.
  const input in = rows_input(8, {{1, 2, -kFmax, -kFmax, -kFmax, -kFmax, -kFmax, -kFmax}},
                              {{2, 1, -kFmax, -kFmax, -kFmax, 0, -kFmax, -kFmax}}, {1});
  // p = softmax(1, 2) and q = softmax(2, 1, 0 at j = 5) on their supports.
  const double p1 = 1 / (1 + std::exp(-1.0)), p0 = 1 - p1;
  const double zq = std::exp(2.0) + std::exp(1.0) + 1;
  const double kl =
      p0 * (std::log(p0) - (2 - std::log(zq))) + p1 * (std::log(p1) - (1 - std::log(zq)));
  const double h = -(p0 * std::log(p0) + p1 * std::log(p1));
  REQUIRE(std::fabs(kl - 0.556461) < 1e-6);
  REQUIRE(std::fabs(h - 0.582203) < 1e-6);
  for (const outputs& r : run_levels(in, false, true)) {
    CHECK(std::fabs(r.kl[0] - kl) < 1e-6);
    CHECK(std::fabs(r.ent[0] - h) < 1e-6);
  }
}

TEST_CASE("every kernel on every level: finite and -inf masks vs the reference", "[simd][mask]") {
  // V = 8, 37 (a vector tail on both ISAs), 2053 (a second 2048 block that is
  // mostly masked), 4100 (a block that is all masked between two that are not).
  for (const index_t V : {index_t{8}, index_t{37}, index_t{2053}}) {
    for (const float mask : {-kFmax, kNinf, -1e30f}) {
      INFO("V " << V << " mask " << mask);
      const input in = masked_input(3, V, mask, static_cast<std::uint64_t>(V) * 7 + 1);
      const auto outs = run_levels(in, false, true);
      const auto ls = levels();
      for (size_t i = 0; i < outs.size(); ++i)
        check_against_reference(in, outs[i], level_name(ls[i]));
    }
  }
  input in;
  in.T = 1;
  in.V = 3 * 2048 + 5;
  in.a = random_logits(static_cast<size_t>(in.V), 99);
  in.b = random_logits(static_cast<size_t>(in.V), 98);
  for (index_t j = 2048; j < 4096; ++j)
    in.a[static_cast<size_t>(j)] = in.b[static_cast<size_t>(j)] = -kFmax;
  in.y = {4200};
  const auto outs = run_levels(in, false, true);
  for (size_t i = 0; i < outs.size(); ++i)
    check_against_reference(in, outs[i], level_name(levels()[i]));
}

TEST_CASE("every kernel on every level: huge logits keep the forward's accuracy", "[simd][huge]") {
  // The rows: [1e6, 1e6] gave a gradient of [0.4972, -0.5028] and
  // [3e38, 3e38] gave [0, -1]; the exact value is [0.5, -0.5] (label 0).
  const input in = rows_input(4,
                              {{1e6f, 1e6f, -kFmax, kNinf},
                               {3e38f, 3e38f, 1e38f, -3e38f},
                               {3e38f, -3e38f, 0, 1},
                               {-1e7f, -1e7f + 1, -1e7f + 2, -1e7f + 3}},
                              {{1e6f, 1e6f - 1, 1e6f, kNinf},
                               {3e38f, 2e38f, 3e38f, 0},
                               {3e38f, 3e38f, 0, 1},
                               {-2e7f, -2e7f, -2e7f, -2e7f}},
                              {0, 0, 2, 2});
  const auto outs = run_levels(in, false, true);
  for (size_t i = 0; i < outs.size(); ++i) {
    check_against_reference(in, outs[i], level_name(levels()[i]));
    CHECK(std::fabs(outs[i].grad_fused[0] - 0.5) < 1e-6);
    CHECK(std::fabs(outs[i].grad_fused[1] + 0.5) < 1e-6);
    CHECK(std::fabs(outs[i].grad_fused[4] - 0.5) < 1e-6);
    CHECK(std::fabs(outs[i].grad_fused[5] + 0.5) < 1e-6);
  }
}

TEST_CASE("every kernel on every level: KL terms whose fp32 lane sums overflow", "[simd][huge]") {
  // a uniform over 64, b = -2e38 at j = 0, 16, 32, 48 (one lane of one
  // accumulator on AVX2 and AVX-512), 0 elsewhere: each term is 2e38 / 64, the
  // lane sum 8e38 overflows fp32, the KL is 1.25e37. fuzz_kernels found the
  // vector levels giving +inf (and the backward refusing it) where scalar did not.
  std::vector<float> a(64, 0.0f), b(64, 0.0f);
  for (int j : {0, 16, 32, 48}) b[static_cast<size_t>(j)] = -2e38f;
  const input in = rows_input(64, {a}, {b}, {5});
  const double kl_ref = 4.0 / 64 * 2e38 + std::log(60.0 / 64);  // sum_j p_j (log p_j - log q_j)
  for (const outputs& r : run_levels(in, false, true)) {
    CHECK(std::isfinite(r.kl[0]));
    CHECK(std::fabs(r.kl[0] / kl_ref - 1) < 1e-6);
  }
  const auto outs = run_levels(in, false, true);
  for (size_t i = 0; i < outs.size(); ++i) {
    check_against_reference(in, outs[i], level_name(levels()[i]));
    CHECK(same_bits(outs[i].kl, outs[0].kl));  // the row is the scalar kernel's on every level
  }
}

TEST_CASE("KL: a probability below FLT_MIN where q = 0 counts as 0 on every level",
          "[simd][denormal]") {
  // p_1 = e^-100 (denormal), q_1 = 0: by the documented rule the term is 0 on
  // every level (found by fuzz_kernels: scalar and AVX-512 gave +inf, AVX2 a
  // finite KL, so the backward refused the saved KL on some levels only).
  const input in = rows_input(2, {{0.0f, -100.0f}}, {{0.0f, kNinf}}, {0});
  const auto outs = run_levels(in, false, true);
  for (const outputs& r : outs) {
    CHECK(std::isfinite(r.kl[0]));
    CHECK(std::fabs(r.kl[0]) < 1e-30);
    CHECK(r.ga[1] == 0.0f);
    CHECK(same_bits(r.kl, outs[0].kl));
  }
}

TEST_CASE("every kernel on every level: denormal probabilities and denormal logits",
          "[simd][denormal]") {
  // Row 0: p_j ~ e^-95 ~ 5e-42 (denormal in float); row 1: denormal logits.
  const float d = std::numeric_limits<float>::denorm_min();
  const input in = rows_input(5, {{0, -95, -100, -103, -87}, {d, -d, 3 * d, 0, 1e-40f}},
                              {{-95, 0, -1, -103, -88}, {0, 0, d, -d, 0}}, {0, 4});
  const auto outs = run_levels(in, false, true);
  for (size_t i = 0; i < outs.size(); ++i)
    check_against_reference(in, outs[i], level_name(levels()[i]));
}

TEST_CASE("every kernel on every level: NaN and +inf rows, with and without check_finite",
          "[simd][nan]") {
  const index_t V = 2100;  // the bad value sits in the second block
  for (const float bad : {kNan, std::numeric_limits<float>::infinity()}) {
    input in = masked_input(2, V, -kFmax, 5);
    in.a[static_cast<size_t>(V + 2050)] = bad;  // row 1, second block
    in.b[static_cast<size_t>(V + 2050)] = bad;
    std::vector<std::string> messages;
    std::vector<outputs> outs;
    for (level l : levels()) {
      kd::scoped_simd_cap cap(l);
      INFO("level " << level_name(l) << " bad " << bad);
      try {
        run_all(in, 2, true, false);
        FAIL("check_finite must throw");
      } catch (const data_error& e) {
        messages.push_back(e.what());
      }
      outs.push_back(run_all(in, 2, false, false));
    }
    for (const auto& m : messages) CHECK(m == messages[0]);
    CHECK_THAT(messages[0], Catch::Matchers::Contains("position 1, vocabulary index 2050"));
    for (const outputs& r : outs) {
      // Row 0 is finite; row 1 is NaN in every output, its gradient row wholly NaN.
      CHECK(std::isfinite(r.tlp[0]));
      CHECK(std::isnan(r.tlp[1]));
      CHECK(std::isnan(r.lse[1]));
      CHECK(std::isnan(r.kl[1]));
      CHECK(std::isnan(r.seq[0]));
      for (index_t j = 0; j < V; ++j) {
        CHECK(std::isfinite(r.grad_fused[static_cast<size_t>(j)]));
        CHECK(std::isnan(r.grad_fused[static_cast<size_t>(V + j)]));
      }
      // The NaN row has the same bits on every level.
      CHECK(std::memcmp(r.grad_fused.data() + V, outs[0].grad_fused.data() + V,
                        static_cast<size_t>(V) * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("KTSA_SIMD pins the level; unknown or unavailable levels are errors", "[simd][pin]") {
  std::string err;
  CHECK(kd::parse_simd_pin(nullptr, kd::simd_level::avx512, err) == -1);
  CHECK(kd::parse_simd_pin("", kd::simd_level::avx512, err) == -1);
  CHECK(kd::parse_simd_pin("scalar", kd::simd_level::avx2, err) == 0);
  CHECK(kd::parse_simd_pin("avx2", kd::simd_level::avx2, err) == 1);
  CHECK(kd::parse_simd_pin("avx512", kd::simd_level::avx512, err) == 2);
  CHECK(kd::parse_simd_pin("avx512", kd::simd_level::avx2, err) == -2);
  CHECK_THAT(err, Catch::Matchers::Contains("supports at most 'avx2'"));
  CHECK(kd::parse_simd_pin("sse", kd::simd_level::avx512, err) == -2);
  CHECK_THAT(err, Catch::Matchers::Contains("KTSA_SIMD = 'sse'"));
  // ctest runs this binary once per available level with KTSA_SIMD set: the
  // kernels must then report exactly that level.
  const char* env = std::getenv("KTSA_SIMD");
  if (env != nullptr && *env != '\0') {
    if (kd::parse_simd_pin(env, kd::detected_simd_level(), err) == -2 &&
        kd::parse_simd_pin(env, kd::simd_level::avx512, err) >= 0) {
      WARN("KTSA_SIMD=" << env << ": this CPU lacks that level; skipped (exit 77)");
      std::exit(77);
    }
    CHECK(std::string(kn::active_simd_level_name()) == env);
  }
}
