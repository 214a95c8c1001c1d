// Misuses of the adapters that must not compile; tests/interop/CMakeLists.txt
// builds each case and expects the adapter's static_assert message.
#if KTSA_CASE == 1 || KTSA_CASE == 2
#include <Eigen/Core>

#include "ktsa/interop/eigen.hpp"
#elif KTSA_CASE == 3
#if __has_include(<xtensor/containers/xarray.hpp>)
#include <xtensor/containers/xarray.hpp>
#else
#include <xtensor/xarray.hpp>
#endif
#include "ktsa/interop/xtensor.hpp"
#elif KTSA_CASE == 4
#include "ktsa/interop/dlpack.hpp"
#endif

void misuse() {
#if KTSA_CASE == 1
  Eigen::MatrixXf a(2, 2), b(2, 2);
  auto v = ktsa::interop::as_view(a + b);  // an expression: no storage
#elif KTSA_CASE == 2
  auto v = ktsa::interop::as_view(Eigen::MatrixXf(2, 2));  // would dangle
#elif KTSA_CASE == 3
  xt::xarray<float> a = xt::xarray<float>::from_shape({2, 2});
  auto v = ktsa::interop::as_view<2>(a + a);  // an expression: no storage
#elif KTSA_CASE == 4
  DLTensor t{};
  auto v = ktsa::interop::from_dlpack<const char*, 1>(t);  // no DLPack dtype
#endif
  (void)v;
}
