// libFuzzer harness: the ktsa-eval readers (TREC qrels / run files and the
// actions CSV), driven through the tool's own commands as it stands (issue 16).
//
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//     tests/fuzz/fuzz_eval_readers.cpp -o fuzz_eval_readers && ./fuzz_eval_readers
//     tests/fuzz/corpus/eval_readers
//
// The tool's translation unit is included with its main() renamed, so the
// harness calls run_rank / run_cvr exactly as main() does. Input: one byte
// picks the command and options; the rest is the file text (for rank, split
// at the first NUL into qrels and run). Oracle: the command returns text or
// throws the tool's file / usage errors or a ktsa error; any other exception
// (std::out_of_range from a number parser, bad_alloc, ...), a crash, a leak or
// UB is a finding; the same input gives the same output twice.
#include <unistd.h>

// Everything the tool includes, first, so the rename below touches only its main().
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
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

#define main ktsa_eval_main
#include "../../tools/ktsa-eval/main.cpp"
#undef main

#include "fuzz_input.hpp"

namespace {

std::string temp_path(const char* tag) {
  return "/tmp/ktsa_fuzz_eval_" + std::to_string(::getpid()) + "_" + tag;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

/// Runs a command; returns false for an error of the tool's contract.
template <class F>
bool tool_call(F&& f, std::string& out) {
  try {
    out = f();
    return true;
  } catch (const file_error&) {
  } catch (const usage_error&) {
  } catch (const std::invalid_argument&) {
  } catch (const std::domain_error&) {
  } catch (const std::exception& e) {
    ktsa_fuzz::fail(std::string("ktsa-eval: exception outside its contract: ") + e.what());
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ktsa_fuzz::input in(data, size);
  const std::uint8_t opt = in.byte();
  const std::string text = in.rest();
  std::vector<std::string> args;
  const std::string a = temp_path("a"), b = temp_path("b");
  if (opt & 1) {
    const size_t cut = text.find('\0');
    write_file(a, text.substr(0, cut));
    write_file(b, cut == std::string::npos ? std::string() : text.substr(cut + 1));
    args = {a, b};
    if (opt & 2) args.push_back("-q");
    if (opt & 4) args.push_back("-c");
    if (opt & 8) args.insert(args.end(), {"-k", "1", "3,20"});
    if (opt & 16) args.insert(args.end(), {"-l", "2"});
    if (opt & 32) args.insert(args.end(), {"--gain", "exp"});
  } else {
    write_file(a, text);
    args = {a};
    static const char* const methods[] = {"wilson", "agresti-coull", "clopper-pearson", "jeffreys",
                                          "wald"};
    args.insert(args.end(), {"--ci", methods[(opt >> 1) % 5]});
    if (opt & 16) args.insert(args.end(), {"--format", "csv"});
    if (opt & 32) args.insert(args.end(), {"--base", "KTSA"});
    if (opt & 64) args.insert(args.end(), {"--confidence", "0.5"});
  }
  std::string out1, out2;
  const bool rank = (opt & 1) != 0;
  const bool ok1 = tool_call([&] { return rank ? run_rank(args) : run_cvr(args); }, out1);
  const bool ok2 = tool_call([&] { return rank ? run_rank(args) : run_cvr(args); }, out2);
  if (ok1 != ok2 || out1 != out2) ktsa_fuzz::fail("ktsa-eval: two runs on one input differ");
  if (ok1 && out1.empty()) ktsa_fuzz::fail("ktsa-eval: success with no output");
  std::remove(a.c_str());
  std::remove(b.c_str());
  return 0;
}
