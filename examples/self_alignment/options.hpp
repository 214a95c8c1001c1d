// Command-line options of the self-alignment example.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <ktsa/sim/catalogue.hpp>

namespace self_alignment {

struct options {
  /// "paper": buyer calibrated to Table 3's Base CVRs, arms trained against a
  /// learned Oracle, 200,000 held-out impressions per arm and category.
  /// "classic": the uncalibrated high-CVR market (about a third of impressions
  /// convert), arms trained against the buyer itself; a teaching setting.
  std::string market = "paper";
  std::string feedback;  ///< "oracle" or "buyer"; empty: oracle (paper), buyer (classic)
  /// "oracle": the market's pick (best of three by true fit); "retrieval": top-1
  /// hybrid CBF + CF candidate (sim/retrieval.hpp).
  std::string candidates = "oracle";
  int class_weights = -1;  ///< loss::balanced_weights on (1) or off (0); -1: on for paper
  int steps = 2500;        ///< KTO / KTSA steps
  int mle_steps = 300;     ///< supervised steps on the seller's descriptions
  int batch = 128;
  std::uint64_t seed = 1;
  std::vector<int> categories;  ///< empty: all eight
  std::string out = "out/self_alignment";
  int eval_every = 0;  ///< chart point every this many steps (0: ten per phase)
  int eval_draws = 4;  ///< descriptions per held-out query in the final table
  float mle_lr = 0.05f;
  float align_lr = 0.01f;
  double beta = 0.1;
  /// Weight of r in KTSA's value (Eq. 4). The paper's 1 drowns the KTO signal
  /// in this model; see docs/self_alignment.md for the sweep.
  double gamma = 0.01;
  int products_per_category = 60;
  int train_queries = -1;    ///< per category; -1: 50000 (paper), 300 (classic)
  int test_queries = -1;     ///< per category; -1: 50000 (paper), 150 (classic)
  int chart_queries = 4000;  ///< held-out queries behind each chart point
  int threads = 2;           ///< evaluation threads (KTO and KTSA train side by side)
  bool timing = true;        ///< print wall times (off for comparing outputs)
};

inline void print_help() {
  std::printf(
      "ktsa_self_alignment: the KTSA paper's self-alignment loop on a simulated market.\n"
      "Logs a prospect-theoretic buyer's actions, fits a learned Oracle on them (Tables 1-2),\n"
      "trains a description generator with MLE, KTO and KTSA against the Oracle and prints\n"
      "conversion rates per category on held-out queries under the buyer and the Oracle "
      "(Table 3).\n\n"
      "  --market M        paper (default: Base CVR calibrated to the paper's Table 3) or\n"
      "                    classic (the uncalibrated high-CVR market, a teaching setting)\n"
      "  --feedback F      oracle (the learned Oracle, default on paper) or buyer (the\n"
      "                    simulated buyer itself, default on classic)\n"
      "  --class-weights B 1: KTO/KTSA use loss::balanced_weights of the logged class counts\n"
      "                    (default on paper), 0: lambda_D = lambda_U = 1 (default on classic)\n"
      "  --steps N         KTO/KTSA training steps (default 2500)\n"
      "  --mle-steps N     supervised steps on the seller's descriptions (default 300)\n"
      "  --batch N         descriptions per step (default 128)\n"
      "  --seed N          seed of market, buyer, sampling (default 1)\n"
      "  --categories L    comma-separated names or indices 0-7 (default all):\n"
      "                    ");
  for (int c = 0; c < ktsa::sim::num_categories; ++c)
    std::printf("%d %s%s", c, ktsa::sim::category(c).name,
                c + 1 < ktsa::sim::num_categories ? ", " : "\n");
  std::printf(
      "  --out DIR         output folder (default out/self_alignment)\n"
      "  --eval-every N    chart point every N steps (default: ten points per phase)\n"
      "  --eval-draws N    descriptions per held-out query in the table (default 4)\n"
      "  --train-queries N / --test-queries N   per category (default 50000 / 50000 on paper,\n"
      "                    300 / 150 on classic)\n"
      "  --chart-queries N held-out queries behind each chart point (default 4000)\n"
      "  --candidates C    oracle (default: best of three by true fit) or retrieval (top-1\n"
      "                    hybrid CBF + CF score, sim/retrieval.hpp, docs/retrieval.md)\n"
      "  --threads N       evaluation threads (default 2)\n"
      "  --timing B        1: print wall times (default), 0: omit them (comparable output)\n"
      "  --beta X          KTO temperature (default 0.1); --gamma X  KTSA's weight of r (default "
      "0.01)\n"
      "  --lr X            Adam learning rate of KTO/KTSA (default 0.01); --mle-lr X  of MLE "
      "(0.05)\n"
      "  --help            this text\n");
}

inline long parse_int(const std::string& flag, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < lo || x > hi)
    throw std::invalid_argument(flag + " expects an integer in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "], got '" + v + "'");
  return x;
}

inline double parse_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x))
    throw std::invalid_argument(flag + " expects a number, got '" + v + "'");
  return x;
}

inline std::vector<int> parse_categories(const std::string& list) {
  std::vector<int> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.size() == 1 && item[0] >= '0' && item[0] <= '7')
      out.push_back(item[0] - '0');
    else
      out.push_back(ktsa::sim::category_index(item));
  }
  if (out.empty()) throw std::invalid_argument("--categories expects at least one category");
  return out;
}

inline options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument("unknown flag or missing value: " + a);
    const std::string v = argv[++i];
    if (a == "--market") {
      if (v != "paper" && v != "classic")
        throw std::invalid_argument("--market expects paper or classic, got '" + v + "'");
      o.market = v;
    } else if (a == "--feedback") {
      if (v != "oracle" && v != "buyer")
        throw std::invalid_argument("--feedback expects oracle or buyer, got '" + v + "'");
      o.feedback = v;
    } else if (a == "--candidates") {
      if (v != "oracle" && v != "retrieval")
        throw std::invalid_argument("--candidates expects oracle or retrieval, got '" + v + "'");
      o.candidates = v;
    } else if (a == "--class-weights")
      o.class_weights = static_cast<int>(parse_int(a, v, 0, 1));
    else if (a == "--steps")
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
      o.train_queries = static_cast<int>(parse_int(a, v, 2, 1000000));
    else if (a == "--test-queries")
      o.test_queries = static_cast<int>(parse_int(a, v, 1, 1000000));
    else if (a == "--chart-queries")
      o.chart_queries = static_cast<int>(parse_int(a, v, 1, 1000000));
    else if (a == "--threads")
      o.threads = static_cast<int>(parse_int(a, v, 1, 256));
    else if (a == "--timing")
      o.timing = parse_int(a, v, 0, 1) == 1;
    else if (a == "--beta")
      o.beta = parse_double(a, v);
    else if (a == "--gamma")
      o.gamma = parse_double(a, v);
    else if (a == "--lr")
      o.align_lr = static_cast<float>(parse_double(a, v));
    else if (a == "--mle-lr")
      o.mle_lr = static_cast<float>(parse_double(a, v));
    else
      throw std::invalid_argument("unknown flag: " + a + " (see --help)");
  }
  const bool paper = o.market == "paper";
  if (o.feedback.empty()) o.feedback = paper ? "oracle" : "buyer";
  if (o.class_weights < 0) o.class_weights = paper ? 1 : 0;
  if (o.train_queries < 0) o.train_queries = paper ? 50000 : 300;
  if (o.test_queries < 0) o.test_queries = paper ? 50000 : 150;
  return o;
}

}  // namespace self_alignment
