// The fused linear head (kernels/fused_linear.hpp, kernels/fused_kto.hpp):
// against the materialised path (full logits, then the existing log-prob
// kernels and kto_loss), against an fp64 reference written here, against fp64
// central finite differences (temperature, softcap), f32 and bf16, odd
// shapes, chunk sizes that do not divide the rows, all-ignored sequences,
// shift on and off, the GEMM providers against each other, bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "ktsa/kernels/fused_kto.hpp"
#include "ktsa/kernels/gemm/eigen.hpp"
#include "ktsa/kernels/gemm/onednn.hpp"
#include "ktsa/kernels/gemm/openblas.hpp"
#include "ktsa/loss/kto.hpp"

using namespace ktsa;
namespace kn = ktsa::kernels;
using Catch::Matchers::Contains;

namespace {

/// One problem: hidden [B, T, H], W [V, H], bias [V], labels [B, T].
struct problem {
  index_t B, T, H, V;
  std::vector<float> hidden, w, bias;
  std::vector<std::int64_t> labels;
};

problem make_problem(index_t B, index_t T, index_t H, index_t V, std::uint64_t seed,
                     double ignore_fraction = 0.3, bool last_all_ignored = true) {
  problem p{B, T, H, V, {}, {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  p.hidden.resize(static_cast<size_t>(B * T * H));
  for (auto& x : p.hidden) x = static_cast<float>(n(rng));
  p.w.resize(static_cast<size_t>(V * H));
  for (auto& x : p.w) x = static_cast<float>(n(rng) / std::sqrt(static_cast<double>(H)) * 2.0);
  p.bias.resize(static_cast<size_t>(V));
  for (auto& x : p.bias) x = static_cast<float>(0.5 * n(rng));
  p.labels.resize(static_cast<size_t>(B * T));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t) {
      const bool ignored = u(rng) < ignore_fraction || (last_all_ignored && b == B - 1 && B > 1);
      p.labels[static_cast<size_t>(b * T + t)] =
          ignored ? -100 : static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(V));
    }
  return p;
}

/// fp64 reference of everything, straight from the definition.
struct reference {
  std::vector<double> seq, tok, lse, ent, gh, gw, gb;
  std::vector<std::int64_t> count;
};

/// Forward and (for upstream c [B]) backward in fp64, from the widened inputs.
reference fp64_reference(const problem& p, const std::vector<double>& hidden,
                         const std::vector<double>& w, const std::vector<double>* bias,
                         const kn::fused_linear_options& o, const std::vector<double>& c) {
  const index_t B = p.B, T = p.T, H = p.H, V = p.V;
  reference r;
  r.seq.assign(static_cast<size_t>(B), 0);
  r.count.assign(static_cast<size_t>(B), 0);
  r.tok.assign(static_cast<size_t>(B * T), 0);
  r.lse.assign(static_cast<size_t>(B * T), 0);
  r.ent.assign(static_cast<size_t>(B * T), 0);
  r.gh.assign(static_cast<size_t>(B * T * H), 0);
  r.gw.assign(static_cast<size_t>(V * H), 0);
  r.gb.assign(static_cast<size_t>(V), 0);
  const double tau = o.temperature, cap = o.softcap;
  auto label = [&](index_t b, index_t t) -> std::int64_t {
    if (o.logprob.shift) return t + 1 < T ? p.labels[static_cast<size_t>(b * T + t + 1)] : -100;
    return p.labels[static_cast<size_t>(b * T + t)];
  };
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      if (label(b, t) != o.logprob.ignore_index) ++r.count[static_cast<size_t>(b)];
  std::vector<double> z(static_cast<size_t>(V)), slope(static_cast<size_t>(V));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t) {
      const std::int64_t y = label(b, t);
      if (y == o.logprob.ignore_index) continue;
      const double* h = hidden.data() + (b * T + t) * H;
      double mx = -HUGE_VAL;
      for (index_t j = 0; j < V; ++j) {
        double raw = bias ? (*bias)[static_cast<size_t>(j)] : 0.0;
        for (index_t k = 0; k < H; ++k) raw += h[k] * w[static_cast<size_t>(j * H + k)];
        const double zz = cap > 0 ? cap * std::tanh(raw / cap) / tau : raw / tau;
        const double th = cap > 0 ? std::tanh(raw / cap) : 0.0;
        z[static_cast<size_t>(j)] = zz;
        slope[static_cast<size_t>(j)] = cap > 0 ? (1 - th * th) / tau : 1 / tau;
        mx = std::max(mx, zz);
      }
      double s = 0;
      for (index_t j = 0; j < V; ++j) s += std::exp(z[static_cast<size_t>(j)] - mx);
      const double lse = mx + std::log(s);
      double ent = 0;
      for (index_t j = 0; j < V; ++j) {
        const double lp = z[static_cast<size_t>(j)] - lse;
        ent -= std::exp(lp) * lp;
      }
      const size_t pos = static_cast<size_t>(b * T + t);
      r.lse[pos] = lse;
      r.ent[pos] = ent;
      r.tok[pos] = z[static_cast<size_t>(y)] - lse;
      r.seq[static_cast<size_t>(b)] += r.tok[pos];
      const index_t n = r.count[static_cast<size_t>(b)];
      const double g = o.logprob.reduce == kn::reduction::mean ? c[static_cast<size_t>(b)] / n
                                                               : c[static_cast<size_t>(b)];
      for (index_t j = 0; j < V; ++j) {
        const double d = g * ((j == y ? 1.0 : 0.0) - std::exp(z[static_cast<size_t>(j)] - lse)) *
                         slope[static_cast<size_t>(j)];
        r.gb[static_cast<size_t>(j)] += d;
        for (index_t k = 0; k < H; ++k) {
          r.gh[pos * static_cast<size_t>(H) + static_cast<size_t>(k)] +=
              d * w[static_cast<size_t>(j * H + k)];
          r.gw[static_cast<size_t>(j * H + k)] += d * h[k];
        }
      }
    }
  if (o.logprob.reduce == kn::reduction::mean)
    for (index_t b = 0; b < B; ++b)
      if (r.count[static_cast<size_t>(b)] > 0)
        r.seq[static_cast<size_t>(b)] /= static_cast<double>(r.count[static_cast<size_t>(b)]);
  return r;
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(to_float(v[i]));
  return out;
}
template <class T>
std::vector<T> narrow(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_float<T>(v[i]);
  return out;
}

/// Max |a - b| / (atol + rtol |b|) over the elements: <= 1 passes.
template <class A>
double worst(const std::vector<A>& a, const std::vector<double>& b, double atol, double rtol) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e =
        std::abs(static_cast<double>(to_float(a[i])) - b[i]) / (atol + rtol * std::abs(b[i]));
    m = std::max(m, e);
  }
  return m;
}

struct fused_out {
  std::vector<double> seq;
  std::vector<std::int64_t> count;
  std::vector<float> tok, lse, ent;
};

template <class HT, class WT, class Gemm = kn::gemm::default_provider>
fused_out run_forward(const problem& p, const std::vector<HT>& hidden, const std::vector<WT>& w,
                      bool bias, const kn::fused_linear_options& o, const Gemm& gemm = {}) {
  fused_out f;
  f.seq.resize(static_cast<size_t>(p.B));
  f.count.resize(static_cast<size_t>(p.B));
  f.tok.assign(static_cast<size_t>(p.B * p.T), -7.0f);
  f.lse = f.tok;
  f.ent = f.tok;
  kn::fused_linear_forward_outputs<double> out{make_view(f.seq)};
  out.token_count = make_view(f.count);
  out.token_logp = make_view(f.tok.data(), p.B, p.T);
  out.lse = make_view(f.lse.data(), p.B, p.T);
  out.entropy = make_view(f.ent.data(), p.B, p.T);
  kn::fused_linear_forward(exec::host{2}, make_view(hidden.data(), p.B, p.T, p.H),
                           make_view(w.data(), p.V, p.H),
                           bias ? make_view(p.bias.data(), p.V) : vector_view<const float>{},
                           make_view(p.labels.data(), p.B, p.T), out, o, {}, gemm);
  return f;
}

template <class GH, class GW, class HT, class WT>
void run_backward(const problem& p, const std::vector<HT>& hidden, const std::vector<WT>& w,
                  bool bias, const std::vector<float>& lse, const std::vector<double>& c,
                  const kn::fused_linear_options& o, std::vector<GH>& gh, std::vector<GW>& gw,
                  std::vector<float>& gb) {
  gh.assign(static_cast<size_t>(p.B * p.T * p.H), from_float<GH>(5.0f));  // garbage to overwrite
  gw.assign(static_cast<size_t>(p.V * p.H), from_float<GW>(5.0f));
  gb.assign(static_cast<size_t>(p.V), 5.0f);
  kn::fused_linear_grads<GH, GW> g;
  g.grad_hidden = make_view(gh.data(), p.B, p.T, p.H);
  g.grad_weight = make_view(gw.data(), p.V, p.H);
  if (bias) g.grad_bias = make_view(gb);
  kn::fused_linear_backward(
      exec::host{2}, make_view(hidden.data(), p.B, p.T, p.H), make_view(w.data(), p.V, p.H),
      bias ? make_view(p.bias.data(), p.V) : vector_view<const float>{},
      make_view(p.labels.data(), p.B, p.T), make_view(lse.data(), p.B, p.T), make_view(c), g, o);
}

kn::fused_linear_options opts_with(bool shift, kn::reduction red, index_t chunk_rows) {
  kn::fused_linear_options o;
  o.logprob.shift = shift;
  o.logprob.reduce = red;
  o.chunk_rows = chunk_rows;
  return o;
}

std::vector<double> upstream(index_t B) {
  std::vector<double> c(static_cast<size_t>(B));
  for (index_t b = 0; b < B; ++b) c[static_cast<size_t>(b)] = 0.3 - 0.17 * static_cast<double>(b);
  return c;
}

}  // namespace

TEST_CASE("fused_linear f32 forward and backward match the fp64 definition", "[fused_linear]") {
  const problem p = make_problem(4, 9, 13, 37, 1);  // odd H and V, one all-ignored sequence
  const auto hd = widen(p.hidden), wd = widen(p.w), bd = widen(p.bias);
  const auto c = upstream(p.B);
  for (bool shift : {false, true})
    for (auto red : {kn::reduction::sum, kn::reduction::mean})
      for (index_t rows : {index_t{1}, index_t{5}, index_t{7}, index_t{0}})  // 5, 7 do not divide
        for (bool bias : {false, true}) {
          CAPTURE(shift, static_cast<int>(red), rows, bias);
          const auto o = opts_with(shift, red, rows);
          const reference r = fp64_reference(p, hd, wd, bias ? &bd : nullptr, o, c);
          const fused_out f = run_forward(p, p.hidden, p.w, bias, o);
          CHECK(worst(f.seq, r.seq, 1e-4, 1e-5) <= 1);
          CHECK(f.count == r.count);
          CHECK(worst(f.tok, r.tok, 1e-4, 1e-5) <= 1);
          CHECK(worst(f.lse, r.lse, 1e-4, 1e-5) <= 1);
          CHECK(worst(f.ent, r.ent, 1e-4, 1e-5) <= 1);
          CHECK(f.seq.back() == 0.0);  // the all-ignored sequence
          CHECK(f.count.back() == 0);
          std::vector<float> gh, gw, gb;
          run_backward(p, p.hidden, p.w, bias, f.lse, c, o, gh, gw, gb);
          CHECK(worst(gh, r.gh, 1e-5, 1e-4) <= 1);
          CHECK(worst(gw, r.gw, 1e-5, 1e-4) <= 1);
          if (bias) CHECK(worst(gb, r.gb, 1e-5, 1e-4) <= 1);
          // The all-ignored sequence's hidden rows get exactly 0.
          for (index_t k = (p.B - 1) * p.T * p.H; k < p.B * p.T * p.H; ++k)
            REQUIRE(gh[static_cast<size_t>(k)] == 0.0f);
        }
}

TEST_CASE("fused_linear matches the materialised path bit for bit where the GEMM does",
          "[fused_linear]") {
  // Materialised: full logits by the same provider in one call, then the
  // existing kernels. Per-row results depend only on the row's logits, which
  // the naive provider computes identically chunked or not.
  const problem p = make_problem(3, 11, 6, 29, 2);
  const auto o = opts_with(true, kn::reduction::sum, 4);
  const kn::gemm::naive g;
  const fused_out f = run_forward(p, p.hidden, p.w, false, o, g);
  std::vector<float> logits(static_cast<size_t>(p.B * p.T * p.V));
  g(kn::gemm::gemm_op::none, kn::gemm::gemm_op::trans, p.B * p.T, p.V, p.H, 1.0f, p.hidden.data(),
    p.H, p.w.data(), p.H, 0.0f, logits.data(), p.V);
  std::vector<double> seq(static_cast<size_t>(p.B));
  std::vector<float> lse(static_cast<size_t>(p.B * p.T)), tok(lse.size());
  kn::sequence_logprob_forward(exec::host{1}, make_view(logits.data(), p.B, p.T, p.V),
                               make_view(p.labels.data(), p.B, p.T), make_view(seq),
                               vector_view<std::int64_t>{}, make_view(lse.data(), p.B, p.T),
                               make_view(tok.data(), p.B, p.T), o.logprob);
  CHECK(f.seq == seq);
  CHECK(f.lse == lse);
  CHECK(f.tok == tok);
}

TEST_CASE("fused_linear bf16 inputs and outputs", "[fused_linear]") {
  const problem p = make_problem(3, 8, 16, 45, 3);
  const auto hb = narrow<bf16>(p.hidden), wb = narrow<bf16>(p.w);
  const auto hd = widen(hb), wd = widen(wb);
  const auto c = upstream(p.B);
  const auto o = opts_with(true, kn::reduction::mean, 6);
  const reference r = fp64_reference(p, hd, wd, nullptr, o, c);
  const fused_out f = run_forward(p, hb, wb, false, o);
  CHECK(worst(f.seq, r.seq, 1e-4, 1e-5) <= 1);
  CHECK(worst(f.lse, r.lse, 1e-4, 1e-5) <= 1);
  SECTION("bf16 gradients: one rounding of an fp32 result") {
    std::vector<bf16> gh, gw;
    std::vector<float> gb;
    run_backward(p, hb, wb, false, f.lse, c, o, gh, gw, gb);
    CHECK(worst(gh, r.gh, 1e-6, 1.0 / 128) <= 1);
    CHECK(worst(gw, r.gw, 1e-6, 1.0 / 128) <= 1);
  }
  SECTION("float gradients from bf16 inputs") {
    std::vector<float> gh, gw, gb;
    run_backward(p, hb, wb, false, f.lse, c, o, gh, gw, gb);
    CHECK(worst(gh, r.gh, 1e-6, 1e-4) <= 1);
    CHECK(worst(gw, r.gw, 1e-6, 1e-4) <= 1);
  }
}

TEST_CASE("fused_linear temperature and softcap gradients by fp64 central differences",
          "[fused_linear]") {
  const problem p = make_problem(2, 4, 5, 11, 4, 0.2, false);
  const auto c = upstream(p.B);
  for (float cap : {0.0f, 1.5f})
    for (float tau : {1.0f, 0.7f}) {
      CAPTURE(cap, tau);
      auto o = opts_with(false, kn::reduction::sum, 3);
      o.temperature = tau;
      o.softcap = cap;
      const fused_out f = run_forward(p, p.hidden, p.w, true, o);
      std::vector<float> gh, gw, gb;
      run_backward(p, p.hidden, p.w, true, f.lse, c, o, gh, gw, gb);
      auto hd = widen(p.hidden), wd = widen(p.w), bd = widen(p.bias);
      auto objective = [&]() {
        const reference r = fp64_reference(p, hd, wd, &bd, o, c);
        double s = 0;
        for (index_t b = 0; b < p.B; ++b)
          s += c[static_cast<size_t>(b)] * r.seq[static_cast<size_t>(b)];
        return s;
      };
      // The forward against the fp64 objective too.
      double fs = 0;
      for (index_t b = 0; b < p.B; ++b)
        fs += c[static_cast<size_t>(b)] * f.seq[static_cast<size_t>(b)];
      CHECK(fs == Approx(objective()).epsilon(1e-5));
      const double h = 1e-5;
      auto fd = [&](std::vector<double>& v, size_t i) {
        const double keep = v[i];
        v[i] = keep + h;
        const double up = objective();
        v[i] = keep - h;
        const double down = objective();
        v[i] = keep;
        return (up - down) / (2 * h);
      };
      for (size_t i = 0; i < hd.size(); i += 3)
        CHECK(gh[i] == Approx(fd(hd, i)).margin(2e-5).epsilon(1e-3));
      for (size_t i = 0; i < wd.size(); i += 2)
        CHECK(gw[i] == Approx(fd(wd, i)).margin(2e-5).epsilon(1e-3));
      for (size_t i = 0; i < bd.size(); ++i)
        CHECK(gb[i] == Approx(fd(bd, i)).margin(2e-5).epsilon(1e-3));
    }
}

TEST_CASE("fused_linear grad_W: fp32 output vs bf16 output against fp64", "[fused_linear]") {
  // Many chunks (64 rows each) accumulate into grad_W: fp32 accumulation keeps
  // the fp32 output near fp64 and the bf16 output within one bf16 rounding.
  const problem p = make_problem(4, 96, 24, 64, 5, 0.1, false);
  const auto hb = narrow<bf16>(p.hidden), wb = narrow<bf16>(p.w);
  const auto c = upstream(p.B);
  const auto o = opts_with(false, kn::reduction::sum, 16);
  const reference r = fp64_reference(p, widen(hb), widen(wb), nullptr, o, c);
  const fused_out f = run_forward(p, hb, wb, false, o);
  std::vector<bf16> gh_b, gw_b;
  std::vector<float> gh_f, gw_f, gb;
  run_backward(p, hb, wb, false, f.lse, c, o, gh_b, gw_b, gb);
  run_backward(p, hb, wb, false, f.lse, c, o, gh_f, gw_f, gb);
  double scale = 0;
  for (double v : r.gw) scale = std::max(scale, std::abs(v));
  double err_f = 0, err_b = 0;
  for (size_t i = 0; i < r.gw.size(); ++i) {
    err_f = std::max(err_f, std::abs(gw_f[i] - r.gw[i]) / scale);
    err_b = std::max(err_b, std::abs(to_float(gw_b[i]) - r.gw[i]) / scale);
  }
  WARN("grad_W max error / max |grad_W| (fp64 reference, 384 rows in 24 chunks): fp32 output "
       << err_f << ", bf16 output " << err_b);
  CHECK(err_f < 1e-5);
  CHECK(err_b < 1.0 / 256);  // one bf16 rounding (2^-9 relative) of the largest element
  CHECK(worst(gw_b, r.gw, 1e-6 * scale, 1.0 / 256) <= 1);
}

TEST_CASE("fused_linear GEMM providers agree", "[fused_linear]") {
  using kn::gemm::gemm_op;
  std::mt19937_64 rng(6);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const index_t M = 7, N = 13, K = 5, ld = 17;  // leading dimensions past the extents
  std::vector<float> A(static_cast<size_t>(ld * ld)), Bm(A.size()), C0(A.size());
  for (auto* v : {&A, &Bm, &C0})
    for (auto& x : *v) x = n(rng);
  for (gemm_op oa : {gemm_op::none, gemm_op::trans})
    for (gemm_op ob : {gemm_op::none, gemm_op::trans})
      for (float beta : {0.0f, 1.0f}) {
        std::vector<float> ref = C0, e = C0, ob_ = C0, d = C0;
        kn::gemm::naive{}(oa, ob, M, N, K, 0.5f, A.data(), ld, Bm.data(), ld, beta, ref.data(), ld);
        kn::gemm::eigen{}(oa, ob, M, N, K, 0.5f, A.data(), ld, Bm.data(), ld, beta, e.data(), ld);
        kn::gemm::openblas{}(oa, ob, M, N, K, 0.5f, A.data(), ld, Bm.data(), ld, beta, ob_.data(),
                             ld);
        kn::gemm::onednn{}(oa, ob, M, N, K, 0.5f, A.data(), ld, Bm.data(), ld, beta, d.data(), ld);
        for (size_t i = 0; i < ref.size(); ++i) {
          REQUIRE(e[i] == Approx(ref[i]).margin(1e-5));
          REQUIRE(ob_[i] == Approx(ref[i]).margin(1e-5));
          REQUIRE(d[i] == Approx(ref[i]).margin(1e-5));
        }
      }
  // The fused forward through each provider.
  const problem p = make_problem(2, 6, 9, 19, 7);
  const auto o = opts_with(false, kn::reduction::sum, 4);
  const fused_out a = run_forward(p, p.hidden, p.w, true, o, kn::gemm::naive{});
  for (const fused_out& b : {run_forward(p, p.hidden, p.w, true, o, kn::gemm::eigen{}),
                             run_forward(p, p.hidden, p.w, true, o, kn::gemm::openblas{}),
                             run_forward(p, p.hidden, p.w, true, o, kn::gemm::onednn{})})
    for (size_t i = 0; i < a.seq.size(); ++i) CHECK(b.seq[i] == Approx(a.seq[i]).margin(1e-4));
}

namespace {

/// The materialised KTO step: full logits, the existing forward, kto_loss on
/// the batch, the existing backward, the GEMMs back in fp64.
struct materialised {
  loss::loss_result res;
  std::vector<double> policy, per_loss, gh, gw;
};
materialised materialised_step(const problem& p, const std::vector<double>& ref_logps,
                               const std::vector<std::uint8_t>& desirable, double z0,
                               const loss::config& cfg, const kn::logprob_options& lo,
                               loss::bco_running_mean* bco) {
  const index_t B = p.B, T = p.T, H = p.H, V = p.V;
  std::vector<float> logits(static_cast<size_t>(B * T * V));
  for (index_t r = 0; r < B * T; ++r)
    for (index_t j = 0; j < V; ++j) {
      double s = 0;
      for (index_t k = 0; k < H; ++k)
        s += static_cast<double>(p.hidden[static_cast<size_t>(r * H + k)]) *
             p.w[static_cast<size_t>(j * H + k)];
      logits[static_cast<size_t>(r * V + j)] = static_cast<float>(s);
    }
  materialised m;
  m.policy.resize(static_cast<size_t>(B));
  m.per_loss.resize(static_cast<size_t>(B));
  std::vector<double> grad(static_cast<size_t>(B));
  std::vector<float> lse(static_cast<size_t>(B * T));
  std::vector<std::int64_t> count(static_cast<size_t>(B));
  const auto x = make_view(logits.data(), B, T, V);
  const auto lab = make_view(p.labels.data(), B, T);
  kn::sequence_logprob_forward(exec::host{1}, x, lab, make_view(m.policy), make_view(count),
                               make_view(lse.data(), B, T), matrix_view<float>{}, lo);
  m.res =
      loss::kto_loss(exec::host{}, make_view(std::as_const(m.policy)), make_view(ref_logps),
                     make_view(desirable), z0, cfg, make_view(m.per_loss), make_view(grad), bco);
  std::vector<float> d(logits.size());
  kn::sequence_logprob_backward(exec::host{1}, x, lab, make_view(std::as_const(lse).data(), B, T),
                                make_view(std::as_const(count)), make_view(std::as_const(grad)),
                                make_view(d.data(), B, T, V), lo);
  m.gh.assign(static_cast<size_t>(B * T * H), 0);
  m.gw.assign(static_cast<size_t>(V * H), 0);
  for (index_t r = 0; r < B * T; ++r)
    for (index_t j = 0; j < V; ++j) {
      const double dj = d[static_cast<size_t>(r * V + j)];
      for (index_t k = 0; k < H; ++k) {
        m.gh[static_cast<size_t>(r * H + k)] += dj * p.w[static_cast<size_t>(j * H + k)];
        m.gw[static_cast<size_t>(j * H + k)] += dj * p.hidden[static_cast<size_t>(r * H + k)];
      }
    }
  return m;
}

}  // namespace

TEST_CASE("fused_kto_step matches the materialised step", "[fused_linear]") {
  const problem p = make_problem(5, 7, 10, 23, 8);
  std::vector<double> ref_logps(static_cast<size_t>(p.B));
  for (index_t b = 0; b < p.B; ++b)
    ref_logps[static_cast<size_t>(b)] = -9.0 - 2.5 * static_cast<double>(b);
  const std::vector<std::uint8_t> desirable{1, 0, 1, 1, 0};
  struct variant_case {
    loss::variant kind;
    index_t chunk_rows;
    bool one_pass;
  };
  // chunk 4 < the longest sequence's tokens: the two-pass fallback.
  for (const variant_case vc :
       {variant_case{loss::variant::kto, 9, true}, variant_case{loss::variant::kto, 0, true},
        variant_case{loss::variant::kto_log_sigmoid, 12, true},
        variant_case{loss::variant::apo_zero_unpaired, 8, true},
        variant_case{loss::variant::ktsa, 4, false}, variant_case{loss::variant::bco, 9, false}})
    for (bool shift : {false, true}) {
      CAPTURE(loss::variant_name(vc.kind), vc.chunk_rows, shift);
      loss::config cfg;
      cfg.kind = vc.kind;
      cfg.beta = 0.5;
      cfg.desirable_weight = 1.3;
      const double z0 = 0.4;
      auto o = opts_with(shift, kn::reduction::sum, vc.chunk_rows);
      loss::bco_running_mean bco_a(0.2, 3), bco_b(0.2, 3);
      const materialised m = materialised_step(p, ref_logps, desirable, z0, cfg, o.logprob, &bco_a);
      kn::kto_step_inputs<const double, const std::uint8_t> in{
          make_view(ref_logps), make_view(desirable), z0, cfg, &bco_b};
      std::vector<float> gh(static_cast<size_t>(p.B * p.T * p.H)),
          gw(static_cast<size_t>(p.V * p.H));
      kn::fused_linear_grads<float, float> g{make_view(gh.data(), p.B, p.T, p.H),
                                             make_view(gw.data(), p.V, p.H)};
      std::vector<double> policy(static_cast<size_t>(p.B)), per(policy.size());
      const kn::fused_kto_result res = kn::fused_kto_step(
          exec::host{2}, make_view(std::as_const(p.hidden).data(), p.B, p.T, p.H),
          make_view(std::as_const(p.w).data(), p.V, p.H), {},
          make_view(std::as_const(p.labels).data(), p.B, p.T), in, g,
          kn::kto_step_outputs{make_view(policy), make_view(per)}, o);
      CHECK(res.one_pass == vc.one_pass);
      CHECK(res.loss.loss == Approx(m.res.loss).epsilon(1e-5));
      CHECK(res.loss.metrics.kl == Approx(m.res.metrics.kl).margin(1e-12));
      CHECK(res.loss.metrics.chosen_count == m.res.metrics.chosen_count);
      CHECK(res.loss.metrics.rejected_count == m.res.metrics.rejected_count);
      CHECK(res.loss.metrics.rewards_chosen() ==
            Approx(m.res.metrics.rewards_chosen()).epsilon(1e-5));
      CHECK(res.loss.metrics.logps_rejected() ==
            Approx(m.res.metrics.logps_rejected()).epsilon(1e-5));
      CHECK(worst(policy, m.policy, 1e-4, 1e-5) <= 1);
      CHECK(worst(per, m.per_loss, 1e-6, 1e-5) <= 1);
      CHECK(worst(gh, m.gh, 1e-6, 1e-4) <= 1);
      CHECK(worst(gw, m.gw, 1e-6, 1e-4) <= 1);
      CHECK(bco_b.mean() == Approx(bco_a.mean()).epsilon(1e-6));
    }
}

TEST_CASE("fused_linear workspace and determinism", "[fused_linear]") {
  const problem p = make_problem(3, 10, 8, 31, 9);
  const auto o = opts_with(true, kn::reduction::sum, 0);
  kn::fused_linear_shape s{p.B, p.T, p.H, p.V};
  const std::size_t bytes = kn::fused_linear_forward_workspace_bytes(s, o);
  CHECK(bytes >= static_cast<std::size_t>(p.B * p.T) * 4 * static_cast<std::size_t>(p.V));
  // A chunk budget smaller than one row still runs one row at a time.
  kn::fused_linear_options tiny = o;
  tiny.chunk_bytes = 1;
  CHECK(kn::fused_linear_forward_workspace_bytes(s, tiny) < bytes);
  std::vector<std::max_align_t> ws(bytes / sizeof(std::max_align_t) + 1);
  auto run = [&](kn::host_workspace w, const kn::fused_linear_options& oo) {
    std::vector<double> seq(static_cast<size_t>(p.B));
    kn::fused_linear_forward(exec::host{2}, make_view(p.hidden.data(), p.B, p.T, p.H),
                             make_view(p.w.data(), p.V, p.H), {},
                             make_view(p.labels.data(), p.B, p.T),
                             kn::fused_linear_forward_outputs<double>{make_view(seq)}, oo, w);
    return seq;
  };
  // 64-byte-aligned caller buffer of exactly the queried size.
  auto* base = reinterpret_cast<unsigned char*>(ws.data());
  const std::size_t pad = (64 - reinterpret_cast<std::uintptr_t>(base) % 64) % 64;
  std::vector<unsigned char> big(bytes + 64);
  unsigned char* aligned =
      big.data() + (64 - reinterpret_cast<std::uintptr_t>(big.data()) % 64) % 64;
  (void)pad;
  const auto a = run({aligned, bytes}, o);
  const auto b = run({}, o);
  CHECK(a == b);  // bitwise: same chunks, same order
  CHECK_THROWS_WITH(run({aligned, bytes / 2}, o), Contains("workspace"));
  const auto c = run({}, tiny);
  for (size_t i = 0; i < a.size(); ++i) CHECK(c[i] == Approx(a[i]).margin(1e-4));
}

TEST_CASE("fused_linear bad input", "[fused_linear]") {
  problem p = make_problem(2, 3, 4, 5, 10);
  std::vector<double> seq(2);
  auto fwd = [&](const kn::fused_linear_options& o, index_t V, index_t H) {
    kn::fused_linear_forward(exec::host{1}, make_view(p.hidden.data(), p.B, p.T, p.H),
                             make_view(p.w.data(), V, H), {}, make_view(p.labels.data(), p.B, p.T),
                             kn::fused_linear_forward_outputs<double>{make_view(seq)}, o);
  };
  kn::fused_linear_options o;
  CHECK_THROWS_AS(fwd(o, p.V, p.H - 1), shape_error);
  o.temperature = 0;
  CHECK_THROWS_WITH(fwd(o, p.V, p.H), Contains("temperature"));
  o = {};
  o.softcap = -1;
  CHECK_THROWS_WITH(fwd(o, p.V, p.H), Contains("softcap"));
  o = {};
  p.labels[1] = 5;  // V = 5: out of range
  CHECK_THROWS_AS(fwd(o, p.V, p.H), data_error);
  CHECK_THROWS_WITH(fwd(o, p.V, p.H), Contains("labels") && Contains("5"));
  p.labels[1] = 0;
  // A step with mismatched reference log-probs names them.
  std::vector<double> ref(3, 0.0);
  std::vector<std::uint8_t> des(2, 1);
  kn::kto_step_inputs<const double, const std::uint8_t> in{make_view(std::as_const(ref)),
                                                           make_view(std::as_const(des))};
  kn::fused_linear_grads<float, float> g;
  CHECK_THROWS_WITH(
      kn::fused_kto_step(exec::host{1}, make_view(std::as_const(p.hidden).data(), p.B, p.T, p.H),
                         make_view(std::as_const(p.w).data(), p.V, p.H), {},
                         make_view(std::as_const(p.labels).data(), p.B, p.T), in, g),
      Contains("reference_logps"));
  in.reference_logps = make_view(std::as_const(ref).data(), 2);
  in.cfg.beta = -1;
  CHECK_THROWS_WITH(
      kn::fused_kto_step(exec::host{1}, make_view(std::as_const(p.hidden).data(), p.B, p.T, p.H),
                         make_view(std::as_const(p.w).data(), p.V, p.H), {},
                         make_view(std::as_const(p.labels).data(), p.B, p.T), in, g),
      Contains("beta"));
}

TEST_CASE("fused_kto_step grows its chunks to whole sequences within one_pass_bytes",
          "[fused_linear]") {
  const problem p = make_problem(3, 12, 8, 40, 12, 0.0, false);  // every token scored
  std::vector<double> ref_logps{-30.0, -35.0, -28.0};
  const std::vector<std::uint8_t> desirable{1, 0, 1};
  const std::size_t per_row = 4 * (40 + 2 * 8) + 64;
  kn::fused_linear_options o;
  o.chunk_bytes = per_row * 5;  // 5 rows < T = 12
  const kn::fused_linear_shape s{p.B, p.T, p.H, p.V};
  auto step = [&](const kn::fused_linear_options& oo, std::vector<float>& gw) {
    kn::kto_step_inputs<const double, const std::uint8_t> in{make_view(std::as_const(ref_logps)),
                                                             make_view(desirable), 0.1};
    gw.assign(static_cast<size_t>(p.V * p.H), 0.0f);
    kn::fused_linear_grads<float, float> g;
    g.grad_weight = make_view(gw.data(), p.V, p.H);
    // Exactly the queried workspace, 64-byte aligned.
    std::vector<unsigned char> ws(kn::fused_kto_step_workspace_bytes(s, oo) + 64);
    unsigned char* a = ws.data() + (64 - reinterpret_cast<std::uintptr_t>(ws.data()) % 64) % 64;
    return kn::fused_kto_step(exec::host{2},
                              make_view(std::as_const(p.hidden).data(), p.B, p.T, p.H),
                              make_view(std::as_const(p.w).data(), p.V, p.H), {},
                              make_view(std::as_const(p.labels).data(), p.B, p.T), in, g, {}, oo,
                              {a, kn::fused_kto_step_workspace_bytes(s, oo)});
  };
  std::vector<float> gw_one, gw_two;
  o.one_pass_bytes = per_row * 12;
  const auto one = step(o, gw_one);
  CHECK(one.one_pass);
  CHECK(one.chunks == 3);               // one sequence per chunk
  o.one_pass_bytes = per_row * 12 - 1;  // a sequence no longer fits: two passes of 5-row chunks
  const auto two = step(o, gw_two);
  CHECK_FALSE(two.one_pass);
  CHECK(two.chunks == 8);  // ceil(36 / 5)
  CHECK(one.loss.loss == Approx(two.loss.loss).epsilon(1e-6));
  for (size_t i = 0; i < gw_one.size(); ++i) REQUIRE(gw_one[i] == Approx(gw_two[i]).margin(1e-6));
}

TEST_CASE("fused_linear strided hidden and weight views", "[fused_linear]") {
  const problem p = make_problem(3, 5, 7, 19, 13);
  const index_t rs = p.H + 3, bs = p.T * rs + 5, ws = p.H + 2;  // padded rows and batches
  std::vector<float> hs(static_cast<size_t>(p.B * bs), std::nanf("")),
      wsv(static_cast<size_t>(p.V * ws), std::nanf(""));  // padding is NaN: a stray read shows
  for (index_t b = 0; b < p.B; ++b)
    for (index_t t = 0; t < p.T; ++t)
      for (index_t k = 0; k < p.H; ++k)
        hs[static_cast<size_t>(b * bs + t * rs + k)] =
            p.hidden[static_cast<size_t>((b * p.T + t) * p.H + k)];
  for (index_t j = 0; j < p.V; ++j)
    for (index_t k = 0; k < p.H; ++k)
      wsv[static_cast<size_t>(j * ws + k)] = p.w[static_cast<size_t>(j * p.H + k)];
  const auto o = opts_with(true, kn::reduction::sum, 3);
  const fused_out a = run_forward(p, p.hidden, p.w, true, o);
  std::vector<double> seq(static_cast<size_t>(p.B));
  kn::fused_linear_forward(exec::host{2},
                           cube_view<const float>(hs.data(), {p.B, p.T, p.H}, {bs, rs, 1}),
                           matrix_view<const float>(wsv.data(), {p.V, p.H}, {ws, 1}),
                           make_view(p.bias.data(), p.V), make_view(p.labels.data(), p.B, p.T),
                           kn::fused_linear_forward_outputs<double>{make_view(seq)}, o);
  for (size_t b = 0; b < seq.size(); ++b) CHECK(seq[b] == Approx(a.seq[b]).margin(1e-5));
}

TEST_CASE("fused_kto_step takes z0 from the KL pairs' log-probs", "[fused_linear]") {
  const problem p = make_problem(3, 6, 5, 17, 14);
  std::vector<double> ref{-20.0, -18.0, -25.0}, klp{-19.0, -21.0, -17.5}, klr{-20.5, -20.0, -19.0};
  const std::vector<std::uint8_t> des{1, 0, 1};
  // Independent: mean of the log-ratios (1.5 - 1.0 + 1.5) / 3 = 2/3, clamped at 0 after averaging.
  const double z0 = (1.5 - 1.0 + 1.5) / 3.0;
  auto step = [&](kn::kto_step_inputs<const double, const std::uint8_t> in) {
    std::vector<float> gw(static_cast<size_t>(p.V * p.H));
    kn::fused_linear_grads<float, float> g;
    g.grad_weight = make_view(gw.data(), p.V, p.H);
    return kn::fused_kto_step(exec::host{1},
                              make_view(std::as_const(p.hidden).data(), p.B, p.T, p.H),
                              make_view(std::as_const(p.w).data(), p.V, p.H), {},
                              make_view(std::as_const(p.labels).data(), p.B, p.T), in, g);
  };
  kn::kto_step_inputs<const double, const std::uint8_t> a{make_view(std::as_const(ref)),
                                                          make_view(des), z0};
  auto b = a;
  b.z0 = 123.0;  // ignored: the pairs give z0
  b.kl_policy_logps = make_view(std::as_const(klp));
  b.kl_reference_logps = make_view(std::as_const(klr));
  const auto ra = step(a), rb = step(b);
  CHECK(rb.loss.metrics.kl == Approx(z0).epsilon(1e-12));
  CHECK(rb.loss.loss == Approx(ra.loss.loss).epsilon(1e-12));
  b.kl_reference_logps = make_view(std::as_const(klr).data(), 2);  // mismatched lengths
  CHECK_THROWS_AS(step(b), shape_error);
}
