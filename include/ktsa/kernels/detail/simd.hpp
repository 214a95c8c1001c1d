// ktsa/kernels/detail/simd.hpp: which row-kernel implementation runs.
//
// The default build has no -march flag, so the AVX2 and AVX-512 kernels are
// compiled with __attribute__((target)) and chosen at run time from the CPU's
// feature bits (__builtin_cpu_supports, which also checks that the OS saves
// the vector state); any other CPU or compiler runs the portable scalar kernels. Both give the
// same answers to within rounding; for a fixed level and input the result is
// bitwise fixed.
//
// Pinning the level: the environment variable KTSA_SIMD = scalar | avx2 |
// avx512 (read once, at the first kernel call of the process) makes every
// host kernel use that level, so runs on different machines take the same
// path. A level this CPU cannot run, or any other value, is an error
// (ktsa::invalid_argument, thrown by every kernel call), not a silent
// fallback: a pinned run must not quietly take another path.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ktsa/core/errors.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define KTSA_KERNELS_X86 1
// GCC 12's AVX-512 intrinsics self-initialise an "undefined" operand, which
// -Wmaybe-uninitialized reports at the intrinsic's own line (a GCC bug).
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <cpuid.h>
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#define KTSA_KERNELS_X86 0
#endif

namespace ktsa::kernels::detail {

enum class simd_level : int { scalar = 0, avx2 = 1, avx512 = 2 };

#if KTSA_KERNELS_X86
/// F16C from CPUID leaf 1 (some compilers' __builtin_cpu_supports lack "f16c").
inline bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & (1u << 29)) != 0;
}
#endif

inline simd_level detected_simd_level() {
#if KTSA_KERNELS_X86
  static const simd_level level = [] {
    __builtin_cpu_init();
    const bool avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    if (avx2 && __builtin_cpu_supports("avx512f")) return simd_level::avx512;
    return avx2 ? simd_level::avx2 : simd_level::scalar;
  }();
  return level;
#else
  return simd_level::scalar;
#endif
}

inline const char* simd_level_name(simd_level l) {
  return l == simd_level::scalar ? "scalar" : l == simd_level::avx2 ? "avx2" : "avx512";
}

/// The level KTSA_SIMD pins (-1: not set), or -2 with `error` set when the
/// value is unknown or above what the CPU has. Pure function of its inputs.
inline int parse_simd_pin(const char* value, simd_level have, std::string& error) {
  if (value == nullptr || *value == '\0') return -1;
  int want = -1;
  for (int l = 0; l <= 2; ++l)
    if (std::strcmp(value, simd_level_name(static_cast<simd_level>(l))) == 0) want = l;
  if (want < 0) {
    error = std::string("ktsa: environment variable KTSA_SIMD = '") + value +
            "': must be scalar, avx2 or avx512";
    return -2;
  }
  if (want > static_cast<int>(have)) {
    error = std::string("ktsa: environment variable KTSA_SIMD = '") + value +
            "': this CPU (or build) supports at most '" + simd_level_name(have) + "'";
    return -2;
  }
  return want;
}

/// KTSA_SIMD, read once per process.
inline int simd_pin() {
  static std::string error;
  static const int pin = parse_simd_pin(std::getenv("KTSA_SIMD"), detected_simd_level(), error);
  if (pin == -2) throw invalid_argument(error);
  return pin;
}

/// -1: use what the CPU has; otherwise a cap (tests run every level).
inline std::atomic<int>& simd_cap() {
  static std::atomic<int> cap{-1};
  return cap;
}

inline simd_level active_simd_level() {
  const int cap = simd_cap().load(std::memory_order_relaxed);
  const int pin = simd_pin();
  const int have = pin >= 0 ? pin : static_cast<int>(detected_simd_level());
  return static_cast<simd_level>(cap < 0 ? have : std::min(cap, have));
}

/// Caps the level for the lifetime of the object (test hook; not thread-safe
/// against kernels running concurrently with a different cap).
class scoped_simd_cap {
 public:
  explicit scoped_simd_cap(simd_level level) : previous_(simd_cap().load()) {
    simd_cap().store(static_cast<int>(level));
  }
  ~scoped_simd_cap() { simd_cap().store(previous_); }
  scoped_simd_cap(const scoped_simd_cap&) = delete;
  scoped_simd_cap& operator=(const scoped_simd_cap&) = delete;

 private:
  int previous_;
};

}  // namespace ktsa::kernels::detail

namespace ktsa::kernels {
/// The instruction set the host kernels use in this process: "scalar", "avx2"
/// or "avx512" (KTSA_SIMD when set, else the best the CPU has).
inline const char* active_simd_level_name() {
  return detail::simd_level_name(detail::active_simd_level());
}
}  // namespace ktsa::kernels
