// GPU tests of ktsa/cuda/fused_linear.cuh against the host fused head
// (ktsa/kernels/fused_linear.hpp with the plain-loop GEMM; the host head is
// itself tested against fp64 in tests/test_fused_linear.cpp): forward,
// backward and the KTO step, f32 and bf16, odd shapes, a chunk that does not
// divide the rows, an all-ignored sequence, shift, bias and softcap;
// determinism; a too-small workspace.
#include <cublas_v2.h>

#include "cuda_test_support.hpp"

#include "ktsa/cuda.cuh"
#include "ktsa/cuda/fused_linear.cuh"
#include "ktsa/kernels/fused_kto.hpp"

using namespace ktsa;
using namespace ktsa_test;
namespace kn = ktsa::kernels;

namespace {

struct handle {
  cublasHandle_t h = nullptr;
  handle() { REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS); }
  ~handle() { cublasDestroy(h); }
};

struct problem {
  index_t B = 3, T = 7, H = 24, V = 101;
  std::vector<float> hidden, w, bias;
  std::vector<std::int64_t> labels;
  explicit problem(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    hidden.resize(static_cast<size_t>(B * T * H));
    for (auto& x : hidden) x = n(rng);
    w.resize(static_cast<size_t>(V * H));
    for (auto& x : w) x = n(rng) * 0.4f;
    bias.resize(static_cast<size_t>(V));
    for (auto& x : bias) x = 0.3f * n(rng);
    labels.resize(static_cast<size_t>(B * T));
    for (index_t i = 0; i < B * T; ++i)
      labels[static_cast<size_t>(i)] =
          (i / T == B - 1 || rng() % 4 == 0) ? -100 : static_cast<std::int64_t>(rng() % V);
  }
};

template <class T>
std::vector<T> narrow(const std::vector<float>& v) {
  std::vector<T> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = from_float<T>(v[i]);
  return o;
}

template <class T>
void check_against_host(const problem& p, const kn::fused_linear_options& o, double rtol) {
  const exec::cuda ex{};
  handle h;
  const auto hh = narrow<T>(p.hidden), wh = narrow<T>(p.w);
  device_buffer<T> dh(hh.size()), dw(wh.size());
  dh.upload(hh);
  dw.upload(wh);
  device_buffer<float> db(p.bias.size());
  db.upload(p.bias);
  device_buffer<std::int64_t> dl(p.labels.size());
  dl.upload(p.labels);
  const index_t B = p.B, Tn = p.T, H = p.H, V = p.V;
  const auto hv = cube_view<const T>(dh.ptr, {B, Tn, H});
  const auto wv = matrix_view<const T>(dw.ptr, {V, H});
  const auto bv = vector_view<const float>(db.ptr, {V});
  const auto lv = matrix_view<const std::int64_t>(dl.ptr, {B, Tn});

  // Host reference.
  std::vector<double> seq(static_cast<size_t>(B));
  std::vector<float> lse(static_cast<size_t>(B * Tn)), tok(lse.size()), ent(lse.size());
  kn::fused_linear_forward_outputs<double> ho{make_view(seq)};
  ho.lse = make_view(lse.data(), B, Tn);
  ho.token_logp = make_view(tok.data(), B, Tn);
  ho.entropy = make_view(ent.data(), B, Tn);
  kn::fused_linear_forward(exec::host{1}, make_view(hh.data(), B, Tn, H),
                           make_view(wh.data(), V, H), make_view(p.bias.data(), V),
                           make_view(p.labels.data(), B, Tn), ho, o, {}, kn::gemm::naive{});
  std::vector<double> up{0.7, -0.4, 0.2};
  std::vector<float> gh(static_cast<size_t>(B * Tn * H)), gw(static_cast<size_t>(V * H)),
      gb(static_cast<size_t>(V));
  kn::fused_linear_grads<float, float> hg{make_view(gh.data(), B, Tn, H),
                                          make_view(gw.data(), V, H), make_view(gb)};
  kn::fused_linear_backward(exec::host{1}, make_view(hh.data(), B, Tn, H),
                            make_view(wh.data(), V, H), make_view(p.bias.data(), V),
                            make_view(p.labels.data(), B, Tn),
                            make_view(std::as_const(lse).data(), B, Tn),
                            make_view(std::as_const(up)), hg, o, {}, kn::gemm::naive{});

  // Device.
  const kn::fused_linear_shape s{B, Tn, H, V, std::is_same_v<T, float>, true};
  device_buffer<unsigned char> ws(
      std::max(kn::fused_linear_forward_workspace_bytes<T>(ex, s, o, true),
               kn::fused_linear_backward_workspace_bytes<T>(ex, s, o)));
  device_buffer<double> dseq(static_cast<size_t>(B));
  device_buffer<float> dlse(lse.size()), dtok(lse.size()), dent(lse.size());
  kn::fused_linear_forward_outputs<double> dout{vector_view<double>(dseq.ptr, {B})};
  dout.lse = matrix_view<float>(dlse.ptr, {B, Tn});
  dout.token_logp = matrix_view<float>(dtok.ptr, {B, Tn});
  dout.entropy = matrix_view<float>(dent.ptr, {B, Tn});
  kn::fused_linear_forward(ex, h.h, hv, wv, bv, lv, dout, o, {ws.ptr, ws.n});
  const auto gseq = dseq.download();
  for (index_t b = 0; b < B; ++b)
    CHECK(gseq[static_cast<size_t>(b)] ==
          Approx(seq[static_cast<size_t>(b)]).epsilon(rtol).margin(rtol));
  const auto glse = dlse.download(), gtok = dtok.download(), gent = dent.download();
  for (size_t i = 0; i < lse.size(); ++i) {
    CHECK(glse[i] == Approx(lse[i]).epsilon(rtol).margin(rtol));
    CHECK(gtok[i] == Approx(tok[i]).epsilon(rtol).margin(rtol));
    CHECK(gent[i] == Approx(ent[i]).epsilon(rtol).margin(rtol));
  }
  CHECK(gseq.back() == 0.0);  // the all-ignored sequence

  device_buffer<double> dup(up.size());
  dup.upload(up);
  device_buffer<float> dgh(gh.size()), dgw(gw.size()), dgb(gb.size());
  dgh.fill_bytes(0x7f);  // garbage the backward must overwrite
  kn::fused_linear_grads<float, float> dg{cube_view<float>(dgh.ptr, {B, Tn, H}),
                                          matrix_view<float>(dgw.ptr, {V, H}),
                                          vector_view<float>(dgb.ptr, {V})};
  kn::fused_linear_backward(ex, h.h, hv, wv, bv, lv, matrix_view<const float>(dlse.ptr, {B, Tn}),
                            vector_view<const double>(dup.ptr, {B}), dg, o, {ws.ptr, ws.n});
  const auto rgh = dgh.download(), rgw = dgw.download(), rgb = dgb.download();
  for (size_t i = 0; i < gh.size(); ++i)
    REQUIRE(rgh[i] == Approx(gh[i]).epsilon(rtol).margin(rtol));
  for (size_t i = 0; i < gw.size(); ++i)
    REQUIRE(rgw[i] == Approx(gw[i]).epsilon(rtol).margin(rtol));
  for (size_t i = 0; i < gb.size(); ++i)
    REQUIRE(rgb[i] == Approx(gb[i]).epsilon(rtol).margin(rtol));

  // Run to run: bitwise the same.
  kn::fused_linear_backward(ex, h.h, hv, wv, bv, lv, matrix_view<const float>(dlse.ptr, {B, Tn}),
                            vector_view<const double>(dup.ptr, {B}), dg, o, {ws.ptr, ws.n});
  const auto again = dgw.download();
  CHECK(std::memcmp(again.data(), rgw.data(), rgw.size() * sizeof(float)) == 0);

  // Too small a workspace is an invalid_argument naming it.
  CHECK_THROWS_AS(kn::fused_linear_forward(ex, h.h, hv, wv, bv, lv, dout, o, {ws.ptr, 256}),
                  invalid_argument);
}

}  // namespace

TEST_CASE("cuda fused_linear f32 matches the host head", "[fused_linear][gpu]") {
  const problem p(1);
  for (bool shift : {false, true})
    for (float cap : {0.0f, 2.0f}) {
      CAPTURE(shift, cap);
      kn::fused_linear_options o;
      o.logprob.shift = shift;
      o.logprob.reduce = shift ? kn::reduction::mean : kn::reduction::sum;
      o.softcap = cap;
      o.temperature = 0.8f;
      o.chunk_rows = 4;  // does not divide the rows
      check_against_host<float>(p, o, 1e-4);
    }
}

TEST_CASE("cuda fused_linear bf16 matches the host head within bf16 logits",
          "[fused_linear][gpu]") {
  // The device keeps each chunk's logits in bf16 (the host in fp32): logits
  // up to ~6 in magnitude carry ~2^-8 relative rounding, so p and the
  // gradients differ by a few percent; a wrong index would differ by O(1).
  const problem p(2);
  kn::fused_linear_options o;
  o.logprob.shift = true;
  o.chunk_rows = 5;
  check_against_host<bf16>(p, o, 8e-2);  // loose: bf16 logits; index errors are O(1)
}

TEST_CASE("cuda fused_kto_step matches the host step", "[fused_linear][gpu]") {
  const problem p(3);
  const exec::cuda ex{};
  handle h;
  const index_t B = p.B, Tn = p.T, H = p.H, V = p.V;
  std::vector<double> ref{-20.0, -25.0, -3.0};
  std::vector<std::uint8_t> des{1, 0, 1};
  loss::config cfg;
  cfg.beta = 0.3;
  kn::fused_linear_options o;
  o.chunk_rows = 6;
  std::vector<float> gh(static_cast<size_t>(B * Tn * H)), gw(static_cast<size_t>(V * H));
  kn::kto_step_inputs<const double, const std::uint8_t> in{make_view(std::as_const(ref)),
                                                           make_view(std::as_const(des)), 0.2, cfg};
  const auto host =
      kn::fused_kto_step(exec::host{1}, make_view(std::as_const(p.hidden).data(), B, Tn, H),
                         make_view(std::as_const(p.w).data(), V, H), {},
                         make_view(std::as_const(p.labels).data(), B, Tn), in,
                         kn::fused_linear_grads<float, float>{make_view(gh.data(), B, Tn, H),
                                                              make_view(gw.data(), V, H)},
                         {}, o, {}, kn::gemm::naive{});

  device_buffer<float> dh(p.hidden.size()), dw(p.w.size()), dgh(gh.size()), dgw(gw.size());
  dh.upload(p.hidden);
  dw.upload(p.w);
  device_buffer<std::int64_t> dl(p.labels.size());
  dl.upload(p.labels);
  device_buffer<double> dref(ref.size()), dper(ref.size());
  dref.upload(ref);
  device_buffer<std::uint8_t> ddes(des.size());
  ddes.upload(des);
  device_buffer<loss::device_loss_result> res(1);
  const kn::fused_linear_shape s{B, Tn, H, V};
  device_buffer<unsigned char> ws(kn::fused_kto_step_workspace_bytes<float>(ex, s, o));
  kn::fused_kto_step(ex, h.h, cube_view<const float>(dh.ptr, {B, Tn, H}),
                     matrix_view<const float>(dw.ptr, {V, H}), vector_view<const float>{},
                     matrix_view<const std::int64_t>(dl.ptr, {B, Tn}),
                     vector_view<const double>(dref.ptr, {B}),
                     vector_view<const std::uint8_t>(ddes.ptr, {B}), 0.2, cfg,
                     kn::fused_linear_grads<float, float>{cube_view<float>(dgh.ptr, {B, Tn, H}),
                                                          matrix_view<float>(dgw.ptr, {V, H})},
                     vector_view<double>(dper.ptr, {B}), res.ptr, nullptr, o, {ws.ptr, ws.n});
  const loss::loss_result r = loss::read_result(ex, res.ptr);
  CHECK(r.loss == Approx(host.loss.loss).epsilon(1e-5));
  CHECK(r.metrics.chosen_count == host.loss.metrics.chosen_count);
  const auto rgw = dgw.download(), rgh = dgh.download();
  for (size_t i = 0; i < gw.size(); ++i)
    REQUIRE(rgw[i] == Approx(gw[i]).epsilon(1e-4).margin(1e-6));
  for (size_t i = 0; i < gh.size(); ++i)
    REQUIRE(rgh[i] == Approx(gh[i]).epsilon(1e-4).margin(1e-6));
}
