// ktsa-eval: ranking metrics from TREC files and the conversion report from an
// actions CSV, on the command line.
//
//   ktsa-eval rank QRELS RUN [-k K ...] [-q] [-c] [-l LEVEL] [--gain linear|exp]
//   ktsa-eval cvr ACTIONS.csv [--base ARM] [--ci METHOD] [--confidence C] [--format md|csv]
//
// A bad file stops the tool with "ktsa-eval: FILE:LINE: what" on stderr and
// exit status 1 before anything is printed on stdout; bad usage exits with 2.
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "ktsa/config.hpp"
#include "ktsa/metrics/ranking.hpp"
#include "ktsa/metrics/report.hpp"

namespace {

namespace m = ktsa::metrics;

const char* const kUsage =
    "usage:\n"
    "  ktsa-eval rank QRELS RUN [-k K ...] [-q] [-c] [-l LEVEL] [--gain linear|exp]\n"
    "      QRELS lines: qid iter docid rel     RUN lines: qid Q0 docid rank score tag\n"
    "      (the rank column and fields after tag are ignored; '#' lines are comments)\n"
    "      -k K ...  cutoffs (repeat, list them after -k, or 5,10; default 5 10)\n"
    "      -q        per-query lines before the means ('all')\n"
    "      -c        judged queries missing from the run count, scoring 0\n"
    "      -l LEVEL  a document is relevant when its grade >= LEVEL (default 1)\n"
    "      --gain    nDCG gain: linear (trec_eval's, default) or exp (2^rel - 1)\n"
    "  ktsa-eval cvr ACTIONS.csv [--base ARM] [--ci METHOD] [--confidence C] [--format md|csv]\n"
    "      ACTIONS.csv: a header naming the columns category,arm,action, then one row\n"
    "      per impression; action is purchase, add_to_cart or abandon\n"
    "      --base ARM      the base arm (default: the first arm in the file)\n"
    "      --ci METHOD     wilson (default), agresti-coull, clopper-pearson, jeffreys, wald\n"
    "      --confidence C  interval level in (0, 1) (default 0.95)\n"
    "      --format        md (default) or csv\n";

// A problem with an input file: reported as FILE:LINE: what.
struct file_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A problem with the command line: reported with the usage text, exit 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_at(const std::string& file, long line, const std::string& what) {
  throw file_error(file + ":" + std::to_string(line) + ": " + what);
}

std::vector<std::string> read_lines(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw file_error(file + ": cannot open the file");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (lines.empty() && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
    lines.push_back(line);
  }
  if (in.bad()) throw file_error(file + ": read error");
  return lines;
}

std::vector<std::string> split_whitespace(const std::string& s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool parse_long(const std::string& s, long long& out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  out = std::strtoll(s.c_str(), &end, 10);
  return errno == 0 && end == s.c_str() + s.size();
}

// A finite number. strtod reports ERANGE on underflow too: a subnormal such as
// 1e-310 (or a value that rounds to 0) is a legal score, as in trec_eval;
// only overflow (HUGE_VAL) and non-finite text are refused.
bool parse_double(const std::string& s, double& out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  const bool range_ok = errno == 0 || (errno == ERANGE && std::fabs(out) <= DBL_MIN);
  return range_ok && end == s.c_str() + s.size() && std::isfinite(out);
}

// trec_eval 10.0 skips comment lines (first non-blank character '#').
bool is_comment(const std::vector<std::string>& fields) {
  return !fields.empty() && fields[0][0] == '#';
}

// ---- rank ----------------------------------------------------------------------

m::qrels read_qrels(const std::string& file) {
  const auto lines = read_lines(file);
  m::qrels q;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const long n = static_cast<long>(i + 1);
    const auto f = split_whitespace(lines[i]);
    if (f.empty() || is_comment(f)) continue;
    if (f.size() != 4)
      fail_at(file, n, "expected 4 fields (qid iter docid rel), found " + std::to_string(f.size()));
    long long rel = 0;
    if (!parse_long(f[3], rel) || rel < -1000000 || rel > 1000000)
      fail_at(file, n, "relevance '" + f[3] + "' is not an integer");
    if (!q[f[0]].emplace(f[2], static_cast<int>(rel)).second)
      fail_at(file, n, "document '" + f[2] + "' is judged twice for query '" + f[0] + "'");
  }
  if (q.empty()) throw file_error(file + ": no judgments");
  return q;
}

m::run_results read_run(const std::string& file) {
  const auto lines = read_lines(file);
  m::run_results run;
  std::map<std::string, std::set<std::string>> seen;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const long n = static_cast<long>(i + 1);
    const auto f = split_whitespace(lines[i]);
    if (f.empty() || is_comment(f)) continue;
    // As trec_eval (9.0.8 and 10.0): fields after the sixth are ignored, and so
    // is the rank column (the order comes from the scores).
    if (f.size() < 6)
      fail_at(file, n,
              "expected 6 fields (qid Q0 docid rank score tag), found " + std::to_string(f.size()));
    double score = 0;
    if (!parse_double(f[4], score)) fail_at(file, n, "score '" + f[4] + "' is not a finite number");
    if (!seen[f[0]].insert(f[2]).second)
      fail_at(file, n, "document '" + f[2] + "' is retrieved twice for query '" + f[0] + "'");
    run[f[0]].push_back({f[2], score});
  }
  if (run.empty()) throw file_error(file + ": no results");
  return run;
}

int add_cutoffs(const std::string& arg, std::vector<int>& cutoffs) {
  std::size_t start = 0;
  int added = 0;
  while (start <= arg.size()) {
    const std::size_t comma = arg.find(',', start);
    const std::string part =
        arg.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    long long k = 0;
    if (!parse_long(part, k) || k < 1 || k > 100000000) return -1;
    cutoffs.push_back(static_cast<int>(k));
    ++added;
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return added;
}

bool is_number(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789,") == std::string::npos;
}

std::string run_rank(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  m::ranking_options options;
  options.cutoffs.clear();
  bool per_query = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const auto value = [&](const char* what) -> const std::string& {
      if (i + 1 >= args.size()) throw usage_error(a + " needs " + what);
      return args[++i];
    };
    if (a == "-k") {
      if (add_cutoffs(value("a cutoff"), options.cutoffs) < 0)
        throw usage_error("-k " + args[i] + ": cutoffs must be integers >= 1");
      while (i + 1 < args.size() && is_number(args[i + 1]))
        if (add_cutoffs(args[++i], options.cutoffs) < 0)
          throw usage_error("-k " + args[i] + ": cutoffs must be integers >= 1");
    } else if (a.rfind("-k", 0) == 0 && a.size() > 2 && is_number(a.substr(2))) {
      if (add_cutoffs(a.substr(2), options.cutoffs) < 0)
        throw usage_error(a + ": cutoffs must be integers >= 1");
    } else if (a == "-q") {
      per_query = true;
    } else if (a == "-c") {
      options.complete = true;
    } else if (a == "-l") {
      long long level = 0;
      const std::string& v = value("a relevance level");
      if (!parse_long(v, level) || level < 1 || level > 1000000)
        throw usage_error("-l " + v + ": the relevance level must be an integer >= 1");
      options.relevance_level = static_cast<int>(level);
    } else if (a == "--gain") {
      const std::string& v = value("linear or exp");
      if (v == "linear")
        options.gain_kind = m::gain::linear;
      else if (v == "exp" || v == "exponential")
        options.gain_kind = m::gain::exponential;
      else
        throw usage_error("--gain " + v + ": must be linear or exp");
    } else if (!a.empty() && a[0] == '-') {
      throw usage_error("unknown option " + a);
    } else {
      files.push_back(a);
    }
  }
  if (files.size() != 2) throw usage_error("rank needs QRELS and RUN");
  if (options.cutoffs.empty()) options.cutoffs = {5, 10};
  const m::qrels judgments = read_qrels(files[0]);
  const m::run_results run = read_run(files[1]);
  const m::ranking_report report = m::evaluate_run(judgments, run, options);
  return m::to_trec_eval(report, per_query);
}

// ---- cvr -----------------------------------------------------------------------

// One CSV record on one line (RFC 4180 quoting, no line breaks inside fields).
std::vector<std::string> split_csv(const std::string& line, const std::string& file, long n) {
  std::vector<std::string> out;
  std::string field;
  bool quoted = false, was_quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"')
        field += '"', ++i;
      else if (ch == '"')
        quoted = false;
      else
        field += ch;
    } else if (ch == '"' && field.find_first_not_of(" \t") == std::string::npos && !was_quoted) {
      field.clear();
      quoted = was_quoted = true;
    } else if (ch == ',') {
      out.push_back(field);
      field.clear();
      was_quoted = false;
    } else if (was_quoted && ch != ' ' && ch != '\t') {
      fail_at(file, n, "text after a closing quote");
    } else if (!was_quoted) {
      field += ch;
    }
  }
  if (quoted) fail_at(file, n, "unterminated quote");
  out.push_back(field);
  for (auto& f : out) {  // trim surrounding blanks
    const auto b = f.find_first_not_of(" \t"), e = f.find_last_not_of(" \t");
    f = b == std::string::npos ? std::string() : f.substr(b, e - b + 1);
  }
  return out;
}

std::string run_cvr(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  std::string base, format = "md";
  m::report_options options;
  bool have_base = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const auto value = [&](const char* what) -> const std::string& {
      if (i + 1 >= args.size()) throw usage_error(a + " needs " + what);
      return args[++i];
    };
    if (a == "--base") {
      base = value("an arm name");
      have_base = true;
    } else if (a == "--ci") {
      const std::string& v = value("a method");
      try {
        options.method = m::parse_interval_method(v);
      } catch (const std::exception&) {
        throw usage_error("--ci " + v +
                          ": must be wilson, agresti-coull, clopper-pearson, jeffreys or wald");
      }
    } else if (a == "--confidence") {
      const std::string& v = value("a level");
      if (!parse_double(v, options.confidence) || options.confidence <= 0 ||
          options.confidence >= 1)
        throw usage_error("--confidence " + v + ": must be a number in (0, 1)");
    } else if (a == "--format") {
      format = value("md or csv");
      if (format != "md" && format != "csv")
        throw usage_error("--format " + format + ": must be md or csv");
    } else if (!a.empty() && a[0] == '-') {
      throw usage_error("unknown option " + a);
    } else {
      files.push_back(a);
    }
  }
  if (files.size() != 1) throw usage_error("cvr needs one ACTIONS.csv file");
  const std::string& file = files[0];
  const auto lines = read_lines(file);
  if (lines.empty() || lines[0].find_first_not_of(" \t") == std::string::npos)
    throw file_error(file + ":1: missing header (category,arm,action)");
  const auto header = split_csv(lines[0], file, 1);
  int col_category = -1, col_arm = -1, col_action = -1;
  for (std::size_t c = 0; c < header.size(); ++c) {
    int* slot = header[c] == "category" ? &col_category
                : header[c] == "arm"    ? &col_arm
                : header[c] == "action" ? &col_action
                                        : nullptr;
    if (slot == nullptr) continue;
    if (*slot >= 0) fail_at(file, 1, "column '" + header[c] + "' appears twice");
    *slot = static_cast<int>(c);
  }
  if (col_category < 0 || col_arm < 0 || col_action < 0)
    fail_at(file, 1, "the header must name the columns category, arm and action");

  // Ids in order of first appearance.
  std::map<std::string, int> category_id, arm_id;
  std::vector<m::impression> records;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const long n = static_cast<long>(i + 1);
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    const auto f = split_csv(lines[i], file, n);
    if (f.size() != header.size())
      fail_at(file, n,
              "expected " + std::to_string(header.size()) + " fields, found " +
                  std::to_string(f.size()));
    const std::string& category = f[static_cast<std::size_t>(col_category)];
    const std::string& arm = f[static_cast<std::size_t>(col_arm)];
    const std::string& act = f[static_cast<std::size_t>(col_action)];
    if (category.empty()) fail_at(file, n, "empty category");
    if (arm.empty()) fail_at(file, n, "empty arm");
    m::action parsed{};
    try {
      parsed = m::parse_action(act);
    } catch (const std::exception&) {
      fail_at(file, n, "action '" + act + "' is not purchase, add_to_cart or abandon");
    }
    const auto c = category_id.emplace(category, static_cast<int>(category_id.size())).first;
    const auto a = arm_id.emplace(arm, static_cast<int>(arm_id.size())).first;
    if (c->second == static_cast<int>(options.category_names.size()))
      options.category_names.push_back(category);
    if (a->second == static_cast<int>(options.arm_names.size())) options.arm_names.push_back(arm);
    records.push_back({c->second, a->second, parsed});
  }
  if (records.empty()) throw file_error(file + ": no data rows after the header");
  if (have_base) {
    const auto it = arm_id.find(base);
    if (it == arm_id.end()) throw usage_error("--base " + base + ": no such arm in " + file);
    options.base_arm = it->second;
  }
  const m::conversion_report report = m::build_conversion_report(records, options);
  return format == "csv" ? m::to_csv(report) : m::to_markdown(report);
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    (args.empty() ? std::cerr : std::cout) << kUsage;
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::cout << "ktsa-eval " KTSA_VERSION_STRING "\n";
    return 0;
  }
  try {
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    std::string out;
    if (args[0] == "rank")
      out = run_rank(rest);
    else if (args[0] == "cvr")
      out = run_cvr(rest);
    else
      throw usage_error("unknown command '" + args[0] + "' (rank or cvr)");
    // Only a complete result is printed.
    std::cout << out;
    std::cout.flush();
    return std::cout ? 0 : 1;
  } catch (const usage_error& e) {
    std::cerr << "ktsa-eval: " << e.what() << "\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ktsa-eval: " << e.what() << "\n";
    return 1;
  }
}
