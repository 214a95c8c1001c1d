// A libtorch trainer that uses ktsa for its loss: a small causal LM (GRU) is
// trained by MLE on the simulated market's seller descriptions, then by KTO
// on the simulated buyer's feedback to its own samples (purchase = desirable,
// abandon = undesirable; add-to-cart is left out). The held-out conversion
// rate is printed after MLE and after KTO; the program fails if it did not rise.
//
// ktsa does the log-probs (MLE: ktsa_torch::SequenceLogprob over the logits
// kernels; KTO: ktsa_torch::FusedHeadLogprob, the fused linear head, from the
// GRU's hidden states and the output projection, never holding the logits;
// zero-copy views of the torch tensors), the reference point
// (loss::batch_kl_reference_point over mismatched pairs) and the loss with its
// gradient (ktsa_torch::KtoLoss); libtorch does the model and the optimiser.
//
//   ktsa_libtorch_kto [--mle-steps N] [--kto-steps N] [--seed S] [--head fused|logits]
//
// --head logits runs the KTO phase through SequenceLogprob on the full logits
// instead (the same model and formula: a comparison run).
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ktsa/loss/reference_point.hpp"
#include "ktsa/sim/buyer.hpp"
#include "ktsa/sim/catalogue.hpp"
#include "ktsa/sim/random.hpp"
#include "ktsa_torch.hpp"
#include "model.hpp"

namespace sim = ktsa::sim;

namespace {

struct options {
  int mle_steps = 300, kto_steps = 150, batch = 64;
  double mle_lr = 1e-2, kto_lr = 3e-3, beta = 0.1;
  std::uint64_t seed = 1;
  bool fused_head = true;  // KTO phase: FusedHeadLogprob (else SequenceLogprob)
};

struct dataset {
  torch::Tensor feats;                   // [N, F]
  std::vector<const sim::query*> query;  // N
};

dataset make_dataset(const sim::market& m, const std::vector<sim::query>& qs) {
  dataset d;
  std::vector<float> all;
  for (const sim::query& q : qs) {
    const auto f = lm::prompt_features(q, m.product_of(q));
    all.insert(all.end(), f.begin(), f.end());
    d.query.push_back(&q);
  }
  d.feats =
      torch::from_blob(all.data(), {static_cast<int64_t>(qs.size()), lm::features}, torch::kFloat32)
          .clone();
  return d;
}

ktsa::kernels::logprob_options logprob_opts() {
  return {};  // ignore_index -100, no shift (inputs are already shifted), sum
}

/// log pi(y | x) [B] (fp64) through ktsa's kernel, differentiable.
torch::Tensor sequence_logps(lm::LM& model, const torch::Tensor& feats,
                             const torch::Tensor& tokens) {
  const auto [inputs, labels] = lm::teacher_forcing(tokens);
  return ktsa_torch::SequenceLogprob::apply(model->forward(feats, inputs), labels, logprob_opts(),
                                            1);
}

ktsa::kernels::fused_linear_options fused_opts() {
  ktsa::kernels::fused_linear_options o;
  o.logprob = logprob_opts();
  return o;
}

/// The same log pi(y | x) [B] through ktsa's fused linear head (hidden states
/// and the output projection; no [B, T, V] logits), differentiable in both.
torch::Tensor fused_sequence_logps(lm::LM& model, const torch::Tensor& feats,
                                   const torch::Tensor& tokens) {
  const auto [inputs, labels] = lm::teacher_forcing(tokens);
  return ktsa_torch::FusedHeadLogprob::apply(model->hidden_states(feats, inputs),
                                             model->head_weight(), model->head_bias(), labels,
                                             fused_opts(), 1);
}

/// Purchases per shown description on the held-out queries (one sample each,
/// the same generator seed and buyer draws for every model: a paired comparison).
double held_out_cvr(lm::LM& model, const sim::market& m, const dataset& test,
                    const sim::prospect_buyer& buyer, std::uint64_t seed, int* buys = nullptr) {
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(seed ^ 0xE5A1);
  const auto tokens = model->sample(test.feats, gen);
  int n = 0;
  for (int64_t i = 0; i < tokens.size(0); ++i) {
    const sim::query& q = *test.query[static_cast<size_t>(i)];
    n += buyer.respond(q, m.product_of(q), lm::description_of(tokens[i]),
                       sim::hash_keys(seed, 0xE5B2, static_cast<std::uint64_t>(q.id))) ==
         sim::action::purchase;
  }
  if (buys != nullptr) *buys = n;
  return static_cast<double>(n) / static_cast<double>(tokens.size(0));
}

int parse(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return 1;
    const std::string v = argv[++i];
    if (a == "--mle-steps")
      o.mle_steps = std::stoi(v);
    else if (a == "--kto-steps")
      o.kto_steps = std::stoi(v);
    else if (a == "--seed")
      o.seed = std::stoull(v);
    else if (a == "--head" && (v == "fused" || v == "logits"))
      o.fused_head = v == "fused";
    else
      return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  if (parse(argc, argv, o) != 0) {
    std::fprintf(stderr,
                 "usage: ktsa_libtorch_kto [--mle-steps N] [--kto-steps N] [--seed S] "
                 "[--head fused|logits]\n");
    return 2;
  }
  torch::set_num_threads(1);
  torch::manual_seed(o.seed);
  sim::market_config mc;
  mc.seed = o.seed;
  const sim::market market(mc);
  const sim::prospect_buyer buyer;
  const dataset train = make_dataset(market, market.train_queries());
  const dataset test = make_dataset(market, market.test_queries());
  const int64_t N = train.feats.size(0);

  // The seller's own descriptions: the MLE data and a baseline.
  std::vector<int64_t> seller_rows;
  int seller_buys = 0;
  for (const sim::query* q : train.query) {
    const auto row = lm::padded(market.product_of(*q).seller_description);
    seller_rows.insert(seller_rows.end(), row.begin(), row.end());
  }
  const auto seller = torch::from_blob(seller_rows.data(), {N, lm::max_len}, torch::kInt64).clone();
  for (const sim::query& q : market.test_queries())
    seller_buys +=
        buyer.respond(q, market.product_of(q), market.product_of(q).seller_description,
                      sim::hash_keys(o.seed, 0xE5B2, static_cast<std::uint64_t>(q.id))) ==
        sim::action::purchase;

  lm::LM policy;
  torch::optim::Adam mle_opt(policy->parameters(), torch::optim::AdamOptions(o.mle_lr));
  auto batch_gen = torch::make_generator<at::CPUGeneratorImpl>(o.seed ^ 0xBA7C);
  for (int step = 0; step < o.mle_steps; ++step) {
    const auto idx = torch::randint(N, {o.batch}, batch_gen, torch::kInt64);
    const auto logps =
        sequence_logps(policy, train.feats.index_select(0, idx), seller.index_select(0, idx));
    const auto nll = -logps.mean();
    mle_opt.zero_grad();
    nll.backward();
    mle_opt.step();
    if (step % 100 == 0 || step + 1 == o.mle_steps)
      std::printf("mle step %4d  nll/description %.4f\n", step, nll.item<double>());
  }

  int before_buys = 0;
  const double before = held_out_cvr(policy, market, test, buyer, o.seed, &before_buys);

  // The frozen reference: a copy of the MLE policy.
  lm::LM reference;
  {
    torch::NoGradGuard no_grad;
    auto src = policy->parameters();
    auto dst = reference->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  reference->eval();

  // The KTO phase scores through the fused head: first check that it gives the
  // logits path's log-probs on the MLE data (same model, same labels).
  {
    torch::NoGradGuard no_grad;
    const auto f = train.feats.slice(0, 0, o.batch), y = seller.slice(0, 0, o.batch);
    const auto via_logits = sequence_logps(policy, f, y),
               via_fused = fused_sequence_logps(policy, f, y);
    const double diff = (via_fused - via_logits).abs().max().item<double>();
    const double scale = via_logits.abs().max().item<double>();
    std::printf("fused head vs logits path on %d descriptions: max |diff| %.3g (max |logp| %.3g)\n",
                o.batch, diff, scale);
    // fp32 logits either way, summed differently (libtorch's linear + add vs
    // one GEMM over [GRU output, features]): ~1e-6 seen; a wrong term is O(1).
    if (!(diff <= 1e-5 * (1.0 + scale))) {
      std::printf("FAIL: the fused head disagrees with the logits path\n");
      return 1;
    }
  }

  ktsa::loss::config cfg;
  cfg.beta = o.beta;
  cfg.kind = ktsa::loss::variant::kto;
  torch::optim::Adam kto_opt(policy->parameters(), torch::optim::AdamOptions(o.kto_lr));
  // The KTO phase's log-probs: the fused head (default) or the logits path.
  const auto kto_logps = [&](lm::LM& model, const torch::Tensor& f, const torch::Tensor& y) {
    return o.fused_head ? fused_sequence_logps(model, f, y) : sequence_logps(model, f, y);
  };
  auto sample_gen = torch::make_generator<at::CPUGeneratorImpl>(o.seed ^ 0x7A11);
  for (int step = 0; step < o.kto_steps; ++step) {
    const auto idx = torch::randint(N, {o.batch}, batch_gen, torch::kInt64);
    const auto feats = train.feats.index_select(0, idx);
    const auto tokens = policy->sample(feats, sample_gen);
    // The buyer's feedback: keep purchases and abandons.
    std::vector<int64_t> keep;
    std::vector<std::uint8_t> desirable;
    for (int64_t i = 0; i < o.batch; ++i) {
      const sim::query& q = *train.query[static_cast<size_t>(idx[i].item<int64_t>())];
      const sim::action a =
          buyer.respond(q, market.product_of(q), lm::description_of(tokens[i]),
                        sim::hash_keys(o.seed, 0x7B22, static_cast<std::uint64_t>(step),
                                       static_cast<std::uint64_t>(i)));
      if (a == sim::action::add_to_cart) continue;
      keep.push_back(i);
      desirable.push_back(a == sim::action::purchase);
    }
    if (keep.size() < 2) continue;
    const auto k = torch::tensor(keep, torch::kInt64);
    const auto f = feats.index_select(0, k), y = tokens.index_select(0, k);
    const auto flags =
        torch::from_blob(desirable.data(), {static_cast<int64_t>(desirable.size())}, torch::kUInt8)
            .clone();
    // z0 from mismatched pairs (x_i, y_{i+1}), no gradient.
    double z0;
    torch::Tensor ref_logps;
    {
      torch::NoGradGuard no_grad;
      const auto y_next = torch::roll(y, -1, 0);
      const auto kl_policy = kto_logps(policy, f, y_next);
      const auto kl_ref = kto_logps(reference, f, y_next);
      z0 = ktsa::loss::batch_kl_reference_point(
          ktsa_torch::view_of<const double, 1>(kl_policy, "kl_policy_logps"),
          ktsa_torch::view_of<const double, 1>(kl_ref, "kl_reference_logps"));
      ref_logps = kto_logps(reference, f, y);
    }
    const auto logps = kto_logps(policy, f, y);
    ktsa::loss::batch_metrics metrics;
    const auto loss = ktsa_torch::KtoLoss::apply(
        logps, ref_logps, flags, torch::tensor(z0, torch::kFloat64), cfg, nullptr, &metrics);
    kto_opt.zero_grad();
    loss.backward();
    kto_opt.step();
    if (step % 25 == 0 || step + 1 == o.kto_steps)
      std::printf("kto step %4d  loss %.5f  kl %.4f  purchases %lld / %zu  margin %.4f\n", step,
                  loss.item<double>(), metrics.kl, static_cast<long long>(metrics.chosen_count),
                  keep.size(), metrics.rewards_margins());
  }

  int after_buys = 0;
  const double after = held_out_cvr(policy, market, test, buyer, o.seed, &after_buys);
  const int n = static_cast<int>(test.query.size());
  std::printf(
      "held-out CVR (%d queries): seller descriptions %.4f, after MLE %.4f (%d), after KTO "
      "%.4f (%d)\n",
      n, static_cast<double>(seller_buys) / n, before, before_buys, after, after_buys);
  if (!(after > before)) {
    std::printf("FAIL: KTO did not raise the held-out conversion rate\n");
    return 1;
  }
  return 0;
}
