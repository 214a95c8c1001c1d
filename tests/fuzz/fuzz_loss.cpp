// libFuzzer harness: the KTO-family losses and the reference points (loss/),
// written against the public API as it stands (issue 16).
//
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//     tests/fuzz/fuzz_loss.cpp -o fuzz_loss && ./fuzz_loss tests/fuzz/corpus/loss
//
// Oracle: only contract exceptions (std::invalid_argument / std::domain_error
// families); a NaN or +-inf log-prob is an error, never a number; for the kto
// and apo_zero_unpaired variants with finite input the per-example losses,
// the batch loss and the gradient match a long-double reference; thread
// counts give the same bits; z0 from combine_kl_partials is max(0, mean), NaN
// in means NaN (or an error) out; counts near INT64_MAX are an error, not UB.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "ktsa/loss/kto.hpp"
#include "ktsa/loss/reference_point.hpp"

// -DKTSA_FUZZ_SKIP_KNOWN keeps away from the defect classes issue 16 lists for
// loss/ (items 4, 6, 7, 10: counts near INT64_MAX, NaN partials, absurd
// configs, huge pair batches), which other branches fix, so a local run can
// look for new ones. CI builds without it: the full oracle.
#if defined(KTSA_FUZZ_SKIP_KNOWN)
constexpr bool kSkipKnown = true;
#else
constexpr bool kSkipKnown = false;
#endif

namespace {

using ktsa::index_t;
namespace ls = ktsa::loss;
using ktsa_fuzz::fail;

double draw_value_any(ktsa_fuzz::input& in);
/// Under KTSA_FUZZ_SKIP_KNOWN finite values stay within 1e15 (r = policy -
/// reference cannot overflow: the item 7 class); NaN and inf stay.
double draw_value(ktsa_fuzz::input& in) {
  const double v = draw_value_any(in);
  return kSkipKnown && std::isfinite(v) && std::fabs(v) > 1e15 ? std::copysign(1e15, v) : v;
}
double draw_value_any(ktsa_fuzz::input& in) {
  const std::uint8_t c = in.byte();
  switch (c % 24) {
    case 0:
      return std::numeric_limits<double>::quiet_NaN();
    case 1:
      return HUGE_VAL;
    case 2:
      return -HUGE_VAL;
    case 3:
      return -1e300;
    case 4:
      return 1e300;
    case 5:
      return std::numeric_limits<double>::denorm_min();
    case 6:
      return -3e38;
    case 7:
      return in.raw_double();
    default:
      return static_cast<double>(static_cast<int>(c) - 128) / 4.0;
  }
}

long double sigmoid(long double x) {
  return 1.0L / (1.0L + std::exp(-x));
}

void fuzz_kto(ktsa_fuzz::input& in) {
  const index_t n = static_cast<index_t>(in.range(0, 9));
  std::vector<double> pol(static_cast<size_t>(n)), ref(pol.size()), z0s(pol.size());
  std::vector<unsigned char> des(pol.size());
  for (index_t i = 0; i < n; ++i) {
    pol[static_cast<size_t>(i)] = draw_value(in);
    ref[static_cast<size_t>(i)] = draw_value(in);
    z0s[static_cast<size_t>(i)] = std::fabs(draw_value(in));
    des[static_cast<size_t>(i)] = in.byte() % 2;
  }
  ls::config cfg;
  const std::uint8_t k = in.byte();
  cfg.kind = static_cast<ls::variant>(k % 6);
  const auto cfg_value = [&] {
    const double v = draw_value(in);
    return kSkipKnown && std::fabs(v) > 1e3 ? 1.0 : v;
  };
  if (in.flag()) cfg.beta = cfg_value();
  if (in.flag()) cfg.desirable_weight = cfg_value();
  if (in.flag()) cfg.undesirable_weight = cfg_value();
  if (in.flag()) cfg.gamma = cfg_value();
  const double z0 = in.flag() ? draw_value(in) : 0.25;
  const bool per_example_z0 = in.flag();
  const bool use_bco = cfg.kind == ls::variant::bco && in.flag();
  const double bco_mean = static_cast<double>(static_cast<int>(in.byte()) - 128) / 8.0;
  const index_t bco_count = in.flag() && !kSkipKnown
                                ? std::numeric_limits<index_t>::max() - in.range(0, 8)
                                : in.range(0, 100);

  struct out_t {
    bool ok = false;
    std::string err;
    ls::loss_result r;
    std::vector<double> per, grad;
    double bco_after = 0;
  };
  const auto run = [&](int threads) {
    out_t o;
    o.per.assign(pol.size(), -7);
    o.grad.assign(pol.size(), -7);
    o.ok = ktsa_fuzz::contract_call(
        [&] {
          ls::bco_running_mean st(bco_mean, bco_count);
          ls::bco_running_mean* sp = use_bco ? &st : nullptr;
          if (per_example_z0)
            o.r = ls::kto_loss(ktsa::exec::host{threads}, ktsa::make_view(pol),
                               ktsa::make_view(ref), ktsa::make_view(des), ktsa::make_view(z0s),
                               cfg, ktsa::make_view(o.per), ktsa::make_view(o.grad), sp);
          else
            o.r = ls::kto_loss(ktsa::exec::host{threads}, ktsa::make_view(pol),
                               ktsa::make_view(ref), ktsa::make_view(des), z0, cfg,
                               ktsa::make_view(o.per), ktsa::make_view(o.grad), sp);
          o.bco_after = st.mean();
        },
        &o.err);
    return o;
  };
  const out_t a = run(1), b = run(3);
  if (a.ok != b.ok || a.err != b.err)
    fail("thread counts disagree on errors: " + a.err + " | " + b.err);
  if (!a.ok) return;
  if (std::memcmp(&a.r.loss, &b.r.loss, sizeof(double)) != 0 || a.per != b.per || a.grad != b.grad)
    fail("thread counts give different results");
  bool finite_in = true;
  for (index_t i = 0; i < n; ++i)
    finite_in = finite_in && std::isfinite(pol[static_cast<size_t>(i)]) &&
                std::isfinite(ref[static_cast<size_t>(i)]);
  if (!finite_in) fail("a non-finite log-prob was accepted");
  // A valid config on finite input: every output finite (issue 16 item 7:
  // absurd configs are refused, not overflowed).
  if (!std::isfinite(a.r.loss))
    fail("non-finite loss from finite input: " + ktsa_fuzz::num(a.r.loss));
  for (index_t i = 0; i < n; ++i)
    if (!std::isfinite(a.grad[static_cast<size_t>(i)]) ||
        !std::isfinite(a.per[static_cast<size_t>(i)]))
      fail("non-finite per-example loss or gradient from finite input");
  if (use_bco && !std::isfinite(a.bco_after)) fail("BCO running mean became non-finite");
  // Reference for kto and apo_zero_unpaired (one z0).
  if (per_example_z0 ||
      (cfg.kind != ls::variant::kto && cfg.kind != ls::variant::apo_zero_unpaired))
    return;
  long double sum = 0;
  for (index_t i = 0; i < n; ++i) {
    const long double r =
        static_cast<long double>(pol[static_cast<size_t>(i)]) - ref[static_cast<size_t>(i)];
    const bool d = des[static_cast<size_t>(i)] != 0;
    long double loss, dl;
    if (cfg.kind == ls::variant::kto) {
      const long double x = cfg.beta * (d ? r - z0 : z0 - r);
      const long double w = d ? cfg.desirable_weight : cfg.undesirable_weight;
      loss = w * sigmoid(-x);  // 1 - s(x) without cancellation
      dl = -w * sigmoid(x) * sigmoid(-x) * cfg.beta * (d ? 1 : -1);
    } else {
      const long double x = cfg.beta * r;
      const long double w = d ? cfg.desirable_weight : cfg.undesirable_weight;
      loss = d ? w * sigmoid(-x) : w * sigmoid(x);
      dl = (d ? -w : w) * sigmoid(x) * sigmoid(-x) * cfg.beta;
    }
    sum += loss;
    const double got = a.per[static_cast<size_t>(i)];
    if (std::fabs(got - static_cast<double>(loss)) >
        1e-12 * (1 + std::fabs(static_cast<double>(loss))))
      fail("per-example loss " + ktsa_fuzz::num(got) + " vs " +
           ktsa_fuzz::num(static_cast<double>(loss)));
    const double g = a.grad[static_cast<size_t>(i)], want = static_cast<double>(dl / n);
    if (std::fabs(g - want) > 1e-12 * std::fabs(want) + 1e-300)
      fail("gradient " + ktsa_fuzz::num(g) + " vs " + ktsa_fuzz::num(want));
  }
  if (n > 0 &&
      std::fabs(a.r.loss - static_cast<double>(sum / n)) > 1e-12 * (1 + std::fabs(a.r.loss)))
    fail("batch loss is not the mean of the per-example losses");
}

void fuzz_reference_points(ktsa_fuzz::input& in) {
  const int ranks = static_cast<int>(in.range(0, 5));
  std::vector<ls::kl_partial> parts(static_cast<size_t>(ranks));
  bool any_nan = false;
  for (auto& p : parts) {
    p.sum = draw_value(in);
    const std::uint8_t c = in.byte();
    p.count = c % 4 == 0 && !kSkipKnown ? std::numeric_limits<index_t>::max() - (c >> 2)
              : c % 4 == 1              ? -1
                                        : c % 7;
    if (kSkipKnown && !std::isfinite(p.sum)) p.sum = 0;
    any_nan = any_nan || std::isnan(p.sum) || std::isinf(p.sum);
  }
  const auto how = in.flag() ? ls::kl_reduction::count_weighted : ls::kl_reduction::mean_of_means;
  double z0 = 0;
  if (ktsa_fuzz::contract_call([&] { z0 = ls::combine_kl_partials(parts, how); })) {
    if (any_nan && !std::isnan(z0)) fail("a NaN/inf KL partial gave z0 = " + ktsa_fuzz::num(z0));
    if (!any_nan && !(z0 >= 0)) fail("z0 < 0 or NaN from finite partials");
    if (!any_nan && how == ls::kl_reduction::count_weighted) {
      long double s = 0, c = 0;
      for (const auto& p : parts) s += p.sum, c += static_cast<long double>(p.count);
      const double want = static_cast<double>(std::max(0.0L, s / c));
      if (std::fabs(z0 - want) > 1e-9 * (1 + std::fabs(want)))
        fail("z0 is not max(0, sum / count)");
    }
  }
  // Single-process helpers.
  const index_t n = static_cast<index_t>(in.range(0, 6));
  std::vector<double> x(static_cast<size_t>(n)), y(x.size());
  for (auto& v : x) v = draw_value(in);
  for (auto& v : y) v = draw_value(in);
  (void)ktsa_fuzz::contract_call([&] {
    const double z = ls::batch_kl_reference_point(ktsa::make_view(x), ktsa::make_view(y));
    if (!(z >= 0) || !std::isfinite(z))
      fail("batch_kl_reference_point returned " + ktsa_fuzz::num(z));
  });
  (void)ktsa_fuzz::contract_call([&] {
    const double z = ls::key_feature_kl_estimate(ktsa::make_view(x), ktsa::make_view(y));
    if (!std::isfinite(z)) fail("key_feature_kl_estimate returned " + ktsa_fuzz::num(z));
  });
  const double ravg = draw_value(in);
  (void)ktsa_fuzz::contract_call([&] {
    const double z = ls::ktsa_reference_point(ravg, ktsa::make_view(x));
    if (!(z >= ravg) || !std::isfinite(z))
      fail("ktsa_reference_point returned " + ktsa_fuzz::num(z));
  });
  // Pair indices: a caller's batch size decides the allocation.
  const std::uint8_t c = in.byte();
  const index_t bsz =
      c % 4 == 0 && !kSkipKnown ? (index_t{1} << (40 + c % 23)) : static_cast<index_t>(c % 9) - 1;
  (void)ktsa_fuzz::contract_call([&] {
    // previous (TRL's, the default): i - 1 mod B; next: i + 1 mod B.
    const bool next = (c & 0x80) != 0;
    const auto idx = next ? ls::mismatched_pair_indices(bsz, ls::pairing::next)
                          : ls::mismatched_pair_indices(bsz);
    const size_t n = idx.size();
    for (size_t i = 0; i < n; ++i)
      if (idx[i] != static_cast<index_t>(next ? (i + 1) % n : (i + n - 1) % n))
        fail("pair index wrong");
  });
  // BCO running mean: counts near INT64_MAX.
  const index_t start = in.flag() && !kSkipKnown
                            ? std::numeric_limits<index_t>::max() - in.range(0, 3)
                            : in.range(0, 5);
  const double reward = draw_value(in);
  const index_t add =
      in.flag() && !kSkipKnown ? std::numeric_limits<index_t>::max() : in.range(-2, 5);
  (void)ktsa_fuzz::contract_call([&] {
    ls::bco_running_mean m(0.5, start);
    m.update(reward, add);
    if (m.count() < 0) fail("BCO count wrapped negative");
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ktsa_fuzz::input in(data, size);
  if (in.flag())
    fuzz_kto(in);
  else
    fuzz_reference_points(in);
  return 0;
}
