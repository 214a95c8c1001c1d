// ktsa/dist/check.hpp: checks that every rank agrees (same config, same batch
// shape, same labels) before the ranks combine anything.
//
// A fingerprint is a 64-bit FNV-1a hash of the values that must agree. The
// check gathers every rank's fingerprint (one int64 per rank, exact) and, when
// they differ, throws the same error on every rank naming which ranks differ:
// a clear error everywhere, never a hang, and no rank continues alone.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/dist/reducer.hpp"
#include "ktsa/loss/kto.hpp"

namespace ktsa::dist {

/// FNV-1a over the bytes of the values added (doubles by bit pattern, with
/// -0.0 folded into +0.0 so equal values hash equally).
class fingerprint {
 public:
  fingerprint& add_bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) {
      h_ ^= b[i];
      h_ *= 1099511628211ull;
    }
    return *this;
  }
  template <class T>
  fingerprint& add(T v) {
    static_assert(std::is_arithmetic_v<T> || std::is_enum_v<T>, "add numbers or enums");
    if constexpr (std::is_floating_point_v<T>) {
      const double d = static_cast<double>(v) == 0.0 ? 0.0 : static_cast<double>(v);
      return add_bytes(&d, sizeof d);
    } else {
      const std::int64_t i = static_cast<std::int64_t>(v);
      return add_bytes(&i, sizeof i);
    }
  }
  fingerprint& add(const std::string& s) { return add(s.size()).add_bytes(s.data(), s.size()); }
  std::uint64_t value() const { return h_; }

 private:
  std::uint64_t h_ = 14695981039346656037ull;
};

/// The loss configuration's fields (everything a rank's loss depends on).
/// (When loss::config gains fields, add them here.)
inline std::uint64_t config_fingerprint(const loss::config& c) {
  fingerprint f;
  f.add(c.beta).add(c.desirable_weight).add(c.undesirable_weight).add(c.gamma).add(c.kind);
  f.add(c.bco_order);
  return f.value();
}

/// Throws on every rank when `value` is not the same on every rank. `what`
/// names the value in the message, e.g. "loss config". One all-gather of one
/// int64 per rank.
template <class R>
void require_same_on_all_ranks(R& r, std::uint64_t value, const char* what) {
  KTSA_REQUIRE_REDUCER(R);
  std::int64_t mine;
  std::memcpy(&mine, &value, sizeof mine);
  const std::vector<std::int64_t> all = all_gather(r, &mine, 1);
  bool same = true;
  for (std::int64_t v : all) same = same && v == all[0];
  if (same) return;
  std::string list;
  for (std::size_t k = 0; k < all.size(); ++k) {
    std::uint64_t u;
    std::memcpy(&u, &all[k], sizeof u);
    char hex[19];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(u));
    list +=
        ktsa::detail::concat(k == 0 ? "" : ", ", "rank ", k, ": ", static_cast<const char*>(hex));
  }
  throw ktsa::invalid_argument(ktsa::detail::concat("ktsa: '", what,
                                                    "' differs between ranks (fingerprints ", list,
                                                    "): every rank must pass the same value"));
}

/// The loss config must agree on every rank.
template <class R>
void require_same_config(R& r, const loss::config& c) {
  require_same_on_all_ranks(r, config_fingerprint(c), "loss config");
}

}  // namespace ktsa::dist
