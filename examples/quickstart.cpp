// Quickstart: one step of each KTO-family variant on a small built-in batch.
// The sequence log-probs come from (small, made-up) policy and reference
// logits through the host kernels; the example prints the loss, z0, the logged
// rewards and the gradient with respect to the policy's sequence log-probs,
// then carries that gradient back to the policy's logits.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <ktsa/ktsa.hpp>

namespace {

constexpr ktsa::index_t kBatch = 5, kTokens = 6, kVocab = 8;

/// Deterministic stand-in logits [kBatch, kTokens, kVocab]: a smooth pattern
/// per (sequence, position), with `bias` favouring each position's label.
std::vector<float> make_logits(int model, int prompt_shift, const std::vector<std::int32_t>& labels,
                               float bias) {
  std::vector<float> x(static_cast<size_t>(kBatch * kTokens * kVocab));
  for (ktsa::index_t b = 0; b < kBatch; ++b)
    for (ktsa::index_t t = 0; t < kTokens; ++t)
      for (ktsa::index_t j = 0; j < kVocab; ++j) {
        const double phase = 0.7 * j + 1.3 * t + 0.9 * ((b + prompt_shift) % kBatch) + 0.5 * model;
        float v = static_cast<float>(1.5 * std::sin(phase) + 0.4 * std::cos(2.1 * phase));
        if (labels[static_cast<size_t>(b * kTokens + t)] == j) v += bias;
        x[static_cast<size_t>((b * kTokens + t) * kVocab + j)] = v;
      }
  return x;
}

/// Sequence log-probs [kBatch] of the labels (ignore_index -100 masks the prompt).
std::vector<double> sequence_logps(const std::vector<float>& logits,
                                   const std::vector<std::int32_t>& labels,
                                   std::vector<float>* lse = nullptr,
                                   std::vector<std::int64_t>* count = nullptr) {
  using namespace ktsa;
  std::vector<double> out(kBatch);
  std::vector<std::int64_t> n(kBatch);
  kernels::sequence_logprob_forward(
      exec::host{}, make_view(logits.data(), kBatch, kTokens, kVocab),
      make_view(labels.data(), kBatch, kTokens), make_view(out), make_view(n),
      lse ? make_view(lse->data(), kBatch, kTokens) : matrix_view<float>{});
  if (count) *count = n;
  return out;
}

}  // namespace

int main() {
  using namespace ktsa;
  // Five descriptions of six tokens; the first two positions are the prompt.
  std::vector<std::int32_t> labels(static_cast<size_t>(kBatch * kTokens));
  for (index_t b = 0; b < kBatch; ++b)
    for (index_t t = 0; t < kTokens; ++t)
      labels[static_cast<size_t>(b * kTokens + t)] =
          t < 2 ? -100 : static_cast<std::int32_t>((3 * b + 5 * t) % kVocab);
  // The buyer purchased (1) or abandoned (0).
  const std::vector<unsigned char> desirable{1, 0, 1, 0, 1};

  // Policy and frozen reference on matched pairs (prompt i, description i)...
  const auto policy_logits = make_logits(0, 0, labels, 2.0f);
  const auto reference_logits = make_logits(1, 0, labels, 1.6f);
  std::vector<float> policy_lse(static_cast<size_t>(kBatch * kTokens));
  std::vector<std::int64_t> count;
  const auto policy = sequence_logps(policy_logits, labels, &policy_lse, &count);
  const auto reference = sequence_logps(reference_logits, labels);
  // ...and on mismatched pairs (prompt i + 1, description i) for the batch KL z0.
  const auto kl_policy = sequence_logps(make_logits(0, 1, labels, 2.0f), labels);
  const auto kl_reference = sequence_logps(make_logits(1, 1, labels, 1.6f), labels);
  const double batch_z0 =
      loss::batch_kl_reference_point(make_view(kl_policy), make_view(kl_reference));

  // KTSA's buyer reference (Eq. 2): normalised rating vs. the mean over key
  // features of the exact token KL(pi(.|x) || pi(.|x_i)), here the policy on
  // its own prompt against the policy on other prompts standing in for x_i.
  std::vector<double> key_feature_kls;
  for (int feature = 1; feature <= 3; ++feature) {
    std::vector<double> kl(kBatch);
    const auto feature_logits = make_logits(0, feature, labels, 2.0f);
    kernels::logprob_options mean;
    mean.reduce = kernels::reduction::mean;
    kernels::token_kl_forward(
        exec::host{}, make_view(policy_logits.data(), kBatch, kTokens, kVocab),
        make_view(feature_logits.data(), kBatch, kTokens, kVocab),
        make_view(labels.data(), kBatch, kTokens), make_view(kl), {}, {}, {}, mean);
    double sum = 0;
    for (double v : kl) sum += v;
    key_feature_kls.push_back(sum / kBatch);
  }
  const double ktsa_z0 = loss::ktsa_reference_point(0.84, make_view(key_feature_kls));

  std::printf("ktsa %s quickstart: batch of %zu, beta 0.1\n", KTSA_VERSION_STRING, policy.size());
  std::printf("sequence log-probs from logits [%ld, %ld, %ld]:\n", static_cast<long>(kBatch),
              static_cast<long>(kTokens), static_cast<long>(kVocab));
  for (index_t b = 0; b < kBatch; ++b)
    std::printf("  %ld: policy %+.4f  reference %+.4f  (%ld tokens)\n", static_cast<long>(b),
                policy[b], reference[b], static_cast<long>(count[b]));
  std::printf("key-feature KLs");
  for (double k : key_feature_kls) std::printf(" %.4f", k);
  std::printf("  -> ktsa z0 %.4f\n", ktsa_z0);

  const loss::variant variants[] = {loss::variant::kto, loss::variant::kto_log_sigmoid,
                                    loss::variant::ktsa, loss::variant::apo_zero_unpaired,
                                    loss::variant::bco};  // kto_zero = apo_zero_unpaired
  std::vector<double> kto_grad;
  for (loss::variant v : variants) {
    loss::config cfg;
    cfg.kind = v;
    loss::bco_running_mean bco;
    std::vector<double> grad(policy.size()), per_example(policy.size());
    const double z0 = v == loss::variant::ktsa ? ktsa_z0 : batch_z0;
    const loss::loss_result r =
        loss::kto_loss(exec::host{}, make_view(policy), make_view(reference), make_view(desirable),
                       z0, cfg, make_view(per_example), make_view(grad), &bco);
    std::printf(
        "%-18s loss %.6f  z0 %.4f  rewards/chosen %+.4f  rewards/rejected %+.4f  margin %+.4f\n",
        loss::variant_name(v), r.loss, r.metrics.kl, r.metrics.rewards_chosen(),
        r.metrics.rewards_rejected(), r.metrics.rewards_margins());
    std::printf("%-18s grad", "");
    for (double g : grad) std::printf(" %+.6f", g);
    std::printf("\n");
    if (v == loss::variant::kto) kto_grad = grad;
  }

  // The KTO gradient carried back to the policy's logits with the saved lse.
  std::vector<float> grad_logits(policy_logits.size());
  kernels::sequence_logprob_backward(
      exec::host{}, make_view(policy_logits.data(), kBatch, kTokens, kVocab),
      make_view(labels.data(), kBatch, kTokens), make_view(policy_lse.data(), kBatch, kTokens),
      make_view(count), make_view(kto_grad),
      make_view(grad_logits.data(), kBatch, kTokens, kVocab));
  double norm = 0;
  for (float g : grad_logits) norm += static_cast<double>(g) * g;
  std::printf("kto d loss / d policy logits: L2 norm %.6f over %zu logits\n", std::sqrt(norm),
              grad_logits.size());

  // The prospect value function of Eq. 1 around the KTSA reference point.
  std::printf("prospect v(z) around z0 = %.2f:", ktsa_z0);
  for (double z : {0.0, 0.5, 0.84, 1.2, 2.0})
    std::printf("  v(%.2f) = %+.4f", z, prospect::value(z, 0.88, 2.25, ktsa_z0));
  std::printf("\n");
}
