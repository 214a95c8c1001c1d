// A trainer's KTO step through the fused linear head: the policy's last
// hidden states and lm_head weight go in, the loss, metrics and the gradients
// for hidden and W come out; the B x T x V logits never exist.
#include <cstdio>
#include <ktsa/kernels/fused_kto.hpp>
#include <random>
#include <utility>
#include <vector>

int main() {
  using namespace ktsa;
  namespace kn = ktsa::kernels;
  const index_t B = 4, T = 16, H = 32, V = 500;  // a real head: H = 3584, V = 152064
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> hidden(B * T * H), w(V * H), ref_w;  // from the model's forward
  for (auto& x : hidden) x = n(rng);
  for (auto& x : w) x = 0.2f * n(rng);
  ref_w = w;  // the frozen reference head
  std::vector<std::int64_t> labels(B * T);
  for (index_t i = 0; i < B * T; ++i) labels[i] = i % T < 4 ? -100 : rng() % V;  // prompt masked
  const std::vector<std::uint8_t> desirable{1, 0, 1, 0};

  kn::fused_linear_options opts;  // ignore_index -100, sum, 16 MiB chunks
  opts.logprob.shift = true;      // position t scores labels[t + 1]
  const auto h = make_view(std::as_const(hidden).data(), B, T, H);
  const auto y = make_view(std::as_const(labels).data(), B, T);

  // The reference model's sequence log-probs: the same head, forward only.
  std::vector<double> ref_logps(B);
  kn::fused_linear_forward(exec::host{}, h, make_view(std::as_const(ref_w).data(), V, H), {}, y,
                           kn::fused_linear_forward_outputs<double>{make_view(ref_logps)}, opts);

  loss::config cfg;  // kto, beta 0.1
  double first = 0, last = 0;
  for (int step = 0; step < 4; ++step) {
    std::vector<float> grad_hidden(B * T * H), grad_w(V * H);
    kn::kto_step_inputs<const double, const std::uint8_t> in{make_view(std::as_const(ref_logps)),
                                                             make_view(desirable), /*z0=*/0.0, cfg};
    const kn::fused_kto_result r = kn::fused_kto_step(
        exec::host{}, h, make_view(std::as_const(w).data(), V, H), {}, y, in,
        kn::fused_linear_grads<float, float>{make_view(grad_hidden.data(), B, T, H),
                                             make_view(grad_w.data(), V, H)},
        {}, opts);
    // grad_hidden flows back into the model; here only W learns (plain SGD).
    for (index_t i = 0; i < V * H; ++i) w[i] -= 2.0f * grad_w[i];
    std::printf("step %d: loss %.6f  rewards/margins %+.4f  (%s, %lld chunks)\n", step, r.loss.loss,
                r.loss.metrics.rewards_margins(), r.one_pass ? "one pass" : "two passes",
                static_cast<long long>(r.chunks));
    (step == 0 ? first : last) = r.loss.loss;
  }
  return last < first ? 0 : 1;  // the step must lower the loss
}
