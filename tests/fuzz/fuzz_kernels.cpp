// libFuzzer harness: host sequence log-prob and token KL kernels.
//
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//     tests/fuzz/fuzz_kernels.cpp -o fuzz_kernels && ./fuzz_kernels tests/fuzz/corpus/kernels
//
// The input picks shapes (B, T, V, including V past one 2048 block), strides
// (padded, batch stride 0, negative time stride), dtypes (f32 / f16 / bf16 for
// a and b, five combinations), label type, labels (in range, out of range, ignore_index), shift,
// reduction, check_finite, thread counts, and logits from a table of hostile
// values (NaN, +-inf, +-FLT_MAX, 3e38, 1e6, denormals) or small numbers.
// Oracle, on every SIMD level this CPU has and 1 and 3 threads:
//   - either the call succeeds everywhere or it throws the same ktsa error
//     (message included) everywhere, and it throws exactly when the input is
//     bad (label out of range, an all -inf row, NaN/+inf with check_finite, an
//     upstream scale beyond float range);
//   - results are bitwise equal across thread counts;
//   - token log-probs, lse, KL, entropy and every gradient match a long-double
//     reference within the bounds of docs/kernels.md ("Levels"); NaN exactly
//     where the reference has NaN.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/token_kl.hpp"

namespace {

using ktsa::index_t;
namespace kn = ktsa::kernels;
namespace kd = ktsa::kernels::detail;
using ktsa_fuzz::fail;

constexpr float kInfF = std::numeric_limits<float>::infinity();

/// A quarter of the draws are hostile values, the rest small numbers in steps of 1/8.
float draw_logit(ktsa_fuzz::input& in) {
  const std::uint8_t c = in.byte();
  if (c >= 64) return static_cast<float>(static_cast<int>(c) - 160) / 8.0f;
  switch (c % 16) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return kInfF;
    case 2:
    case 3:
      return -kInfF;
    case 4:
    case 5:
    case 15:
      return -FLT_MAX;
    case 6:
      return FLT_MAX;
    case 7:
      return 3e38f;
    case 8:
      return -3e38f;
    case 9:
      return 1e6f;
    case 10:
      return 1e6f + 1;
    case 11:
      return std::numeric_limits<float>::denorm_min();
    case 12:
      return -1e-40f;
    case 13:
      return -95.0f;
    default:
      return -1e30f;
  }
}

template <class T>
struct tensor {
  std::vector<T> buf;
  index_t base = 0, sb = 0, st = 0;
  const T* row(index_t b, index_t t) const { return buf.data() + base + b * sb + t * st; }
};

/// Lays out [B, T, V] with the chosen strides; values as the kernel sees them.
template <class T>
tensor<T> make_tensor(ktsa_fuzz::input& in, index_t B, index_t T_, index_t V, int layout) {
  tensor<T> x;
  const index_t pad = layout == 1 ? 3 : 0;
  const index_t rs = V + pad;
  x.st = rs;
  x.sb = rs * T_ + (layout == 1 ? 5 : 0);
  if (layout == 2 && B > 1) x.sb = 0;  // every sequence shares the rows
  index_t rows = (x.sb == 0 ? 1 : B) * std::max<index_t>(T_, 1);
  x.buf.assign(static_cast<size_t>(rows * rs + 8 + (layout == 1 ? 5 * B : 0)),
               ktsa::from_float<T>(0));
  if (layout == 3 && T_ > 0) {  // negative time stride: row t = T-1 first in memory
    x.st = -rs;
    x.base = (T_ - 1) * rs;
    x.sb = rs * T_;
  }
  for (index_t b = 0; b < (x.sb == 0 ? 1 : B); ++b)
    for (index_t t = 0; t < T_; ++t)
      for (index_t j = 0; j < V; ++j) {
        const size_t k = static_cast<size_t>(x.base + b * x.sb + t * x.st + j);
        x.buf[k] = ktsa::from_float<T>(draw_logit(in));
      }
  return x;
}

template <class T>
ktsa::tensor_view<const T, 3> view_of(const tensor<T>& x, index_t B, index_t T_, index_t V) {
  return ktsa::tensor_view<const T, 3>(x.buf.data() + x.base, {B, T_, V}, {x.sb, x.st, 1});
}

/// Reference of one row (long double).
struct ref_row {
  bool nonfinite = false, all_neg_inf = false;
  long double m = 0, s = 0;  // max and sum exp(x - m)
  std::vector<long double> logp;
};
template <class T>
ref_row reference_row(const T* x, index_t V) {
  ref_row r;
  r.m = -INFINITY;
  for (index_t j = 0; j < V; ++j) {
    const float v = ktsa::to_float(x[j]);
    if (std::isnan(v) || v == kInfF) r.nonfinite = true;
    if (v > r.m) r.m = v;
  }
  r.all_neg_inf = !r.nonfinite && r.m == -INFINITY;
  if (r.nonfinite || r.all_neg_inf) return r;
  for (index_t j = 0; j < V; ++j)
    r.s += std::exp(static_cast<long double>(ktsa::to_float(x[j])) - r.m);
  r.logp.resize(static_cast<size_t>(V));
  for (index_t j = 0; j < V; ++j)
    r.logp[static_cast<size_t>(j)] =
        (static_cast<long double>(ktsa::to_float(x[j])) - r.m) - std::log(r.s);
  return r;
}

/// |got - want| within abs + a few float ulps of want; NaN iff NaN; beyond the
/// float range an infinity of the right sign is the float's rounding.
bool near(double got, long double want, double abs_tol, bool float_output) {
  if (std::isnan(static_cast<double>(want))) return std::isnan(got);
  if (float_output && std::fabs(static_cast<double>(want)) > FLT_MAX * 0.99)
    return std::isinf(got) ? (got > 0) == (want > 0)
                           : std::fabs(got - static_cast<double>(want)) <=
                                 std::ldexp(std::fabs(static_cast<double>(want)), -20);
  if (std::isinf(static_cast<double>(want))) return got == static_cast<double>(want);
  return std::fabs(got - static_cast<double>(want)) <=
         abs_tol + std::ldexp(std::fabs(static_cast<double>(want)), -20);
}

std::string where(index_t b, index_t t, index_t j, const char* level) {
  return std::string("b=") + ktsa_fuzz::num(b) + " t=" + ktsa_fuzz::num(t) +
         " j=" + ktsa_fuzz::num(j) + " level=" + level;
}

template <class V>
bool same_bits(const std::vector<V>& x, const std::vector<V>& y) {
  return x.size() == y.size() &&
         (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(V)) == 0);
}

struct run_result {
  bool ok = false;
  std::string error;
  std::vector<double> seq, seq_kl;
  std::vector<std::int64_t> count;
  std::vector<float> lse, tlp, grad, bgrad, kl, la, lb, ent, ga, gb;
  bool bwd_ok = false, kl_bwd_ok = false;
  std::string bwd_error, kl_bwd_error;
};

template <class TA, class TB, class I>
run_result run(const tensor<TA>& a, const tensor<TB>& b, const std::vector<I>& labels, index_t B,
               index_t T_, index_t V, const kn::logprob_options& o, int threads,
               const std::vector<double>& up) {
  run_result r;
  const ktsa::exec::host ex{threads};
  const auto av = view_of(a, B, T_, V);
  const auto bv = view_of(b, B, T_, V);
  const auto yv = ktsa::make_view(labels.data(), B, T_);
  const size_t n = static_cast<size_t>(B * T_), nv = n * static_cast<size_t>(V);
  r.seq.assign(static_cast<size_t>(B), -7);
  r.seq_kl = r.seq;
  r.count.assign(static_cast<size_t>(B), -7);
  r.lse.assign(n, -7);
  r.tlp = r.kl = r.la = r.lb = r.ent = r.lse;
  r.grad.assign(nv, -7);
  r.bgrad = r.ga = r.gb = r.grad;
  std::vector<double> seq2 = r.seq;
  r.ok = ktsa_fuzz::contract_call(
      [&] {
        kn::sequence_logprob_forward(ex, av, yv, ktsa::make_view(r.seq), ktsa::make_view(r.count),
                                     ktsa::make_view(r.lse.data(), B, T_),
                                     ktsa::make_view(r.tlp.data(), B, T_), o);
        kn::sequence_logprob_forward_grad(ex, av, yv, ktsa::make_view(seq2),
                                          ktsa::make_view(r.count),
                                          ktsa::make_view(r.grad.data(), B, T_, V), o);
        kn::token_kl_forward(
            ex, av, bv, yv, ktsa::make_view(r.seq_kl), ktsa::make_view(r.kl.data(), B, T_),
            ktsa::make_view(r.la.data(), B, T_), ktsa::make_view(r.lb.data(), B, T_), o,
            ktsa::make_view(r.ent.data(), B, T_));
      },
      &r.error);
  if (!r.ok) return r;
  if (!same_bits(r.seq, seq2)) fail("forward and fused forward differ in sequence_logp");
  const std::vector<float> lse = r.lse, la = r.la, lb = r.lb, kl = r.kl;
  const std::vector<std::int64_t> count = r.count;
  r.bwd_ok = ktsa_fuzz::contract_call(
      [&] {
        kn::sequence_logprob_backward(ex, av, yv, ktsa::make_view(lse.data(), B, T_),
                                      ktsa::make_view(count), ktsa::make_view(up),
                                      ktsa::make_view(r.bgrad.data(), B, T_, V), o);
      },
      &r.bwd_error);
  r.kl_bwd_ok = ktsa_fuzz::contract_call(
      [&] {
        kn::token_kl_backward(ex, av, bv, yv, ktsa::make_view(la.data(), B, T_),
                              ktsa::make_view(lb.data(), B, T_), ktsa::make_view(kl.data(), B, T_),
                              ktsa::make_view(up), ktsa::make_view(r.ga.data(), B, T_, V),
                              ktsa::make_view(r.gb.data(), B, T_, V), o);
      },
      &r.kl_bwd_error);
  return r;
}

template <class TA, class TB, class I>
void fuzz_case(ktsa_fuzz::input& in, index_t B, index_t T_, index_t V, int layout_a, int layout_b,
               const kn::logprob_options& o) {
  const tensor<TA> a = make_tensor<TA>(in, B, T_, V, layout_a);
  const tensor<TB> b = make_tensor<TB>(in, B, T_, V, layout_b);
  std::vector<I> labels(static_cast<size_t>(B * T_));
  for (auto& y : labels) {
    const std::uint8_t c = in.byte();
    y = c % 8 == 0   ? static_cast<I>(o.ignore_index)
        : c % 8 == 1 ? static_cast<I>(V + (c >> 4))   // out of range
        : c % 8 == 2 ? static_cast<I>(-1 - (c >> 4))  // negative
                     : static_cast<I>((c >> 3) % V);
  }
  std::vector<double> up(static_cast<size_t>(B));
  for (auto& u : up) {
    const std::uint8_t c = in.byte();
    u = c % 16 == 0   ? 1e39
        : c % 16 == 1 ? -1e30
        : c % 16 == 2 ? 0.0
                      : static_cast<double>(static_cast<int>(c) - 128) / 32.0;
  }

  // Expected outcome from the reference.
  std::vector<std::int64_t> target(static_cast<size_t>(B * T_), -1), cnt(static_cast<size_t>(B), 0);
  bool label_error = false;
  for (index_t bb = 0; bb < B; ++bb)
    for (index_t t = 0; t < T_; ++t) {
      std::int64_t y;
      if (o.shift)
        y = t + 1 < T_ ? static_cast<std::int64_t>(labels[static_cast<size_t>(bb * T_ + t + 1)])
                       : o.ignore_index;
      else
        y = static_cast<std::int64_t>(labels[static_cast<size_t>(bb * T_ + t)]);
      if (y == o.ignore_index) continue;
      if (y < 0 || y >= V) label_error = true;
      target[static_cast<size_t>(bb * T_ + t)] = y;
      ++cnt[static_cast<size_t>(bb)];
    }
  bool row_error = false;
  std::vector<ref_row> ra(static_cast<size_t>(B * T_)), rb(ra.size());
  for (index_t bb = 0; bb < B; ++bb)
    for (index_t t = 0; t < T_; ++t) {
      const size_t r = static_cast<size_t>(bb * T_ + t);
      if (target[r] < 0) continue;
      ra[r] = reference_row(a.row(bb, t), V);
      rb[r] = reference_row(b.row(bb, t), V);
      if (ra[r].all_neg_inf || (o.check_finite && ra[r].nonfinite)) row_error = true;
    }
  // (KL rows may add errors on b; checked by agreement across levels below.)

  std::vector<kd::simd_level> levels{kd::simd_level::scalar};
  for (int l = 1; l <= static_cast<int>(kd::detected_simd_level()); ++l)
    levels.push_back(static_cast<kd::simd_level>(l));
  std::vector<run_result> results;
  for (kd::simd_level l : levels) {
    kd::scoped_simd_cap cap(l);
    run_result one = run(a, b, labels, B, T_, V, o, 1, up);
    const run_result three = run(a, b, labels, B, T_, V, o, 3, up);
    const char* ln = kd::simd_level_name(l);
    if (one.ok != three.ok || one.error != three.error)
      fail(std::string("thread counts disagree on errors: ") + one.error + " | " + three.error);
    if (one.ok) {
      const bool same = same_bits(one.seq, three.seq) && same_bits(one.tlp, three.tlp) &&
                        same_bits(one.grad, three.grad) && same_bits(one.kl, three.kl) &&
                        same_bits(one.ent, three.ent) && same_bits(one.seq_kl, three.seq_kl) &&
                        same_bits(one.bgrad, three.bgrad) && same_bits(one.ga, three.ga) &&
                        same_bits(one.gb, three.gb) && one.bwd_error == three.bwd_error &&
                        one.kl_bwd_error == three.kl_bwd_error;
      if (!same) fail(std::string("results differ between 1 and 3 threads at level ") + ln);
    }
    if (label_error && one.ok) fail("a label out of range was accepted");
    if (!label_error && row_error && one.ok)
      fail("a bad row (all -inf, or NaN/+inf with check_finite) was accepted");
    if (!label_error && !row_error && !one.ok && one.error.find("b_logits") == std::string::npos)
      fail("a good input was refused: " + one.error);
    results.push_back(std::move(one));
  }
  for (const run_result& r : results)
    if (r.ok != results[0].ok || r.error != results[0].error ||
        r.bwd_error != results[0].bwd_error || r.kl_bwd_error != results[0].kl_bwd_error)
      fail("SIMD levels disagree on errors: '" + r.error + r.bwd_error + r.kl_bwd_error + "' vs '" +
           results[0].error + results[0].bwd_error + results[0].kl_bwd_error + "'");
  if (!results[0].ok) return;

  // The backward refuses exactly: a row scale beyond the float range, or a
  // saved lse that is not finite at an unmasked position (a NaN/+inf row).
  bool expect_bwd_error = false;
  for (index_t bb = 0; bb < B; ++bb) {
    const double ub = up[static_cast<size_t>(bb)];
    const std::int64_t c = cnt[static_cast<size_t>(bb)];
    const double g =
        o.reduce == kn::reduction::mean ? (c > 0 ? ub / static_cast<double>(c) : 0.0) : ub;
    if (!(std::fabs(g) <= FLT_MAX)) expect_bwd_error = true;
    for (index_t t = 0; t < T_; ++t) {
      const size_t row = static_cast<size_t>(bb * T_ + t);
      if (target[row] >= 0 && ra[row].nonfinite) expect_bwd_error = true;
    }
  }
  for (const run_result& r : results)
    if (r.bwd_ok == expect_bwd_error)
      fail(std::string("backward ") +
           (r.bwd_ok ? "accepted a bad scale or saved lse" : "refused good input: " + r.bwd_error));

  for (size_t li = 0; li < results.size(); ++li) {
    const run_result& r = results[li];
    const char* ln = kd::simd_level_name(levels[li]);
    for (index_t bb = 0; bb < B; ++bb) {
      long double seq = 0, seq_kl = 0;
      bool seq_nan = false, kl_nan = false;
      const double ub = up[static_cast<size_t>(bb)];
      const double g = o.reduce == kn::reduction::mean
                           ? (cnt[static_cast<size_t>(bb)] > 0
                                  ? ub / static_cast<double>(cnt[static_cast<size_t>(bb)])
                                  : 0.0)
                           : ub;
      for (index_t t = 0; t < T_; ++t) {
        const size_t row = static_cast<size_t>(bb * T_ + t);
        const float* grow = r.grad.data() + row * static_cast<size_t>(V);
        if (target[row] < 0) {
          if (r.tlp[row] != 0 || r.lse[row] != 0)
            fail("masked row has non-zero outputs " + where(bb, t, -1, ln));
          for (index_t j = 0; j < V; ++j)
            if (grow[j] != 0) fail("masked row has a non-zero gradient " + where(bb, t, j, ln));
          continue;
        }
        const ref_row& A = ra[row];
        const ref_row& Bq = rb[row];
        if (A.nonfinite) {
          seq_nan = true;
          if (!std::isnan(r.tlp[row]) || !std::isnan(r.lse[row]))
            fail("NaN/+inf row without NaN output " + where(bb, t, -1, ln));
          for (index_t j = 0; j < V; ++j)
            if (!std::isnan(grow[j]))
              fail("NaN/+inf row: gradient entry not NaN " + where(bb, t, j, ln));
        } else {
          const long double lp = A.logp[static_cast<size_t>(target[row])];
          seq += lp;
          if (!near(r.tlp[row], lp, 4e-6, true))
            fail("token_logp " + ktsa_fuzz::num(r.tlp[row]) + " vs " +
                 ktsa_fuzz::num(static_cast<double>(lp)) + " " + where(bb, t, -1, ln));
          if (!near(r.lse[row], A.m + std::log(A.s), 4e-6, true))
            fail("lse " + where(bb, t, -1, ln));
          for (index_t j = 0; j < V; ++j) {
            const long double p = std::exp(A.logp[static_cast<size_t>(j)]);
            const long double want = (j == target[row] ? 1.0L : 0.0L) - p;
            if (!near(grow[j], want, 4e-6, true))
              fail("fused gradient " + ktsa_fuzz::num(grow[j]) + " vs " +
                   ktsa_fuzz::num(static_cast<double>(want)) + " " + where(bb, t, j, ln));
            if (r.bwd_ok) {
              const float gb = r.bgrad[row * static_cast<size_t>(V) + static_cast<size_t>(j)];
              if (!near(gb, g * want, 6e-6 * std::fabs(g), true))
                fail("backward gradient " + ktsa_fuzz::num(gb) + " vs " +
                     ktsa_fuzz::num(static_cast<double>(g * want)) + " " + where(bb, t, j, ln));
            }
          }
        }
        // KL
        if (A.nonfinite || Bq.nonfinite) {
          kl_nan = true;
          if (!std::isnan(r.kl[row]))
            fail("KL of a NaN/+inf row is not NaN " + where(bb, t, -1, ln));
        } else if (!Bq.all_neg_inf) {
          // The kernels' rule (docs/kernels.md): a term counts when exp(a_j -
          // running max of a up to j's 2048-block) >= FLT_MIN. Terms within 1e-4
          // of that threshold make the row ambiguous (rounding decides).
          long double kl = 0, h = 0, run_max = -INFINITY;
          bool ambiguous = false;
          const TA* arow = a.row(bb, t);
          for (index_t j = 0; j < V; ++j) {
            if (j % 2048 == 0)
              for (index_t k = j; k < std::min<index_t>(V, j + 2048); ++k)
                run_max = std::max<long double>(run_max, ktsa::to_float(arow[k]));
            const long double p = std::exp(A.logp[static_cast<size_t>(j)]);
            const long double e =
                std::exp(static_cast<long double>(ktsa::to_float(arow[j])) - run_max);
            if (std::fabs(e / FLT_MIN - 1) < 1e-4L) ambiguous = true;
            if (p == 0 || e < FLT_MIN) continue;
            kl += p * (A.logp[static_cast<size_t>(j)] - Bq.logp[static_cast<size_t>(j)]);
            h -= p * A.logp[static_cast<size_t>(j)];
          }
          if (ambiguous) continue;
          seq_kl += kl;
          // Gradients of a KL past 1e37 are themselves beyond any useful bound.
          const bool huge = std::fabs(static_cast<double>(kl)) > 1e37;
          if (!near(r.kl[row], kl, 4e-6, true))
            fail("KL " + ktsa_fuzz::num(r.kl[row]) + " vs " +
                 ktsa_fuzz::num(static_cast<double>(kl)) + " " + where(bb, t, -1, ln));
          if (!near(r.ent[row], h, 4e-6, true))
            fail("entropy " + ktsa_fuzz::num(r.ent[row]) + " vs " +
                 ktsa_fuzz::num(static_cast<double>(h)) + " " + where(bb, t, -1, ln));
          if (r.kl_bwd_ok && !huge)
            for (index_t j = 0; j < V; ++j) {
              const size_t k = row * static_cast<size_t>(V) + static_cast<size_t>(j);
              const long double lp = A.logp[static_cast<size_t>(j)],
                                lq = Bq.logp[static_cast<size_t>(j)];
              const long double p = std::exp(lp), q = std::exp(lq);
              if (std::fabs(p / FLT_MIN - 1) < 1e-4L) continue;  // at the threshold
              const long double wa =
                  p < FLT_MIN ? 0.0L : g * p * (lp - lq - static_cast<long double>(r.kl[row]));
              const long double wb = g * (q - p);
              // p < FLT_MIN (a_j = -inf, -FLT_MAX rounded to -inf in bf16, ...): exactly 0.
              if (p < FLT_MIN ? r.ga[k] != 0
                              : !near(r.ga[k], wa,
                                      4e-6 * std::fabs(g) *
                                          (1 + std::fabs(static_cast<double>(lp - lq)) +
                                           std::fabs(r.kl[row])),
                                      true))
                fail("KL grad_a " + ktsa_fuzz::num(r.ga[k]) + " vs " +
                     ktsa_fuzz::num(static_cast<double>(wa)) + " " + where(bb, t, j, ln));
              if (!near(r.gb[k], wb, 4e-6 * std::fabs(g), true))
                fail("KL grad_b " + where(bb, t, j, ln));
            }
        }
      }
      const double tol = 4e-6 * static_cast<double>(T_ + 1);
      if (seq_nan ? !std::isnan(r.seq[static_cast<size_t>(bb)]) : false)
        fail("sequence_logp not NaN");
      if (!seq_nan) {
        const long double want = o.reduce == kn::reduction::mean && cnt[static_cast<size_t>(bb)] > 0
                                     ? seq / cnt[static_cast<size_t>(bb)]
                                     : seq;
        if (!near(r.seq[static_cast<size_t>(bb)], want, tol, false) &&
            !(std::fabs(static_cast<double>(want)) > FLT_MAX * 0.99))
          fail("sequence_logp " + ktsa_fuzz::num(r.seq[static_cast<size_t>(bb)]) + " vs " +
               ktsa_fuzz::num(static_cast<double>(want)));
      }
      (void)kl_nan;
      (void)seq_kl;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ktsa_fuzz::input in(data, size);
  const std::uint8_t shape = in.byte(), flags = in.byte();
  const index_t B = 1 + shape % 3;
  const index_t T_ = (shape >> 2) % 5;
  const std::uint8_t vb = in.byte();
  const index_t V = vb == 255 ? 2050 : 1 + vb % 40;  // 2050: a second block
  const int dtype_a = flags % 3, dtype_b = (flags / 3) % 3;
  const int layout_a = (flags >> 4) % 4, layout_b = (flags >> 6) % 4;
  kn::logprob_options o;
  const std::uint8_t ob = in.byte();
  o.shift = (ob & 1) != 0;
  o.reduce = (ob & 2) != 0 ? kn::reduction::mean : kn::reduction::sum;
  o.check_finite = (ob & 4) != 0;
  o.ignore_index = (ob & 8) != 0 ? -100 : 0;  // 0: a valid index doubles as the mask
  // Five dtype / label combinations (each instantiates every kernel on every
  // level: more would slow the sanitizer build without new code paths).
  switch ((dtype_a * 3 + dtype_b) % 5) {
    case 0:
      fuzz_case<float, float, std::int64_t>(in, B, T_, V, layout_a, layout_b, o);
      break;
    case 1:
      fuzz_case<float, float, std::int32_t>(in, B, T_, V, layout_a, layout_b, o);
      break;
    case 2:
      fuzz_case<ktsa::f16, float, std::int64_t>(in, B, T_, V, layout_a, layout_b, o);
      break;
    case 3:
      fuzz_case<ktsa::bf16, ktsa::bf16, std::int64_t>(in, B, T_, V, layout_a, layout_b, o);
      break;
    default:
      fuzz_case<float, ktsa::bf16, std::int32_t>(in, B, T_, V, layout_a, layout_b, o);
      break;
  }
  return 0;
}
