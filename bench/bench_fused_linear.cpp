// Fused linear head benchmarks (part of ktsa_bench_host): the fused KTO step,
// its three GEMMs alone on the same chunks with the same provider and threads
// (the ceiling), and the materialised path (full N x V logits, the existing
// kernels, GEMMs back), all in one run. Each reports peak_extra_bytes: the
// scratch a path needs beyond its inputs and outputs (workspace or the full
// logits) plus the peak of what operator new handed out during an iteration
// (counted by the replacement below; the BLAS libraries' own packing buffers
// are not seen).
//
//   ktsa_bench_host --benchmark_filter=fused_linear --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <ktsa/kernels/fused_kto.hpp>
#include <ktsa/kernels/gemm/eigen.hpp>
#include <ktsa/kernels/gemm/onednn.hpp>
#include <ktsa/kernels/gemm/openblas.hpp>
#include <ktsa/kernels/logprob.hpp>
#include <ktsa/loss/kto.hpp>

// ------------------------------------------------------------ counting allocator
namespace {
std::atomic<std::int64_t> g_live{0}, g_peak{0};
void* counted_alloc(std::size_t n, std::size_t align) {
  // A header of `align` bytes (>= 16) keeps the size and the alignment.
  const std::size_t head = align < 16 ? 16 : align;
  void* raw = nullptr;
  if (posix_memalign(&raw, head, n + head) != 0) throw std::bad_alloc();
  auto* p = static_cast<unsigned char*>(raw) + head;
  reinterpret_cast<std::size_t*>(p)[-1] = n;
  reinterpret_cast<std::size_t*>(p)[-2] = head;
  const std::int64_t live =
      g_live.fetch_add(static_cast<std::int64_t>(n)) + static_cast<std::int64_t>(n);
  std::int64_t peak = g_peak.load();
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  return p;
}
void counted_free(void* p) noexcept {
  if (p == nullptr) return;
  auto* q = static_cast<unsigned char*>(p);
  const std::size_t n = reinterpret_cast<std::size_t*>(q)[-1],
                    head = reinterpret_cast<std::size_t*>(q)[-2];
  g_live.fetch_sub(static_cast<std::int64_t>(n));
  std::free(q - head);
}
}  // namespace

void* operator new(std::size_t n) {
  return counted_alloc(n, 16);
}
void* operator new[](std::size_t n) {
  return counted_alloc(n, 16);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n, 16);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n, 16);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept {
  counted_free(p);
}
void operator delete[](void* p) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  counted_free(p);
}

namespace {

using ktsa::index_t;
namespace kn = ktsa::kernels;
using kn::gemm::gemm_op;

/// Bytes operator new handed out at the peak of `fn` beyond what was live before it.
template <class F>
std::int64_t heap_peak_of(F&& fn) {
  const std::int64_t before = g_live.load();
  g_peak.store(before);
  fn();
  return g_peak.load() - before;
}

struct head_inputs {
  index_t B, T, H, V;
  std::vector<float> hidden, w, gh, gw;
  std::vector<std::int64_t> labels;
  std::vector<double> ref;
  std::vector<std::uint8_t> desirable;
  head_inputs(index_t b, index_t t, index_t h, index_t v) : B(b), T(t), H(h), V(v) {
    std::mt19937_64 rng(11);
    std::normal_distribution<float> n(0.0f, 1.0f);
    hidden.resize(static_cast<size_t>(B * T * H));
    for (auto& x : hidden) x = n(rng);
    w.resize(static_cast<size_t>(V * H));
    for (auto& x : w) x = n(rng) * 2.0f / std::sqrt(static_cast<float>(H));
    labels.resize(static_cast<size_t>(B * T));
    for (auto& y : labels) y = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(V));
    gh.resize(hidden.size());
    gw.resize(w.size());
    ref.assign(static_cast<size_t>(B), -11.0 * static_cast<double>(T));
    desirable.resize(static_cast<size_t>(B));
    for (index_t b = 0; b < B; ++b) desirable[static_cast<size_t>(b)] = b % 2 == 0;
  }
  auto hv() const { return ktsa::make_view(hidden.data(), B, T, H); }
  auto wv() const { return ktsa::make_view(w.data(), V, H); }
  auto lv() const { return ktsa::make_view(labels.data(), B, T); }
  double step_flops() const { return 3.0 * 2.0 * static_cast<double>(B * T) * V * H; }
};

head_inputs& inputs_for(index_t B, index_t T, index_t H, index_t V) {
  static head_inputs in(B, T, H, V);
  return in;
}

void finish(benchmark::State& state, const head_inputs& in, std::int64_t extra) {
  state.counters["peak_extra_bytes"] = static_cast<double>(extra);
  state.counters["GFLOPs"] =
      benchmark::Counter(in.step_flops() * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["threads"] = ktsa::exec::host{}.resolved_threads();
}

template <class Gemm>
void bm_step(benchmark::State& state, head_inputs& in, std::size_t chunk_bytes, const Gemm& gemm,
             bool allow_one_pass = true) {
  kn::fused_linear_options o;
  if (chunk_bytes) o.chunk_bytes = chunk_bytes;
  if (!allow_one_pass) o.one_pass_bytes = 0;
  const kn::fused_linear_shape s{in.B, in.T, in.H, in.V};
  std::vector<unsigned char> ws(kn::fused_kto_step_workspace_bytes(s, o) + 64);
  kn::kto_step_inputs<const double, const std::uint8_t> step{
      ktsa::make_view(std::as_const(in.ref)), ktsa::make_view(std::as_const(in.desirable)), 0.0};
  kn::fused_linear_grads<float, float> g{ktsa::make_view(in.gh.data(), in.B, in.T, in.H),
                                         ktsa::make_view(in.gw.data(), in.V, in.H)};
  std::int64_t heap = 0;
  bool one_pass = false;
  for (auto _ : state) {
    heap = std::max(heap, heap_peak_of([&] {
                      const auto r =
                          kn::fused_kto_step(ktsa::exec::host{}, in.hv(), in.wv(), {}, in.lv(),
                                             step, g, {}, o, {ws.data(), ws.size()}, gemm);
                      one_pass = r.one_pass;
                      benchmark::DoNotOptimize(r.loss.loss);
                    }));
  }
  state.counters["one_pass"] = one_pass;
  finish(state, in, static_cast<std::int64_t>(ws.size()) + heap);
}

/// The step's three GEMMs alone: same chunks, buffers, provider and threads.
template <class Gemm>
void bm_gemm_only(benchmark::State& state, head_inputs& in, index_t rows, const Gemm& gemm) {
  const index_t N = in.B * in.T, H = in.H, V = in.V;
  std::vector<float> logits(static_cast<size_t>(rows * V)), gx(static_cast<size_t>(rows * H));
  for (auto _ : state) {
    for (index_t r0 = 0; r0 < N; r0 += rows) {
      const index_t n = std::min(rows, N - r0);
      const float* x = in.hidden.data() + r0 * H;
      gemm(gemm_op::none, gemm_op::trans, n, V, H, 1.0f, x, H, in.w.data(), H, 0.0f, logits.data(),
           V);
      gemm(gemm_op::none, gemm_op::none, n, H, V, 1.0f, logits.data(), V, in.w.data(), H, 0.0f,
           gx.data(), H);
      gemm(gemm_op::trans, gemm_op::none, V, H, n, 1.0f, logits.data(), V, x, H,
           r0 == 0 ? 0.0f : 1.0f, in.gw.data(), H);
    }
    benchmark::DoNotOptimize(in.gw.data());
  }
  finish(state, in, static_cast<std::int64_t>((logits.size() + gx.size()) * sizeof(float)));
}

/// Full logits, the existing forward, kto_loss, the existing backward in place, GEMMs back.
template <class Gemm>
void bm_materialised(benchmark::State& state, head_inputs& in, const Gemm& gemm) {
  const index_t B = in.B, T = in.T, N = B * T, H = in.H, V = in.V;
  std::vector<float> logits(static_cast<size_t>(N * V)), lse(static_cast<size_t>(N));
  std::vector<double> policy(static_cast<size_t>(B)), grad(policy.size());
  std::vector<std::int64_t> count(static_cast<size_t>(B));
  std::int64_t heap = 0;
  for (auto _ : state) {
    heap = std::max(
        heap, heap_peak_of([&] {
          gemm(gemm_op::none, gemm_op::trans, N, V, H, 1.0f, in.hidden.data(), H, in.w.data(), H,
               0.0f, logits.data(), V);
          const auto x = ktsa::make_view(logits.data(), B, T, V);
          kn::sequence_logprob_forward(ktsa::exec::host{}, ktsa::cube_view<const float>(x), in.lv(),
                                       ktsa::make_view(policy), ktsa::make_view(count),
                                       ktsa::make_view(lse.data(), B, T));
          const auto r = ktsa::loss::kto_loss(
              ktsa::exec::host{}, ktsa::make_view(std::as_const(policy)),
              ktsa::make_view(std::as_const(in.ref)), ktsa::make_view(std::as_const(in.desirable)),
              0.0, ktsa::loss::config{}, ktsa::vector_view<double>{}, ktsa::make_view(grad));
          benchmark::DoNotOptimize(r.loss);
          kn::sequence_logprob_backward(ktsa::exec::host{}, ktsa::cube_view<const float>(x),
                                        in.lv(), ktsa::make_view(std::as_const(lse).data(), B, T),
                                        ktsa::make_view(std::as_const(count)),
                                        ktsa::make_view(std::as_const(grad)), x);
          gemm(gemm_op::none, gemm_op::none, N, H, V, 1.0f, logits.data(), V, in.w.data(), H, 0.0f,
               in.gh.data(), H);
          gemm(gemm_op::trans, gemm_op::none, V, H, N, 1.0f, logits.data(), V, in.hidden.data(), H,
               0.0f, in.gw.data(), H);
        }));
  }
  finish(state, in, static_cast<std::int64_t>((logits.size() + lse.size()) * sizeof(float)) + heap);
}

/// One chunk's three GEMMs per provider (the measurement behind the default).
template <class Gemm>
void bm_provider(benchmark::State& state, index_t rows, index_t H, index_t V, const Gemm& gemm) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * H)), w(static_cast<size_t>(V * H)),
      l(static_cast<size_t>(rows * V)), gx(x.size()), gw(w.size());
  for (auto& v : x) v = n(rng);
  for (auto& v : w) v = n(rng);
  for (auto _ : state) {
    gemm(gemm_op::none, gemm_op::trans, rows, V, H, 1.0f, x.data(), H, w.data(), H, 0.0f, l.data(),
         V);
    gemm(gemm_op::none, gemm_op::none, rows, H, V, 1.0f, l.data(), V, w.data(), H, 0.0f, gx.data(),
         H);
    gemm(gemm_op::trans, gemm_op::none, V, H, rows, 1.0f, l.data(), V, x.data(), H, 1.0f, gw.data(),
         H);
    benchmark::DoNotOptimize(gw.data());
  }
  state.counters["GFLOPs"] = benchmark::Counter(6.0 * rows * V * H * 1e-9 * state.iterations(),
                                                benchmark::Counter::kIsRate);
}

struct registrar {
  registrar() {
    constexpr index_t B = 8, T = 256, H = 512, V = 32000;
    const std::string tail = "/f32/8x256x512x32000";
    auto reg = [](const std::string& name, auto fn) {
      benchmark::RegisterBenchmark(name.c_str(), fn)->Unit(benchmark::kMillisecond)->UseRealTime();
    };
    const kn::gemm::default_provider gemm{};
    // The step's chunk rows (grown to whole sequences for the one-pass path).
    const index_t rows = kn::detail::step_chunk_rows({B, T, H, V}, kn::fused_linear_options{});
    const index_t base_rows =
        kn::detail::fused_chunk_rows({B, T, H, V}, kn::fused_linear_options{});
    reg("host/fused_linear_step" + tail,
        [=](benchmark::State& s) { bm_step(s, inputs_for(B, T, H, V), 0, gemm); });
    reg("host/fused_linear_gemm_only" + tail,
        [=](benchmark::State& s) { bm_gemm_only(s, inputs_for(B, T, H, V), rows, gemm); });
    reg("host/fused_linear_materialised" + tail,
        [=](benchmark::State& s) { bm_materialised(s, inputs_for(B, T, H, V), gemm); });
    // The two-pass path at the default 16 MiB chunks (one_pass_bytes = 0) and its GEMMs.
    reg("host/fused_linear_step_two_pass" + tail,
        [=](benchmark::State& s) { bm_step(s, inputs_for(B, T, H, V), 0, gemm, false); });
    reg("host/fused_linear_gemm_only_base_chunks" + tail,
        [=](benchmark::State& s) { bm_gemm_only(s, inputs_for(B, T, H, V), base_rows, gemm); });
    const std::string ptail = "/f32/" + std::to_string(rows) + "x512x32000";
    reg("host/fused_linear_gemm_provider/onednn" + ptail,
        [=](benchmark::State& s) { bm_provider(s, rows, H, V, kn::gemm::onednn{}); });
    reg("host/fused_linear_gemm_provider/openblas" + ptail,
        [=](benchmark::State& s) { bm_provider(s, rows, H, V, kn::gemm::openblas{}); });
    reg("host/fused_linear_gemm_provider/eigen" + ptail,
        [=](benchmark::State& s) { bm_provider(s, rows, H, V, kn::gemm::eigen{}); });
  }
};
const registrar register_fused_linear;

}  // namespace
