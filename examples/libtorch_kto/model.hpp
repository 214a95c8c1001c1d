// model.hpp: a small conditional causal LM over the simulated market's
// description vocabulary, in libtorch: the prompt (query needs, category,
// the product's review key features and rating) is a feature vector that sets
// the GRU's initial state and is added to every step's input and logits.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "ktsa/sim/buyer.hpp"
#include "ktsa/sim/catalogue.hpp"

namespace lm {

namespace sim = ktsa::sim;
constexpr int64_t vocab = sim::vocabulary::size;  // 71 description tokens
constexpr int64_t bos = vocab;                    // input-only start token
constexpr int64_t max_len = 8;                    // seller descriptions have at most 6
constexpr int64_t features = sim::num_categories + 3 * sim::num_attributes + 1;

/// The prompt as numbers: category one-hot, need weights, top features and
/// top concerns (each on the 64 (category, attribute) slots the claim tokens
/// use), the normalised rating.
inline std::vector<float> prompt_features(const sim::query& q, const sim::product& p) {
  std::vector<float> f(static_cast<size_t>(features), 0.0f);
  const int base = q.category * sim::attributes_per_category;
  f[static_cast<size_t>(q.category)] = 1;
  for (const sim::need& n : q.needs)
    f[static_cast<size_t>(sim::num_categories + base + n.attribute)] = static_cast<float>(n.weight);
  for (int a : p.top_features)
    f[static_cast<size_t>(sim::num_categories + sim::num_attributes + base + a)] = 1;
  for (int a : p.top_concerns)
    f[static_cast<size_t>(sim::num_categories + 2 * sim::num_attributes + base + a)] = 1;
  f.back() = static_cast<float>(p.rating_normalised());
  return f;
}

struct LMImpl : torch::nn::Module {
  LMImpl(int64_t embed = 32, int64_t hidden = 64)
      : emb(register_module("emb", torch::nn::Embedding(vocab + 1, embed))),
        cond_in(register_module("cond_in", torch::nn::Linear(features, embed))),
        cond_h(register_module("cond_h", torch::nn::Linear(features, hidden))),
        cond_out(register_module("cond_out", torch::nn::Linear(features, vocab))),
        gru(register_module(
            "gru", torch::nn::GRU(torch::nn::GRUOptions(embed, hidden).batch_first(true)))),
        head(register_module("head", torch::nn::Linear(hidden, vocab))) {}

  /// Logits [B, T, V] (float32, contiguous) for inputs [B, T] (bos + tokens).
  torch::Tensor forward(const torch::Tensor& feats, const torch::Tensor& inputs) {
    const auto h0 = torch::tanh(cond_h(feats)).unsqueeze(0);
    const auto x = emb(inputs) + cond_in(feats).unsqueeze(1);
    const auto out = std::get<0>(gru(x, h0));
    return (head(out) + cond_out(feats).unsqueeze(1)).contiguous();
  }

  /// The same logits as a linear head over widened hidden states, for
  /// ktsa's fused head: logits = hidden_states . head_weight^T + head_bias,
  /// with hidden_states [B, T, hidden + features] = [GRU output, prompt
  /// features] and head_weight [V, hidden + features] = [head.W, cond_out.W]
  /// (cond_out's per-prompt logit term folded in as extra hidden features).
  torch::Tensor hidden_states(const torch::Tensor& feats, const torch::Tensor& inputs) {
    const auto h0 = torch::tanh(cond_h(feats)).unsqueeze(0);
    const auto x = emb(inputs) + cond_in(feats).unsqueeze(1);
    const auto out = std::get<0>(gru(x, h0));
    return torch::cat({out, feats.unsqueeze(1).expand({-1, out.size(1), -1})}, 2).contiguous();
  }
  torch::Tensor head_weight() { return torch::cat({head->weight, cond_out->weight}, 1); }
  torch::Tensor head_bias() { return head->bias + cond_out->bias; }

  /// Samples descriptions [B, max_len] (positions after eos hold eos).
  torch::Tensor sample(const torch::Tensor& feats, torch::Generator& gen) {
    torch::NoGradGuard no_grad;
    const int64_t B = feats.size(0);
    auto h = torch::tanh(cond_h(feats)).unsqueeze(0);
    const auto ci = cond_in(feats), co = cond_out(feats);
    auto prev = torch::full({B}, bos, torch::kInt64);
    auto done = torch::zeros({B}, torch::kBool);
    auto out = torch::zeros({B, max_len}, torch::kInt64);
    for (int64_t t = 0; t < max_len; ++t) {
      auto step = gru((emb(prev) + ci).unsqueeze(1), h);
      h = std::get<1>(step);
      const auto logits = head(std::get<0>(step).squeeze(1)) + co;
      auto y = torch::multinomial(torch::softmax(logits, -1), 1, false, gen).squeeze(1);
      y = torch::where(done, torch::zeros_like(y), y);
      out.select(1, t).copy_(y);
      done = done | (y == sim::vocabulary::eos);
      prev = y;
    }
    return out;
  }

  torch::nn::Embedding emb;
  torch::nn::Linear cond_in, cond_h, cond_out;
  torch::nn::GRU gru;
  torch::nn::Linear head;
};
TORCH_MODULE(LM);

/// Teacher forcing: inputs [B, T] = bos + tokens shifted right, labels [B, T]
/// = tokens up to and including the first eos, ignore_index (-100) after it.
inline std::pair<torch::Tensor, torch::Tensor> teacher_forcing(const torch::Tensor& tokens) {
  const int64_t B = tokens.size(0);
  auto inputs =
      torch::cat({torch::full({B, 1}, bos, torch::kInt64), tokens.slice(1, 0, max_len - 1)}, 1);
  // A position is past the end when an eos came before it.
  const auto is_eos = (tokens == sim::vocabulary::eos).to(torch::kInt64);
  const auto eos_before = torch::cumsum(is_eos, 1) - is_eos;
  auto labels = torch::where(eos_before > 0, torch::full_like(tokens, -100), tokens);
  return {inputs.contiguous(), labels.contiguous()};
}

/// Token rows as the buyer reads them (up to the first eos).
inline std::vector<int> description_of(const torch::Tensor& row) {
  std::vector<int> d;
  const auto acc = row.accessor<int64_t, 1>();
  for (int64_t t = 0; t < row.size(0); ++t) {
    d.push_back(static_cast<int>(acc[t]));
    if (acc[t] == sim::vocabulary::eos) break;
  }
  return d;
}

/// A seller description as a padded [max_len] row.
inline std::vector<int64_t> padded(const std::vector<int>& d) {
  std::vector<int64_t> row(static_cast<size_t>(max_len), sim::vocabulary::eos);
  for (size_t t = 0; t < d.size() && t < row.size(); ++t) row[t] = d[t];
  return row;
}

}  // namespace lm
