// The FAISS adapter: IndexFlatIP against the exact path; HNSW and IVF find
// most of the exact top-10 on easy data; padding and errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "ktsa/retrieval/cbf.hpp"
#include "ktsa/retrieval/faiss.hpp"
#include "ktsa/retrieval/topk.hpp"

using namespace ktsa;

namespace {
std::vector<float> unit_rows(index_t n, index_t d, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> g;
  std::vector<float> x(size_t(n * d));
  for (auto& e : x) e = g(gen);
  retrieval::normalize_rows(exec::host{1}, make_view(x.data(), n, d), make_view(x.data(), n, d));
  return x;
}
}  // namespace

TEST_CASE("retrieval faiss IndexFlatIP equals exact_topk", "[retrieval][faiss]") {
  const index_t n = 3000, d = 32, nq = 20, k = 10;
  const auto x = unit_rows(n, d, 1), q = unit_rows(nq, d, 2);
  const retrieval::faiss_index index(make_view(x.data(), n, d));
  CHECK(index.size() == n);
  CHECK(index.memory_bytes() == size_t(n * d) * sizeof(float));
  std::vector<index_t> fi(size_t(nq * k)), ei(size_t(nq * k));
  std::vector<float> fs(size_t(nq * k)), es(size_t(nq * k));
  index.search(make_view(q.data(), nq, d), k, make_view(fi.data(), nq, k),
               make_view(fs.data(), nq, k));
  retrieval::exact_topk(exec::host{1}, make_view(q.data(), nq, d), make_view(x.data(), n, d), k,
                        make_view(ei.data(), nq, k), make_view(es.data(), nq, k));
  for (size_t j = 0; j < fi.size(); ++j) {
    CHECK(fs[j] == Approx(es[j]).margin(1e-5));
    if (fi[j] != ei[j]) CHECK(std::fabs(fs[j] - es[j]) < 1e-5f);  // a near-tie only
  }
  // K > N pads like exact_topk.
  const retrieval::faiss_index small(make_view(x.data(), 3, d));
  std::vector<index_t> ids(5);
  std::vector<float> s(5);
  small.search(make_view(q.data(), 1, d), 5, make_view(ids.data(), 1, 5),
               make_view(s.data(), 1, 5));
  CHECK(ids[3] == retrieval::no_item);
  CHECK(s[4] == -std::numeric_limits<float>::infinity());
  CHECK(std::set<index_t>(ids.begin(), ids.begin() + 3) == std::set<index_t>{0, 1, 2});
}

TEST_CASE("retrieval faiss HNSW and IVF recall most of the exact top-10", "[retrieval][faiss]") {
  const index_t n = 4000, d = 16, nq = 50, k = 10;
  const auto x = unit_rows(n, d, 3), q = unit_rows(nq, d, 4);
  std::vector<index_t> ei(size_t(nq * k)), ai(size_t(nq * k));
  std::vector<float> es(size_t(nq * k)), as(size_t(nq * k));
  retrieval::exact_topk(exec::host{1}, make_view(q.data(), nq, d), make_view(x.data(), n, d), k,
                        make_view(ei.data(), nq, k), make_view(es.data(), nq, k));
  for (auto kind : {retrieval::faiss_kind::hnsw_flat, retrieval::faiss_kind::ivf_flat}) {
    retrieval::faiss_options o;
    o.kind = kind;
    o.nlist = 32;
    o.nprobe = 8;
    o.ef_search = 128;
    const retrieval::faiss_index index(make_view(x.data(), n, d), o);
    CHECK(index.memory_bytes() > size_t(n * d) * sizeof(float));
    index.search(make_view(q.data(), nq, d), k, make_view(ai.data(), nq, k),
                 make_view(as.data(), nq, k));
    int found = 0;
    for (index_t a = 0; a < nq; ++a) {
      const std::set<index_t> truth(ei.begin() + a * k, ei.begin() + (a + 1) * k);
      for (index_t j = 0; j < k; ++j) found += truth.count(ai[size_t(a * k + j)]) > 0;
    }
    CHECK(found >= int(0.8 * nq * k));
  }
  retrieval::faiss_options bad;
  bad.kind = retrieval::faiss_kind::ivf_flat;
  bad.nlist = 100;
  CHECK_THROWS_WITH(retrieval::faiss_index(make_view(x.data(), 50, d), bad),
                    Catch::Contains("'items.rows' = 50"));
  const retrieval::faiss_index index(make_view(x.data(), n, d));
  std::vector<index_t> ids(10);
  std::vector<float> s(10);
  CHECK_THROWS_AS(index.search(make_view(q.data(), 1, 8), 10, make_view(ids.data(), 1, 10),
                               make_view(s.data(), 1, 10)),
                  ktsa::shape_error);
}
