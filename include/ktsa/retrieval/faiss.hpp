// ktsa/retrieval/faiss.hpp: FAISS indexes over ktsa views (Debian's
// libfaiss-dev 1.7). Only compiled when asked for: link the CMake target
// ktsa::faiss (find_package(ktsa COMPONENTS faiss)), which defines
// KTSA_WITH_FAISS and links FAISS; ktsa/ktsa.hpp does not include this file.
//
// All indexes use the inner product (on row-normalised vectors: cosine):
//   flat_ip    IndexFlatIP, exact; the same result set as exact_topk up to
//              float rounding (FAISS breaks near-ties its own way);
//   hnsw_flat  IndexHNSWFlat (M, efConstruction, efSearch), approximate;
//   ivf_flat   IndexIVFFlat over an IndexFlatIP quantizer (nlist, nprobe,
//              k-means on train_size vectors), approximate.
// Missing results (K > what the index returns) are id no_item (-1) and score
// -infinity, as exact_topk reports them. FAISS runs on its OpenMP threads
// (OMP_NUM_THREADS, or faiss_options::threads > 0 sets omp_set_num_threads).
#pragma once

#ifndef KTSA_WITH_FAISS
#error "ktsa/retrieval/faiss.hpp needs FAISS: link the CMake target ktsa::faiss"
#endif

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/retrieval/topk.hpp"

namespace ktsa::retrieval {

enum class faiss_kind { flat_ip, hnsw_flat, ivf_flat };

struct faiss_options {
  faiss_kind kind = faiss_kind::flat_ip;
  int hnsw_m = 32;
  int ef_construction = 40;
  int ef_search = 64;
  int nlist = 1024;
  int nprobe = 16;
  index_t train_size = 0;  ///< IVF k-means sample (first rows); 0 = min(N, 64 nlist)
  int threads = 0;         ///< > 0: omp_set_num_threads(threads) before build and search
};

namespace detail {
inline std::vector<float> contiguous_rows(const matrix_view<const float>& v) {
  std::vector<float> out(static_cast<size_t>(v.size()));
  for (index_t r = 0; r < v.extent(0); ++r)
    for (index_t c = 0; c < v.extent(1); ++c)
      out[static_cast<size_t>(r * v.extent(1) + c)] = v(r, c);
  return out;
}
}  // namespace detail

class faiss_index {
 public:
  /// Builds the index from items [N, d] (copied into FAISS).
  faiss_index(matrix_view<const float> items, const faiss_options& opt = {}) : opt_(opt) {
    const index_t n = items.extent(0), d = items.extent(1);
    ktsa::detail::require(d >= 1, "items.cols", d, "must be >= 1");
    ktsa::detail::require(opt.hnsw_m >= 2, "hnsw_m", opt.hnsw_m, "must be >= 2");
    ktsa::detail::require(opt.ef_construction >= 1, "ef_construction", opt.ef_construction,
                          "must be >= 1");
    ktsa::detail::require(opt.ef_search >= 1, "ef_search", opt.ef_search, "must be >= 1");
    ktsa::detail::require(opt.nlist >= 1, "nlist", opt.nlist, "must be >= 1");
    ktsa::detail::require(opt.nprobe >= 1, "nprobe", opt.nprobe, "must be >= 1");
    ktsa::detail::require(opt.train_size >= 0, "train_size", opt.train_size, "must be >= 0");
    set_threads();
    const bool packed = items.is_contiguous();
    std::vector<float> copy;
    if (!packed) copy = detail::contiguous_rows(items);
    const float* x = packed ? items.data() : copy.data();
    switch (opt.kind) {
      case faiss_kind::flat_ip:
        index_ = std::make_unique<faiss::IndexFlatIP>(static_cast<int>(d));
        break;
      case faiss_kind::hnsw_flat: {
        auto h = std::make_unique<faiss::IndexHNSWFlat>(static_cast<int>(d), opt.hnsw_m,
                                                        faiss::METRIC_INNER_PRODUCT);
        h->hnsw.efConstruction = opt.ef_construction;
        h->hnsw.efSearch = opt.ef_search;
        index_ = std::move(h);
        break;
      }
      case faiss_kind::ivf_flat: {
        ktsa::detail::require(n >= opt.nlist, "items.rows", n, "must be >= nlist to train IVF");
        quantizer_ = std::make_unique<faiss::IndexFlatIP>(static_cast<int>(d));
        auto ivf = std::make_unique<faiss::IndexIVFFlat>(quantizer_.get(), static_cast<size_t>(d),
                                                         static_cast<size_t>(opt.nlist),
                                                         faiss::METRIC_INNER_PRODUCT);
        const index_t t = opt.train_size > 0 ? std::min(opt.train_size, n)
                                             : std::min<index_t>(n, index_t{64} * opt.nlist);
        ivf->train(t, x);
        ivf->nprobe = static_cast<size_t>(opt.nprobe);
        index_ = std::move(ivf);
        break;
      }
    }
    if (n > 0) index_->add(n, x);
  }

  index_t size() const { return index_->ntotal; }
  index_t dim() const { return index_->d; }
  faiss::Index& index() { return *index_; }

  /// Bytes the index holds: vectors, plus HNSW links or IVF ids and centroids
  /// (counted from FAISS's own containers).
  std::size_t memory_bytes() const {
    const std::size_t n = static_cast<std::size_t>(index_->ntotal),
                      d = static_cast<std::size_t>(index_->d);
    switch (opt_.kind) {
      case faiss_kind::flat_ip:
        return n * d * sizeof(float);
      case faiss_kind::hnsw_flat: {
        const auto& h = static_cast<const faiss::IndexHNSWFlat&>(*index_).hnsw;
        return n * d * sizeof(float) + h.neighbors.size() * sizeof(h.neighbors[0]) +
               h.offsets.size() * sizeof(h.offsets[0]) + h.levels.size() * sizeof(h.levels[0]);
      }
      case faiss_kind::ivf_flat:
        return n * (d * sizeof(float) + sizeof(faiss::Index::idx_t)) +
               static_cast<std::size_t>(opt_.nlist) * d * sizeof(float);
    }
    return 0;
  }

  /// Top-k of each query [Q, d]: ids and scores [Q, k], best first.
  void search(matrix_view<const float> queries, index_t k, matrix_view<index_t> ids,
              matrix_view<float> scores) const {
    const index_t nq = queries.extent(0);
    ktsa::detail::require_extent(queries, 1, index_->d, "queries");
    detail::check_outputs(nq, k, ids, scores);
    if (nq == 0 || k == 0) return;
    set_threads();
    const bool packed = queries.is_contiguous();
    std::vector<float> copy;
    if (!packed) copy = detail::contiguous_rows(queries);
    std::vector<float> dist(static_cast<size_t>(nq * k));
    std::vector<faiss::Index::idx_t> lab(static_cast<size_t>(nq * k));
    index_->search(nq, packed ? queries.data() : copy.data(), k, dist.data(), lab.data());
    for (index_t q = 0; q < nq; ++q)
      for (index_t j = 0; j < k; ++j) {
        const auto l = lab[static_cast<size_t>(q * k + j)];
        ids(q, j) = l < 0 ? no_item : static_cast<index_t>(l);
        scores(q, j) =
            l < 0 ? -std::numeric_limits<float>::infinity() : dist[static_cast<size_t>(q * k + j)];
      }
  }

 private:
  void set_threads() const {
    if (opt_.threads > 0) omp_set_num_threads(opt_.threads);
  }
  faiss_options opt_;
  std::unique_ptr<faiss::IndexFlatIP> quantizer_;  // outlives the IVF index that points to it
  std::unique_ptr<faiss::Index> index_;
};

}  // namespace ktsa::retrieval
