// ktsa's autograd Functions against libtorch autograd on the same formulas.
//   - KtoLoss (fp64 throughout): loss and gradient of every variant (kto,
//     kto_log_sigmoid, ktsa, apo_zero_unpaired, bco), non-default weights,
//     one z0 or one per example: 1e-10 relative.
//   - SequenceLogprob / TokenKL and the chain logits -> loss: ktsa's kernels
//     take float32 (or f16 / bf16) logits and accumulate in fp32 lanes and
//     fp64 sums, so they are compared with libtorch's fp64 autograd on the
//     same float32 values at 1e-5 relative (norm-wise), including strided
//     (non-contiguous) logits, ignore_index, shift and mean reduction.
//   - FusedHeadLogprob (hidden, lm_head weight, bias -> log-probs, fused
//     head): value and the gradients of hidden, weight and bias against fp64
//     autograd on linear -> log_softmax -> gather -> masked sum, from the same
//     float32 values, at 1e-5 relative (norm-wise); bf16 at 1e-2 (see the case).
//   - The checks of the views: dtype, rank, device.
// c10 defines a glog-style CHECK macro: Catch2 macros are used with their CATCH_ prefix.
#define CATCH_CONFIG_MAIN
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "ktsa_torch.hpp"

using Catch::Matchers::Contains;
using ktsa::loss::variant;

namespace {

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  const auto d = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm().item<double>();
  const auto s = b.to(torch::kFloat64).norm().item<double>();
  return d / std::max(s, 1e-300);
}

// The published formulas in torch ops (fp64), independent of ktsa.
torch::Tensor torch_kto(const torch::Tensor& pol, const torch::Tensor& ref, const torch::Tensor& d,
                        const torch::Tensor& z0, const ktsa::loss::config& c, double delta) {
  const auto r = pol - ref;
  const auto D = d.to(torch::kBool);
  const double b = c.beta, wd = c.desirable_weight, wu = c.undesirable_weight;
  torch::Tensor l;
  switch (c.kind) {
    case variant::kto:
    case variant::ktsa:
      l = torch::where(D, wd * (1 - torch::sigmoid(b * (r - z0))),
                       wu * (1 - torch::sigmoid(b * (z0 - r))));
      if (c.kind == variant::ktsa) l = l - c.gamma * r;
      break;
    case variant::kto_log_sigmoid:
      l = torch::where(D, -wd * torch::log_sigmoid(b * (r - z0)),
                       -wu * torch::log_sigmoid(b * (z0 - r)));
      break;
    case variant::apo_zero_unpaired:
      l = torch::where(D, wd * (1 - torch::sigmoid(b * r)), wu * torch::sigmoid(b * r));
      break;
    case variant::bco:
      l = torch::where(D, -wd * torch::log_sigmoid(b * r - delta),
                       -wu * torch::log_sigmoid(-(b * r - delta)));
      break;
    default:
      CATCH_FAIL("variant not covered");
  }
  return l.mean();
}

torch::Tensor torch_seq_logprob(const torch::Tensor& logits, const torch::Tensor& labels,
                                const ktsa::kernels::logprob_options& o) {
  auto lp = torch::log_softmax(logits, -1);
  auto y = labels;
  if (o.shift) {  // position t scored against labels[t + 1]; the last position masked
    y = torch::cat(
        {labels.slice(1, 1), torch::full({labels.size(0), 1}, o.ignore_index, labels.options())},
        1);
  }
  const auto mask = y != o.ignore_index;
  const auto safe = torch::where(mask, y, torch::zeros_like(y)).to(torch::kInt64);
  const auto tok = lp.gather(2, safe.unsqueeze(2)).squeeze(2) * mask.to(lp.scalar_type());
  auto s = tok.sum(1);
  if (o.reduce == ktsa::kernels::reduction::mean)
    s = s / mask.sum(1).clamp_min(1).to(s.scalar_type());
  return s;
}

// The head in torch ops (fp64): raw = h W^T + b, z = softcap(raw) / tau.
torch::Tensor torch_head_logprob(const torch::Tensor& h, const torch::Tensor& w,
                                 const torch::Tensor& b,
                                 const ktsa::kernels::fused_linear_options& o) {
  auto raw = torch::matmul(h, w.t());
  if (b.defined()) raw = raw + b;
  if (o.softcap > 0) raw = o.softcap * torch::tanh(raw / o.softcap);
  return raw / o.temperature;
}

}  // namespace

CATCH_TEST_CASE("libtorch: KtoLoss equals libtorch autograd in fp64 for every variant",
                "[libtorch]") {
  torch::manual_seed(3);
  const int64_t B = 9;
  const auto pol0 = torch::randn({B}, torch::kFloat64) * 3 - 20;
  const auto ref = pol0 + torch::randn({B}, torch::kFloat64);
  const auto d = torch::tensor({1, 0, 1, 1, 0, 0, 1, 0, 1}, torch::kUInt8);
  for (variant v : {variant::kto, variant::kto_log_sigmoid, variant::ktsa,
                    variant::apo_zero_unpaired, variant::bco}) {
    for (bool per_example : {false, true}) {
      CATCH_DYNAMIC_SECTION(ktsa::loss::variant_name(v) << (per_example ? " per-example z0" : "")) {
        ktsa::loss::config c;
        c.kind = v;
        c.beta = 0.3;
        c.desirable_weight = 1.33;
        c.undesirable_weight = 0.7;
        c.gamma = 0.05;
        const auto z0 =
            per_example ? torch::rand({B}, torch::kFloat64) : torch::tensor(0.4, torch::kFloat64);
        ktsa::loss::bco_running_mean state(0.12, 5);
        // bco's default order (TRL's, before_loss) folds this batch's beta * r
        // into the running mean before the loss; delta carries no gradient.
        const double delta =
            (0.12 * 5 + (c.beta * (pol0 - ref)).sum().item<double>()) / static_cast<double>(5 + B);
        auto p1 = pol0.clone().requires_grad_(true);
        auto p2 = pol0.clone().requires_grad_(true);
        ktsa::loss::batch_metrics m;
        const auto ours = ktsa_torch::KtoLoss::apply(p1, ref, d, z0, c, &state, &m);
        const auto theirs = torch_kto(p2, ref, d, z0, c, delta);
        ours.backward();
        theirs.backward();
        CATCH_CHECK(std::abs(ours.item<double>() - theirs.item<double>()) <=
                    1e-10 * std::abs(theirs.item<double>()));
        const auto g1 = p1.grad(), g2 = p2.grad();
        for (int64_t i = 0; i < B; ++i)
          CATCH_CHECK(std::abs(g1[i].item<double>() - g2[i].item<double>()) <=
                      1e-10 * std::abs(g2[i].item<double>()) + 1e-300);
        CATCH_CHECK(m.chosen_count == 5);
        if (v == variant::bco) CATCH_CHECK(state.count() == 5 + B);  // batch folded in
      }
    }
  }
}

CATCH_TEST_CASE("libtorch: SequenceLogprob against fp64 autograd, strided logits", "[libtorch]") {
  torch::manual_seed(5);
  const int64_t B = 3, T = 5, V = 37;
  // A non-contiguous view: every other row of a padded buffer.
  const auto big = torch::randn({B, 2 * T, V + 3}, torch::kFloat32) * 2;
  auto labels = torch::randint(V, {B, T}, torch::kInt64);
  labels[1][2] = -100;
  labels[2].fill_(-100);  // a fully masked sequence: log-prob 0, gradient 0
  for (bool shift : {false, true}) {
    for (auto reduce : {ktsa::kernels::reduction::sum, ktsa::kernels::reduction::mean}) {
      CATCH_DYNAMIC_SECTION("shift " << shift << " mean "
                                     << (reduce == ktsa::kernels::reduction::mean)) {
        ktsa::kernels::logprob_options o;
        o.shift = shift;
        o.reduce = reduce;
        auto logits = big.slice(1, 0, 2 * T, 2).slice(2, 0, V).detach().requires_grad_(true);
        CATCH_REQUIRE(!logits.is_contiguous());
        auto ref_logits = logits.detach().to(torch::kFloat64).requires_grad_(true);
        const auto ours = ktsa_torch::SequenceLogprob::apply(logits, labels, o, 1);
        const auto theirs = torch_seq_logprob(ref_logits, labels, o);
        CATCH_CHECK(rel_err(ours, theirs) < 1e-6);
        const auto w = torch::tensor({0.5, -1.25, 2.0}, torch::kFloat64);
        (ours * w).sum().backward();
        (theirs * w).sum().backward();
        CATCH_CHECK(rel_err(logits.grad(), ref_logits.grad()) < 1e-5);
        CATCH_CHECK(logits.grad()[2].abs().max().item<float>() == 0.0f);
      }
    }
  }
}

CATCH_TEST_CASE("libtorch: TokenKL against fp64 autograd", "[libtorch]") {
  torch::manual_seed(7);
  const int64_t B = 2, T = 4, V = 19;
  auto a = torch::randn({B, T, V}, torch::kFloat32).requires_grad_(true);
  auto b = torch::randn({B, T, V}, torch::kFloat32).requires_grad_(true);
  auto labels = torch::zeros({B, T}, torch::kInt64);
  labels[0][3] = -100;
  auto a64 = a.detach().to(torch::kFloat64).requires_grad_(true);
  auto b64 = b.detach().to(torch::kFloat64).requires_grad_(true);
  const auto ours = ktsa_torch::TokenKL::apply(a, b, labels, ktsa::kernels::logprob_options{}, 1);
  const auto la = torch::log_softmax(a64, -1), lb = torch::log_softmax(b64, -1);
  const auto mask = (labels != -100).to(torch::kFloat64);
  const auto theirs = ((la.exp() * (la - lb)).sum(-1) * mask).sum(1);
  CATCH_CHECK(rel_err(ours, theirs) < 1e-5);
  const auto w = torch::tensor({1.5, -0.5}, torch::kFloat64);
  (ours * w).sum().backward();
  (theirs * w).sum().backward();
  CATCH_CHECK(rel_err(a.grad(), a64.grad()) < 1e-5);
  CATCH_CHECK(rel_err(b.grad(), b64.grad()) < 1e-5);
}

CATCH_TEST_CASE("libtorch: logits -> KTO loss chain against fp64 autograd", "[libtorch]") {
  torch::manual_seed(11);
  const int64_t B = 6, T = 4, V = 23;
  auto logits = torch::randn({B, T, V}, torch::kFloat32).requires_grad_(true);
  const auto labels = torch::randint(V, {B, T}, torch::kInt64);
  const auto ref = torch::randn({B}, torch::kFloat64) - 12;
  const auto d = torch::tensor({1, 0, 1, 0, 0, 1}, torch::kBool);
  ktsa::loss::config c;
  c.beta = 0.5;
  auto l64 = logits.detach().to(torch::kFloat64).requires_grad_(true);
  const auto z0 = torch::tensor(0.2, torch::kFloat64);
  const auto ours = ktsa_torch::KtoLoss::apply(
      ktsa_torch::SequenceLogprob::apply(logits, labels, ktsa::kernels::logprob_options{}, 1), ref,
      d, z0, c, nullptr, nullptr);
  const auto theirs =
      torch_kto(torch_seq_logprob(l64, labels, {}), ref, d.to(torch::kUInt8), z0, c, 0.0);
  CATCH_CHECK(std::abs(ours.item<double>() - theirs.item<double>()) <
              1e-6 * std::abs(theirs.item<double>()));
  ours.backward();
  theirs.backward();
  CATCH_CHECK(rel_err(logits.grad(), l64.grad()) < 1e-5);
}

CATCH_TEST_CASE("libtorch: views reject wrong dtype, rank and layout by name", "[libtorch]") {
  const auto labels = torch::zeros({2, 3}, torch::kInt64);
  const auto lg64 = torch::zeros({2, 3, 5}, torch::kFloat64);
  CATCH_CHECK_THROWS_WITH(
      ktsa_torch::SequenceLogprob::apply(lg64, labels, ktsa::kernels::logprob_options{}, 1),
      Contains("'logits' has dtype Double") && Contains("float32, float16 or bfloat16"));
  const auto lg = torch::zeros({2, 3, 5}, torch::kFloat32);
  CATCH_CHECK_THROWS_WITH(ktsa_torch::SequenceLogprob::apply(lg, labels.to(torch::kFloat32),
                                                             ktsa::kernels::logprob_options{}, 1),
                          Contains("'labels' has dtype Float") && Contains("int64 or int32"));
  CATCH_CHECK_THROWS_WITH(
      ktsa_torch::SequenceLogprob::apply(lg[0], labels, ktsa::kernels::logprob_options{}, 1),
      Contains("'logits' has 2 dimensions, expected 3"));
  // The vocabulary dimension must have stride 1 (the kernel's own check).
  const auto transposed = torch::zeros({2, 5, 3}, torch::kFloat32).transpose(1, 2);
  CATCH_CHECK_THROWS_AS(
      ktsa_torch::SequenceLogprob::apply(transposed, labels, ktsa::kernels::logprob_options{}, 1),
      ktsa::invalid_argument);
  CATCH_CHECK_THROWS_WITH(
      ktsa_torch::KtoLoss::apply(
          torch::zeros({2}, torch::kInt32), torch::zeros({2}, torch::kFloat64),
          torch::ones({2}, torch::kUInt8), torch::tensor(0.0, torch::kFloat64),
          ktsa::loss::config{}, nullptr, nullptr),
      Contains("'policy_logps' has dtype Int") && Contains("float64 or float32"));
  CATCH_CHECK_THROWS_WITH(
      (ktsa_torch::view_of<const float, 1>(torch::zeros({4}, torch::kFloat64), "x")),
      Contains("'x' has dtype Double, expected Float"));
}

// Tolerance: the fused head runs three fp32 GEMMs (logits over K = H, grad_hidden
// over K = V, grad_W over K = the unmasked rows) and fp32 row kernels with fp64
// sequence sums; an fp32 dot product of length K errs by at most K u sum|terms|
// (u = 2^-24), K <= 41 here: <= 2.5e-6 of the terms' magnitude; norm-wise the
// errors are ~sqrt(K) u ~ 4e-7. 1e-5 relative (norm-wise, against fp64 autograd
// on the same float32 values) leaves room for cancellation in grad_W (signed
// softmax gradients) and still fails on any wrong term (a missed row, a wrong
// shift or mask is an O(1) relative error).
CATCH_TEST_CASE("libtorch: FusedHeadLogprob against fp64 autograd (value, grad hidden, W, bias)",
                "[libtorch][fused]") {
  torch::manual_seed(13);
  const int64_t B = 3, T = 7, H = 13, V = 41;
  // hidden is a strided view (every other position of a padded buffer).
  const auto big = torch::randn({B, 2 * T, H + 2}, torch::kFloat32);
  const auto w0 = torch::randn({V, H}, torch::kFloat32) * 0.5;
  const auto b0 = torch::randn({V}, torch::kFloat32);
  auto labels = torch::randint(V, {B, T}, torch::kInt64);
  labels[0][0] = -100;  // a prompt position
  labels[1][4] = -100;
  labels[2].fill_(-100);  // all ignored: log-prob 0, zero gradient
  struct setup {
    bool shift, mean, bias;
    int chunk_rows;
    float softcap, temperature;
    bool int32;
  };
  for (const setup& st :
       {setup{false, false, true, 4, 0, 1, false}, setup{true, false, true, 5, 0, 1, true},
        setup{false, true, false, 0, 0, 1, false}, setup{true, true, true, 1, 0, 1, false},
        setup{false, false, true, 3, 3.0f, 0.7f, true}}) {
    CATCH_DYNAMIC_SECTION("shift " << st.shift << " mean " << st.mean << " bias " << st.bias
                                   << " chunk_rows " << st.chunk_rows << " softcap " << st.softcap
                                   << " int32 " << st.int32) {
      ktsa::kernels::fused_linear_options o;
      o.logprob.shift = st.shift;
      o.logprob.reduce = st.mean ? ktsa::kernels::reduction::mean : ktsa::kernels::reduction::sum;
      o.chunk_rows = st.chunk_rows;
      o.softcap = st.softcap;
      o.temperature = st.temperature;
      auto h = big.slice(1, 0, 2 * T, 2).slice(2, 0, H).detach().requires_grad_(true);
      CATCH_REQUIRE(!h.is_contiguous());
      auto w = w0.clone().requires_grad_(true);
      auto b = st.bias ? b0.clone().requires_grad_(true) : ktsa_torch::no_bias();
      auto h64 = h.detach().to(torch::kFloat64).requires_grad_(true);
      auto w64 = w0.to(torch::kFloat64).requires_grad_(true);
      auto b64 = st.bias ? b0.to(torch::kFloat64).requires_grad_(true) : torch::Tensor();
      const auto lab = st.int32 ? labels.to(torch::kInt32) : labels;
      const auto ours = ktsa_torch::FusedHeadLogprob::apply(h, w, b, lab, o, 1);
      const auto theirs =
          torch_seq_logprob(torch_head_logprob(h64, w64, b64, o), labels, o.logprob);
      CATCH_REQUIRE(ours.scalar_type() == torch::kFloat64);
      CATCH_CHECK(ours[2].item<double>() == 0.0);
      const double ev = rel_err(ours, theirs);
      const auto up = torch::tensor({0.5, -1.25, 2.0}, torch::kFloat64);
      (ours * up).sum().backward();
      (theirs * up).sum().backward();
      const double eh = rel_err(h.grad(), h64.grad()), ew = rel_err(w.grad(), w64.grad());
      const double eb = st.bias ? rel_err(b.grad(), b64.grad()) : 0.0;
      std::printf(
          "fused head vs fp64 (shift %d mean %d chunk_rows %d softcap %g): value %.2e "
          "grad_hidden %.2e grad_W %.2e grad_bias %.2e\n",
          st.shift, st.mean, st.chunk_rows, st.softcap, ev, eh, ew, eb);
      CATCH_CHECK(ev < 1e-5);
      CATCH_CHECK(eh < 1e-5);
      CATCH_CHECK(ew < 1e-5);
      CATCH_CHECK(eb < 1e-5);
      CATCH_CHECK(h.grad().dtype() == torch::kFloat32);
      CATCH_CHECK(w.grad().sizes() == w0.sizes());
      // Ignored positions (and the shifted-out last one) get exactly 0.
      CATCH_CHECK(h.grad()[2].abs().max().item<float>() == 0.0f);
      CATCH_CHECK(h.grad()[1][st.shift ? 3 : 4].abs().max().item<float>() == 0.0f);
      if (st.shift) CATCH_CHECK(h.grad()[0][T - 1].abs().max().item<float>() == 0.0f);
    }
  }
}

// bf16 hidden and weight: the same bf16 values widened to fp64 for the
// reference; ktsa computes in fp32 and rounds each gradient once to bf16
// (half-ulp 2^-9 = 2e-3 relative), so 1e-2 norm-wise.
CATCH_TEST_CASE("libtorch: FusedHeadLogprob in bf16 against fp64 autograd", "[libtorch][fused]") {
  torch::manual_seed(17);
  const int64_t B = 2, T = 5, H = 16, V = 33;
  auto h = torch::randn({B, T, H}, torch::kFloat32).to(torch::kBFloat16).requires_grad_(true);
  auto w = (torch::randn({V, H}, torch::kFloat32) * 0.5).to(torch::kBFloat16).requires_grad_(true);
  const auto labels = torch::randint(V, {B, T}, torch::kInt64);
  auto h64 = h.detach().to(torch::kFloat64).requires_grad_(true);
  auto w64 = w.detach().to(torch::kFloat64).requires_grad_(true);
  ktsa::kernels::fused_linear_options o;
  o.chunk_rows = 3;
  const auto ours = ktsa_torch::FusedHeadLogprob::apply(h, w, ktsa_torch::no_bias(), labels, o, 1);
  const auto theirs =
      torch_seq_logprob(torch_head_logprob(h64, w64, torch::Tensor(), o), labels, o.logprob);
  CATCH_CHECK(rel_err(ours, theirs) < 1e-5);  // the value is fp32 / fp64 from exact bf16 inputs
  ours.sum().backward();
  theirs.sum().backward();
  CATCH_CHECK(h.grad().dtype() == torch::kBFloat16);
  CATCH_CHECK(w.grad().dtype() == torch::kBFloat16);
  CATCH_CHECK(rel_err(h.grad(), h64.grad()) < 1e-2);
  CATCH_CHECK(rel_err(w.grad(), w64.grad()) < 1e-2);
}

CATCH_TEST_CASE("libtorch: FusedHeadLogprob rejects bad inputs by name", "[libtorch][fused]") {
  const auto h = torch::zeros({2, 3, 4}, torch::kFloat32);
  const auto w = torch::zeros({5, 4}, torch::kFloat32);
  const auto y = torch::zeros({2, 3}, torch::kInt64);
  const ktsa::kernels::fused_linear_options o;
  CATCH_CHECK_THROWS_WITH(
      ktsa_torch::FusedHeadLogprob::apply(h, w.to(torch::kBFloat16), ktsa_torch::no_bias(), y, o,
                                          1),
      Contains("'weight' has dtype BFloat16") && Contains("dtype of 'hidden' (Float)"));
  CATCH_CHECK_THROWS_WITH(
      ktsa_torch::FusedHeadLogprob::apply(h[0], w, ktsa_torch::no_bias(), y, o, 1),
      Contains("'hidden' has 2 dimensions, expected 3"));
  CATCH_CHECK_THROWS_WITH(
      ktsa_torch::FusedHeadLogprob::apply(h, w, torch::zeros({5}, torch::kFloat64), y, o, 1),
      Contains("'bias' has dtype Double, expected Float"));
  CATCH_CHECK_THROWS_WITH(
      ktsa_torch::FusedHeadLogprob::apply(h, torch::zeros({5, 3}, torch::kFloat32),
                                          ktsa_torch::no_bias(), y, o, 1),
      Contains("weight"));
  // W with a strided hidden dimension (a transposed [H, V] buffer): the kernel's check.
  CATCH_CHECK_THROWS_AS(
      ktsa_torch::FusedHeadLogprob::apply(h, torch::zeros({4, 5}, torch::kFloat32).t(),
                                          ktsa_torch::no_bias(), y, o, 1),
      ktsa::invalid_argument);
  CATCH_CHECK_THROWS_WITH(
      ktsa_torch::FusedHeadLogprob::apply(h, w, ktsa_torch::no_bias(), y.to(torch::kFloat32), o, 1),
      Contains("'labels' has dtype Float"));
}
