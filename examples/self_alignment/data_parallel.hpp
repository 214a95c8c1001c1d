// The ranks of a data-parallel run of the self-alignment example
// (ktsa_self_alignment_mpi, docs/distributed.md). Every rank builds the same
// market, Oracle and batches (all seeded) and samples the same descriptions;
// each scores only its slice [begin(n), end(n)) of a batch (the policy,
// reference, KL-pair and key-feature forwards and the log-prob / KL kernels)
// and of the held-out queries. The slices' per-example results are gathered
// in rank order through ktsa::dist::all_gather (exact: one contributor per
// slot), so every rank then holds the whole batch's vectors, bitwise those of
// one process, and runs the rest (loss, z0, the model's backward over the
// gathered d loss / d logits, Adam) with the single-process code: the same
// summation order, so the same bits and the same printed tables.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <vector>

#include <ktsa/core/view.hpp>

namespace self_alignment {

struct ranks {
  int rank = 0, size = 1;
  /// Every rank's n doubles concatenated in rank order; unused with one rank.
  std::function<std::vector<double>(const double*, std::size_t)> all_gather;

  bool single() const { return size == 1; }
  /// This rank's slice of n items.
  ktsa::index_t begin(ktsa::index_t n) const { return n * rank / size; }
  ktsa::index_t end(ktsa::index_t n) const { return n * (rank + 1) / size; }

  /// The whole [n, width] array from this rank's rows [begin(n), end(n))
  /// (every rank passes its own; slices may differ in length by one).
  template <class T>
  std::vector<T> gather(const T* slice, ktsa::index_t n, ktsa::index_t width) const {
    const auto w = static_cast<std::size_t>(width);
    if (single()) return std::vector<T>(slice, slice + static_cast<std::size_t>(n) * w);
    const auto most = static_cast<std::size_t>((n + size - 1) / size);  // longest slice
    std::vector<double> local(most * w, 0.0);
    std::copy(slice, slice + static_cast<std::size_t>(end(n) - begin(n)) * w, local.begin());
    const std::vector<double> all = all_gather(local.data(), local.size());
    std::vector<T> out(static_cast<std::size_t>(n) * w);
    for (int r = 0; r < size; ++r) {
      const auto b = static_cast<std::size_t>(n * r / size),
                 e = static_cast<std::size_t>(n * (r + 1) / size);
      for (std::size_t i = 0; i < (e - b) * w; ++i)
        out[b * w + i] = static_cast<T>(all[static_cast<std::size_t>(r) * most * w + i]);
    }
    return out;
  }
  template <class T>
  std::vector<T> gather(const std::vector<T>& slice, ktsa::index_t n,
                        ktsa::index_t width = 1) const {
    return gather(slice.data(), n, width);
  }
};

}  // namespace self_alignment
