// CUDA fused linear head benchmarks (part of ktsa_bench_cuda; not yet run: no
// GPU was lent when they were written). The issue's H100/H200 shape, bf16:
//   cuda/fused_linear_step/bf16/32x512x3584x152064       fused_kto_step (two passes)
//   cuda/fused_linear_gemm_only/bf16/32x512x3584x152064  its GEMMs alone, same chunks
// peak_extra_bytes = the step's workspace (chunks + the fp32 grad_W accumulator:
// grad_W is written in bf16). Manual time from CUDA events.
//   ./build/release/bench/ktsa_bench_cuda --benchmark_filter=fused_linear
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ktsa/cuda.cuh"
#include "ktsa/cuda/fused_linear.cuh"

namespace {

using namespace ktsa;
namespace kn = ktsa::kernels;

#define FL_CUDA(expr)                                                    \
  do {                                                                   \
    if ((expr) != cudaSuccess) {                                         \
      std::fprintf(stderr, "CUDA error at %s:%d\n", __FILE__, __LINE__); \
      std::abort();                                                      \
    }                                                                    \
  } while (0)

__global__ void fl_fill(bf16* x, std::size_t n, float scale, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint64_t h = (i + seed) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 31;
    const float u = static_cast<float>(h & 0xffffff) / 16777216.0f;
    x[i] = ::ktsa::cuda::detail::st<bf16>(scale * (2.0f * u - 1.0f));
  }
}

struct fl_state {
  index_t B = 32, T = 512, H = 3584, V = 152064;
  bf16 *h = nullptr, *w = nullptr, *gh = nullptr, *gw = nullptr;
  std::int64_t* y = nullptr;
  double *ref = nullptr, *per = nullptr;
  std::uint8_t* des = nullptr;
  loss::device_loss_result* res = nullptr;
  void* ws = nullptr;
  std::size_t ws_bytes = 0;
  cublasHandle_t handle = nullptr;
  fl_state() {
    const std::size_t nh = static_cast<std::size_t>(B * T * H),
                      nw = static_cast<std::size_t>(V * H);
    FL_CUDA(cudaMalloc(&h, nh * sizeof(bf16)));
    FL_CUDA(cudaMalloc(&gh, nh * sizeof(bf16)));
    FL_CUDA(cudaMalloc(&w, nw * sizeof(bf16)));
    FL_CUDA(cudaMalloc(&gw, nw * sizeof(bf16)));
    fl_fill<<<1024, 256>>>(h, nh, 1.0f, 1);
    fl_fill<<<1024, 256>>>(w, nw, 0.03f, 2);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(B * T));
    for (index_t i = 0; i < B * T; ++i)  // the first 128 tokens of each sequence are prompt
      labels[static_cast<std::size_t>(i)] = i % T < 128 ? -100 : (i * 2654435761ll) % V;
    FL_CUDA(cudaMalloc(&y, labels.size() * sizeof(std::int64_t)));
    FL_CUDA(
        cudaMemcpy(y, labels.data(), labels.size() * sizeof(std::int64_t), cudaMemcpyHostToDevice));
    std::vector<double> r(static_cast<std::size_t>(B), -900.0);
    std::vector<std::uint8_t> d(static_cast<std::size_t>(B));
    for (index_t b = 0; b < B; ++b) d[static_cast<std::size_t>(b)] = b % 2 == 0;
    FL_CUDA(cudaMalloc(&ref, r.size() * sizeof(double)));
    FL_CUDA(cudaMalloc(&per, r.size() * sizeof(double)));
    FL_CUDA(cudaMemcpy(ref, r.data(), r.size() * sizeof(double), cudaMemcpyHostToDevice));
    FL_CUDA(cudaMalloc(&des, d.size()));
    FL_CUDA(cudaMemcpy(des, d.data(), d.size(), cudaMemcpyHostToDevice));
    FL_CUDA(cudaMalloc(&res, sizeof(loss::device_loss_result)));
    const kn::fused_linear_shape s{B, T, H, V, false, false};
    ws_bytes = kn::fused_kto_step_workspace_bytes<bf16>(exec::cuda{}, s, {});
    FL_CUDA(cudaMalloc(&ws, ws_bytes));
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) std::abort();
  }
  static fl_state& get() {
    static fl_state s;
    return s;
  }
};

template <class F>
void timed(benchmark::State& state, F&& body) {
  cudaEvent_t a, b;
  FL_CUDA(cudaEventCreate(&a));
  FL_CUDA(cudaEventCreate(&b));
  for (auto _ : state) {
    FL_CUDA(cudaEventRecord(a));
    body();
    FL_CUDA(cudaEventRecord(b));
    FL_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    FL_CUDA(cudaEventElapsedTime(&ms, a, b));
    state.SetIterationTime(ms * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
}

void bm_step(benchmark::State& state) {
  auto& s = fl_state::get();
  const exec::cuda ex{};
  timed(state, [&] {
    kn::fused_kto_step(ex, s.handle, cube_view<const bf16>(s.h, {s.B, s.T, s.H}),
                       matrix_view<const bf16>(s.w, {s.V, s.H}), vector_view<const float>{},
                       matrix_view<const std::int64_t>(s.y, {s.B, s.T}),
                       vector_view<const double>(s.ref, {s.B}),
                       vector_view<const std::uint8_t>(s.des, {s.B}), 0.0, loss::config{},
                       kn::fused_linear_grads<bf16, bf16>{cube_view<bf16>(s.gh, {s.B, s.T, s.H}),
                                                          matrix_view<bf16>(s.gw, {s.V, s.H})},
                       vector_view<double>(s.per, {s.B}), s.res, nullptr, {}, {s.ws, s.ws_bytes});
  });
  state.counters["peak_extra_bytes"] = static_cast<double>(s.ws_bytes);
}

/// The GEMMs of the step alone on chunks of the same rows (unmasked rows only):
/// logits twice (forward and backward), grad_hidden, grad_W.
void bm_gemm_only(benchmark::State& state) {
  auto& s = fl_state::get();
  const kn::fused_linear_shape sh{s.B, s.T, s.H, s.V};
  const index_t rows = kn::cuda_fused::chunk_rows<bf16>(sh, {}), R = s.B * (s.T - 128);
  bf16* z = static_cast<bf16*>(s.ws);
  float* gx = reinterpret_cast<float*>(z + rows * s.V);
  float* gw = gx + rows * s.H;  // fp32 accumulator
  timed(state, [&] {
    for (index_t r0 = 0; r0 < R; r0 += rows) {
      const index_t n = R - r0 < rows ? R - r0 : rows;
      for (int pass = 0; pass < 2; ++pass)
        kn::cuda_fused::gemm_rm(s.handle, false, true, n, s.V, s.H, 1.0f, s.h + r0 * s.H, s.H, s.w,
                                s.H, 0.0f, z, s.V);
      kn::cuda_fused::gemm_rm(s.handle, false, false, n, s.H, s.V, 1.0f, z, s.V, s.w, s.H, 0.0f, gx,
                              s.H);
      kn::cuda_fused::gemm_rm(s.handle, true, false, s.V, s.H, n, 1.0f, z, s.V, s.h + r0 * s.H, s.H,
                              r0 == 0 ? 0.0f : 1.0f, gw, s.H);
    }
  });
}

struct fl_registrar {
  fl_registrar() {
    benchmark::RegisterBenchmark("cuda/fused_linear_step/bf16/32x512x3584x152064", bm_step)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("cuda/fused_linear_gemm_only/bf16/32x512x3584x152064",
                                 bm_gemm_only)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
};
const fl_registrar register_cuda_fused_linear;

}  // namespace
