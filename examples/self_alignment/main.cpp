// The KTSA paper's system, run whole on one machine.
//
// A simulated market of (query, product) pairs and a prospect-theoretic buyer
// (ktsa::sim::prospect_buyer) whose per-category purchase thresholds are
// calibrated so that the sellers' own listings convert at the paper's Base
// CVRs (Table 3, 1.13-2.85 %). As in the paper:
//   1. the buyer's actions on logged impressions are split 80/10/10 (Table 1);
//   2. candidate Oracles are fitted on them and one is chosen on dev (Table 2);
//   3. a generator writes descriptions; the chosen Oracle's sampled action is
//      the feedback: purchases desirable, abandons undesirable, for KTO and
//      KTSA (with loss::balanced_weights, since purchases are rare);
//   4. four arms on held-out queries (Table 3), under the true buyer and under
//      the Oracle: the gap is how far the Oracle's verdict departs from the
//      buyer's (compare --feedback buyer for how much of it training learned).
//        Base  the seller's original descriptions
//        MLE   the generator trained to imitate the seller's descriptions
//        KTO   MLE + KTO, z0 from mismatched pairs
//        KTSA  MLE + KTSA: z0 = max(R_avg, mean key-feature KL) (Eq. 2), value Eq. 3-4
// --market classic is the earlier uncalibrated market (a third of impressions
// convert), trained against the buyer itself.
// Read this code as a template: replace linear_policy with your model's
// forward/backward and the Oracle with your own ktsa::sim::oracle.
#include <sys/stat.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ktsa/dist/check.hpp>
#include <ktsa/metrics/report.hpp>
#ifdef KTSA_EXAMPLE_MPI
// ktsa_self_alignment_mpi: the same run data-parallel over MPI ranks
// (data_parallel.hpp): each rank scores its slice of every batch and of the
// held-out queries; rank 0 prints; the others write under OUT/rank<r>.
#include <mpi.h>
#include <ktsa/dist/mpi.hpp>
#endif

#include "experiment.hpp"
#include "options.hpp"
#include "oracle_log.hpp"
#include "policy.hpp"

namespace sa = self_alignment;
namespace sim = ktsa::sim;

namespace {

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

using curve = std::vector<sa::curve_point>;

/// The CVR-over-training chart in both views (buyer, Oracle): a data file, a
/// gnuplot script, and the PNG when gnuplot is installed. Returns the PNG's
/// path or "" when skipped.
std::string write_chart(const sa::options& o, const sa::curve_point& base, const curve& mle,
                        const curve& kto, const curve& ktsa_curve) {
  const std::string dat = o.out + "/cvr_over_training.dat", gp = o.out + "/cvr_over_training.gp",
                    png = o.out + "/cvr_over_training.png";
  {
    std::ofstream f(dat);
    f << "# held-out CVR expected by the buyer and by the Oracle (one description per chart "
         "query); MLE steps first, then KTO/KTSA from the MLE model\n";
    f << "# step Base_buyer Base_oracle MLE_buyer MLE_oracle KTO_buyer KTO_oracle KTSA_buyer "
         "KTSA_oracle\n";
    for (const auto& p : mle)
      f << p.step << ' ' << base.buyer << ' ' << base.oracle << ' ' << p.buyer << ' ' << p.oracle
        << " ? ? ? ?\n";
    for (size_t i = 0; i < kto.size() && i < ktsa_curve.size(); ++i)
      f << o.mle_steps + kto[i].step << ' ' << base.buyer << ' ' << base.oracle << " ? ? "
        << kto[i].buyer << ' ' << kto[i].oracle << ' ' << ktsa_curve[i].buyer << ' '
        << ktsa_curve[i].oracle << '\n';
  }
  {
    std::ofstream f(gp);
    f << "set terminal pngcairo size 1000,600\n"
      << "set output '" << png << "'\n"
      << "set datafile missing '?'\n"
      << "set title 'Held-out CVR over training: true buyer (solid) and learned Oracle (dashed), "
         "seed "
      << o.seed << "'\n"
      << "set xlabel 'training step (MLE, then KTO / KTSA from the MLE model)'\n"
      << "set ylabel 'expected CVR'\nset grid\nset key outside right\n"
      << "set arrow from " << o.mle_steps << ", graph 0 to " << o.mle_steps
      << ", graph 1 nohead dashtype 3\n"
      << "plot '" << dat << "' using 1:2 with lines lw 2 lc 1 title 'Base (buyer)', "
      << "'' using 1:3 with lines lw 2 lc 1 dt 2 title 'Base (Oracle)', "
      << "'' using 1:4 with linespoints lw 2 lc 2 title 'MLE (buyer)', "
      << "'' using 1:5 with linespoints lw 2 lc 2 dt 2 title 'MLE (Oracle)', "
      << "'' using 1:6 with linespoints lw 2 lc 3 title 'KTO (buyer)', "
      << "'' using 1:7 with linespoints lw 2 lc 3 dt 2 title 'KTO (Oracle)', "
      << "'' using 1:8 with linespoints lw 2 lc 4 title 'KTSA (buyer)', "
      << "'' using 1:9 with linespoints lw 2 lc 4 dt 2 title 'KTSA (Oracle)'\n";
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

/// Table 3, Oracle view: per category and arm the buyer's CVR, the Oracle's
/// and the gap (Oracle - buyer, percentage points) on the same impressions.
void oracle_view_table(const ktsa::metrics::conversion_report& buyer,
                       const ktsa::metrics::conversion_report& oracle, std::string& md,
                       std::string& csv) {
  md = "| Category |";
  for (int a = 0; a < sa::num_arms; ++a) md += std::string(" ") + sa::arm_names[a] + " |";
  md += "\n|:---|";
  for (int a = 0; a < sa::num_arms; ++a) md += "---:|";
  md += "\n";
  csv = "category,arm,impressions,buyer_purchases,buyer_cvr,oracle_purchases,oracle_cvr,gap\n";
  const auto emit = [&](const ktsa::metrics::report_row& b, const ktsa::metrics::report_row& o,
                        const std::string& label) {
    md += "| " + label + " |";
    for (int a = 0; a < sa::num_arms; ++a) {
      const auto &cb = b.arms[static_cast<size_t>(a)], &co = o.arms[static_cast<size_t>(a)];
      md += " " + sa::fmt("%.2f", 100 * cb.cvr) + " / " + sa::fmt("%.2f", 100 * co.cvr) + " (" +
            sa::fmt("%+.2f", 100 * (co.cvr - cb.cvr)) + ") |";
      csv += "\"" + label + "\"," + sa::arm_names[a] + "," + std::to_string(cb.impressions) + "," +
             std::to_string(cb.purchases) + "," + sa::fmt("%.10g", cb.cvr) + "," +
             std::to_string(co.purchases) + "," + sa::fmt("%.10g", co.cvr) + "," +
             sa::fmt("%.10g", co.cvr - cb.cvr) + "\n";
    }
    md += "\n";
  };
  for (size_t r = 0; r < buyer.categories.size(); ++r)
    emit(buyer.categories[r], oracle.categories[r], buyer.categories[r].category);
  emit(buyer.pooled, oracle.pooled, "All (pooled)");
  md +=
      "\nCVR in percent: true buyer / learned Oracle (Oracle minus buyer, percentage points), "
      "the same descriptions shown to both.\n";
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) throw std::runtime_error("cannot write '" + path + "'");
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) try {
#ifdef KTSA_EXAMPLE_MPI
  struct mpi_session {
    mpi_session(int* argc, char*** argv) { MPI_Init(argc, argv); }
    // On an exception the handler below aborts every rank instead.
    ~mpi_session() {
      if (std::uncaught_exceptions() == 0) MPI_Finalize();
    }
  } session(&argc, &argv);
  ktsa::dist::mpi_reducer reducer(MPI_COMM_WORLD);
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      if (reducer.rank() == 0) sa::print_help();  // once, and every rank finalises
      return 0;
    }
  sa::options o = sa::parse(argc, argv);
  if (reducer.rank() > 0) {
    o.out += "/rank" + std::to_string(reducer.rank());
    if (!std::freopen("/dev/null", "w", stdout)) throw std::runtime_error("cannot mute stdout");
  }
#else
  const sa::options o = sa::parse(argc, argv);
#endif
  const auto t0 = std::chrono::steady_clock::now();
  make_dirs(o.out);
  sa::experiment ex(o);
#ifdef KTSA_EXAMPLE_MPI
  {
    sa::ranks r;
    r.rank = reducer.rank();
    r.size = reducer.size();
    r.all_gather = [&reducer](const double* local, std::size_t n) {
      return ktsa::dist::all_gather(reducer, local, n);
    };
    ex.set_ranks(std::move(r));
    std::fprintf(stderr, "ktsa_self_alignment_mpi: rank %d of %d\n", reducer.rank(),
                 reducer.size());
  }
#endif
  const bool paper = o.market == "paper";
  std::printf(
      "ktsa %s self-alignment: %s market, seed %llu, %zu categories, %zu train / %zu held-out "
      "queries, %d MLE + %d KTO/KTSA steps of %d, feedback: %s, class weights %s\n",
      KTSA_VERSION_STRING, o.market.c_str(), static_cast<unsigned long long>(o.seed),
      ex.market().categories().size(), ex.market().train_queries().size(),
      ex.market().test_queries().size(), o.mle_steps, o.steps, o.batch,
      o.feedback == "oracle" ? "learned Oracle" : "the buyer itself",
      o.class_weights ? "on" : "off");
  if (paper) {
    std::printf(
        "buyer calibrated on the training queries' listings: purchase / add-to-cart "
        "threshold per category\n");
    for (int c : ex.market().categories())
      std::printf("  %-15s %+.4f / %+.4f  (target CVR %.2f%%, add to cart %.2f%%)\n",
                  sim::category(c).name, ex.buyer().purchase_threshold(c),
                  ex.buyer().cart_threshold(c), 100 * sim::paper_base_cvr[static_cast<size_t>(c)],
                  300 * sim::paper_base_cvr[static_cast<size_t>(c)]);
  }

  // Tables 1-2: the buyer's logged actions and the learned Oracle.
  const auto shown = [&](const sim::query& q) -> const sim::product& { return ex.shown(q); };
  const sa::oracle_log log =
      sa::log_actions(ex.market().train_queries(), shown, ex.buyer(), o.seed);
  int chosen = 0;
  const auto candidates = sa::fit_oracles(log, o.seed, chosen);
  const sim::learned_oracle oracle(candidates[static_cast<size_t>(chosen)].model,
                                   sim::hash_key(o.seed, 0x0AC2));
  std::string t1_md, t1_csv, t2_md, t2_csv;
  sa::table1(log, t1_md, t1_csv);
  sa::table2(candidates, chosen, t2_md, t2_csv);
  std::printf("\nTable 1: logged buyer actions (one impression per training query)\n\n%s\n",
              t1_md.c_str());
  std::printf("Table 2: candidate Oracles\n\n%s\n", t2_md.c_str());
  std::fflush(stdout);
  write_file(o.out + "/table1_log.md", t1_md);
  write_file(o.out + "/table1_log.csv", t1_csv);
  write_file(o.out + "/table2_oracles.md", t2_md);
  write_file(o.out + "/table2_oracles.csv", t2_csv);

  ex.set_oracles(o.feedback == "oracle" ? static_cast<const sim::oracle*>(&oracle) : &ex.buyer(),
                 &oracle);
  if (o.class_weights) {
    const std::int64_t n_buy = log.counts[0][0], n_abandon = log.counts[0][2];
    if (n_buy > 0 && n_abandon > 0) {
      const auto w = ktsa::loss::balanced_weights(n_buy, n_abandon);
      ex.set_class_weights(w);
      std::printf(
          "class weights from the log's train split (%lld purchases, %lld abandons): "
          "lambda_D %.4f, lambda_U %.4f\n\n",
          static_cast<long long>(n_buy), static_cast<long long>(n_abandon), w.desirable,
          w.undesirable);
    } else {
      std::printf(
          "class weights: the log has no purchase or no abandon; lambda_D = lambda_U = 1\n\n");
    }
  }
  const auto t_setup = seconds_since(t0);

  // Training: MLE, then KTO and KTSA side by side from the MLE model (their
  // logs are printed after both finish, so the output does not depend on
  // scheduling).
  const sa::curve_point base_point = ex.chart_point(0, nullptr);
  curve mle_curve, kto_curve, ktsa_curve;
  std::string mle_log, kto_log, ktsa_log;
  const sa::linear_policy mle = ex.train_mle(mle_curve, mle_log);
  std::printf("%s", mle_log.c_str());
  std::fflush(stdout);
  sa::linear_policy kto, ktsa_model;
#ifdef KTSA_EXAMPLE_MPI
  // One after the other: both phases' collectives share one communicator.
  kto = ex.align(sa::arm_kto, mle, kto_curve, kto_log);
  ktsa_model = ex.align(sa::arm_ktsa, mle, ktsa_curve, ktsa_log);
#else
  {
    std::exception_ptr error;
    std::thread side([&] {
      try {
        ktsa_model = ex.align(sa::arm_ktsa, mle, ktsa_curve, ktsa_log);
      } catch (...) {
        error = std::current_exception();
      }
    });
    kto = ex.align(sa::arm_kto, mle, kto_curve, kto_log);
    side.join();
    if (error) std::rethrow_exception(error);
  }
#endif
  std::printf("%s%s", kto_log.c_str(), ktsa_log.c_str());
  const auto t_train = seconds_since(t0);
  {
    // The trained parameters' bits (FNV-1a): a data-parallel run must write
    // the same file as one process (examples/self_alignment/CMakeLists.txt).
    std::string bits;
    const std::pair<const char*, const sa::linear_policy*> trained[] = {
        {"MLE", &mle}, {"KTO", &kto}, {"KTSA", &ktsa_model}};
    for (const auto& [name, m] : trained) {
      ktsa::dist::fingerprint f;
      f.add_bytes(m->weights.data(), sizeof(float) * static_cast<size_t>(m->weights.size()));
      f.add_bytes(m->shared.data(), sizeof(float) * static_cast<size_t>(m->shared.size()));
      bits += sa::printf_string("%s %016llx\n", name, static_cast<unsigned long long>(f.value()));
    }
    write_file(o.out + "/model_bits.txt", bits);
  }

  // Table 3: every arm on the same held-out queries and draws, under the
  // buyer and the Oracle.
  std::vector<ktsa::metrics::impression> buyer_imps, oracle_imps;
  const sa::linear_policy* models[sa::num_arms] = {nullptr, &mle, &kto, &ktsa_model};
  const auto& test = ex.market().test_queries();
  for (int arm = 0; arm < sa::num_arms; ++arm) {
    const sa::arm_evaluation e = ex.evaluate(models[arm], o.eval_draws);
    for (size_t i = 0; i < e.buyer.size(); ++i) {
      const int row = ex.row_of(test[i / static_cast<size_t>(o.eval_draws)].category);
      buyer_imps.push_back({row, arm, e.buyer[i]});
      oracle_imps.push_back({row, arm, e.oracle[i]});
    }
  }
  ktsa::metrics::report_options ro;
  for (int c : ex.market().categories()) ro.category_names.push_back(sim::category(c).name);
  ro.arm_names.assign(sa::arm_names, sa::arm_names + sa::num_arms);
  ro.base_arm = sa::arm_base;
  ro.method = ktsa::metrics::interval_method::wilson;
  const auto report = ktsa::metrics::build_conversion_report(buyer_imps, ro);
  const auto oracle_report = ktsa::metrics::build_conversion_report(oracle_imps, ro);
  buyer_imps.clear();
  buyer_imps.shrink_to_fit();
  oracle_imps.clear();
  oracle_imps.shrink_to_fit();
  const std::string md = ktsa::metrics::to_markdown(report);
  std::string ov_md, ov_csv;
  oracle_view_table(report, oracle_report, ov_md, ov_csv);
  write_file(o.out + "/cvr_table.md", md);
  write_file(o.out + "/cvr_table.csv", ktsa::metrics::to_csv(report));
  write_file(o.out + "/cvr_table_oracle.md", ktsa::metrics::to_markdown(oracle_report));
  write_file(o.out + "/cvr_table_oracle.csv", ktsa::metrics::to_csv(oracle_report));
  write_file(o.out + "/cvr_buyer_vs_oracle.md", ov_md);
  write_file(o.out + "/cvr_buyer_vs_oracle.csv", ov_csv);

  // A few descriptions side by side, to see what each arm learned.
  std::ofstream samples(o.out + "/samples.txt");
  // Two held-out queries per category (the queries are grouped by category).
  const size_t sample_rows = std::min<size_t>(test.size(), 2 * ex.market().categories().size());
  for (size_t k = 0; k < sample_rows; ++k) {
    const sim::query& q = test[k * test.size() / sample_rows];
    const sim::product& p = ex.shown(q);
    samples << q.text << "  [" << p.title << ", " << p.rating << " stars; praised:";
    for (int a : p.top_features)
      samples << ' ' << sim::category(p.category).attributes[a].claim << ';';
    samples << " concerns:";
    for (int a : p.top_concerns)
      samples << ' ' << sim::category(p.category).attributes[a].claim << ';';
    samples << "]\n";
    for (int arm = 0; arm < sa::num_arms; ++arm)
      samples << "  " << sa::arm_names[arm] << ": "
              << sim::vocabulary::text(ex.description(models[arm], q, 0)) << '\n';
  }

  const double seconds = seconds_since(t0);
  std::printf(
      "\nTable 3: held-out conversion rate per category under the true buyer (%d descriptions "
      "per query, Wilson 95%% intervals):\n\n%s\n",
      o.eval_draws, md.c_str());
  std::printf("Table 3, Oracle view: the same impressions judged by the learned Oracle\n\n%s\n",
              ov_md.c_str());
  const std::string png = write_chart(o, base_point, mle_curve, kto_curve, ktsa_curve);
  std::printf(
      "tables: %s/{table1_log,table2_oracles,cvr_table,cvr_table_oracle,"
      "cvr_buyer_vs_oracle}.{md,csv}  samples: %s/samples.txt\n",
      o.out.c_str(), o.out.c_str());
  if (!png.empty()) std::printf("chart: %s\n", png.c_str());
  if (o.timing)
    std::printf("time: setup + Oracle %.1f s, training %.1f s, evaluation %.1f s\ndone in %.1f s\n",
                t_setup, t_train - t_setup, seconds - t_train, seconds);
  else
    std::printf("done\n");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ktsa_self_alignment: %s\n", e.what());
#ifdef KTSA_EXAMPLE_MPI
  MPI_Abort(MPI_COMM_WORLD, 2);  // the other ranks may wait in a collective
#endif
  return 2;
}
