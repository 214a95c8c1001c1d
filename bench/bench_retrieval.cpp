// Retrieval latency, recall and index cost at 100K / 1M / 10M items, d = 64.
//
//   ktsa_bench_retrieval [--sizes=100000,1000000,10000000] [--hnsw-max=1000000]
//                        [--threads=2] [google benchmark flags]
//
// Engines per size: ktsa exact_topk (blocked GEMM + heap, no index), FAISS
// IndexFlatIP (the exact peer), FAISS IndexHNSWFlat (M 32, efConstruction 40,
// efSearch 64; only up to --hnsw-max items, its build is the slow part on
// small machines) and FAISS IndexIVFFlat (nlist 256 below 1M items, else
// 1024; nprobe 16; k-means on 64 nlist points). The ceiling: one read of the
// N x d items with the same threads (batch-1 exact search cannot beat it).
//
// Data: unit vectors around 1024 random unit centres (per-coordinate noise
// 0.1), hashed so that item i is the same at every size; 64 queries drawn the
// same way with other keys. Counters: us_per_query (batch 1 and batch 64),
// cpu_ms_per_query (CPU time of all the process's threads, spinning
// included: less sensitive than wall time to other load on the machine),
// recall_at_10 (against ktsa exact, over the 64 queries), build_s and
// index_MB (once per index, also on the search rows).
#include <benchmark/benchmark.h>

#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ktsa/core/parallel.hpp"
#include "ktsa/retrieval/faiss.hpp"
#include "ktsa/retrieval/text_encoder.hpp"
#include "ktsa/retrieval/topk.hpp"

using ktsa::index_t;
namespace rt = ktsa::retrieval;

namespace {

constexpr index_t dim = 64, num_queries = 64, top = 10, centres = 1024;
int threads = 2;
index_t hnsw_max = 1000000;

/// Unit vector `key` of the clustered distribution (stream 1 items, 2 queries).
void draw(std::uint64_t stream, index_t key, float* out) {
  const std::uint64_t c = rt::detail::mix64(stream * 0x9E37ull + static_cast<std::uint64_t>(key)) %
                          static_cast<std::uint64_t>(centres);
  double ss = 0;
  for (index_t j = 0; j < dim; ++j) {
    const double centre =
        rt::detail::hashed_normal(99, c, static_cast<std::uint64_t>(j)) / std::sqrt(double(dim));
    const double noise = 0.1 * rt::detail::hashed_normal(stream, static_cast<std::uint64_t>(key),
                                                         static_cast<std::uint64_t>(j));
    out[j] = static_cast<float>(centre + noise);
    ss += double(out[j]) * out[j];
  }
  for (index_t j = 0; j < dim; ++j) out[j] = static_cast<float>(out[j] / std::sqrt(ss));
}

struct dataset {
  index_t n = 0;
  std::vector<float> items, queries;
  std::vector<index_t> truth;  // exact top-10 ids of the queries
  std::map<int, std::unique_ptr<rt::faiss_index>> indexes;
  std::map<int, double> build_s;
};

enum engine { ktsa_exact = 0, faiss_flat = 1, faiss_hnsw = 2, faiss_ivf = 3 };
const char* const engine_names[] = {"ktsa_exact", "faiss_flat", "faiss_hnsw", "faiss_ivf"};

std::unique_ptr<dataset> current;

dataset& data(index_t n) {
  if (current && current->n == n) return *current;
  current.reset();  // free the previous size first
  auto d = std::make_unique<dataset>();
  d->n = n;
  d->items.resize(static_cast<size_t>(n * dim));
  d->queries.resize(static_cast<size_t>(num_queries * dim));
  ktsa::detail::parallel_chunks(ktsa::exec::host{threads}, n, 4096, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) draw(1, i, d->items.data() + i * dim);
  });
  for (index_t q = 0; q < num_queries; ++q) draw(2, q, d->queries.data() + q * dim);
  d->truth.resize(static_cast<size_t>(num_queries * top));
  std::vector<float> s(d->truth.size());
  rt::exact_topk(ktsa::exec::host{threads}, ktsa::make_view(d->queries.data(), num_queries, dim),
                 ktsa::make_view(d->items.data(), n, dim), top,
                 ktsa::make_view(d->truth.data(), num_queries, top),
                 ktsa::make_view(s.data(), num_queries, top));
  current = std::move(d);
  return *current;
}

rt::faiss_index* index_of(dataset& d, int e) {
  if (e == ktsa_exact) return nullptr;
  auto it = d.indexes.find(e);
  if (it != d.indexes.end()) return it->second.get();
  d.indexes.clear();  // one index in memory at a time (10M items: 2.6 GB each)
  rt::faiss_options o;
  o.threads = threads;
  o.kind = e == faiss_flat
               ? rt::faiss_kind::flat_ip
               : (e == faiss_hnsw ? rt::faiss_kind::hnsw_flat : rt::faiss_kind::ivf_flat);
  o.nlist = d.n < 1000000 ? 256 : 1024;
  const auto t0 = std::chrono::steady_clock::now();
  auto idx = std::make_unique<rt::faiss_index>(ktsa::make_view(d.items.data(), d.n, dim), o);
  d.build_s[e] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return (d.indexes[e] = std::move(idx)).get();
}

void search(dataset& d, int e, index_t q0, index_t nq, index_t* ids, float* scores) {
  const auto qv = ktsa::make_view(d.queries.data() + q0 * dim, nq, dim);
  if (e == ktsa_exact)
    rt::exact_topk(ktsa::exec::host{threads}, qv, ktsa::make_view(d.items.data(), d.n, dim), top,
                   ktsa::make_view(ids, nq, top), ktsa::make_view(scores, nq, top));
  else
    index_of(d, e)->search(qv, top, ktsa::make_view(ids, nq, top),
                           ktsa::make_view(scores, nq, top));
}

double process_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void bm_search(benchmark::State& state, index_t n, int e, index_t batch) {
  dataset& d = data(n);
  rt::faiss_index* idx = index_of(d, e);
  std::vector<index_t> ids(static_cast<size_t>(num_queries * top));
  std::vector<float> scores(ids.size());
  index_t q0 = 0;
  const double cpu0 = process_cpu_s();
  for (auto _ : state) {
    search(d, e, q0, batch, ids.data() + q0 * top, scores.data() + q0 * top);
    q0 = (q0 + batch) % num_queries;
    benchmark::ClobberMemory();
  }
  const double cpu = process_cpu_s() - cpu0;
  // Recall of this engine's top-10 on all 64 queries against the exact truth.
  search(d, e, 0, num_queries, ids.data(), scores.data());
  double found = 0;
  for (index_t q = 0; q < num_queries; ++q) {
    const std::set<index_t> t(d.truth.begin() + q * top, d.truth.begin() + (q + 1) * top);
    for (index_t j = 0; j < top; ++j) found += t.count(ids[static_cast<size_t>(q * top + j)]);
  }
  state.counters["recall_at_10"] = found / double(num_queries * top);
  state.counters["us_per_query"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch) * 1e-6,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  // CPU time of all threads (spinning included): the work, less sensitive to a loaded machine.
  state.counters["cpu_ms_per_query"] = 1e3 * cpu / static_cast<double>(state.iterations() * batch);
  state.counters["build_s"] = e == ktsa_exact ? 0.0 : d.build_s[e];
  state.counters["index_MB"] = idx ? double(idx->memory_bytes()) / 1e6 : 0.0;
}

/// Sum of len floats, vectorised (AVX-512 when the CPU has it): a plain read.
#if KTSA_KERNELS_X86
__attribute__((target("avx512f"))) float sum_avx512(const float* p, index_t len) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  index_t i = 0;
  for (; i + 64 <= len; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (; i < len; ++i) s += p[i];
  return s;
}
#endif
float sum_floats(const float* p, index_t len) {
#if KTSA_KERNELS_X86
  if (ktsa::kernels::detail::detected_simd_level() == ktsa::kernels::detail::simd_level::avx512)
    return sum_avx512(p, len);
#endif
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  index_t i = 0;
  for (; i + 4 <= len; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  for (; i < len; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

/// One read of the items with the same threads: the batch-1 ceiling.
void bm_read_ceiling(benchmark::State& state, index_t n) {
  dataset& d = data(n);
  for (auto _ : state) {
    std::vector<float> partial(static_cast<size_t>(threads), 0.f);
    ktsa::detail::parallel_chunks(
        ktsa::exec::host{threads}, threads, 1, [&](index_t t0, index_t t1) {
          for (index_t t = t0; t < t1; ++t) {
            const index_t r0 = n * t / threads, r1 = n * (t + 1) / threads;
            partial[static_cast<size_t>(t)] =
                sum_floats(d.items.data() + r0 * dim, (r1 - r0) * dim);
          }
        });
    benchmark::DoNotOptimize(partial.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * n * dim * 4);
  state.counters["us_per_query"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * 1e-6,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

std::vector<index_t> parse_sizes(const std::string& s) {
  std::vector<index_t> out;
  size_t p = 0;
  while (p < s.size()) {
    const size_t c = s.find(',', p);
    out.push_back(std::stoll(s.substr(p, c == std::string::npos ? std::string::npos : c - p)));
    p = c == std::string::npos ? s.size() : c + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<index_t> sizes{100000, 1000000, 10000000};
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--sizes=", 0) == 0)
      sizes = parse_sizes(a.substr(8));
    else if (a.rfind("--hnsw-max=", 0) == 0)
      hnsw_max = std::stoll(a.substr(11));
    else if (a.rfind("--threads=", 0) == 0)
      threads = std::stoi(a.substr(10));
    else
      rest.push_back(argv[i]);
  }
  for (index_t n : sizes) {
    const std::string tag = "/n:" + std::to_string(n);
    benchmark::RegisterBenchmark(("read_ceiling" + tag).c_str(),
                                 [n](benchmark::State& s) { bm_read_ceiling(s, n); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    for (int e = 0; e < 4; ++e) {
      if (e == faiss_hnsw && n > hnsw_max) continue;
      for (index_t batch : {index_t{1}, index_t{64}})
        benchmark::RegisterBenchmark(
            (std::string(engine_names[e]) + tag + "/batch:" + std::to_string(batch)).c_str(),
            [n, e, batch](benchmark::State& s) { bm_search(s, n, e, batch); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
  }
  int rargc = static_cast<int>(rest.size());
  benchmark::Initialize(&rargc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rargc, rest.data())) return 1;
  std::printf("ktsa_bench_retrieval: d = %lld, %d threads, GEMM provider %s\n",
              static_cast<long long>(dim), threads, rt::detail::gemm_provider());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
