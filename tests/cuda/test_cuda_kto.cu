// GPU tests of ktsa/cuda/kto.cuh and prospect.cuh against the host backend
// (the same per-example formula; only the batch-sum order differs).
#include "cuda_test_support.hpp"

#include "ktsa/cuda.cuh"
#include "ktsa/ktsa.hpp"

using namespace ktsa;
using namespace ktsa_test;

TEST_CASE("cuda kto_loss matches the host for every variant", "[cuda][kto]") {
  const index_t n = 1001;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(-20.0, 5.0);
  std::vector<double> pol(n), ref(n);
  std::vector<unsigned char> des(n);
  for (index_t i = 0; i < n; ++i) {
    pol[i] = nd(rng);
    ref[i] = pol[i] + 0.3 * (nd(rng) + 20.0);
    des[i] = static_cast<unsigned char>(rng() % 3 != 0);
  }
  device_buffer<double> dp(n), dr(n), dl(n), dg(n), dz(1);
  device_buffer<unsigned char> dd(n);
  dp.upload(pol);
  dr.upload(ref);
  dd.upload(des);
  device_buffer<loss::device_loss_result> res(1);
  const exec::cuda ex{};
  for (const loss::variant v :
       {loss::variant::kto, loss::variant::kto_log_sigmoid, loss::variant::ktsa,
        loss::variant::apo_zero_unpaired, loss::variant::bco}) {
    INFO(loss::variant_name(v));
    loss::config cfg;
    cfg.kind = v;
    cfg.desirable_weight = 1.3;
    std::vector<double> hl(n), hg(n);
    loss::bco_running_mean hstate(0.2, 10), dstate(0.2, 10);
    const loss::loss_result h =
        loss::kto_loss(exec::host{}, make_view(pol), make_view(ref), make_view(des), 0.05, cfg,
                       make_view(hl), make_view(hg), &hstate);
    loss::kto_loss(ex, make_view<const double>(dp.ptr, n), make_view<const double>(dr.ptr, n),
                   make_view<const unsigned char>(dd.ptr, n), 0.05, cfg, make_view(dl.ptr, n),
                   make_view(dg.ptr, n), res.ptr, &dstate);
    const loss::loss_result d = loss::read_result(ex, res.ptr, &dstate);
    CHECK(close(d.loss, h.loss, 1e-12, 1e-15));
    CHECK(close(d.metrics.rewards_chosen(), h.metrics.rewards_chosen(), 1e-12, 1e-15));
    CHECK(close(d.metrics.logps_rejected(), h.metrics.logps_rejected(), 1e-12, 1e-15));
    CHECK(d.metrics.chosen_count == h.metrics.chosen_count);
    CHECK(d.metrics.kl == h.metrics.kl);
    CHECK(close(dstate.mean(), hstate.mean(), 1e-12, 1e-15));
    const std::vector<double> gl = dl.download(), gg = dg.download();
    for (index_t i = 0; i < n; ++i) {
      // the same double formula; CUDA's and glibc's exp/log1p may differ by an ulp,
      // relative to the terms (ktsa's w s(-x) - gamma r can cancel to near 0)
      const double atol = 1e-14 * (1 + std::abs(pol[i] - ref[i]));
      CHECK(close(gl[i], hl[i], 1e-14, atol));
      CHECK(close(gg[i], hg[i], 1e-14, atol));
    }
  }
  // z0 on the device, fed to the loss without a host round trip
  std::vector<double> kp(n), kr(n);
  for (index_t i = 0; i < n; ++i) {
    kp[i] = pol[(i + 1) % n];
    kr[i] = ref[(i + 1) % n] - 0.5;
  }
  device_buffer<double> dkp(n), dkr(n);
  dkp.upload(kp);
  dkr.upload(kr);
  loss::batch_kl_reference_point(ex, make_view<const double>(dkp.ptr, n),
                                 make_view<const double>(dkr.ptr, n), dz.ptr);
  const double hz = loss::batch_kl_reference_point(make_view(kp), make_view(kr));
  CHECK(close(dz.download()[0], hz, 1e-12, 1e-15));
  loss::config cfg;
  loss::kto_loss(ex, make_view<const double>(dp.ptr, n), make_view<const double>(dr.ptr, n),
                 make_view<const unsigned char>(dd.ptr, n), static_cast<const double*>(dz.ptr), cfg,
                 vector_view<double>{}, vector_view<double>{}, res.ptr);
  const loss::loss_result d = loss::read_result(ex, res.ptr);
  const loss::loss_result h =
      loss::kto_loss(exec::host{}, make_view(pol), make_view(ref), make_view(des), hz, cfg,
                     vector_view<double>{}, vector_view<double>{});
  CHECK(close(d.loss, h.loss, 1e-12, 1e-15));
}

TEST_CASE("cuda bco: TRL's before_loss order over three steps, then none", "[cuda][kto][bco]") {
  // The issue's vectors (TRL's BCO loss lines in fp64, beta 0.1, weights 1),
  // as in tests/test_loss_conventions.cpp for the host.
  struct step {
    std::vector<double> p, q;
    std::vector<unsigned char> d;
    loss::bco_update order;
    double delta, loss;
    std::vector<double> grad;
  };
  const std::vector<step> steps{
      {{-10.5, -20.25, -7, -15, -12},
       {-11, -19, -7.5, -14, -12.75},
       {1, 0, 1, 0, 1},
       loss::bco_update::before_loss,
       -0.0099999999999999985,
       0.65304059888239918,
       {-0.009700089967611798, 0.009425632860971207, -0.009700089967611798, 0.009550303504163998,
        -0.00957525570067452}},
      {{-9, -21, -6.5, -16.5},
       {-10, -19.5, -7.5, -14},
       {1, 0, 1, 0},
       loss::bco_update::before_loss,
       -0.027777777777777773,
       0.62117351031329149,
       {-0.011702473705374628, 0.011737060624369154, -0.011702473705374628, 0.011116798618440775}},
      {{-8, -22.5, -6},
       {-10.5, -19, -7},
       {1, 0, 0},
       loss::bco_update::before_loss,
       -0.020833333333333336,
       0.62143542206059443,
       {-0.014423417478855505, 0.01394811332663625, 0.017672387723298245}},
      {{-10.5, -20.25, -7, -15, -12},
       {-11, -19, -7.5, -14, -12.75},
       {1, 0, 1, 0, 1},
       loss::bco_update::none,
       -0.020833333333333336,
       0.65197196367630061,
       {}}};
  const exec::cuda ex{};
  device_buffer<loss::device_loss_result> res(1);
  loss::bco_running_mean state;
  const index_t counts[] = {5, 9, 12, 12};
  for (size_t k = 0; k < steps.size(); ++k) {
    INFO("step " << k + 1);
    const step& s = steps[k];
    const index_t n = static_cast<index_t>(s.p.size());
    device_buffer<double> dp(n), dq(n), dg(n);
    device_buffer<unsigned char> dd(n);
    dp.upload(s.p);
    dq.upload(s.q);
    dd.upload(s.d);
    loss::config cfg;
    cfg.kind = loss::variant::bco;
    cfg.bco_order = s.order;
    loss::kto_loss(ex, make_view<const double>(dp.ptr, n), make_view<const double>(dq.ptr, n),
                   make_view<const unsigned char>(dd.ptr, n), 0.0, cfg, vector_view<double>{},
                   make_view(dg.ptr, n), res.ptr, &state);
    const double mean_before = state.mean();
    const loss::loss_result r = loss::read_result(ex, res.ptr, &state);
    CHECK(close(r.metrics.kl, s.delta, 1e-14, 0));
    CHECK(close(r.loss, s.loss, 1e-14, 0));
    CHECK(state.count() == counts[k]);
    if (s.order == loss::bco_update::none) CHECK(state.mean() == mean_before);
    const std::vector<double> g = dg.download();
    for (size_t i = 0; i < s.grad.size(); ++i) CHECK(close(g[i], s.grad[i], 1e-14, 0));
  }
}

TEST_CASE("cuda kto_loss: bad input", "[cuda][kto][errors]") {
  device_buffer<double> dp(4), dr(4);
  device_buffer<unsigned char> dd(4);
  device_buffer<loss::device_loss_result> res(1);
  device_status st;
  const exec::cuda ex{nullptr, st.ptr};
  loss::config cfg;
  CHECK_THROWS_AS(
      loss::kto_loss(ex, make_view<const double>(dp.ptr, 4), make_view<const double>(dr.ptr, 3),
                     make_view<const unsigned char>(dd.ptr, 4), 0.0, cfg, vector_view<double>{},
                     vector_view<double>{}, res.ptr),
      shape_error);
  cfg.beta = -1;
  CHECK_THROWS_AS(
      loss::kto_loss(ex, make_view<const double>(dp.ptr, 4), make_view<const double>(dr.ptr, 4),
                     make_view<const unsigned char>(dd.ptr, 4), 0.0, cfg, vector_view<double>{},
                     vector_view<double>{}, res.ptr),
      ktsa::invalid_argument);
  cfg.beta = 1e300;  // absurd configs are rejected on every backend
  CHECK_THROWS_WITH(
      loss::kto_loss(ex, make_view<const double>(dp.ptr, 4), make_view<const double>(dr.ptr, 4),
                     make_view<const unsigned char>(dd.ptr, 4), 0.0, cfg, vector_view<double>{},
                     vector_view<double>{}, res.ptr),
      Catch::Matchers::Contains("'beta'"));
  cfg.beta = 0.1;
  cfg.kind = static_cast<loss::variant>(9);
  CHECK_THROWS_WITH(
      loss::kto_loss(ex, make_view<const double>(dp.ptr, 4), make_view<const double>(dr.ptr, 4),
                     make_view<const unsigned char>(dd.ptr, 4), 0.0, cfg, vector_view<double>{},
                     vector_view<double>{}, res.ptr),
      Catch::Matchers::Contains("'kind' = 9"));
  cfg.kind = loss::variant::kto;
  dp.upload({-1.0, -2.0, std::nan(""), -4.0});
  cuda::reset_status(ex);
  loss::kto_loss(ex, make_view<const double>(dp.ptr, 4), make_view<const double>(dr.ptr, 4),
                 make_view<const unsigned char>(dd.ptr, 4), 0.0, cfg, vector_view<double>{},
                 vector_view<double>{}, res.ptr);
  const cuda::status_report r = cuda::read_status(ex);
  CHECK(r.raw.code == cuda::status_non_finite);
  CHECK(r.raw.finite_batch == 2);
  CHECK(r.raw.finite_tensor == 0);
  CHECK_THROWS_AS(cuda::throw_if_error(ex), data_error);
}

TEST_CASE("cuda prospect apply_value / apply_derivative match the host", "[cuda][prospect]") {
  const index_t n = 10000;
  std::vector<double> z(n);
  for (index_t i = 0; i < n; ++i) z[i] = -5.0 + 10.0 * static_cast<double>(i) / n;
  device_buffer<double> dz(n), dv(n);
  dz.upload(z);
  prospect::value_params p;
  p.z0 = 0.3;
  p.epsilon = 1e-3;
  std::vector<double> hv(n), hd(n);
  prospect::apply_value(exec::host{}, make_view(z), make_view(hv), p);
  prospect::apply_derivative(exec::host{}, make_view(z), make_view(hd), p);
  prospect::apply_value(exec::cuda{}, make_view<const double>(dz.ptr, n), make_view(dv.ptr, n), p);
  std::vector<double> gv = dv.download();
  for (index_t i = 0; i < n; ++i) CHECK(close(gv[i], hv[i], 1e-14, 1e-15));
  prospect::apply_derivative(exec::cuda{}, make_view(dz.ptr, n), make_view(dz.ptr, n),
                             p);  // in place
  gv = dz.download();
  for (index_t i = 0; i < n; ++i) CHECK(close(gv[i], hd[i], 1e-14, 1e-15));
}
