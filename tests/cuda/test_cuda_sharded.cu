// GPU tests of ktsa/cuda/sharded.cuh (the vocab-sharded log-prob and token KL
// on exec::cuda): one process, the "ranks" are threads sharing the GPU, each
// with its own stream, joined by an in-process callable reducer. Checked
// against the host kernels on the full vocabulary. Not yet run on a GPU.
#include "cuda_test_support.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "ktsa/cuda.cuh"
#include "ktsa/cuda/sharded.cuh"
#include "ktsa/dist/reducer.hpp"
#include "ktsa/kernels/logprob.hpp"
#include "ktsa/kernels/token_kl.hpp"

using namespace ktsa;
using namespace ktsa_test;

namespace {

/// n threads as ranks: each collective combines the deposited arrays in rank order.
struct thread_group {
  explicit thread_group(int n) : n(n), slots(static_cast<std::size_t>(n)) {}
  template <class T>
  void all_reduce(int rank, T* data, std::size_t len, dist::reduce_op op) {
    slots[static_cast<std::size_t>(rank)] = data;
    wait();
    std::vector<T> out(static_cast<const T*>(slots[0]), static_cast<const T*>(slots[0]) + len);
    for (int k = 1; k < n; ++k)
      for (std::size_t i = 0; i < len; ++i) {
        const T v = static_cast<const T*>(slots[static_cast<std::size_t>(k)])[i];
        out[i] = op == dist::reduce_op::sum ? out[i] + v : std::max(out[i], v);
      }
    wait();
    std::copy(out.begin(), out.end(), data);
  }
  void wait() {
    std::unique_lock<std::mutex> l(m);
    const long g = gen;
    if (++count == n) {
      count = 0, ++gen;
      cv.notify_all();
    } else {
      cv.wait(l, [&] { return gen != g; });
    }
  }
  int n;
  std::vector<const void*> slots;
  std::mutex m;
  std::condition_variable cv;
  int count = 0;
  long gen = 0;
};

}  // namespace

TEST_CASE("cuda sharded log-prob and KL over two thread-ranks equal the host kernels") {
  const index_t B = 2, T = 3, V = 5003;
  const int n = 2;
  std::vector<float> x(static_cast<std::size_t>(B * T * V)), xb(x.size());
  std::mt19937_64 g(4);
  std::normal_distribution<float> d(0.0f, 3.0f);
  for (auto& v : x) v = d(g);
  for (auto& v : xb) v = d(g);
  std::vector<std::int64_t> y{0, 4000, -100, 5002, 17, 2500};
  std::vector<double> ref(B), ref_kl(B);
  std::vector<float> ref_lse(B * T), ref_grad(x.size());
  kernels::sequence_logprob_forward(exec::host{1}, make_view(x.data(), B, T, V),
                                    make_view(y.data(), B, T), make_view(ref), {},
                                    make_view(ref_lse.data(), B, T));
  std::vector<double> up{0.5, -2.0};
  kernels::sequence_logprob_backward(
      exec::host{1}, make_view(x.data(), B, T, V), make_view(y.data(), B, T),
      tensor_view<const float, 2>(make_view(ref_lse.data(), B, T)),
      tensor_view<const std::int64_t, 1>{}, make_view(up), make_view(ref_grad.data(), B, T, V));
  kernels::token_kl_forward(exec::host{1}, make_view(x.data(), B, T, V),
                            make_view(xb.data(), B, T, V), make_view(y.data(), B, T),
                            make_view(ref_kl));

  thread_group grp(n);
  std::vector<std::vector<double>> seq(n), kl(n);
  std::vector<std::vector<float>> grad(n);
  std::vector<int> failed(n, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < n; ++k)
    threads.emplace_back([&, k] {
      try {
        auto f = [&grp, k](auto* p, std::size_t len, dist::reduce_op op) {
          grp.all_reduce(k, p, len, op);
        };
        auto r = dist::make_callable_reducer(k, n, f);
        const dist::vocab_shard sh = dist::even_shard(V, k, n);
        const index_t Vl = sh.size();
        std::vector<float> xl(static_cast<std::size_t>(B * T * Vl)), bl(xl.size());
        for (index_t i = 0; i < B * T; ++i)
          for (index_t j = 0; j < Vl; ++j) {
            xl[i * Vl + j] = x[i * V + sh.begin + j];
            bl[i * Vl + j] = xb[i * V + sh.begin + j];
          }
        cudaStream_t s;
        cudaStreamCreate(&s);
        const exec::cuda ex{s};
        device_buffer<float> dx(xl.size()), db(bl.size()), dg(xl.size()), dlse(B * T);
        device_buffer<std::int64_t> dy(y.size());
        device_buffer<double> dseq(B), dkl(B), dup(B);
        dx.upload(xl), db.upload(bl), dy.upload(y), dup.upload(up);
        device_buffer<unsigned char> ws(
            dist::sharded_token_kl_forward_workspace_bytes(B, T));  // the largest of the three
        const cuda::workspace w{ws.ptr, ws.n};
        dist::sharded_sequence_logprob_forward(
            ex, r, sh, make_view<const float>(dx.ptr, B, T, Vl),
            make_view<const std::int64_t>(dy.ptr, B, T), make_view(dseq.ptr, B),
            tensor_view<std::int64_t, 1>{}, make_view(dlse.ptr, B, T), tensor_view<float, 2>{},
            kernels::logprob_options{}, w);
        dist::sharded_sequence_logprob_backward(
            ex, sh, make_view<const float>(dx.ptr, B, T, Vl),
            make_view<const std::int64_t>(dy.ptr, B, T),
            tensor_view<const float, 2>(make_view<const float>(dlse.ptr, B, T)),
            make_view<const double>(dup.ptr, B), make_view(dg.ptr, B, T, Vl),
            kernels::logprob_options{}, w);
        dist::sharded_token_kl_forward(
            ex, r, sh, make_view<const float>(dx.ptr, B, T, Vl),
            make_view<const float>(db.ptr, B, T, Vl), make_view<const std::int64_t>(dy.ptr, B, T),
            make_view(dkl.ptr, B), tensor_view<float, 2>{}, tensor_view<float, 2>{},
            tensor_view<float, 2>{}, kernels::logprob_options{}, tensor_view<float, 2>{}, w);
        seq[k] = dseq.download(), kl[k] = dkl.download(), grad[k] = dg.download();
        cudaStreamDestroy(s);
      } catch (...) {
        failed[static_cast<std::size_t>(k)] = 1;
      }
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < n; ++k) {
    REQUIRE(failed[static_cast<std::size_t>(k)] == 0);
    for (index_t b = 0; b < B; ++b) {
      CHECK(close(seq[k][b], ref[b], 1e-6, 1e-6));
      CHECK(seq[k][b] == seq[0][b]);
      CHECK(close(kl[k][b], ref_kl[b], 1e-5, 1e-6));
    }
    const dist::vocab_shard sh = dist::even_shard(V, k, n);
    double worst = 0;
    for (index_t i = 0; i < B * T; ++i)
      for (index_t j = 0; j < sh.size(); ++j)
        worst = std::max(
            worst, std::abs(double(grad[k][i * sh.size() + j]) - ref_grad[i * V + sh.begin + j]));
    CHECK(worst < 1e-6);
  }
}
