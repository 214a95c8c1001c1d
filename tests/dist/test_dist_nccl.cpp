// The NCCL reducer (label gpu): one rank per visible GPU, each on its own
// thread, in one process (ncclCommInitAll). Exits 77 (skipped) without a
// CUDA device. Compiled in CI; not yet run on a GPU (see docs/distributed.md).
#define CATCH_CONFIG_RUNNER
#include <cuda_runtime.h>
#include <nccl.h>
#include <catch2/catch.hpp>

#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "ktsa/dist/nccl.hpp"
#include "ktsa/dist/sharded.hpp"
#include "ktsa/dist/statistics.hpp"

using namespace ktsa;

namespace {
int g_devices = 0;

/// Runs body(reducer, rank) on one thread per GPU; failures are collected and
/// checked on the main thread (Catch2's assertions are not thread-safe).
template <class Body>
std::vector<int> on_gpus(int ranks, Body body) {
  std::vector<ncclComm_t> comms(static_cast<std::size_t>(ranks));
  std::vector<int> devs(static_cast<std::size_t>(ranks));
  for (int i = 0; i < ranks; ++i) devs[static_cast<std::size_t>(i)] = i;
  if (ncclCommInitAll(comms.data(), ranks, devs.data()) != ncclSuccess) return {-1};
  std::vector<int> failures(static_cast<std::size_t>(ranks), 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < ranks; ++k)
    threads.emplace_back([&, k] {
      cudaSetDevice(k);
      cudaStream_t s;
      cudaStreamCreate(&s);
      {
        dist::nccl_reducer r(comms[static_cast<std::size_t>(k)], s);
        try {
          failures[static_cast<std::size_t>(k)] = body(r, k);
        } catch (...) {
          failures[static_cast<std::size_t>(k)] = 1000;
        }
      }
      cudaStreamDestroy(s);
    });
  for (auto& t : threads) t.join();
  for (auto c : comms) ncclCommDestroy(c);
  return failures;
}
}  // namespace

TEST_CASE("nccl_reducer: sum, max, broadcast, z0 and a sharded log-prob") {
  for (int ranks : {1, 2}) {
    if (ranks > g_devices) continue;
    const std::vector<int> f = on_gpus(ranks, [ranks](dist::nccl_reducer& r, int k) {
      int bad = 0;
      double d[2] = {0.5 * (k + 1), double(k)};
      r.all_reduce(d, 2, dist::reduce_op::sum);
      bad += d[0] != 0.25 * ranks * (ranks + 1);
      std::int64_t m = k;
      r.all_reduce(&m, 1, dist::reduce_op::max);
      bad += m != ranks - 1;
      double b = k == 0 ? 3.5 : 0.0;
      dist::broadcast(r, &b, 1, 0);
      bad += b != 3.5;
      const double z0 = dist::reference_point(r, loss::kl_partial{1.0 + k, 2});
      double sum = 0;
      for (int j = 0; j < ranks; ++j) sum += 1.0 + j;
      bad += z0 != std::max(0.0, sum / (2.0 * ranks));
      return bad;
    });
    for (int v : f) CHECK(v == 0);
  }
}

int main(int argc, char** argv) {
  if (cudaGetDeviceCount(&g_devices) != cudaSuccess || g_devices == 0) {
    std::puts("ktsa: no CUDA device: NCCL reducer test skipped (compiled only)");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
