// The KTSA paper's self-alignment loop, run whole on one machine.
//
// A generator writes product descriptions for (query, product) pairs of a
// simulated market; a prospect-theoretic buyer (ktsa::sim::prospect_buyer,
// standing in for the paper's Oracle) purchases, adds to cart or abandons;
// purchases become desirable and abandons undesirable examples for KTO and
// KTSA. Four arms are compared on held-out queries (Table 3 of the paper):
//   Base  the seller's original descriptions
//   MLE   the generator trained to imitate the seller's descriptions
//   KTO   MLE + KTO on the buyer's feedback, z0 from mismatched pairs
//   KTSA  MLE + KTSA: z0 = max(R_avg, mean key-feature KL) (Eq. 2), loss
//         variant ktsa (value Eq. 3-4)
// Read this file as a template: replace linear_policy with your model's
// forward/backward and prospect_buyer with your own ktsa::sim::oracle.
#include <sys/stat.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <ktsa/kernels/logprob.hpp>
#include <ktsa/kernels/token_kl.hpp>
#include <ktsa/loss/kto.hpp>
#include <ktsa/loss/reference_point.hpp>
#include <ktsa/metrics/report.hpp>
#include <ktsa/sim/buyer.hpp>
#include <ktsa/sim/retrieval.hpp>

#include "policy.hpp"

namespace sa = self_alignment;
namespace sim = ktsa::sim;
using ktsa::index_t;
using ktsa::make_view;

namespace {

enum arm_id { arm_base = 0, arm_mle = 1, arm_kto = 2, arm_ktsa = 3, num_arms = 4 };
const char* const arm_names[num_arms] = {"Base", "MLE", "KTO", "KTSA"};

struct options {
  int steps = 2500;     ///< KTO / KTSA steps
  int mle_steps = 300;  ///< supervised steps on the seller's descriptions
  int batch = 128;
  std::uint64_t seed = 1;
  std::vector<int> categories;  ///< empty: all eight
  std::string out = "out/self_alignment";
  int eval_every = 0;  ///< held-out CVR for the chart every this many steps (0: a tenth)
  int eval_draws = 4;  ///< descriptions per held-out query in the final table
  float mle_lr = 0.05f;
  float align_lr = 0.01f;
  double beta = 0.1;
  /// Weight of r in KTSA's value (Eq. 4). The paper's 1 drowns the KTO signal
  /// in this model; see docs/self_alignment.md for the sweep.
  double gamma = 0.01;
  int products_per_category = 60;
  int train_queries = 300;  ///< per category
  int test_queries = 150;   ///< per category
  /// --candidates retrieval: sim/retrieval.hpp picks each query's product.
  bool retrieval_candidates = false;
};

void print_help() {
  std::printf(
      "ktsa_self_alignment: the KTSA paper's self-alignment loop on a simulated market.\n"
      "Trains a description generator with MLE, KTO and KTSA against a prospect-theoretic\n"
      "buyer and prints conversion rates per category on held-out queries (Table 3).\n\n"
      "  --steps N         KTO/KTSA training steps (default 2500)\n"
      "  --mle-steps N     supervised steps on the seller's descriptions (default 300)\n"
      "  --batch N         descriptions per step (default 128)\n"
      "  --seed N          seed of market, buyer, sampling (default 1)\n"
      "  --categories L    comma-separated names or indices 0-7 (default all):\n"
      "                    ");
  for (int c = 0; c < sim::num_categories; ++c)
    std::printf("%d %s%s", c, sim::category(c).name, c + 1 < sim::num_categories ? ", " : "\n");
  std::printf(
      "  --out DIR         output folder (default out/self_alignment)\n"
      "  --eval-every N    held-out CVR for the chart every N steps (default: ten points per "
      "phase)\n"
      "  --eval-draws N    descriptions per held-out query in the table (default 4)\n"
      "  --train-queries N / --test-queries N   per category (default 300 / 150)\n"
      "  --beta X          KTO temperature (default 0.1); --gamma X  KTSA's weight of r (default "
      "0.01)\n"
      "  --lr X            Adam learning rate of KTO/KTSA (default 0.01); --mle-lr X  of MLE "
      "(0.05)\n"
      "  --candidates C    oracle (default: best of three by true fit) or retrieval (top-1\n"
      "                    hybrid CBF + CF score, sim/retrieval.hpp, docs/retrieval.md)\n"
      "  --help            this text\n");
}

long parse_int(const std::string& flag, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < lo || x > hi)
    throw std::invalid_argument(flag + " expects an integer in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "], got '" + v + "'");
  return x;
}

double parse_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x))
    throw std::invalid_argument(flag + " expects a number, got '" + v + "'");
  return x;
}

std::vector<int> parse_categories(const std::string& list) {
  std::vector<int> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.size() == 1 && item[0] >= '0' && item[0] <= '7')
      out.push_back(item[0] - '0');
    else
      out.push_back(sim::category_index(item));
  }
  if (out.empty()) throw std::invalid_argument("--categories expects at least one category");
  return out;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument("unknown flag or missing value: " + a);
    const std::string v = argv[++i];
    if (a == "--steps")
      o.steps = static_cast<int>(parse_int(a, v, 0, 1000000));
    else if (a == "--mle-steps")
      o.mle_steps = static_cast<int>(parse_int(a, v, 0, 1000000));
    else if (a == "--batch")
      o.batch = static_cast<int>(parse_int(a, v, 2, 100000));
    else if (a == "--seed")
      o.seed = static_cast<std::uint64_t>(parse_int(a, v, 0, 2147483647));
    else if (a == "--categories")
      o.categories = parse_categories(v);
    else if (a == "--out")
      o.out = v;
    else if (a == "--eval-every")
      o.eval_every = static_cast<int>(parse_int(a, v, 0, 1000000));
    else if (a == "--eval-draws")
      o.eval_draws = static_cast<int>(parse_int(a, v, 1, 1000));
    else if (a == "--train-queries")
      o.train_queries = static_cast<int>(parse_int(a, v, 2, 100000));
    else if (a == "--test-queries")
      o.test_queries = static_cast<int>(parse_int(a, v, 1, 100000));
    else if (a == "--beta")
      o.beta = parse_double(a, v);
    else if (a == "--gamma")
      o.gamma = parse_double(a, v);
    else if (a == "--lr")
      o.align_lr = static_cast<float>(parse_double(a, v));
    else if (a == "--candidates" && (v == "oracle" || v == "retrieval"))
      o.retrieval_candidates = v == "retrieval";
    else if (a == "--mle-lr")
      o.mle_lr = static_cast<float>(parse_double(a, v));
    else
      throw std::invalid_argument("unknown flag: " + a + " (see --help)");
  }
  return o;
}

void make_dirs(const std::string& path) {
  std::string prefix;
  std::stringstream in(path);
  std::string part;
  if (!path.empty() && path[0] == '/') prefix = "/";
  while (std::getline(in, part, '/')) {
    if (part.empty()) continue;
    prefix += part + "/";
    ::mkdir(prefix.c_str(), 0755);
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw std::runtime_error("cannot create output folder '" + path + "'");
}

// Keys for the seeded draws (arbitrary distinct constants).
constexpr std::uint64_t key_eval_sample = 0xE5A1, key_eval_buyer = 0xE5B2, key_train = 0x7A11,
                        key_train_buyer = 0x7B22, key_batch = 0xBA7C;

/// Everything a step needs from one forward pass of a model over a batch.
struct scored_batch {
  std::vector<sa::linear_policy::position_features> design;
  sa::linear_policy::matrix logits;  // V x (B*T) = [B, T, V]
  std::vector<double> logp;
  std::vector<std::int64_t> count;
  std::vector<float> lse;  // [B, T]
};

ktsa::cube_view<const float> logits_view(const sa::linear_policy::matrix& m, index_t b) {
  return make_view(static_cast<const float*>(m.data()), b, index_t{sa::max_len},
                   index_t{sa::vocab});
}

/// log pi(y_i | x_i) for every i, through the host kernel.
void score(const ktsa::exec::host& ex, const sa::linear_policy& model,
           const std::vector<const sa::prompt*>& prompts, const std::vector<std::vector<int>>& seqs,
           const std::vector<std::int32_t>& labels, scored_batch& out) {
  const index_t b = static_cast<index_t>(prompts.size());
  model.forward(prompts, seqs, out.design, out.logits);
  out.logp.assign(static_cast<size_t>(b), 0.0);
  out.count.assign(static_cast<size_t>(b), 0);
  out.lse.assign(static_cast<size_t>(b) * sa::max_len, 0.0f);
  ktsa::kernels::sequence_logprob_forward(
      ex, logits_view(out.logits, b), make_view(labels.data(), b, index_t{sa::max_len}),
      make_view(out.logp), make_view(out.count), make_view(out.lse.data(), b, index_t{sa::max_len}),
      ktsa::matrix_view<float>{});
}

/// Backpropagates d loss / d log pi(y_i | x_i) into a gradient step on the model.
void apply_gradient(const ktsa::exec::host& ex, sa::linear_policy& model, sa::adam& opt,
                    const std::vector<std::int32_t>& labels, const scored_batch& s,
                    const std::vector<double>& dlogp) {
  const index_t b = static_cast<index_t>(dlogp.size());
  sa::linear_policy::matrix grad_logits(sa::vocab, b * sa::max_len), grad_w, grad_u;
  ktsa::kernels::sequence_logprob_backward(
      ex, logits_view(s.logits, b), make_view(labels.data(), b, index_t{sa::max_len}),
      make_view(s.lse.data(), b, index_t{sa::max_len}), make_view(s.count), make_view(dlogp),
      make_view(grad_logits.data(), b, index_t{sa::max_len}, index_t{sa::vocab}));
  model.backward(s.design, grad_logits, grad_w, grad_u);
  opt.step(model, grad_w, grad_u);
}

class experiment {
 public:
  explicit experiment(const options& o)
      : o_(o), market_(market_config(o)), buyer_(buyer_params(o)) {
    row_of_category_.assign(sim::num_categories, -1);
    for (size_t r = 0; r < market_.categories().size(); ++r)
      row_of_category_[static_cast<size_t>(market_.categories()[r])] = static_cast<int>(r);
    if (o.retrieval_candidates) sim::use_retrieved_candidates(market_);
    for (const auto* qs : {&market_.train_queries(), &market_.test_queries()})
      for (const sim::query& q : *qs) prompts_.push_back(sa::make_prompt(q, market_.product_of(q)));
  }

  const sim::market& market() const { return market_; }
  const sa::prompt& prompt_of(const sim::query& q) const {
    return prompts_[static_cast<size_t>(q.id)];
  }

  /// One description per held-out query and draw, the buyer's action for each.
  /// Sampling and buyer noise depend only on (seed, query, draw): every arm
  /// gets the same random numbers, a paired comparison.
  std::vector<ktsa::metrics::impression> evaluate(int arm, const sa::linear_policy* model,
                                                  int draws) const {
    std::vector<ktsa::metrics::impression> out;
    for (const sim::query& q : market_.test_queries()) {
      const sim::product& p = market_.product_of(q);
      for (int d = 0; d < draws; ++d) {
        std::vector<int> text = p.seller_description;
        if (model != nullptr) {
          sim::rng gen(sim::hash_keys(o_.seed, key_eval_sample, static_cast<std::uint64_t>(q.id),
                                      static_cast<std::uint64_t>(d)));
          text = model->sample(prompt_of(q), gen);
        }
        const sim::action a =
            buyer_.respond(q, p, text,
                           sim::hash_keys(o_.seed, key_eval_buyer, static_cast<std::uint64_t>(q.id),
                                          static_cast<std::uint64_t>(d)));
        out.push_back({row_of_category_[static_cast<size_t>(q.category)], arm, a});
      }
    }
    return out;
  }

  double held_out_cvr(int arm, const sa::linear_policy* model) const {
    const auto imps = evaluate(arm, model, 1);
    double buys = 0;
    for (const auto& i : imps) buys += i.act == ktsa::metrics::action::purchase;
    return imps.empty() ? 0 : buys / static_cast<double>(imps.size());
  }

  /// A batch of training queries for a step.
  std::vector<const sim::query*> batch(int arm, int step) const {
    sim::rng gen(sim::hash_keys(o_.seed, key_batch, static_cast<std::uint64_t>(arm),
                                static_cast<std::uint64_t>(step)));
    std::vector<const sim::query*> qs;
    const auto& train = market_.train_queries();
    for (int i = 0; i < o_.batch; ++i)
      qs.push_back(&train[static_cast<size_t>(gen.below(static_cast<int>(train.size())))]);
    return qs;
  }

  /// Chart and log cadence of a phase of `steps` steps.
  int every(int steps) const { return o_.eval_every > 0 ? o_.eval_every : std::max(1, steps / 10); }

  /// Supervised fine-tuning on the seller's descriptions (the MLE arm).
  sa::linear_policy train_mle(std::vector<std::vector<double>>& curve) const {
    const ktsa::exec::host ex{1};
    sa::linear_policy model;
    sa::adam opt(model, o_.mle_lr);
    scored_batch s;
    double win_nll = 0;
    int win_steps = 0;
    for (int step = 0; step <= o_.mle_steps; ++step) {
      if (step % every(o_.mle_steps) == 0 || step == o_.mle_steps) {
        curve.push_back({static_cast<double>(step), held_out_cvr(arm_mle, &model)});
        if (step > 0)
          std::printf("[MLE ] step %4d/%d  nll %.4f  held-out CVR %.3f\n", step, o_.mle_steps,
                      win_nll / std::max(1, win_steps), curve.back()[1]);
        win_nll = 0;
        win_steps = 0;
      }
      if (step == o_.mle_steps) break;
      const auto qs = batch(arm_mle, step);
      std::vector<const sa::prompt*> prompts;
      std::vector<std::vector<int>> seqs;
      for (const sim::query* q : qs) {
        prompts.push_back(&prompt_of(*q));
        seqs.push_back(market_.product_of(*q).seller_description);
      }
      const auto labels = sa::make_labels(seqs);
      score(ex, model, prompts, seqs, labels, s);
      double nll = 0;
      for (double lp : s.logp) nll -= lp / static_cast<double>(qs.size());
      // Loss = mean negative log-likelihood: d loss / d log pi = -1 / B.
      apply_gradient(ex, model, opt, labels, s,
                     std::vector<double>(qs.size(), -1.0 / static_cast<double>(qs.size())));
      win_nll += nll;
      ++win_steps;
    }
    return model;
  }

  /// KTO or KTSA from the MLE model; the reference is its frozen copy.
  sa::linear_policy align(int arm, const sa::linear_policy& init,
                          std::vector<std::vector<double>>& curve) const {
    const ktsa::exec::host ex{1};
    const bool is_ktsa = arm == arm_ktsa;
    const char* name = arm_names[arm];
    sa::linear_policy model = init;
    const sa::linear_policy& reference = init;
    sa::adam opt(model, o_.align_lr);
    ktsa::loss::config cfg;
    cfg.beta = o_.beta;
    cfg.gamma = o_.gamma;
    cfg.kind = is_ktsa ? ktsa::loss::variant::ktsa : ktsa::loss::variant::kto;

    scored_batch pol, ref, kl_pol, kl_ref, key;
    double win_loss = 0, win_z0 = 0, win_chosen = 0, win_rejected = 0, win_keykl = 0;
    long win_steps = 0, win_buys = 0, win_shown = 0, win_nchosen = 0, win_nrejected = 0;
    for (int step = 0; step <= o_.steps; ++step) {
      if (step % every(o_.steps) == 0 || step == o_.steps) {
        curve.push_back({static_cast<double>(step), held_out_cvr(arm, &model)});
        if (step > 0) {
          const double ws = static_cast<double>(std::max(1L, win_steps));
          std::printf("[%-4s] step %4d/%d  loss %.4f  kl %.4f", name, step, o_.steps, win_loss / ws,
                      win_z0 / ws);
          if (is_ktsa) std::printf(" (key-feature KL %.4f)", win_keykl / ws);
          std::printf(
              "  rewards/chosen %+.4f  rewards/rejected %+.4f  running CVR %.3f  held-out CVR "
              "%.3f\n",
              win_nchosen ? win_chosen / static_cast<double>(win_nchosen) : 0.0,
              win_nrejected ? win_rejected / static_cast<double>(win_nrejected) : 0.0,
              static_cast<double>(win_buys) / static_cast<double>(std::max(1L, win_shown)),
              curve.back()[1]);
          std::fflush(stdout);
          win_loss = win_z0 = win_chosen = win_rejected = win_keykl = 0;
          win_steps = win_buys = win_shown = win_nchosen = win_nrejected = 0;
        }
      }
      if (step == o_.steps) break;
      // 1. Sample descriptions from the current policy and show them to the buyer.
      const auto qs = batch(arm, step);
      sim::rng gen(sim::hash_keys(o_.seed, key_train, static_cast<std::uint64_t>(arm),
                                  static_cast<std::uint64_t>(step)));
      std::vector<const sa::prompt*> prompts;
      std::vector<const sim::query*> kept;
      std::vector<std::vector<int>> seqs;
      std::vector<unsigned char> desirable;
      for (size_t i = 0; i < qs.size(); ++i) {
        const sim::query& q = *qs[i];
        std::vector<int> text = model.sample(prompt_of(q), gen);
        const sim::action a =
            buyer_.respond(q, market_.product_of(q), text,
                           sim::hash_keys(o_.seed, key_train_buyer, static_cast<std::uint64_t>(arm),
                                          static_cast<std::uint64_t>(step), i));
        ++win_shown;
        win_buys += a == sim::action::purchase;
        // 2. Purchase -> desirable, abandon -> undesirable; add-to-cart is an
        // ambiguous signal (interest without commitment) and is left out.
        if (a == sim::action::add_to_cart) continue;
        prompts.push_back(&prompt_of(q));
        kept.push_back(&q);
        seqs.push_back(std::move(text));
        desirable.push_back(a == sim::action::purchase ? 1 : 0);
      }
      const index_t n = static_cast<index_t>(seqs.size());
      if (n < 2) continue;  // no mismatched pair to form; nothing to learn from
      const auto labels = sa::make_labels(seqs);
      // 3. Sequence log-probs of policy and reference (host kernel).
      score(ex, model, prompts, seqs, labels, pol);
      score(ex, reference, prompts, seqs, labels, ref);

      std::vector<double> dlogp(static_cast<size_t>(n), 0.0);
      ktsa::loss::loss_result res;
      if (!is_ktsa) {
        // 4a. KTO: z0 from mismatched pairs (prompt i, completion i+1).
        const auto pair = ktsa::loss::mismatched_pair_indices(n);
        std::vector<std::vector<int>> kl_seqs;
        for (index_t i = 0; i < n; ++i)
          kl_seqs.push_back(seqs[static_cast<size_t>(pair[static_cast<size_t>(i)])]);
        const auto kl_labels = sa::make_labels(kl_seqs);
        score(ex, model, prompts, kl_seqs, kl_labels, kl_pol);
        score(ex, reference, prompts, kl_seqs, kl_labels, kl_ref);
        const double z0 =
            ktsa::loss::batch_kl_reference_point(make_view(kl_pol.logp), make_view(kl_ref.logp));
        res =
            ktsa::loss::kto_loss(ex, make_view(pol.logp), make_view(ref.logp), make_view(desirable),
                                 z0, cfg, ktsa::vector_view<double>{}, make_view(dlogp));
        win_z0 += z0;
      } else {
        // 4b. KTSA: each example's own reference point, Eq. 2:
        //   z0_i = max(R_avg_i, (1/6) sum_k KL(pi(.|x_i) || pi(.|x_i,k)))
        // with the exact token KL over the description, x_i,k = x_i plus key feature k.
        std::vector<double> key_kls(static_cast<size_t>(n) * sim::num_key_features);
        std::vector<sa::prompt> extended(static_cast<size_t>(n));
        std::vector<const sa::prompt*> extended_ptr(static_cast<size_t>(n));
        std::vector<double> kl(static_cast<size_t>(n));
        for (int k = 0; k < sim::num_key_features; ++k) {
          for (index_t i = 0; i < n; ++i) {
            extended[static_cast<size_t>(i)] =
                sa::with_key_feature(*prompts[static_cast<size_t>(i)],
                                     market_.product_of(*kept[static_cast<size_t>(i)]), k);
            extended_ptr[static_cast<size_t>(i)] = &extended[static_cast<size_t>(i)];
          }
          model.forward(extended_ptr, seqs, key.design, key.logits);
          ktsa::kernels::token_kl_forward(
              ex, logits_view(pol.logits, n), logits_view(key.logits, n),
              make_view(labels.data(), n, index_t{sa::max_len}), make_view(kl),
              ktsa::matrix_view<float>{}, ktsa::matrix_view<float>{}, ktsa::matrix_view<float>{});
          for (index_t i = 0; i < n; ++i)
            key_kls[static_cast<size_t>(i * sim::num_key_features + k)] =
                kl[static_cast<size_t>(i)];
        }
        // Each product has its own reference point: one z0 per example.
        std::vector<double> z0s(static_cast<size_t>(n));
        for (index_t i = 0; i < n; ++i) {
          z0s[static_cast<size_t>(i)] =
              ktsa::loss::ktsa_reference_point(prompts[static_cast<size_t>(i)]->rating,
                                               make_view(key_kls.data() + i * sim::num_key_features,
                                                         index_t{sim::num_key_features}));
          for (int k = 0; k < sim::num_key_features; ++k)
            win_keykl += key_kls[static_cast<size_t>(i * sim::num_key_features + k)] /
                         static_cast<double>(n * sim::num_key_features);
        }
        res = ktsa::loss::kto_loss(ex, make_view(pol.logp), make_view(ref.logp),
                                   make_view(desirable), make_view(z0s), cfg,
                                   ktsa::vector_view<double>{}, make_view(dlogp));
        win_z0 += res.metrics.kl;
      }
      // 5. Backpropagate through the log-prob kernel into the policy.
      apply_gradient(ex, model, opt, labels, pol, dlogp);

      ++win_steps;
      win_loss += res.loss;
      win_chosen += res.metrics.chosen_reward_sum;
      win_rejected += res.metrics.rejected_reward_sum;
      win_nchosen += res.metrics.chosen_count;
      win_nrejected += res.metrics.rejected_count;
    }
    return model;
  }

 private:
  static sim::market_config market_config(const options& o) {
    sim::market_config c;
    c.seed = o.seed;
    c.categories = o.categories;
    c.products_per_category = o.products_per_category;
    c.train_queries_per_category = o.train_queries;
    c.test_queries_per_category = o.test_queries;
    return c;
  }
  static sim::buyer_params buyer_params(const options& o) {
    sim::buyer_params b;
    b.seed = sim::hash_key(o.seed, 0xB0B);
    return b;
  }

  options o_;
  sim::market market_;
  sim::prospect_buyer buyer_;
  std::vector<sa::prompt> prompts_;   // by query id
  std::vector<int> row_of_category_;  // category id -> report row
};

/// The CVR-over-training chart: a data file, a gnuplot script, and the PNG
/// when gnuplot is installed. Returns the PNG's path or "" when skipped.
std::string write_chart(const options& o, double base_cvr,
                        const std::vector<std::vector<double>>& mle,
                        const std::vector<std::vector<double>>& kto,
                        const std::vector<std::vector<double>>& ktsa_curve) {
  const std::string dat = o.out + "/cvr_over_training.dat", gp = o.out + "/cvr_over_training.gp",
                    png = o.out + "/cvr_over_training.png";
  {
    std::ofstream f(dat);
    f << "# held-out CVR (one description per query); MLE steps first, then KTO/KTSA from the MLE "
         "model\n";
    f << "# step Base MLE KTO KTSA\n";
    for (const auto& p : mle) f << p[0] << ' ' << base_cvr << ' ' << p[1] << " ? ?\n";
    for (size_t i = 0; i < kto.size(); ++i)
      f << o.mle_steps + kto[i][0] << ' ' << base_cvr << " ? " << kto[i][1] << ' '
        << (i < ktsa_curve.size() ? ktsa_curve[i][1] : 0) << '\n';
  }
  {
    std::ofstream f(gp);
    f << "set terminal pngcairo size 900,540\n"
      << "set output '" << png << "'\n"
      << "set datafile missing '?'\n"
      << "set title 'Held-out conversion rate over training (seed " << o.seed << ")'\n"
      << "set xlabel 'training step (MLE, then KTO / KTSA from the MLE model)'\n"
      << "set ylabel 'CVR'\nset grid\nset key bottom right\n"
      << "set arrow from " << o.mle_steps << ", graph 0 to " << o.mle_steps
      << ", graph 1 nohead dashtype 2\n"
      << "plot '" << dat << "' using 1:2 with lines lw 2 title 'Base', "
      << "'' using 1:3 with linespoints lw 2 title 'MLE', "
      << "'' using 1:4 with linespoints lw 2 title 'KTO', "
      << "'' using 1:5 with linespoints lw 2 title 'KTSA'\n";
  }
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::printf(
        "gnuplot not found: chart skipped (data in %s; install gnuplot-nox and run gnuplot %s)\n",
        dat.c_str(), gp.c_str());
    return "";
  }
  if (std::system(("gnuplot '" + gp + "'").c_str()) != 0) {
    std::printf("gnuplot failed: chart skipped (data in %s)\n", dat.c_str());
    return "";
  }
  return png;
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  make_dirs(o.out);
  const experiment ex(o);
  std::printf(
      "ktsa %s self-alignment: seed %llu, %zu categories, %zu train / %zu held-out queries, "
      "%d MLE + %d KTO/KTSA steps of %d\n",
      KTSA_VERSION_STRING, static_cast<unsigned long long>(o.seed), ex.market().categories().size(),
      ex.market().train_queries().size(), ex.market().test_queries().size(), o.mle_steps, o.steps,
      o.batch);

  const double base_cvr = ex.held_out_cvr(arm_base, nullptr);
  std::vector<std::vector<double>> mle_curve, kto_curve, ktsa_curve;
  const sa::linear_policy mle = ex.train_mle(mle_curve);
  const sa::linear_policy kto = ex.align(arm_kto, mle, kto_curve);
  const sa::linear_policy ktsa_model = ex.align(arm_ktsa, mle, ktsa_curve);

  // Table 3: every arm on the same held-out queries and buyer draws.
  std::vector<ktsa::metrics::impression> imps;
  const sa::linear_policy* models[num_arms] = {nullptr, &mle, &kto, &ktsa_model};
  for (int arm = 0; arm < num_arms; ++arm) {
    const auto part = ex.evaluate(arm, models[arm], o.eval_draws);
    imps.insert(imps.end(), part.begin(), part.end());
  }
  ktsa::metrics::report_options ro;
  // Report rows: the selected categories, in the order given.
  for (int c : ex.market().categories()) ro.category_names.push_back(sim::category(c).name);
  ro.arm_names.assign(arm_names, arm_names + num_arms);
  ro.base_arm = arm_base;
  ro.method = ktsa::metrics::interval_method::wilson;
  const auto report = ktsa::metrics::build_conversion_report(imps, ro);
  const std::string md = ktsa::metrics::to_markdown(report);
  std::ofstream(o.out + "/cvr_table.md") << md;
  std::ofstream(o.out + "/cvr_table.csv") << ktsa::metrics::to_csv(report);

  // A few descriptions side by side, to see what each arm learned.
  std::ofstream samples(o.out + "/samples.txt");
  for (size_t i = 0; i < ex.market().test_queries().size() && i < 40; i += 5) {
    const sim::query& q = ex.market().test_queries()[i];
    const sim::product& p = ex.market().product_of(q);
    samples << q.text << "  [" << p.title << ", " << p.rating << " stars; praised:";
    for (int a : p.top_features)
      samples << ' ' << sim::category(p.category).attributes[a].claim << ';';
    samples << " concerns:";
    for (int a : p.top_concerns)
      samples << ' ' << sim::category(p.category).attributes[a].claim << ';';
    samples << "]\n";
    for (int arm = 0; arm < num_arms; ++arm) {
      std::vector<int> text = p.seller_description;
      if (models[arm] != nullptr) {
        sim::rng gen(sim::hash_keys(o.seed, key_eval_sample, static_cast<std::uint64_t>(q.id), 0));
        text = models[arm]->sample(ex.prompt_of(q), gen);
      }
      samples << "  " << arm_names[arm] << ": " << sim::vocabulary::text(text) << '\n';
    }
  }

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "\nHeld-out conversion rate per category (%d descriptions per query, Wilson 95%% "
      "intervals):\n\n%s\n",
      o.eval_draws, md.c_str());
  const std::string png = write_chart(o, base_cvr, mle_curve, kto_curve, ktsa_curve);
  std::printf("table: %s/cvr_table.csv  samples: %s/samples.txt\n", o.out.c_str(), o.out.c_str());
  if (!png.empty()) std::printf("chart: %s\n", png.c_str());
  std::printf("done in %.1f s\n", seconds);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ktsa_self_alignment: %s\n", e.what());
  return 2;
}
