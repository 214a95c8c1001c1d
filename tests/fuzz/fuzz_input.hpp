// A byte reader for the libFuzzer harnesses in tests/fuzz/: every draw is
// defined for any input (past the end it returns zeros), so a harness never
// reads out of bounds and every input is meaningful.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace ktsa_fuzz {

class input {
 public:
  input(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  std::uint8_t byte() { return i_ < n_ ? p_[i_++] : 0; }
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v = (v << 8) | byte();
    return v;
  }
  std::uint64_t u64() { return (static_cast<std::uint64_t>(u32()) << 32) | u32(); }
  /// An integer in [lo, hi].
  long long range(long long lo, long long hi) {
    const std::uint64_t span = static_cast<std::uint64_t>(hi - lo) + 1;
    return lo + static_cast<long long>(span == 0 ? u64() : u64() % span);
  }
  bool flag() { return (byte() & 1) != 0; }
  double raw_double() {
    const std::uint64_t b = u64();
    double d;
    std::memcpy(&d, &b, sizeof d);
    return d;
  }
  std::size_t left() const { return i_ < n_ ? n_ - i_ : 0; }
  std::string rest() {
    std::string s(reinterpret_cast<const char*>(p_ + i_), left());
    i_ = n_;
    return s;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_, i_ = 0;
};

/// A number with every digit (findings must show the exact value).
template <class T>
std::string num(T v) {
  char buf[64];
  if constexpr (std::is_floating_point_v<T>)
    std::snprintf(buf, sizeof buf, "%.17g", static_cast<double>(v));
  else
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  return buf;
}

/// A finding: the harness aborts so libFuzzer saves the input.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "ktsa fuzz finding: %s\n", what.c_str());
  std::abort();
}
#define KTSA_FUZZ_CHECK(cond, what)                                     \
  do {                                                                  \
    if (!(cond)) ::ktsa_fuzz::fail(std::string(#cond " :: ") + (what)); \
  } while (0)

/// The exception contract: ktsa errors derive from std::invalid_argument or
/// std::domain_error. Anything else escaping (std::length_error, bad_alloc,
/// a std::exception of another kind) is a finding.
template <class F>
bool contract_call(F&& f, std::string* message = nullptr) {
  try {
    f();
    return true;
  } catch (const std::invalid_argument& e) {
    if (message) *message = e.what();
  } catch (const std::domain_error& e) {
    if (message) *message = e.what();
  } catch (const std::exception& e) {
    fail(std::string("exception outside the contract: ") + e.what());
  }
  return false;
}

}  // namespace ktsa_fuzz
