// Built against ktsa::eigen / ktsa::xtensor / ktsa::dlpack as a user links
// them: the same KTO loss as main.cpp from Eigen vectors, an xtensor flag
// vector and a DLPack tensor, checked against the formula written out here.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <ktsa/loss/kto.hpp>

#if KTSA_CONSUMER_EIGEN
#include <ktsa/interop/eigen.hpp>
#endif
#if KTSA_CONSUMER_XTENSOR
#if __has_include(<xtensor/containers/xtensor.hpp>)
#include <xtensor/containers/xtensor.hpp>
#else
#include <xtensor/xtensor.hpp>
#endif
#include <ktsa/interop/xtensor.hpp>
#endif
#if KTSA_CONSUMER_DLPACK
#include <ktsa/interop/dlpack.hpp>
#endif

int main() {
  std::vector<double> policy{-10.0, -12.0}, reference{-10.5, -11.0};
  std::vector<unsigned char> desirable{1, 0};
  auto p = ktsa::make_view(policy);
  auto r = ktsa::make_view(reference);
  auto d = ktsa::vector_view<const unsigned char>(ktsa::make_view(desirable));
  int used = 0;
#if KTSA_CONSUMER_EIGEN
  Eigen::VectorXd pe = Eigen::Map<Eigen::VectorXd>(policy.data(), 2);
  p = ktsa::interop::as_vector_view(pe);
  ++used;
#endif
#if KTSA_CONSUMER_XTENSOR
  xt::xtensor<unsigned char, 1> dx = {1, 0};
  d = ktsa::interop::as_view<1>(dx);
  ++used;
#endif
#if KTSA_CONSUMER_DLPACK
  std::int64_t shape[1] = {2};
  DLTensor t{reference.data(), {kDLCPU, 0}, 1, {kDLFloat, 64, 1}, shape, nullptr, 0};
  auto rd = ktsa::interop::from_dlpack<const double, 1>(t, "reference");
  ++used;
#else
  auto rd = ktsa::vector_view<const double>(r);
#endif
  const auto result =
      ktsa::loss::kto_loss(ktsa::exec::host{}, p, rd, d, 0.0, ktsa::loss::config{},
                           ktsa::vector_view<double>{}, ktsa::vector_view<double>{});
  auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  const double expected = 0.5 * ((1.0 - sigmoid(0.1 * 0.5)) + (1.0 - sigmoid(0.1 * 1.0)));
  std::printf("ktsa %s through %d adapters: loss %.17g (expected %.17g)\n", KTSA_VERSION_STRING,
              used, result.loss, expected);
  return std::abs(result.loss - expected) < 1e-15 && used > 0 ? 0 : 1;
}
