// MLE, KTO and KTSA training of the self-alignment example (members of
// experiment, declared in experiment.hpp, which includes this file last).
#pragma once

namespace self_alignment {

inline linear_policy experiment::train_mle(std::vector<curve_point>& curve,
                                           std::string& log) const {
  const ktsa::exec::host ex{1};
  linear_policy model;
  adam opt(model, o_.mle_lr);
  scored_batch s;
  double win_nll = 0;
  int win_steps = 0;
  for (int step = 0; step <= o_.mle_steps; ++step) {
    if (step % every(o_.mle_steps) == 0 || step == o_.mle_steps) {
      curve.push_back(chart_point(step, &model));
      if (step > 0)
        log += printf_string("[MLE ] step %4d/%d  nll %.4f  held-out CVR buyer %.4f Oracle %.4f\n",
                             step, o_.mle_steps, win_nll / std::max(1, win_steps),
                             curve.back().buyer, curve.back().oracle);
      win_nll = 0;
      win_steps = 0;
    }
    if (step == o_.mle_steps) break;
    const auto qs = batch(arm_mle, step);
    std::vector<prompt> storage;
    std::vector<const prompt*> prompts;
    std::vector<std::vector<int>> seqs;
    for (const sim::query* q : qs) {
      storage.push_back(prompt_of(*q));
      seqs.push_back(shown(*q).seller_description);
    }
    for (const prompt& x : storage) prompts.push_back(&x);
    const auto labels = make_labels(seqs);
    // This rank's slice of the batch (the whole batch in one process).
    const batch_slice sl = slice(prompts, seqs, labels);
    score(ex, model, sl.prompts, sl.seqs, sl.labels, s);
    double nll = 0;
    for (double lp : ranks_.gather(s.logp, static_cast<index_t>(qs.size())))
      nll -= lp / static_cast<double>(qs.size());
    // Loss = mean negative log-likelihood: d loss / d log pi = -1 / B.
    apply_gradient(ex, model, opt, sl, s,
                   std::vector<double>(qs.size(), -1.0 / static_cast<double>(qs.size())), prompts,
                   seqs);
    win_nll += nll;
    ++win_steps;
  }
  return model;
}

inline linear_policy experiment::align(int arm, const linear_policy& init,
                                       std::vector<curve_point>& curve, std::string& log) const {
  const ktsa::exec::host ex{1};
  const bool is_ktsa = arm == arm_ktsa;
  const char* name = arm_names[arm];
  linear_policy model = init;
  const linear_policy& reference = init;
  adam opt(model, o_.align_lr);
  ktsa::loss::config cfg;
  cfg.beta = o_.beta;
  cfg.gamma = o_.gamma;
  cfg.kind = is_ktsa ? ktsa::loss::variant::ktsa : ktsa::loss::variant::kto;
  cfg.desirable_weight = weights_.desirable;
  cfg.undesirable_weight = weights_.undesirable;

  scored_batch pol, ref, kl_pol, kl_ref, key;
  double win_loss = 0, win_z0 = 0, win_chosen = 0, win_rejected = 0, win_keykl = 0;
  long win_steps = 0, win_buys = 0, win_shown = 0, win_nchosen = 0, win_nrejected = 0;
  for (int step = 0; step <= o_.steps; ++step) {
    if (step % every(o_.steps) == 0 || step == o_.steps) {
      curve.push_back(chart_point(step, &model));
      if (step > 0) {
        const double ws = static_cast<double>(std::max(1L, win_steps));
        log += printf_string("[%-4s] step %4d/%d  loss %.4f  kl %.4f", name, step, o_.steps,
                             win_loss / ws, win_z0 / ws);
        if (is_ktsa) log += printf_string(" (key-feature KL %.4f)", win_keykl / ws);
        log += printf_string(
            "  rewards/chosen %+.4f  rewards/rejected %+.4f  feedback CVR %.4f  held-out CVR "
            "buyer %.4f Oracle %.4f\n",
            win_nchosen ? win_chosen / static_cast<double>(win_nchosen) : 0.0,
            win_nrejected ? win_rejected / static_cast<double>(win_nrejected) : 0.0,
            static_cast<double>(win_buys) / static_cast<double>(std::max(1L, win_shown)),
            curve.back().buyer, curve.back().oracle);
        win_loss = win_z0 = win_chosen = win_rejected = win_keykl = 0;
        win_steps = win_buys = win_shown = win_nchosen = win_nrejected = 0;
      }
    }
    if (step == o_.steps) break;
    // 1. Sample descriptions from the current policy and show them to the
    // feedback Oracle (the learned one by default, as in the paper).
    const auto qs = batch(arm, step);
    sim::rng gen(sim::hash_keys(o_.seed, key_train, static_cast<std::uint64_t>(arm),
                                static_cast<std::uint64_t>(step)));
    std::vector<prompt> storage;
    std::vector<const sim::query*> kept;
    std::vector<std::vector<int>> seqs;
    std::vector<unsigned char> desirable;
    for (size_t i = 0; i < qs.size(); ++i) {
      const sim::query& q = *qs[i];
      prompt x = prompt_of(q);
      std::vector<int> text = model.sample(x, gen);
      const sim::action a = feedback_->respond(
          q, shown(q), text,
          sim::hash_keys(o_.seed, key_train_buyer, static_cast<std::uint64_t>(arm),
                         static_cast<std::uint64_t>(step), i));
      ++win_shown;
      win_buys += a == sim::action::purchase;
      // 2. Purchase -> desirable, abandon -> undesirable; add-to-cart is an
      // ambiguous signal (interest without commitment) and is left out.
      if (a == sim::action::add_to_cart) continue;
      storage.push_back(std::move(x));
      kept.push_back(&q);
      seqs.push_back(std::move(text));
      desirable.push_back(a == sim::action::purchase ? 1 : 0);
    }
    std::vector<const prompt*> prompts;
    for (const prompt& x : storage) prompts.push_back(&x);
    const index_t n = static_cast<index_t>(seqs.size());
    if (n < 2) continue;  // no mismatched pair to form; nothing to learn from
    const auto labels = make_labels(seqs);
    // 3. Sequence log-probs of policy and reference (host kernel), on this
    // rank's slice; every per-example vector below is gathered whole.
    const batch_slice sl = slice(prompts, seqs, labels);
    const index_t m = sl.size();
    score(ex, model, sl.prompts, sl.seqs, sl.labels, pol);
    score(ex, reference, sl.prompts, sl.seqs, sl.labels, ref);
    const std::vector<double> pol_logp = ranks_.gather(pol.logp, n),
                              ref_logp = ranks_.gather(ref.logp, n);

    std::vector<double> dlogp(static_cast<size_t>(n), 0.0);
    ktsa::loss::loss_result res;
    if (!is_ktsa) {
      // 4a. KTO: z0 from mismatched pairs (prompt i, completion i+1; kept
      // explicit so the README's table is unchanged by TRL's default, i-1).
      const auto pair = ktsa::loss::mismatched_pair_indices(n, ktsa::loss::pairing::next);
      std::vector<std::vector<int>> kl_seqs;
      for (index_t i = 0; i < n; ++i)
        kl_seqs.push_back(seqs[static_cast<size_t>(pair[static_cast<size_t>(i)])]);
      const auto kl_labels = make_labels(kl_seqs);
      // The pairs are formed over the whole batch (every rank holds it), then sliced.
      const batch_slice kl_sl = slice(prompts, kl_seqs, kl_labels);
      score(ex, model, kl_sl.prompts, kl_sl.seqs, kl_sl.labels, kl_pol);
      score(ex, reference, kl_sl.prompts, kl_sl.seqs, kl_sl.labels, kl_ref);
      const double z0 = ktsa::loss::batch_kl_reference_point(
          make_view(ranks_.gather(kl_pol.logp, n)), make_view(ranks_.gather(kl_ref.logp, n)));
      res = ktsa::loss::kto_loss(ex, make_view(pol_logp), make_view(ref_logp), make_view(desirable),
                                 z0, cfg, ktsa::vector_view<double>{}, make_view(dlogp));
      win_z0 += z0;
    } else {
      // 4b. KTSA: each example's own reference point, Eq. 2:
      //   z0_i = max(R_avg_i, (1/6) sum_k KL(pi(.|x_i) || pi(.|x_i,k)))
      // with the exact token KL over the description, x_i,k = x_i plus key feature k.
      // This rank's slice [sl.begin, sl.end) of examples, then gathered whole.
      std::vector<double> key_kls(static_cast<size_t>(m) * sim::num_key_features);
      std::vector<prompt> extended(static_cast<size_t>(m));
      std::vector<const prompt*> extended_ptr(static_cast<size_t>(m));
      std::vector<double> kl(static_cast<size_t>(m));
      for (int k = 0; k < sim::num_key_features; ++k) {
        for (index_t i = 0; i < m; ++i) {
          extended[static_cast<size_t>(i)] =
              with_key_feature(*sl.prompts[static_cast<size_t>(i)],
                               shown(*kept[static_cast<size_t>(sl.begin + i)]), k);
          extended_ptr[static_cast<size_t>(i)] = &extended[static_cast<size_t>(i)];
        }
        model.forward(extended_ptr, sl.seqs, key.design, key.logits);
        if (m > 0)  // an empty slice of a small batch
          ktsa::kernels::token_kl_forward(
              ex, logits_view(pol.logits, m), logits_view(key.logits, m),
              make_view(sl.labels.data(), m, index_t{max_len}), make_view(kl),
              ktsa::matrix_view<float>{}, ktsa::matrix_view<float>{}, ktsa::matrix_view<float>{});
        for (index_t i = 0; i < m; ++i)
          key_kls[static_cast<size_t>(i * sim::num_key_features + k)] = kl[static_cast<size_t>(i)];
      }
      key_kls = ranks_.gather(key_kls, n, index_t{sim::num_key_features});
      // Each product has its own reference point: one z0 per example.
      std::vector<double> z0s(static_cast<size_t>(n));
      for (index_t i = 0; i < n; ++i) {
        z0s[static_cast<size_t>(i)] = ktsa::loss::ktsa_reference_point(
            prompts[static_cast<size_t>(i)]->rating,
            make_view(key_kls.data() + i * sim::num_key_features, index_t{sim::num_key_features}));
        for (int k = 0; k < sim::num_key_features; ++k)
          win_keykl += key_kls[static_cast<size_t>(i * sim::num_key_features + k)] /
                       static_cast<double>(n * sim::num_key_features);
      }
      res =
          ktsa::loss::kto_loss(ex, make_view(pol_logp), make_view(ref_logp), make_view(desirable),
                               make_view(z0s), cfg, ktsa::vector_view<double>{}, make_view(dlogp));
      win_z0 += res.metrics.kl;
    }
    // 5. Backpropagate through the log-prob kernel into the policy.
    apply_gradient(ex, model, opt, sl, pol, dlogp, prompts, seqs);

    ++win_steps;
    win_loss += res.loss;
    win_chosen += res.metrics.chosen_reward_sum;
    win_rejected += res.metrics.rejected_reward_sum;
    win_nchosen += res.metrics.chosen_count;
    win_nrejected += res.metrics.rejected_count;
  }
  return model;
}

}  // namespace self_alignment
