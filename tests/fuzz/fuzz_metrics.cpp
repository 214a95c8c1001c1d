// libFuzzer harness: the metrics (metrics/), written against the public API
// as it stands (issue 16).
//
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//     tests/fuzz/fuzz_metrics.cpp -o fuzz_metrics && ./fuzz_metrics tests/fuzz/corpus/metrics
//
// Oracle: only contract exceptions; binomial intervals lie in [0, 1], are
// ordered and contain x / n (every method, counts 0 / 1 / huge up to 2^53,
// any confidence); two-sample tests give finite or documented values; the
// confusion matrix refuses impossible counts and labels it cannot allocate
// for, and its precision / recall / F1 / accuracy lie in [0, 1] (or NaN
// under zero_division::nan); ranking metrics lie in [0, 1].
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "ktsa/metrics/classification.hpp"
#include "ktsa/metrics/conversion.hpp"
#include "ktsa/metrics/interval.hpp"
#include "ktsa/metrics/ranking.hpp"

// -DKTSA_FUZZ_SKIP_KNOWN keeps away from the defect classes issue 16 lists for
// metrics/ (items 4 and 9: counts near INT64_MAX or negative, labels of 2e9,
// intervals at n beyond 2^40 or confidence 1e-12), which other branches fix, so a local run can
// look for new ones. CI builds without it: the full oracle.
#if defined(KTSA_FUZZ_SKIP_KNOWN)
constexpr bool kSkipKnown = true;
#else
constexpr bool kSkipKnown = false;
#endif

namespace {

namespace m = ktsa::metrics;
using ktsa_fuzz::fail;

std::int64_t draw_count(ktsa_fuzz::input& in) {
  const std::uint8_t c = in.byte();
  if (kSkipKnown && (c % 10 == 2 || c % 10 == 3 || c % 10 == 5 || c % 10 == 6))
    return static_cast<std::int64_t>(in.range(0, std::int64_t{1} << 40));
  switch (c % 10) {
    case 0:
      return 0;
    case 1:
      return 1;
    case 2:
      return std::int64_t{1} << 52;
    case 3:
      return (std::int64_t{1} << 53) - static_cast<std::int64_t>(in.range(0, 3));
    case 4:
      return static_cast<std::int64_t>(in.range(0, std::int64_t{1} << (kSkipKnown ? 40 : 53)));
    case 5:
      return std::numeric_limits<std::int64_t>::max() - static_cast<std::int64_t>(in.range(0, 3));
    case 6:
      return -static_cast<std::int64_t>(in.range(1, 5));
    default:
      return static_cast<std::int64_t>(in.range(0, 2000));
  }
}

double draw_confidence(ktsa_fuzz::input& in) {
  const std::uint8_t c = in.byte();
  if (kSkipKnown && c % 8 == 1) return 1e-3;  // Clopper-Pearson inverts at 1e-12 (item 9)
  switch (c % 8) {
    case 0:
      return 0.95;
    case 1:
      return 1e-12;
    case 2:
      return 1 - 1e-12;
    case 3:
      return std::numeric_limits<double>::quiet_NaN();
    case 4:
      return 1.0;
    default:
      return static_cast<double>(c) / 256.0;
  }
}

bool in01(double v) {
  return v >= 0 && v <= 1;
}

void fuzz_intervals(ktsa_fuzz::input& in) {
  const std::int64_t n = draw_count(in);
  std::int64_t x = draw_count(in);
  if (in.flag() && n > 0) x = n > 0 ? static_cast<std::int64_t>(in.range(0, n)) : x;
  const double conf = draw_confidence(in);
  const auto method = static_cast<m::interval_method>(in.byte() % 5);
  m::interval iv{0, 0};
  if (ktsa_fuzz::contract_call([&] { iv = m::binomial_interval(x, n, conf, method); })) {
    if (x < 0 || n < 0 || x > n) fail("impossible counts accepted");
    if (!in01(iv.lower) || !in01(iv.upper) || iv.lower > iv.upper)
      fail("interval [" + ktsa_fuzz::num(iv.lower) + ", " + ktsa_fuzz::num(iv.upper) +
           "] for x=" + ktsa_fuzz::num(x) + " n=" + ktsa_fuzz::num(n) + " method " +
           m::interval_method_name(method));
    // Clopper-Pearson and Wilson always contain x / n; Jeffreys shrinks to the
    // posterior median (not x / n) as the confidence goes to 0, so only from 0.5.
    const bool contains = method == m::interval_method::clopper_pearson ||
                          method == m::interval_method::wilson ||
                          (method == m::interval_method::jeffreys && conf >= 0.5);
    if (n > 0 && n <= (std::int64_t{1} << 53) && contains) {
      const double p = static_cast<double>(x) / static_cast<double>(n);
      const double slack = 1e-12;
      if (!(iv.lower <= p + slack && p - slack <= iv.upper))
        fail("interval [" + ktsa_fuzz::num(iv.lower) + ", " + ktsa_fuzz::num(iv.upper) +
             "] excludes x/n = " + ktsa_fuzz::num(p) + " (x=" + ktsa_fuzz::num(x) +
             " n=" + ktsa_fuzz::num(n) + " method " + m::interval_method_name(method) +
             ", confidence " + ktsa_fuzz::num(conf) + ")");
    }
  }
  const std::int64_t n2 = draw_count(in), x2 = in.flag() ? draw_count(in) : (n2 > 0 ? n2 / 2 : 0);
  (void)ktsa_fuzz::contract_call([&] {
    const m::z_test_result z = m::two_proportion_z_test(x, n, x2, n2);
    if (!(z.p_value >= 0 && z.p_value <= 1)) fail("z-test p-value " + ktsa_fuzz::num(z.p_value));
  });
  (void)ktsa_fuzz::contract_call([&] {
    const m::interval d = m::newcombe_interval(x, n, x2, n2, conf);
    if (!(d.lower >= -1 && d.upper <= 1 && d.lower <= d.upper))
      fail("Newcombe interval out of [-1, 1]");
  });
  (void)ktsa_fuzz::contract_call([&] { (void)m::uplift_interval(x, n, x2, n2, conf); });
  (void)ktsa_fuzz::contract_call([&] { (void)m::log_ratio_interval(x, n, x2, n2, conf); });
}

void fuzz_classification(ktsa_fuzz::input& in) {
  const size_t len = static_cast<size_t>(in.range(0, 12));
  std::vector<int> yt(len), yp(len);
  for (size_t i = 0; i < len; ++i) {
    const std::uint8_t c = in.byte();
    yt[i] = c % 16 == 0 && !kSkipKnown ? 2000000000 : c % 16 == 1 ? -1 : c % 5;
    yp[i] = static_cast<int>(in.byte() % 5);
  }
  const int k = in.flag() ? 0 : static_cast<int>(in.range(-1, 6));
  const auto zd = static_cast<m::zero_division>(in.byte() % 3);
  (void)ktsa_fuzz::contract_call([&] {
    const m::classification_scores s = m::classification_report(yt, yp, k, zd);
    for (double v : {s.accuracy, s.macro.f1, s.micro.f1, s.weighted.f1, s.macro.precision})
      if (!(in01(v) || (zd == m::zero_division::nan && std::isnan(v))))
        fail("classification score " + ktsa_fuzz::num(v));
  });
  // Counts given directly, including negative ones.
  (void)ktsa_fuzz::contract_call([&] {
    m::confusion_matrix cm(3);
    for (int i = 0; i < 4; ++i) cm.add(in.byte() % 3, in.byte() % 3, draw_count(in));
    const m::classification_scores s = m::classification_report(cm, zd);
    for (double v : {s.accuracy, s.macro.f1, s.micro.precision})
      if (!(in01(v) || std::isnan(v))) fail("score from direct counts " + ktsa_fuzz::num(v));
  });
}

void fuzz_ranking(ktsa_fuzz::input& in) {
  m::qrels q;
  m::run_results run;
  const int nq = static_cast<int>(in.range(0, 3));
  for (int i = 0; i < nq; ++i) {
    const std::string qid = "q" + ktsa_fuzz::num(i);
    const int nd = static_cast<int>(in.range(0, 6));
    for (int d = 0; d < nd; ++d) {
      const std::string doc = "d" + ktsa_fuzz::num(in.byte() % 8);
      q[qid][doc] = static_cast<int>(in.range(-1, 3));
      if (in.flag())
        run[qid].push_back({doc, static_cast<double>(static_cast<int>(in.byte()) - 128)});
    }
  }
  m::ranking_options o;
  o.cutoffs = {static_cast<int>(in.range(-1, 12))};
  o.relevance_level = static_cast<int>(in.range(0, 3));
  o.complete = in.flag();
  (void)ktsa_fuzz::contract_call([&] {
    const m::ranking_report r = m::evaluate_run(q, run, o);
    (void)m::to_trec_eval(r, true);
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ktsa_fuzz::input in(data, size);
  switch (in.byte() % 3) {
    case 0:
      fuzz_intervals(in);
      break;
    case 1:
      fuzz_classification(in);
      break;
    default:
      fuzz_ranking(in);
      break;
  }
  return 0;
}
